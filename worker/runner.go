// Package worker is the worker side of Cohort: the runner that executes training tasks
// assigned to a worker node, and the data-parallel training loop itself (data loading,
// model, gradient computation, parameter-server traffic, evaluation, checkpoints and
// export).
package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Store is where checkpoints and exports are written.
	Store storage.Blob
	// OnShardLost, when set, is told that a job's shard primary is unreachable
	// (TrainerConfig.OnShardLost).
	OnShardLost func(jobID string, generation uint64, shard int)
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
	// TaskLogs, when set, writes each task's log lines to storage as well (`cohort job
	// logs`); nil: the node's log only.
	TaskLogs *tasklog.Config
	// DataRoots is TrainerConfig.DataRoots: the directories jobs' file:// data may name
	// (empty: DefaultDataRoots, the working directory).
	DataRoots []string
	// GPUs is TrainerConfig.GPUs: the node's GPUs (nil: none).
	GPUs *GPUSet
	// ProgressInterval and ProgressEverySteps are TrainerConfig's: how often a chief
	// reports progress within an epoch.
	ProgressInterval   time.Duration
	ProgressEverySteps int
}

// Runner runs TASK_KIND_WORKER allocations: one training loop per allocation.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger

	mu      sync.Mutex
	done    map[string]chan struct{}
	members map[string]*MembershipWatch  // allocation ID -> its trainer's membership
	records map[string]*CheckpointRecord // allocation ID -> the job record's checkpoint
}

var (
	_ agent.Runner  = (*Runner)(nil)
	_ agent.Updater = (*Runner)(nil)
)

// NewRunner returns a worker Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("worker: RunnerConfig.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, log: cfg.Logger, done: map[string]chan struct{}{}, members: map[string]*MembershipWatch{},
		records: map[string]*CheckpointRecord{}}, nil
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
	members := NewMembershipWatch(MembershipOf(a))
	record := NewCheckpointRecord(a.GetJob().GetCheckpoint())
	r.mu.Lock()
	r.done[alloc.GetId()] = done
	r.members[alloc.GetId()] = members
	r.records[alloc.GetId()] = record
	r.mu.Unlock()
	go func() {
		defer close(done)
		log, closeTaskLog := r.taskLogger(a)
		// The task's log is closed (its last lines written to storage) before the final
		// report goes out: whoever sees the job end can read the whole log.
		closeLog := sync.OnceFunc(closeTaskLog)
		defer closeLog()
		send(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING})
		t, err := NewTrainer(TrainerConfig{
			Assignment:  a,
			OnShardLost: r.cfg.OnShardLost,
			Store:       r.cfg.Store,
			DialOptions: r.cfg.DialOptions,
			S3:          r.cfg.S3,
			Logger:      log.With("job_id", alloc.GetJobId(), "rank", alloc.GetIndex()),
			Report:      send,
			Metrics:     r.cfg.Metrics,
			Membership:  members,
			Record:      record,
			DataRoots:   r.cfg.DataRoots,
			GPUs:        r.cfg.GPUs,

			CheckpointGrace:    r.cfg.CheckpointGrace,
			ProgressInterval:   r.cfg.ProgressInterval,
			ProgressEverySteps: r.cfg.ProgressEverySteps,
		})
		if err == nil {
			var res *Result
			res, err = t.Run(ctx)
			if err == nil {
				closeLog()
				send(&cohortv1.TaskReport{
					State:      cohortv1.TaskState_TASK_STATE_SUCCEEDED,
					Message:    strings.Join(res.Undefined, "; "),
					Metrics:    res.Metrics,
					Checkpoint: res.Checkpoint,
					Exports:    res.Exports,
					Progress:   res.Progress,
					Report:     res.Report,
					Gate:       res.Gate,

					ExportedFrom: res.ExportedFrom,
					EarlyStop:    res.EarlyStop,
				})
				return
			}
		}
		if ctx.Err() != nil {
			// Stopped by the coordinator: nothing to report.
			log.Info("training task stopped", "alloc_id", alloc.GetId())
			return
		}
		log.Error("training task failed", "alloc_id", alloc.GetId(), "err", err)
		closeLog()
		send(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_FAILED, Message: err.Error(), Permanent: IsPermanent(err)})
	}()
}

// Update implements agent.Updater: a running task's job changed its membership (a
// newer generation, with this worker's new rank and the new world size), which the
// training loop follows without a restart, or its record points at another checkpoint,
// which the chief's retention follows (TrainerConfig.Record).
func (r *Runner) Update(a *cohortv1.Assignment) {
	r.mu.Lock()
	w, rec := r.members[a.GetAllocation().GetId()], r.records[a.GetAllocation().GetId()]
	r.mu.Unlock()
	if w == nil {
		return
	}
	if uri := a.GetJob().GetCheckpoint(); uri != "" {
		rec.Set(uri)
	}
	if m := MembershipOf(a); w.Set(m) {
		r.log.Info("training task membership changed", "alloc_id", a.GetAllocation().GetId(), "job_id", a.GetJob().GetId(),
			"generation", m.Generation, "rank", m.Rank, "workers", m.World)
	}
}

// Stop implements agent.Runner: the task's context is already cancelled; Stop waits for
// the training goroutine to return.
func (r *Runner) Stop(allocationID string) {
	r.mu.Lock()
	done := r.done[allocationID]
	delete(r.done, allocationID)
	delete(r.members, allocationID)
	delete(r.records, allocationID)
	r.mu.Unlock()
	if done != nil {
		<-done
	}
}
