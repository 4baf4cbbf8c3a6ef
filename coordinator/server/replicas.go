package server

import (
	"context"
	"errors"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/scheduler"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// backupPass places a new backup for every shard of a running job with replicated
// shards (parameterServers.replicas: 2) that has none: its backup's node was lost, or
// the backup was promoted when the primary was. It runs after placement and growth, in
// the capacity they left; a backup that does not fit now waits for the next pass. Each
// job's backups are re-checked against the newest state and committed as one
// PlaceBackupsCommand. It reports whether a command failed.
func (s *Server) backupPass(ctx context.Context, snap *state.StateSnapshot, cluster *scheduler.Cluster) (failed bool) {
	running, err := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_RUNNING)
	if err != nil {
		s.logger.Error("scheduling pass: read running jobs", "err", err)
		return true
	}
	for _, job := range running {
		if scheduler.ShardReplicas(job) < 2 || ctx.Err() != nil {
			continue
		}
		allocs, err := snap.AllocsByJob(nil, job.Id)
		if err != nil {
			s.logger.Error("scheduling pass: read allocations", "job", job.Id, "err", err)
			return true
		}
		plan, ok := cluster.BackupPlan(job, allocs)
		if !ok {
			continue
		}
		if err := scheduler.Fits(s.State().Snapshot(), plan); err != nil {
			s.logger.Debug("backups rejected by the plan applier", "job", job.Id, "err", err)
			continue
		}
		_, err = s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_PlaceBackups{PlaceBackups: &cohortv1.PlaceBackupsCommand{
			JobId: job.Id, Generation: job.Generation, Add: plan.Allocations}}})
		switch {
		case errors.Is(err, fsm.ErrStaleGeneration), errors.Is(err, fsm.ErrNotFound), errors.Is(err, fsm.ErrInvalidCommand):
			s.logger.Debug("backups refused", "job", job.Id, "err", err)
		case err != nil:
			if ctx.Err() == nil {
				s.logger.Warn("backups not committed", "job", job.Id, "err", err)
			}
			failed = true
		default:
			nodes := make([]string, len(plan.Allocations))
			for i, a := range plan.Allocations {
				nodes[i] = a.NodeId
			}
			s.logger.Info("shard backups placed", "job", job.Id, "generation", job.Generation, "backups", len(plan.Allocations), "nodes", nodes)
		}
	}
	return failed
}
