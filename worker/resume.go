package worker

import (
	"context"
	"fmt"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/model"
)

// resumePoint is where a training run starts: the global step (the shards' version),
// the data position of that step (epoch, and rows of the epoch's seeded permutation
// already trained on), every rank's gradient-computation count (the position of its
// dropout stream) and the chief's running training loss of the epoch.
type resumePoint struct {
	// resumed is set when the run continues from the checkpoint the job record points
	// at (uri), with the shards restored from it.
	resumed bool
	uri     string
	step    int64
	epoch   int
	pos     int64
	calls   []uint64
	lossSum float64
	rows    int64
	metrics map[string]float64
	// early is the checkpoint's early-stopping state (nil: none recorded).
	early *storage.EarlyStoppingState
}

// gradientCallSetter is implemented by models whose dropout stream can be positioned:
// the k-th gradient computation of a model draws its masks from PCG(seed, k), and
// SetGradientCalls(k) makes the next computation the k-th.
type gradientCallSetter interface {
	SetGradientCalls(k uint64)
}

// usesDropout reports whether the spec's model has dropout.
func usesDropout(s *jobs.Spec) bool {
	switch {
	case s.Model.MLP != nil:
		return s.Model.MLP.Dropout > 0
	case s.Model.CNN != nil:
		return s.Model.CNN.Dropout > 0
	case s.Model.LSTM != nil:
		return s.Model.LSTM.Dropout > 0
	}
	return false
}

// remainingSteps is the number of steps from data position (epoch, pos) to the end of
// training with n rows and global batches of global rows.
func remainingSteps(n, global, epochs, epoch int, pos int64) int64 {
	if epoch >= epochs {
		return 0
	}
	perEpoch := int64((n + global - 1) / global)
	first := (int64(n) - pos + int64(global) - 1) / int64(global)
	return first + int64(epochs-epoch-1)*perEpoch
}

// positionOf returns the data position and gradient counts of global step step when
// every step so far ran with the current world size.
func positionOf(step int64, n, global, batch, world int) (epoch int, pos int64, calls []uint64) {
	perEpoch := int64((n + global - 1) / global)
	epoch, pos = int(step/perEpoch), (step%perEpoch)*int64(global)
	calls = make([]uint64, world)
	full := step / perEpoch
	for r := range calls {
		// Steps of one epoch in which rank r has rows: those with s*global + r*batch < n.
		var per int64
		if off := int64(r * batch); off < int64(n) {
			per = (int64(n) - off + int64(global) - 1) / int64(global)
		}
		calls[r] = uint64(full*per + min(step%perEpoch, per))
	}
	return epoch, pos, calls
}

