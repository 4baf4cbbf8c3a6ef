package fsm

import (
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestExportedCheckpointAndEarlyStop: the chief's report of an early-stopping decision
// sets the job's early stop and status while it runs; the final report's metrics (those
// of the exported checkpoint) replace the last epoch's, its exported checkpoint is
// recorded, and the status says where and why training stopped and what was exported.
// A job that ran to the end and exported its last step just "succeeded".
func TestExportedCheckpointAndEarlyStop(t *testing.T) {
	h := newHarness(t)
	placedJob(h, "es")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "es-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Progress: &cohortv1.JobProgress{Epoch: 5, TotalEpochs: 30, Step: 190, TotalSteps: 1140},
		Metrics:  map[string]float64{"val_auc": 0.81, "val_loss": 0.35, "val_extra": 1}}))
	stop := &cohortv1.EarlyStop{Epoch: 5, Step: 190, Monitor: "val_auc", Best: 0.8397, BestEpoch: 3,
		Reason: "val_auc did not improve by more than 0.001 for 2 epochs (best 0.8397 at epoch 3)"}
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "es-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING, EarlyStop: stop}))
	j := h.job("es")
	if j.EarlyStop.GetEpoch() != 5 || j.StatusMessage != "stopping early: after epoch 5 (step 190): "+stop.Reason {
		t.Fatalf("running job: early stop %v, status %q", j.EarlyStop, j.StatusMessage)
	}
	exported := &cohortv1.ExportedFrom{Checkpoint: "file:///d/jobs/es/checkpoints/000000000114/manifest.json", Step: 114, Epoch: 3,
		Metric: "val_auc", Mode: "max", Score: 0.8397}
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "es-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
		Metrics: map[string]float64{"val_auc": 0.8397, "val_loss": 0.33}, ExportedFrom: exported, EarlyStop: stop}))
	j = h.job("es")
	want := "succeeded; stopped early after epoch 5 (step 190): " + stop.Reason + "; exported the best checkpoint, step 114 (epoch 3, val_auc 0.8397)"
	if j.State != cohortv1.JobState_JOB_STATE_SUCCEEDED || j.StatusMessage != want {
		t.Fatalf("job %v %q, want %q", j.State, j.StatusMessage, want)
	}
	if len(j.Metrics) != 2 || j.Metrics["val_auc"] != 0.8397 || j.Metrics["val_loss"] != 0.33 {
		t.Errorf("metrics %v, want the exported checkpoint's only", j.Metrics)
	}
	if j.ExportedFrom.GetStep() != 114 || j.ExportedFrom.GetCheckpoint() != exported.Checkpoint {
		t.Errorf("exported from %v", j.ExportedFrom)
	}

	placedJob(h, "full")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "full-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Progress: &cohortv1.JobProgress{Epoch: 3, TotalEpochs: 3, Step: 18, TotalSteps: 18}}))
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "full-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
		Metrics: map[string]float64{"val_auc": 0.8}, ExportedFrom: &cohortv1.ExportedFrom{Step: 18, Epoch: 3, Metric: "val_auc", Mode: "max", Score: 0.8}}))
	if j := h.job("full"); j.StatusMessage != "succeeded" {
		t.Errorf("a job exporting its last step: status %q", j.StatusMessage)
	}
	placedJob(h, "earlier")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "earlier-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Progress: &cohortv1.JobProgress{Epoch: 3, TotalEpochs: 3, Step: 18, TotalSteps: 18}}))
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "earlier-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
		Metrics: map[string]float64{"val_auc": 0.8}, ExportedFrom: &cohortv1.ExportedFrom{Step: 12, Epoch: 2, Metric: "val_auc", Mode: "max", Score: 0.8}}))
	if j := h.job("earlier"); j.StatusMessage != "succeeded; exported the best checkpoint, step 12 (epoch 2, val_auc 0.8000)" {
		t.Errorf("a job exporting an earlier epoch: status %q", j.StatusMessage)
	}
}
