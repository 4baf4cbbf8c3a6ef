package fsm

import (
	"errors"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestResumeJobRetriedKey: a resume applied a second time with the same idempotency
// key (a forwarded retry whose first try committed) answers with the job as it is:
// one generation bump, no refusal; another key is still refused for a pending job,
// and a later resume with a new key resumes again.
func TestResumeJobRetriedKey(t *testing.T) {
	const ckpt = "file:///d/jobs/j/checkpoints/000000000040/manifest.json"
	h := newHarness(t)
	placedJob(h, "j")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Checkpoint: ckpt, Generation: 1}))
	h.mustApply(cancelCmd("j"))
	resume := func(key string) any {
		return h.apply(&cohortv1.Command{TimeUnixNano: 900, Kind: &cohortv1.Command_ResumeJob{
			ResumeJob: &cohortv1.ResumeJobCommand{JobId: "j", IdempotencyKey: key}}})
	}
	if err, ok := resume("k1").(error); ok {
		t.Fatalf("first resume: %v", err)
	}
	first := h.job("j")
	if first.Generation != 2 || first.ResumeKey != "k1" || first.State != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("resumed job: generation %d key %q state %v", first.Generation, first.ResumeKey, first.State)
	}
	again := resume("k1")
	if err, ok := again.(error); ok {
		t.Fatalf("retried resume refused: %v", err)
	}
	if got := again.(*cohortv1.Job); got.Generation != 2 || got.ModifyIndex != first.ModifyIndex {
		t.Fatalf("retried resume: generation %d modify index %d, want 2 and %d (unchanged)", got.Generation, got.ModifyIndex, first.ModifyIndex)
	}
	if j := h.job("j"); j.Generation != 2 || j.ModifyIndex != first.ModifyIndex {
		t.Fatalf("stored job after the retry: generation %d modify index %d", j.Generation, j.ModifyIndex)
	}
	if err, ok := resume("k2").(error); !ok || !errors.Is(err, ErrNotResumable) {
		t.Fatalf("resume of the pending job with another key: %v, want ErrNotResumable", err)
	}
	if err, ok := resume("").(error); !ok || !errors.Is(err, ErrNotResumable) {
		t.Fatalf("resume of the pending job without a key: %v, want ErrNotResumable", err)
	}
	h.mustApply(cancelCmd("j"))
	if err, ok := resume("k3").(error); ok {
		t.Fatalf("resume after a second cancel: %v", err)
	}
	if j := h.job("j"); j.Generation != 3 || j.ResumeKey != "k3" {
		t.Fatalf("second resume: generation %d key %q", j.Generation, j.ResumeKey)
	}
}

// TestOverrideGateRetriedKey: an override applied a second time with the same request
// key records one override, not two; another key records another.
func TestOverrideGateRetriedKey(t *testing.T) {
	h := newHarness(t)
	placedJob(h, "b")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "b-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
		Report: "file:///d/jobs/b/audit/report.json", Gate: &cohortv1.GateResult{Reasons: []string{"val_auc 0.7 < 0.75"}}}))
	override := func(key string) *cohortv1.Job {
		t.Helper()
		resp := h.mustApply(&cohortv1.Command{TimeUnixNano: 1234, Kind: &cohortv1.Command_OverrideGate{OverrideGate: &cohortv1.OverrideGateCommand{
			JobId: "b", Override: &cohortv1.GateOverride{By: "alice", Reason: "reviewed", RequestKey: key}}}})
		return resp.(*cohortv1.Job)
	}
	first := override("k1")
	again := override("k1")
	if n := len(h.job("b").Gate.Overrides); n != 1 || again.ModifyIndex != first.ModifyIndex {
		t.Fatalf("after a retried override: %d overrides (want 1), modify index %d -> %d", n, first.ModifyIndex, again.ModifyIndex)
	}
	override("k2")
	if o := h.job("b").Gate.Overrides; len(o) != 2 || o[0].RequestKey != "k1" || o[1].RequestKey != "k2" {
		t.Fatalf("overrides %v, want k1 then k2", o)
	}
}
