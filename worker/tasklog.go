package worker

import (
	"log/slog"

	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// taskLogger returns the logger of an assigned training task: the runner's, and with
// RunnerConfig.TaskLogs set also the task's log in storage, which the returned func
// flushes (the final segment) and closes; call it when the task ends.
func (r *Runner) taskLogger(a *cohortv1.Assignment) (*slog.Logger, func()) {
	alloc := a.GetAllocation()
	if r.cfg.TaskLogs == nil {
		return r.log, func() {}
	}
	gen := alloc.GetGeneration()
	if gen == 0 {
		gen = a.GetJob().GetGeneration()
	}
	w, err := r.cfg.TaskLogs.Open(alloc.GetJobId(), tasklog.TaskName(alloc.GetKind(), alloc.GetIndex()), gen)
	if err != nil {
		r.log.Warn("task log not kept in storage", "alloc_id", alloc.GetId(), "err", err)
		return r.log, func() {}
	}
	return w.Logger(r.log), func() { _ = w.Close() } // Close logs its own failure
}
