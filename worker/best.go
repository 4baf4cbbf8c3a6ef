package worker

import (
	"context"
	"fmt"
	"math"

	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Best checkpoint (spec.checkpoint.scoreBy, keepBest).
//
// The chief commits a checkpoint at every epoch end, right after evaluating exactly its
// parameters, and records that evaluation's scoreBy metric in the manifest as the
// checkpoint's score (storage.Score). Retention keeps the keepBest best-scored
// checkpoints besides the newest keep, ranking what the store holds, so the ranking
// survives a restart. When training ends the chief exports the best-scored checkpoint:
// it reads its parameters back from storage (the export equals the checkpoint bit for
// bit), evaluates them, and describes them in the report and the result.

// score is the checkpoint score of the evaluation the chief made at step (nil when it
// did not evaluate the parameters of step, or the metric is missing or not finite).
func (c *chief) score(step int64, epoch int) *storage.Score {
	sb := c.t.spec.Spec.Checkpoint.ScoreBy
	if step != c.evaluatedStep || sb.Metric == "" {
		return nil
	}
	v, ok := c.metrics[sb.Metric]
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &storage.Score{Metric: sb.Metric, Mode: sb.Mode, Value: v, Epoch: epoch}
}

// epochCheckpoint commits the checkpoint of the epoch end before step k (at position
// at), scored by the evaluation just made, unless it is committed already.
func (c *chief) epochCheckpoint(ctx context.Context, k int64, at position, loss *epochLoss) error {
	if k <= 0 || k == c.lastCkptStep {
		return nil
	}
	return c.optionalCheckpoint(ctx, k, at, loss)
}

// exportSource chooses the checkpoint to export: the best-scored one the store holds,
// or, when none has a score, the latest (the one this run committed last).
func (c *chief) exportSource(ctx context.Context) (*storage.Manifest, string, error) {
	t := c.t
	infos, err := storage.ListCheckpoints(ctx, t.cfg.Store, t.job.GetId())
	if err != nil {
		return nil, "", fmt.Errorf("worker: choose the checkpoint to export: %w", err)
	}
	var key string
	if best := storage.BestCheckpoints(infos, 1); len(best) == 1 {
		key = best[0].ManifestKey
	} else if c.checkpoint != "" {
		if key, err = storage.KeyOfURI(t.cfg.Store, c.checkpoint); err != nil {
			return nil, "", fmt.Errorf("worker: choose the checkpoint to export: %w", err)
		}
	} else {
		return nil, "", fmt.Errorf("worker: no committed checkpoint of job %s to export", t.job.GetId())
	}
	man, err := storage.ReadManifest(ctx, t.cfg.Store, key)
	if err != nil {
		return nil, "", fmt.Errorf("worker: read the checkpoint to export: %w", err)
	}
	return man, t.cfg.Store.URI(key), nil
}

// loadCheckpoint reads a committed checkpoint's parameters into dst (every object's
// size and sha256 checked against the manifest), checking that it is of this model.
func (c *chief) loadCheckpoint(ctx context.Context, man *storage.Manifest, dst []float32) error {
	if man.LayoutHash != c.m.LayoutHash() || man.TotalParams != uint64(len(dst)) {
		return fmt.Errorf("worker: checkpoint of step %d has layout %s of %d parameters, the model has %s of %d",
			man.Step, man.LayoutHash, man.TotalParams, c.m.LayoutHash(), len(dst))
	}
	for i, o := range man.Objects {
		ck, err := paramserver.LoadShardRange(ctx, c.t.cfg.Store, man, o.Shard, paramserver.Range{Offset: o.Offset, Length: o.Length})
		if err != nil {
			return fmt.Errorf("worker: load checkpoint of step %d, objects[%d]: %w", man.Step, i, err)
		}
		copy(dst[o.Offset:o.Offset+o.Length], ck.Params)
	}
	return nil
}

// exportedFrom describes the exported checkpoint for the job record.
func exportedFrom(man *storage.Manifest, uri string) *cohortv1.ExportedFrom {
	e := &cohortv1.ExportedFrom{Checkpoint: uri, Step: man.Step, Epoch: int32(man.Epoch)}
	if s := man.Score; s != nil {
		e.Metric, e.Mode, e.Score, e.Epoch = s.Metric, s.Mode, s.Value, int32(s.Epoch)
	}
	return e
}