// startPoint decides where this run starts, from the version the shards report after
// Init and the checkpoint the job record points at:
//   - no checkpoint and version 0: a new job, from the start;
//   - version equal to the checkpoint's step: the shards were restored from it, so the
//     run continues exactly at its data position and random-stream positions;
//   - any other version at or after the checkpoint (a worker joining a running job):
//     at that version, the data position computed for the current world size (sync
//     mode; in the other modes the version counts every rank's pushes, so a rank
//     starts at the checkpoint, or at 0 without one).
//
// Shards behind the checkpoint, a checkpoint of another job or model, and a manifest
// that cannot be read are errors. A chief that starts a job fresh or from its
// checkpoint first removes manifests the record does not point at (see
// storage.DiscardUncommitted), so it can commit its own at those steps.
func (t *Trainer) startPoint(ctx context.Context, client *paramserver.Client, m model.Model, n, global int) (resumePoint, error) {
	s := &t.spec.Spec
	batch := s.Training.BatchSize
	buf := make([]float32, m.NumParams())
	version, err := client.Pull(ctx, 0, buf)
	if err != nil {
		return resumePoint{}, fmt.Errorf("worker: read parameter shard version: %w", err)
	}
	uri := t.job.GetCheckpoint()
	// In sync mode the version is the global step; in the other modes it counts every
	// rank's pushes, so it says nothing about where this rank is.
	sync := s.Training.Consistency.Mode == "" || s.Training.Consistency.Mode == paramserver.ModeSync
	if uri == "" {
		if version == 0 || !sync {
			return resumePoint{calls: make([]uint64, t.base)}, t.discardUncommitted(ctx, -1)
		}
		epoch, pos, calls := positionOf(version, n, global, batch, t.base)
		t.log.Info("joining a running job", "step", version, "epoch", epoch)
		return resumePoint{step: version, epoch: epoch, pos: pos, calls: calls}, nil
	}
	key, err := storage.KeyOfURI(t.cfg.Store, uri)
	if err != nil {
		return resumePoint{}, fmt.Errorf("worker: job checkpoint: %w", err)
	}
	man, err := storage.ReadManifest(ctx, t.cfg.Store, key)
	if err != nil {
		return resumePoint{}, fmt.Errorf("worker: job checkpoint: %w", err)
	}
	switch {
	case man.JobID != t.job.GetId():
		return resumePoint{}, fmt.Errorf("worker: job checkpoint %s belongs to job %s", uri, man.JobID)
	case man.LayoutHash != m.LayoutHash() || man.TotalParams != uint64(m.NumParams()):
		return resumePoint{}, fmt.Errorf("worker: job checkpoint %s has layout %s of %d parameters, the model has %s of %d",
			uri, man.LayoutHash, man.TotalParams, m.LayoutHash(), m.NumParams())
	case version < man.Step:
		return resumePoint{}, fmt.Errorf("worker: parameter shards are at step %d, behind the job's checkpoint at step %d (%s): they were not restored from it", version, man.Step, uri)
	case version > man.Step && sync:
		epoch, pos, calls := positionOf(version, n, global, batch, t.base)
		t.log.Info("joining a running job", "step", version, "epoch", epoch, "checkpoint_step", man.Step)
		return resumePoint{step: version, epoch: epoch, pos: pos, calls: calls}, nil
	}
	rp := resumePoint{resumed: true, uri: uri, step: man.Step, epoch: man.Epoch, lossSum: man.TrainLossSum, rows: man.TrainRows,
		metrics: man.Metrics, early: man.EarlyStopping}
	switch {
	case man.Workers == t.base && man.BatchSize == batch:
		rp.pos = man.DataPosition
		if man.RNG != nil {
			rp.calls = append([]uint64(nil), man.RNG.DropoutCalls...)
		}
	case man.Workers == 0 && man.BatchSize == 0:
		// A manifest without a data position: written with the current world size.
		rp.epoch, rp.pos, rp.calls = positionOf(man.Step, n, global, batch, t.base)
	default:
		// Another world size: the same rows of the epoch are done; the new ranks'
		// dropout streams continue from the old ranks' where they exist.
		rp.pos = man.DataPosition
		if man.RNG != nil {
			rp.calls = append([]uint64(nil), man.RNG.DropoutCalls...)
		}
		t.log.Info("resuming with another world size", "checkpoint_workers", man.Workers, "workers", t.base,
			"checkpoint_batch", man.BatchSize, "batch", batch)
	}
	if rp.epoch > s.Training.Epochs || rp.pos < 0 || rp.pos >= int64(max(n, 1)) {
		return resumePoint{}, fmt.Errorf("worker: job checkpoint %s: data position epoch %d row %d outside %d epochs of %d rows", uri, rp.epoch, rp.pos, s.Training.Epochs, n)
	}
	t.log.Info("resuming from checkpoint", "checkpoint", uri, "step", rp.step, "epoch", rp.epoch, "row", rp.pos)
	return rp, t.discardUncommitted(ctx, man.Step)
}

// discardUncommitted has the chief remove manifests newer than the committed one.
func (t *Trainer) discardUncommitted(ctx context.Context, committedStep int64) error {
	if !t.chief {
		return nil
	}
	keys, err := storage.DiscardUncommitted(ctx, t.cfg.Store, t.job.GetId(), committedStep)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if len(keys) > 0 {
		t.log.Info("discarded checkpoints the job record does not point at", "manifests", keys)
	}
	return nil
}
