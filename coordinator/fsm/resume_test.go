package fsm

import (
	"errors"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func resumeCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 900, Kind: &cohortv1.Command_ResumeJob{ResumeJob: &cohortv1.ResumeJobCommand{JobId: id}}}
}

// TestResumeJob: a cancelled job, a failed job and a job whose restart budget a lost
// node spent go back to pending at a new generation with their checkpoint pointer, and
// are placed again; a job that is pending, running or succeeded, one without a
// checkpoint and an unknown one are refused without a change.
func TestResumeJob(t *testing.T) {
	const ckpt = "file:///d/jobs/j/checkpoints/000000000040/manifest.json"
	withCheckpoint := func(h *harness, id string) {
		h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: id + "-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
			Checkpoint: ckpt, Generation: 1, Exports: []string{"file:///d/x"}}))
	}
	tests := []struct {
		name  string
		setup func(h *harness) // leaves job "j" in the state under test
		want  error            // nil: resumed
		msg   string           // in the refusal
	}{
		{name: "cancelled", setup: func(h *harness) { placedJob(h, "j"); withCheckpoint(h, "j"); h.mustApply(cancelCmd("j")) }},
		{name: "failed", setup: func(h *harness) {
			placedJob(h, "j")
			withCheckpoint(h, "j")
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-ps0", State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "disk"}))
		}},
		{name: "restart budget spent", setup: func(h *harness) {
			h.mustApply(registerCmd("n1"))
			placedJob(h, "j") // MaxRestarts 0: the first lost node fails it
			withCheckpoint(h, "j")
			h.mustApply(nodeDownCmd("n1"))
		}},
		{name: "running", setup: func(h *harness) { placedJob(h, "j"); withCheckpoint(h, "j") },
			want: ErrNotResumable, msg: `job "j" is running`},
		{name: "pending", setup: func(h *harness) { h.mustApply(submitCmd("j", "k")) },
			want: ErrNotResumable, msg: `job "j" is pending`},
		{name: "succeeded", setup: func(h *harness) {
			placedJob(h, "j")
			withCheckpoint(h, "j")
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED}))
		}, want: ErrNotResumable, msg: "succeeded"},
		{name: "no checkpoint", setup: func(h *harness) { placedJob(h, "j"); h.mustApply(cancelCmd("j")) },
			want: ErrNoCheckpoint, msg: "submit its spec again"},
		{name: "empty id", setup: func(h *harness) {}, want: ErrInvalidCommand, msg: "job id is required"},
		{name: "unknown", setup: func(h *harness) {}, want: ErrNotFound, msg: `job "j"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			before := h.f.State().LatestIndex()
			id := "j"
			if tt.name == "empty id" {
				id = ""
			}
			resp := h.apply(resumeCmd(id))
			if tt.want != nil {
				err, ok := resp.(error)
				if !ok || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("resume: %v, want %v mentioning %q", resp, tt.want, tt.msg)
				}
				if h.f.State().LatestIndex() != before {
					t.Fatalf("a refused resume changed the state")
				}
				return
			}
			if err, ok := resp.(error); ok {
				t.Fatalf("resume: %v", err)
			}
			ended := resp.(*cohortv1.Job)
			j := h.job("j")
			if j.State != cohortv1.JobState_JOB_STATE_PENDING || j.Generation != 2 || j.Checkpoint != ckpt {
				t.Fatalf("resumed job: state %v generation %d checkpoint %q", j.State, j.Generation, j.Checkpoint)
			}
			if ended != nil && ended.ModifyIndex != j.ModifyIndex {
				t.Fatalf("response %v is not the stored job %v", ended, j)
			}
			if j.EndTimeUnixNano != 0 || len(j.Exports) != 0 || j.Restarts != 0 || !strings.Contains(j.StatusMessage, "resumed from "+ckpt) ||
				len(j.PendingReasons) != 1 {
				t.Fatalf("resumed job %v", j)
			}
			// Placed again: the new allocations run in generation 2; a checkpoint report
			// of the ended run's generation does not move the pointer.
			h.mustApply(planCmd("j", &cohortv1.Allocation{Id: "j-w0-g2", JobId: "j", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}))
			if a := h.alloc("j-w0-g2"); a.Generation != 2 || h.job("j").State != cohortv1.JobState_JOB_STATE_RUNNING {
				t.Fatalf("re-placed allocation generation %d, job %v", a.Generation, h.job("j").State)
			}
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0-g2", Checkpoint: "stale", Generation: 1}))
			if got := h.job("j").Checkpoint; got != ckpt {
				t.Fatalf("checkpoint %q after a stale report", got)
			}
			// Resuming the running job again is refused.
			if err, ok := h.apply(resumeCmd("j")).(error); !ok || !errors.Is(err, ErrNotResumable) {
				t.Fatalf("second resume: %v", err)
			}
		})
	}
}
