// Package worker is the worker side of Cohort: the runner that executes training tasks
// assigned to a worker node, and the data-parallel training loop itself (data loading,
// model, gradient computation, parameter-server traffic, evaluation, checkpoints and
// export).
package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/agent"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Store is where checkpoints and exports are written.
	Store storage.Blob
	// DialOptions are used to reach parameter-server shards.
	DialOptions []grpc.DialOption
	// S3 is the endpoint and credentials for s3:// data URIs (nil: none).
	S3 *storage.S3Config
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Observer, when set, receives every report the runner sends (tests, CLIs).
	Observer func(*cohortv1.TaskReport)
	// Metrics receives the training tasks' Prometheus metrics (nil: none); create it
	// once per registry with NewMetrics.
	Metrics *Metrics
	// CheckpointGrace is TrainerConfig.CheckpointGrace (0: DefaultCheckpointGrace).
	CheckpointGrace time.Duration
}

// Runner runs TASK_KIND_WORKER allocations: one training loop per allocation.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger

	mu   sync.Mutex
	done map[string]chan struct{}
}

var _ agent.Runner = (*Runner)(nil)

// NewRunner returns a worker Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("worker: RunnerConfig.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, log: cfg.Logger, done: map[string]chan struct{}{}}, nil
}

// Kind implements agent.Runner.
func (r *Runner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_WORKER }

// Start implements agent.Runner: it runs the training loop in its own goroutine.
func (r *Runner) Start(ctx context.Context, a *cohortv1.Assignment, report agent.ReportFunc) {
	alloc := a.GetAllocation()
	send := func(rep *cohortv1.TaskReport) {
		rep.AllocationId = alloc.GetId()
		rep.JobId = alloc.GetJobId()
		if r.cfg.Observer != nil {
			r.cfg.Observer(rep)
		}
		report(rep)
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.done[alloc.GetId()] = done
	r.mu.Unlock()
	go func() {
		defer close(done)
		send(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING})
		t, err := NewTrainer(TrainerConfig{
			Assignment:  a,
			Store:       r.cfg.Store,
			DialOptions: r.cfg.DialOptions,
			S3:          r.cfg.S3,
			Logger:      r.log.With("job_id", alloc.GetJobId(), "rank", alloc.GetIndex()),
			Report:      send,
			Metrics:     r.cfg.Metrics,

			CheckpointGrace: r.cfg.CheckpointGrace,
		})
		if err == nil {
			var res *Result
			res, err = t.Run(ctx)
			if err == nil {
				send(&cohortv1.TaskReport{
					State:      cohortv1.TaskState_TASK_STATE_SUCCEEDED,
					Metrics:    res.Metrics,
					Checkpoint: res.Checkpoint,
					Exports:    res.Exports,
					Progress:   res.Progress,
				})
				return
			}
		}
		if ctx.Err() != nil {
			// Stopped by the coordinator: nothing to report.
			r.log.Info("training task stopped", "alloc_id", alloc.GetId())
			return
		}
		r.log.Error("training task failed", "alloc_id", alloc.GetId(), "err", err)
		send(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_FAILED, Message: err.Error()})
	}()
}

// Stop implements agent.Runner: the task's context is already cancelled; Stop waits for
// the training goroutine to return.
func (r *Runner) Stop(allocationID string) {
	r.mu.Lock()
	done := r.done[allocationID]
	delete(r.done, allocationID)
	r.mu.Unlock()
	if done != nil {
		<-done
	}
}
