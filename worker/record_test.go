package worker

import (
	"context"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// TestRetentionKeepsTheRecordedCheckpoint is the fault campaign's lost job: the chief
// commits checkpoints faster than the coordinator applies its reports (here the record
// stays at step 4 while the chief commits 8, 12 and 16), then its node dies and the job
// is requeued from the checkpoint the record holds. Retention (keep 2) must not have
// deleted it, and the requeued run must restore from it and finish. Once the record
// follows the reports again, retention collects as before.
func TestRetentionKeepsTheRecordedCheckpoint(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("record-lag")
	record := NewCheckpointRecord("")
	var pointer string // what the coordinator applied: the report of step 4 only
	_, err := c.run(job, runOpts{
		configure: func(cfg *TrainerConfig) { cfg.Record = record },
		onReport: func(rep *cohortv1.TaskReport, cancel func()) {
			if rep.GetCheckpoint() == "" {
				return
			}
			switch checkpointStep(t, rep.GetCheckpoint()) {
			case 4:
				pointer = rep.GetCheckpoint()
				record.Set(pointer)
			case 16:
				cancel() // the node dies; the reports of 8, 12 and 16 never arrived
			}
		},
	})
	if err != errStopped {
		t.Fatalf("first run: %v, want it stopped", err)
	}
	if checkpointStep(t, pointer) != 4 {
		t.Fatalf("job record points at %q, want step 4", pointer)
	}
	ctx := context.Background()
	if _, err := storage.OpenCheckpoint(ctx, c.store, pointer); err != nil {
		t.Fatalf("the checkpoint the job record points at was not kept: %v", err)
	}

	requeued := job
	requeued.Checkpoint, requeued.Generation = pointer, 2
	follow := NewCheckpointRecord(pointer)
	res, err := c.run(requeued, runOpts{
		configure: func(cfg *TrainerConfig) { cfg.Record = follow },
		onReport: func(rep *cohortv1.TaskReport, _ func()) {
			if rep.GetCheckpoint() != "" {
				follow.Set(rep.GetCheckpoint()) // the coordinator keeps up now
			}
		},
	})
	if err != nil {
		t.Fatalf("requeued run from step 4: %v", err)
	}
	if got := checkpointStep(t, res.Checkpoint); got != resumeTotal {
		t.Fatalf("requeued run ended at checkpoint step %d, want %d", got, resumeTotal)
	}
	cks, err := storage.ListCheckpoints(ctx, c.store, job.GetId())
	if err != nil {
		t.Fatal(err)
	}
	// keep 2 and the one the requeued run started from.
	if len(cks) > 3 || cks[len(cks)-1].Step != resumeTotal {
		t.Errorf("committed checkpoints after the requeued run: %+v, want at most 3, newest at step %d", cks, resumeTotal)
	}
}
