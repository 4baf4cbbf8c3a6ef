package psagent

import (
	"log/slog"

	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// openTaskLog opens the task log of an assigned shard (Config.TaskLogs set) and
// returns the logger of the runner's lines about it.
func (r *Runner) openTaskLog(a *cohortv1.Assignment) *slog.Logger {
	if r.cfg.TaskLogs == nil {
		return r.cfg.Logger
	}
	alloc := a.GetAllocation()
	gen := alloc.GetGeneration()
	if gen == 0 {
		gen = a.GetJob().GetGeneration()
	}
	w, err := r.cfg.TaskLogs.OpenShard(alloc.GetJobId(), int(alloc.GetIndex()), gen)
	if err != nil {
		r.cfg.Logger.Warn("task log not kept in storage", "alloc_id", alloc.GetId(), "err", err)
		return r.cfg.Logger
	}
	if old, loaded := r.logs.Swap(alloc.GetId(), w); loaded {
		_ = old.(*tasklog.Writer).Close()
	}
	return w.Logger(r.cfg.Logger)
}

// closeTaskLog writes the final segment of an allocation's task log, if one is open.
func (r *Runner) closeTaskLog(allocationID string) {
	if w, ok := r.logs.LoadAndDelete(allocationID); ok {
		_ = w.(*tasklog.Writer).Close() // Close logs its own failure
	}
}
