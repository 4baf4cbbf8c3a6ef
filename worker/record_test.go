package worker

import (
	"strings"
	"time"

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

// TestStaleGenerationManifestIsReplaced: a chief of generation 1, paused while it
// committed step 12, wakes after the job was requeued from step 8 and writes its
// manifest once the new run has discarded what the record did not point at. The new
// run's shards overwrite that manifest's objects when they reach step 12, so it no
// longer verifies: the new chief replaces it rather than failing the job.
func TestStaleGenerationManifestIsReplaced(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("stale-manifest")
	var pointer string
	_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
		if rep.GetCheckpoint() != "" && checkpointStep(t, rep.GetCheckpoint()) == 8 {
			pointer = rep.GetCheckpoint()
			cancel()
		}
	}})
	if err != errStopped {
		t.Fatalf("first run: %v, want it stopped", err)
	}
	ctx := context.Background()
	requeued := job
	requeued.Checkpoint, requeued.Generation = pointer, 2
	planted := false
	res, err := c.run(requeued, runOpts{
		configure: func(cfg *TrainerConfig) { cfg.StoragePause = time.Nanosecond }, // no retries
		onReport: func(rep *cohortv1.TaskReport, _ func()) {
			// The end of epoch 2 (step 12) is reported before its checkpoint.
			if planted || rep.GetInterim() || rep.GetCheckpoint() != "" || rep.GetProgress().GetStep() != 12 {
				return
			}
			planted = true
			key, err := storage.KeyOfURI(c.store, pointer)
			if err != nil {
				t.Error(err)
				return
			}
			stale, err := storage.ReadManifest(ctx, c.store, key)
			if err != nil {
				t.Error(err)
				return
			}
			stale.Step, stale.Generation = 12, 1
			for i := range stale.Objects {
				stale.Objects[i].Key = strings.Replace(stale.Objects[i].Key, "/000000000008/", "/000000000012/", 1)
				stale.Objects[i].SHA256 = strings.Repeat("0", 64) // what generation 1 wrote there
			}
			if _, err := storage.WriteManifest(ctx, c.store, stale); err != nil {
				t.Errorf("plant the stale manifest: %v", err)
			}
		},
	})
	if !planted {
		t.Fatal("the end of epoch 2 was never reported: nothing planted")
	}
	if err != nil {
		t.Fatalf("requeued run with a stale manifest at step 12: %v", err)
	}
	if got := checkpointStep(t, res.Checkpoint); got != resumeTotal {
		t.Fatalf("requeued run ended at checkpoint step %d, want %d", got, resumeTotal)
	}
}

// TestRunnerUpdateFollowsTheRecord: the node agent's Update of a running worker task
// hands the chief the checkpoint its job record points at now, with or without a
// membership change.
func TestRunnerUpdateFollowsTheRecord(t *testing.T) {
	r, err := NewRunner(RunnerConfig{Store: mustLocal(t)})
	if err != nil {
		t.Fatal(err)
	}
	a := &cohortv1.Assignment{Job: &cohortv1.Job{Id: "j", Generation: 1, WorkerCount: 1},
		Allocation: &cohortv1.Allocation{Id: "j-w0", JobId: "j", Generation: 1}}
	rec := NewCheckpointRecord("")
	r.members["j-w0"], r.records["j-w0"] = NewMembershipWatch(MembershipOf(a)), rec
	const first, second = "file:///s/jobs/j/checkpoints/000000000004/manifest.json", "file:///s/jobs/j/checkpoints/000000000008/manifest.json"
	a.Job.Checkpoint = first
	r.Update(a)
	if got := rec.Get(); got != first {
		t.Fatalf("record after an update of the same generation: %q, want %q", got, first)
	}
	a.Job.Checkpoint, a.Job.Generation, a.Allocation.Generation = second, 2, 2
	r.Update(a)
	if got := rec.Get(); got != second {
		t.Fatalf("record after an update with a membership change: %q, want %q", got, second)
	}
}
