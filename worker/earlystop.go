package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Early stopping (spec.training.earlyStopping).
//
// The chief observes the monitored metric at every epoch end (observeEarlyStopping, a
// pure function of the state the last checkpoint recorded and the epoch's value). The
// decision must be the whole job's, and every rank must stop at the same step. In sync
// mode the ranks are in lock-step through the shards: an epoch ends before global step
// k, every rank pulls the parameters of k, the chief evaluates them and decides, and no
// rank can pull k+1 before the chief has pushed its gradient of k. So the chief stores
// its decision (the stop record, create-only at EarlyStopKey) before that push, and
// every rank reads the record right after its pull of k+1, where it is certain to be
// there: all ranks then leave the loop with the shards at k+1, and the parameters of k
// (the evaluated ones, checkpointed at k) are the run's last. The record outlives the
// run, so a job placed again after a failure, or a worker joining late, stops at the
// same step, and a new chief after a membership change finds the decision already taken.
// In async and bounded modes the ranks are not in lock-step: a rank stops at its first
// epoch boundary after the record was written.

// EarlyStopKey is the key of a job's stop record: "jobs/<jobID>/early-stop.json" (beside
// the checkpoints directory, so retention never touches it).
func EarlyStopKey(jobID string) string { return "jobs/" + jobID + "/early-stop.json" }

// maxStopRecordSize bounds the stop record readStopRecord accepts.
const maxStopRecordSize = 64 << 10

// stopRecord is the job-wide decision to stop early.
type stopRecord struct {
	// Epoch is the last epoch trained and evaluated; Step the global step it ended
	// before (the checkpoint of the evaluated parameters), StopStep = Step+1 the step
	// every rank stops at.
	Epoch    int   `json:"epoch"`
	Step     int64 `json:"step"`
	StopStep int64 `json:"stopStep"`
	// Monitor is the metric watched; Best its best value, after BestEpoch epochs.
	Monitor   string  `json:"monitor"`
	Best      float64 `json:"best"`
	BestEpoch int     `json:"bestEpoch"`
	// Reason says why in words.
	Reason string `json:"reason"`
}

// proto is the record as the job record holds it.
func (r *stopRecord) proto() *cohortv1.EarlyStop {
	if r == nil {
		return nil
	}
	return &cohortv1.EarlyStop{Epoch: int32(r.Epoch), Step: r.Step, Monitor: r.Monitor, Best: r.Best,
		BestEpoch: int32(r.BestEpoch), Reason: r.Reason}
}

// observeEarlyStopping takes the monitored value after epoch epochs (of total) into the
// state st and reports whether training stops: an epoch up to cfg.StartEpoch is not
// monitored; one whose value beats the best so far by more than cfg.MinDelta (in
// cfg.Mode's direction; the first monitored one always does) becomes the best; any
// other, a non-finite value included, adds one to the wait, and training stops once the
// wait reaches cfg.Patience, unless this was the last epoch anyway.
func observeEarlyStopping(cfg jobs.EarlyStopping, st storage.EarlyStoppingState, epoch, total int, value float64) (storage.EarlyStoppingState, bool) {
	st.Epoch = epoch
	if epoch <= cfg.StartEpoch {
		return st, false
	}
	finite := !math.IsNaN(value) && !math.IsInf(value, 0)
	improved := finite && (st.BestEpoch == 0 ||
		(cfg.Mode == jobs.ModeMin && value < st.Best-cfg.MinDelta) ||
		(cfg.Mode != jobs.ModeMin && value > st.Best+cfg.MinDelta))
	if improved {
		st.Best, st.BestEpoch, st.Wait = value, epoch, 0
		return st, false
	}
	st.Wait++
	return st, st.Wait >= cfg.Patience && epoch < total
}

// stopReason says why training stopped.
func stopReason(cfg jobs.EarlyStopping, st storage.EarlyStoppingState) string {
	by := ""
	if cfg.MinDelta > 0 {
		by = " by more than " + strconv.FormatFloat(cfg.MinDelta, 'g', -1, 64)
	}
	epochs := "epochs"
	if st.Wait == 1 {
		epochs = "epoch"
	}
	if st.BestEpoch == 0 {
		return fmt.Sprintf("%s was not finite for %d %s", cfg.Monitor, st.Wait, epochs)
	}
	return fmt.Sprintf("%s did not improve%s for %d %s (best %s at epoch %d)", cfg.Monitor, by, st.Wait, epochs,
		strconv.FormatFloat(round4(st.Best), 'f', -1, 64), st.BestEpoch)
}

// writeStopRecord stores rec create-only and returns the job's record: rec, or the one
// an earlier chief (of this run or of one before it) already stored, which stands.
func writeStopRecord(ctx context.Context, store storage.Blob, jobID string, rec *stopRecord) (*stopRecord, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("worker: encode the early-stopping record: %w", err)
	}
	key := EarlyStopKey(jobID)
	err = store.PutIfAbsent(ctx, key, bytes.NewReader(b), int64(len(b)))
	if errors.Is(err, storage.ErrExists) {
		prev, rerr := readStopRecord(ctx, store, jobID)
		if rerr != nil {
			return nil, rerr
		}
		if prev != nil {
			return prev, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("worker: write the early-stopping record %s: %w", key, err)
	}
	return rec, nil
}

