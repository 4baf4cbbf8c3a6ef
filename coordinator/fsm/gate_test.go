package fsm

import (
	"errors"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func overrideCmd(id, by, reason string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 1234, Kind: &cohortv1.Command_OverrideGate{OverrideGate: &cohortv1.OverrideGateCommand{
		JobId: id, Override: &cohortv1.GateOverride{By: by, Reason: reason}}}}
}

// TestGateOnTheJobRecord: the chief's final report sets the job's report URI and gate;
// a failed gate ends the job succeeded with "export blocked" and each reason; an
// override is recorded with the proposer's time only on a succeeded job whose gate
// failed.
func TestGateOnTheJobRecord(t *testing.T) {
	finish := func(h *harness, id string, gate *cohortv1.GateResult) {
		placedJob(h, id)
		h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: id + "-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
			Report: "file:///d/jobs/" + id + "/audit/report.json", Gate: gate}))
	}
	h := newHarness(t)
	failed := &cohortv1.GateResult{Reasons: []string{"impact ratio 0.71 for Gender=Female < 0.8", "val_auc 0.7 < 0.75"}}
	finish(h, "blocked", failed)
	j := h.job("blocked")
	if j.State != cohortv1.JobState_JOB_STATE_SUCCEEDED || j.Report != "file:///d/jobs/blocked/audit/report.json" ||
		j.StatusMessage != "succeeded; export blocked: impact ratio 0.71 for Gender=Female < 0.8; val_auc 0.7 < 0.75" {
		t.Fatalf("job %v %q report %q", j.State, j.StatusMessage, j.Report)
	}
	finish(h, "passed", &cohortv1.GateResult{Passed: true})
	finish(h, "nogate", nil)
	for _, id := range []string{"passed", "nogate"} {
		if j := h.job(id); j.StatusMessage != "succeeded" {
			t.Errorf("%s: status %q", id, j.StatusMessage)
		}
	}

	for _, tc := range []struct {
		name, id, by, reason string
		want                 error
		msg                  string
	}{
		{"passed gate", "passed", "alice", "why", ErrGateNotOverridable, "no failed export gate"},
		{"no gate", "nogate", "alice", "why", ErrGateNotOverridable, "no failed export gate"},
		{"unknown job", "nope", "alice", "why", ErrNotFound, `"nope"`},
		{"no reason", "blocked", "alice", "", ErrInvalidCommand, "who and why"},
		{"no one", "blocked", "", "why", ErrInvalidCommand, "who and why"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.f.State().LatestIndex()
			err, ok := h.apply(overrideCmd(tc.id, tc.by, tc.reason)).(error)
			if !ok || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("override: %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if h.f.State().LatestIndex() != before {
				t.Fatal("a refused override changed the state")
			}
		})
	}

	running := newHarness(t)
	placedJob(running, "r")
	if err, ok := running.apply(overrideCmd("r", "alice", "why")).(error); !ok || !errors.Is(err, ErrGateNotOverridable) {
		t.Errorf("override of a running job: %v", err)
	}

	for i, by := range []string{"alice", "unverified:bob"} {
		resp := h.mustApply(overrideCmd("blocked", by, "reviewed"))
		j := h.job("blocked")
		if got := resp.(*cohortv1.Job); got.ModifyIndex != j.ModifyIndex {
			t.Fatalf("response is not the stored job")
		}
		o := j.Gate.Overrides
		if len(o) != i+1 || o[i].By != by || o[i].Reason != "reviewed" || o[i].TimeUnixNano != 1234 || j.Gate.Passed {
			t.Fatalf("overrides %v", o)
		}
	}
}
