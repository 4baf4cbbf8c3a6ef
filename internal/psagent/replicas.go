package psagent

import (
	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Replicated shards (spec.resources.parameterServers.replicas: 2). A backup allocation
// (replica 1) hosts its shard as a backup: it starts empty and receives its state and
// every update from its primary, never from a checkpoint. A primary allocation points
// its shard at the backup's data address (the assignment's peer_address) and follows
// it when the coordinator places another one. When the coordinator promotes a backup
// (its allocation becomes replica 0 under a newer generation) the shard is promoted in
// place, keeping its values and version.

// startBackup starts a backup allocation's shard.
func (r *Runner) startBackup(a *cohortv1.Assignment, cfg paramserver.ShardConfig, key shardKey, rep *cohortv1.TaskReport,
	report agent.ReportFunc, fail func(error)) {
	alloc := a.GetAllocation()
	r.mu.Lock()
	r.members[alloc.GetId()] = membership{gen: cfg.Generation, workers: cfg.Workers, replica: alloc.GetReplica(), peer: a.GetPeerAddress()}
	if o, ok := r.owners[key]; !ok || o.gen <= cfg.Generation {
		r.owners[key] = owner{alloc: alloc.GetId(), gen: cfg.Generation}
	}
	r.mu.Unlock()
	if err := r.cfg.Server.AddBackupShard(cfg, a.GetPeerNodeId()); err != nil {
		fail(err)
		return
	}
	r.mu.Lock()
	r.shards[alloc.GetId()] = key
	r.mu.Unlock()
	r.backupReports.Store(alloc.GetId(), report)
	r.cfg.Logger.Info("backup shard started", "alloc_id", alloc.GetId(), "job_id", key.job, "shard", key.shard,
		"primary", a.GetPeerAddress())
	rep.State = cohortv1.TaskState_TASK_STATE_RUNNING
	report(rep)
}

// promote promotes the allocation's backup shard to primary at m's generation.
func (r *Runner) promote(allocID string, key shardKey, m membership) {
	if err := r.cfg.Server.PromoteShard(key.job, key.shard, m.gen, m.workers); err != nil {
		// The coordinator promoted a copy that cannot serve (it never received its
		// primary's state: the primary died before its first step). The task fails, and
		// the job, with no live copy of the shard left, falls back to its checkpoint.
		r.cfg.Logger.Error("backup shard promotion failed", "alloc_id", allocID, "job_id", key.job, "shard", key.shard,
			"generation", m.gen, "err", err)
		if rep, ok := r.backupReports.Load(allocID); ok {
			rep.(agent.ReportFunc)(&cohortv1.TaskReport{AllocationId: allocID, JobId: key.job,
				State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "promoted backup cannot serve: " + err.Error()})
		}
		return
	}
	r.cfg.Logger.Info("backup shard promoted to primary", "alloc_id", allocID, "job_id", key.job, "shard", key.shard,
		"generation", m.gen, "workers", m.workers)
}

// setBackup points a primary allocation's shard at its backup (none when peer is "").
func (r *Runner) setBackup(allocID string, key shardKey, peer string) {
	if err := r.cfg.Server.SetBackup(key.job, key.shard, peer); err != nil {
		r.cfg.Logger.Warn("parameter shard backup not set", "alloc_id", allocID, "job_id", key.job, "shard", key.shard,
			"backup", peer, "err", err)
	}
}
