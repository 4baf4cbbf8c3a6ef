// Package psagent runs parameter-server shard allocations on a paramserver node: it
// turns an assignment into a shard hosted by the node's paramserver.Server.
package psagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Config configures a Runner.
type Config struct {
	// Server hosts the shards; the node serves it on its data address.
	Server *paramserver.Server
	// Store is where shards write checkpoints.
	Store storage.Blob
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

// Runner runs TASK_KIND_PS_SHARD allocations.
type Runner struct {
	cfg Config

	mu     sync.Mutex
	shards map[string]shardKey // allocation ID -> shard
}

type shardKey struct {
	job   string
	shard int
}

var _ agent.Runner = (*Runner)(nil)

// New returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Server == nil || cfg.Store == nil {
		return nil, errors.New("psagent: Config.Server and Config.Store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, shards: map[string]shardKey{}}, nil
}

// Kind implements agent.Runner.
func (r *Runner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_PS_SHARD }

// Start implements agent.Runner: it creates the shard and reports it running. The shard
// serves until the allocation is stopped.
func (r *Runner) Start(_ context.Context, a *cohortv1.Assignment, report agent.ReportFunc) {
	alloc, job := a.GetAllocation(), a.GetJob()
	rep := &cohortv1.TaskReport{AllocationId: alloc.GetId(), JobId: alloc.GetJobId()}
	cfg, err := ShardConfig(a, r.cfg.Store)
	if err == nil {
		err = r.cfg.Server.AddShard(cfg)
	}
	if err != nil {
		r.cfg.Logger.Error("parameter shard failed to start", "alloc_id", alloc.GetId(), "err", err)
		rep.State, rep.Message = cohortv1.TaskState_TASK_STATE_FAILED, err.Error()
		report(rep)
		return
	}
	r.mu.Lock()
	r.shards[alloc.GetId()] = shardKey{job: job.GetId(), shard: int(alloc.GetIndex())}
	r.mu.Unlock()
	rep.State = cohortv1.TaskState_TASK_STATE_RUNNING
	report(rep)
}

// Stop implements agent.Runner: it drops the shard.
func (r *Runner) Stop(allocationID string) {
	r.mu.Lock()
	k, ok := r.shards[allocationID]
	delete(r.shards, allocationID)
	r.mu.Unlock()
	if ok {
		r.cfg.Server.RemoveShard(k.job, k.shard)
	}
}

// ShardConfig derives a shard's configuration from its assignment.
func ShardConfig(a *cohortv1.Assignment, store storage.Blob) (paramserver.ShardConfig, error) {
	job, alloc := a.GetJob(), a.GetAllocation()
	spec, err := jobs.Parse(job.GetSpecYaml())
	if err != nil {
		return paramserver.ShardConfig{}, fmt.Errorf("psagent: job spec: %w", err)
	}
	tr := spec.Spec.Training
	return paramserver.ShardConfig{
		JobID:      job.GetId(),
		Shard:      int(alloc.GetIndex()),
		Generation: alloc.GetGeneration(),
		Workers:    int(job.GetWorkerCount()),
		Optimizer: paramserver.OptimizerConfig{
			Name:         tr.Optimizer.Name,
			LearningRate: tr.Optimizer.LearningRate,
			Momentum:     tr.Optimizer.Momentum,
			Beta1:        tr.Optimizer.Beta1,
			Beta2:        tr.Optimizer.Beta2,
			Epsilon:      tr.Optimizer.Epsilon,
			WeightDecay:  tr.Optimizer.WeightDecay,
		},
		Mode:      tr.Consistency.Mode,
		Staleness: tr.Consistency.Staleness,
		Store:     store,
	}, nil
}
