package paramserver

import (
	"bytes"
	"context"
	"fmt"

	"github.com/cohort-dev/cohort/storage"
)

// LoadShardRange assembles the checkpoint of the parameter range rng of the job from a
// committed manifest: every object overlapping rng is read, its size and sha256 are
// checked against the manifest, it is decoded, and its header is checked against the
// manifest (job, step, range, layout; in async and bounded modes an object may hold a
// later version than the manifest's step, and the result has the latest of those).
// rng need not match the shards that wrote the
// checkpoint, so a job can resume with another shard count. shard is the index the
// result is labelled with. Nothing is written; any failure is an error naming the
// object.
func LoadShardRange(ctx context.Context, store storage.Blob, man *storage.Manifest, shard int, rng Range) (*ShardCheckpoint, error) {
	if man == nil {
		return nil, fmt.Errorf("%w: nil manifest", ErrBadCheckpoint)
	}
	if err := man.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if rng.Length == 0 || rng.Length > MaxShardParams || rng.Offset > man.TotalParams || rng.Length > man.TotalParams-rng.Offset {
		return nil, fmt.Errorf("%w: range [%d,+%d) outside the checkpoint's %d parameters", ErrBadCheckpoint, rng.Offset, rng.Length, man.TotalParams)
	}
	out := &ShardCheckpoint{
		JobID: man.JobID, Shard: shard, Step: man.Step, Range: rng,
		TotalParams: man.TotalParams, LayoutHash: man.LayoutHash,
		Params: make([]float32, rng.Length),
	}
	// In async and bounded modes every shard checkpoints the version it reached.
	relaxed := man.Consistency == ModeAsync || man.Consistency == ModeBounded
	covered := uint64(0)
	first := true
	for i, o := range man.Objects {
		lo, hi := max(o.Offset, rng.Offset), min(o.Offset+o.Length, rng.End())
		if lo >= hi {
			continue
		}
		data, err := storage.ReadCheckpointObject(ctx, store, o)
		if err != nil {
			return nil, fmt.Errorf("%w: job %s step %d: objects[%d]: %w", ErrBadCheckpoint, man.JobID, man.Step, i, err)
		}
		ck, err := ReadShardCheckpoint(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("job %s step %d: objects[%d] %q: %w", man.JobID, man.Step, i, o.Key, err)
		}
		switch {
		case ck.JobID != man.JobID:
			return nil, fmt.Errorf("%w: %q holds job %q, manifest is job %q", ErrBadCheckpoint, o.Key, ck.JobID, man.JobID)
		case ck.Step != man.Step && (!relaxed || ck.Step < man.Step):
			return nil, fmt.Errorf("%w: %q holds step %d, manifest is step %d", ErrBadCheckpoint, o.Key, ck.Step, man.Step)
		case ck.Range.Offset != o.Offset || ck.Range.Length != o.Length:
			return nil, fmt.Errorf("%w: %q holds range [%d,+%d), manifest records [%d,+%d)", ErrBadCheckpoint, o.Key, ck.Range.Offset, ck.Range.Length, o.Offset, o.Length)
		case ck.LayoutHash != "" && man.LayoutHash != "" && ck.LayoutHash != man.LayoutHash:
			return nil, fmt.Errorf("%w: %q has layout %q, manifest has %q", ErrBadCheckpoint, o.Key, ck.LayoutHash, man.LayoutHash)
		}
		out.Step = max(out.Step, ck.Step)
		if first {
			out.Optimizer, out.OptimizerStep = ck.Optimizer, ck.OptimizerStep
			out.State = make([][]float32, len(ck.State))
			for j := range out.State {
				out.State[j] = make([]float32, rng.Length)
			}
			first = false
		} else if ck.Optimizer != out.Optimizer {
			return nil, fmt.Errorf("%w: %q has optimizer %q, another object %q", ErrBadCheckpoint, o.Key, ck.Optimizer, out.Optimizer)
		}
		src := lo - o.Offset
		dst := lo - rng.Offset
		n := hi - lo
		copy(out.Params[dst:dst+n], ck.Params[src:src+n])
		for j, s := range ck.State {
			copy(out.State[j][dst:dst+n], s[src:src+n])
		}
		covered += n
	}
	if covered != rng.Length {
		return nil, fmt.Errorf("%w: job %s step %d: objects cover %d of the %d parameters of [%d,+%d)", ErrBadCheckpoint, man.JobID, man.Step, covered, rng.Length, rng.Offset, rng.Length)
	}
	return out, nil
}
