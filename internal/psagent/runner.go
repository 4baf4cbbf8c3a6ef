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
	"github.com/cohort-dev/cohort/internal/tasklog"
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
	// TaskLogs, when set, writes each shard's log lines to storage as well (`cohort
	// job logs`): the runner's own and, when Server logs through this Router, the
	// shard's. nil: the node's log only.
	TaskLogs *tasklog.Router
}

// Runner runs TASK_KIND_PS_SHARD allocations.
type Runner struct {
	cfg Config

	mu     sync.Mutex
	shards map[string]shardKey // allocation ID -> shard
	// owners says which allocation a hosted shard belongs to: the one of the newest
	// generation started for it. A job placed again (generation 2) may reuse the same
	// (job, shard) on this node while the generation-1 allocation is still to be
	// stopped; that stop must not remove the shard generation 2 now trains on.
	owners map[shardKey]owner
	// members holds the newest membership (generation, workers) each allocation was
	// given; a shard restoring in the background installs it once it exists.
	members map[string]membership
	logs    sync.Map // allocation ID -> its open *tasklog.Writer
	// backupReports holds the report function of each backup allocation, which fails
	// the task when its promotion cannot be carried out (replicas.go).
	backupReports sync.Map
}

type membership struct {
	gen     uint64
	workers int
	// replica is the allocation's copy (0 primary, 1 backup) and peer the other copy's
	// data address (replicas.go).
	replica int32
	peer    string
}

type shardKey struct {
	job   string
	shard int
}

type owner struct {
	alloc string
	gen   uint64
}

var (
	_ agent.Runner  = (*Runner)(nil)
	_ agent.Updater = (*Runner)(nil)
)

// New returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Server == nil || cfg.Store == nil {
		return nil, errors.New("psagent: Config.Server and Config.Store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, shards: map[string]shardKey{}, owners: map[shardKey]owner{}, members: map[string]membership{}}, nil
}

// Kind implements agent.Runner.
func (r *Runner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_PS_SHARD }

// Start implements agent.Runner: it creates the shard and reports it running. The shard
// serves until the allocation is stopped. When the job record points at a committed
// checkpoint (a job placed again after a stop, a preemption or a lost shard), the shard
// is restored from it, parameters and optimizer state, in the background; workers
// retry until it exists. A checkpoint that cannot be read or verified fails the task.
func (r *Runner) Start(ctx context.Context, a *cohortv1.Assignment, report agent.ReportFunc) {
	alloc, job := a.GetAllocation(), a.GetJob()
	rep := &cohortv1.TaskReport{AllocationId: alloc.GetId(), JobId: alloc.GetJobId()}
	log := r.openTaskLog(a)
	fail := func(err error) {
		log.Error("parameter shard failed to start", "alloc_id", alloc.GetId(), "job_id", job.GetId(), "shard", alloc.GetIndex(), "err", err)
		rep.State, rep.Message = cohortv1.TaskState_TASK_STATE_FAILED, err.Error()
		r.closeTaskLog(alloc.GetId())
		report(rep)
	}
	cfg, err := ShardConfig(a, r.cfg.Store)
	if err != nil {
		fail(err)
		return
	}
	key := shardKey{job: job.GetId(), shard: int(alloc.GetIndex())}
	r.cfg.Server.SetAllowedWorkers(key.job, key.shard, cfg.Generation, a.GetAllowedWorkers())
	if alloc.GetReplica() > 0 {
		r.startBackup(a, cfg, key, rep, report, fail)
		return
	}
	r.mu.Lock()
	r.members[alloc.GetId()] = membership{gen: cfg.Generation, workers: cfg.Workers, peer: a.GetPeerAddress()}
	if o, ok := r.owners[key]; !ok || o.gen <= cfg.Generation {
		r.owners[key] = owner{alloc: alloc.GetId(), gen: cfg.Generation}
	}
	r.mu.Unlock()
	if job.GetCheckpoint() == "" {
		if err := r.cfg.Server.AddShard(cfg); err != nil {
			fail(err)
			return
		}
		r.mu.Lock()
		r.shards[alloc.GetId()] = key
		r.mu.Unlock()
		r.setBackup(alloc.GetId(), key, a.GetPeerAddress())
		rep.State = cohortv1.TaskState_TASK_STATE_RUNNING
		report(rep)
		return
	}
	r.mu.Lock()
	r.shards[alloc.GetId()] = key
	r.mu.Unlock()
	go func() {
		err := RestoreShard(ctx, r.cfg.Server, cfg, r.cfg.Store, job.GetCheckpoint(), int(job.GetShardCount()))
		if ctx.Err() != nil {
			// Stopped meanwhile: Stop may have run before the shard existed. A newer
			// allocation's shard under the same key stays.
			r.mu.Lock()
			o, ok := r.owners[key]
			mine := !ok || o.alloc == alloc.GetId()
			if mine {
				delete(r.owners, key)
			}
			r.mu.Unlock()
			if mine {
				r.cfg.Server.RemoveShard(key.job, key.shard)
			}
			return
		}
		if err != nil {
			r.mu.Lock()
			delete(r.shards, alloc.GetId()) // nothing of it is installed
			if o := r.owners[key]; o.alloc == alloc.GetId() {
				delete(r.owners, key)
			}
			r.mu.Unlock()
			fail(err)
			return
		}
		log.Info("parameter shard restored from checkpoint", "alloc_id", alloc.GetId(), "job_id", job.GetId(),
			"shard", alloc.GetIndex(), "checkpoint", job.GetCheckpoint())
		// A membership change that came while the shard was restoring.
		r.mu.Lock()
		m, changed := r.members[alloc.GetId()]
		r.mu.Unlock()
		if changed && m.gen > cfg.Generation {
			r.setGeneration(alloc.GetId(), key, m)
		}
		r.setBackup(alloc.GetId(), key, m.peer)
		rep.State = cohortv1.TaskState_TASK_STATE_RUNNING
		report(rep)
	}()
}