// readStopRecord returns the job's stop record, or nil when training was not stopped.
func readStopRecord(ctx context.Context, store storage.Blob, jobID string) (*stopRecord, error) {
	key := EarlyStopKey(jobID)
	rc, err := store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker: read the early-stopping record %s: %w", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxStopRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("worker: read the early-stopping record %s: %w", key, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rec stopRecord
	if len(data) > maxStopRecordSize || dec.Decode(&rec) != nil || rec.Step < 0 || rec.StopStep != rec.Step+1 || rec.Epoch < 1 {
		return nil, fmt.Errorf("worker: the early-stopping record %s is malformed", key)
	}
	return &rec, nil
}

// errStoppedEarly is returned by runStep when the job's stop record ends the run at the
// step it was about to train (the loop's last step is now that step).
var errStoppedEarly = errors.New("stopped early")

// observeEpoch updates the early-stopping state with the evaluation of epoch epochs
// (ended before step k) and, when training stops here, keeps the decision pending until
// commitStop stores it. A chief that did not see the previous epoch (it became the chief
// after a membership change, or joined late) first reads the state the newest
// checkpoint recorded.
func (c *chief) observeEpoch(ctx context.Context, epochs int, k int64) error {
	es := c.t.spec.Spec.Training.EarlyStopping
	if es == nil || c.stop != nil {
		return nil
	}
	if c.early.Epoch != epochs-1 {
		if err := c.reloadEarlyState(ctx, k); err != nil {
			return err
		}
	}
	v, ok := c.metrics[es.Monitor]
	if !ok {
		v = math.NaN()
	}
	st, stop := observeEarlyStopping(*es, c.early, epochs, c.t.spec.Spec.Training.Epochs, v)
	c.early = st
	if stop {
		c.pendingStop = &stopRecord{Epoch: epochs, Step: k, StopStep: k + 1, Monitor: es.Monitor,
			Best: st.Best, BestEpoch: st.BestEpoch, Reason: stopReason(*es, st)}
	}
	return nil
}

// resumeStop takes again the decision to stop of a run resumed from the checkpoint of an
// epoch end whose early-stopping state says training stops there (the run before failed
// between committing that checkpoint and storing its decision).
func (c *chief) resumeStop(start resumePoint) {
	es, epochs := c.t.spec.Spec.Training.EarlyStopping, c.t.spec.Spec.Training.Epochs
	st := c.early
	if es == nil || st.Epoch != start.epoch || st.Epoch <= es.StartEpoch || st.Epoch >= epochs || st.Wait == 0 || st.Wait < es.Patience {
		return
	}
	c.pendingStop = &stopRecord{Epoch: st.Epoch, Step: start.step, StopStep: start.step + 1, Monitor: es.Monitor,
		Best: st.Best, BestEpoch: st.BestEpoch, Reason: stopReason(*es, st)}
}

// reloadEarlyState sets the early-stopping state from the newest committed checkpoint
// before step k that recorded one (none: a fresh state).
func (c *chief) reloadEarlyState(ctx context.Context, k int64) error {
	t := c.t
	infos, err := storage.ListCheckpoints(ctx, t.cfg.Store, t.job.GetId())
	if err != nil {
		return fmt.Errorf("worker: early stopping: %w", err)
	}
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].Error != "" || infos[i].Step >= k {
			continue
		}
		man, err := storage.ReadManifest(ctx, t.cfg.Store, infos[i].ManifestKey)
		if err != nil {
			return fmt.Errorf("worker: early stopping: %w", err)
		}
		if man.EarlyStopping != nil {
			c.early = *man.EarlyStopping
			t.log.Info("early stopping: state read from the newest checkpoint", "step", man.Step,
				"epoch", c.early.Epoch, "best_epoch", c.early.BestEpoch, "wait", c.early.Wait)
			return nil
		}
	}
	c.early = storage.EarlyStoppingState{}
	return nil
}

// commitStop stores a pending decision to stop (once the checkpoint of its step is
// committed) and returns the job's stop record (nil: training goes on).
func (c *chief) commitStop(ctx context.Context) (*stopRecord, error) {
	if c.pendingStop == nil {
		return nil, nil
	}
	t := c.t
	rec, err := writeStopRecord(ctx, t.cfg.Store, t.job.GetId(), c.pendingStop)
	if err != nil {
		return nil, err
	}
	c.pendingStop = nil
	t.log.Info("early stopping: training stops", "epoch", rec.Epoch, "step", rec.Step, "stop_step", rec.StopStep,
		"monitor", rec.Monitor, "best", round4(rec.Best), "best_epoch", rec.BestEpoch, "reason", rec.Reason)
	c.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, EarlyStop: rec.proto()})
	return rec, nil
}

// applyStop ends the run at the stop record's step, or at step at when the rank is
// already past it (async and bounded modes, or a rank starting after the stop). It
// reports whether the run's last step moved.
func (l *loopState) applyStop(rec *stopRecord, at int64) bool {
	end := max(rec.StopStep, at)
	l.chief.stop = rec
	if end >= l.sched.total {
		return false
	}
	l.t.log.Info("early stopping: this worker stops", "step", end, "decided_after_epoch", rec.Epoch, "total_steps_planned", l.sched.total)
	l.sched.total = end
	l.chief.total = end
	return true
}

// followStop has a rank read the job's stop record at the step after an epoch end (in
// sync mode the chief stored its decision before this step could be pulled). It
// returns errStoppedEarly when the run ends at step k.
func (l *loopState) followStop(ctx context.Context, k int64) error {
	if k != l.checkStopAt || l.chief.stop != nil {
		return nil
	}
	rec, err := readStopRecord(ctx, l.t.cfg.Store, l.t.job.GetId())
	if err != nil || rec == nil {
		return err
	}
	if l.applyStop(rec, k) && l.sched.total == k {
		return errStoppedEarly
	}
	return nil
}