// RestoreShard reads the committed checkpoint manifest at manifestURI (a URI of store),
// assembles the slice of shard cfg.Shard of shards (parameters and optimizer state,
// every object checked against the manifest's size and sha256) and installs it in srv
// at the checkpoint's step. Nothing is installed when any check fails.
func RestoreShard(ctx context.Context, srv *paramserver.Server, cfg paramserver.ShardConfig, store storage.Blob, manifestURI string, shards int) error {
	if shards < 1 || cfg.Shard >= shards {
		return fmt.Errorf("psagent: restore job %s shard %d: shard count %d", cfg.JobID, cfg.Shard, shards)
	}
	key, err := storage.KeyOfURI(store, manifestURI)
	if err != nil {
		return fmt.Errorf("psagent: restore job %s shard %d: checkpoint: %w", cfg.JobID, cfg.Shard, err)
	}
	man, err := storage.ReadManifest(ctx, store, key)
	if errors.Is(err, storage.ErrNotFound) {
		// Retention never deletes the checkpoint the job record points at: something
		// outside the job (a person, a bucket lifecycle rule) did.
		return fmt.Errorf("psagent: restore job %s shard %d: the checkpoint the job record points at is gone (deleted outside the job's retention): %w", cfg.JobID, cfg.Shard, err)
	}
	if err != nil {
		return fmt.Errorf("psagent: restore job %s shard %d: %w", cfg.JobID, cfg.Shard, err)
	}
	if man.JobID != cfg.JobID {
		return fmt.Errorf("psagent: restore job %s shard %d: checkpoint %s belongs to job %s", cfg.JobID, cfg.Shard, manifestURI, man.JobID)
	}
	rng := paramserver.Partition(man.TotalParams, shards)[cfg.Shard]
	ck, err := paramserver.LoadShardRange(ctx, store, man, cfg.Shard, rng)
	if err != nil {
		return fmt.Errorf("psagent: restore job %s shard %d from %s: %w", cfg.JobID, cfg.Shard, manifestURI, err)
	}
	if err := srv.RestoreShard(ctx, cfg, ck); err != nil {
		return fmt.Errorf("psagent: restore job %s shard %d from %s: %w", cfg.JobID, cfg.Shard, manifestURI, err)
	}
	return nil
}

// Update implements agent.Updater: the job's membership changed, and the shard installs
// the new generation and worker count (its sync barrier shrinks or grows at once). A
// shard still restoring installs it when the restore is done.
func (r *Runner) Update(a *cohortv1.Assignment) {
	alloc, job := a.GetAllocation(), a.GetJob()
	r.cfg.Server.SetAllowedWorkers(job.GetId(), int(alloc.GetIndex()), alloc.GetGeneration(), a.GetAllowedWorkers())
	workers := int(job.GetActiveWorkers())
	if workers <= 0 {
		workers = int(job.GetWorkerCount())
	}
	m := membership{gen: alloc.GetGeneration(), workers: workers, replica: alloc.GetReplica(), peer: a.GetPeerAddress()}
	r.mu.Lock()
	prev := r.members[alloc.GetId()]
	if m.gen < prev.gen || (m.gen == prev.gen && m.replica == prev.replica && m.peer == prev.peer) {
		r.mu.Unlock()
		return
	}
	r.members[alloc.GetId()] = m
	key, ok := r.shards[alloc.GetId()]
	r.mu.Unlock()
	if !ok {
		return
	}
	switch {
	case prev.replica > 0 && m.replica == 0:
		r.promote(alloc.GetId(), key, m)
	case m.gen > prev.gen:
		r.setGeneration(alloc.GetId(), key, m)
	}
	if m.replica == 0 {
		r.setBackup(alloc.GetId(), key, m.peer)
	} else if m.peer != prev.peer {
		r.cfg.Server.SetBackupPeer(key.job, key.shard, a.GetPeerNodeId())
	}
}

func (r *Runner) setGeneration(allocID string, key shardKey, m membership) {
	err := r.cfg.Server.SetGeneration(key.job, key.shard, m.gen, m.workers)
	switch {
	case err == nil:
		r.cfg.Logger.Info("parameter shard membership changed", "alloc_id", allocID, "job_id", key.job, "shard", key.shard,
			"generation", m.gen, "workers", m.workers)
	case errors.Is(err, paramserver.ErrUnknownShard):
		// Still restoring: Start installs the newest membership when it is done.
	default:
		r.cfg.Logger.Warn("parameter shard membership change not installed", "alloc_id", allocID, "job_id", key.job,
			"shard", key.shard, "generation", m.gen, "workers", m.workers, "err", err)
	}
}

// Stop implements agent.Runner: it drops the allocation's shard, unless a newer
// allocation of the same job and shard index owns it now (a job placed again on this
// node reuses the shard), in which case only the old allocation is forgotten.
func (r *Runner) Stop(allocationID string) {
	r.mu.Lock()
	k, ok := r.shards[allocationID]
	delete(r.shards, allocationID)
	delete(r.members, allocationID)
	r.backupReports.Delete(allocationID)
	o, owned := r.owners[k]
	remove := ok && (!owned || o.alloc == allocationID)
	if remove && owned {
		delete(r.owners, k)
	}
	r.mu.Unlock()
	if remove {
		r.cfg.Server.RemoveShard(k.job, k.shard)
	} else if ok {
		r.cfg.Logger.Info("parameter shard kept for a newer allocation", "alloc_id", allocationID, "job_id", k.job,
			"shard", k.shard, "owner_alloc_id", o.alloc, "owner_generation", o.gen)
	}
	r.closeTaskLog(allocationID)
}

// ShardConfig derives a shard's configuration from its assignment.
func ShardConfig(a *cohortv1.Assignment, store storage.Blob) (paramserver.ShardConfig, error) {
	job, alloc := a.GetJob(), a.GetAllocation()
	spec, err := jobs.Parse(job.GetSpecYaml())
	if err != nil {
		return paramserver.ShardConfig{}, fmt.Errorf("psagent: job spec: %w", err)
	}
	tr := spec.Spec.Training
	workers := int(job.GetActiveWorkers())
	if workers <= 0 {
		workers = int(job.GetWorkerCount())
	}
	return paramserver.ShardConfig{
		JobID:      job.GetId(),
		Shard:      int(alloc.GetIndex()),
		Generation: alloc.GetGeneration(),
		Workers:    workers,
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
