package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

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

// shardProbeTimeout bounds the leader's own attempt to reach a parameter-server node a
// worker reported unreachable.
const shardProbeTimeout = 300 * time.Millisecond

// SuspectShardLoss handles a worker's report that the primary of shard of job (at
// generation) is unreachable: the fast sign of a dead parameter-server process, for a
// job with replicated shards. The leader confirms it by connecting to the node's data
// address itself. When it cannot either, the node is marked DOWN at once (through
// the heartbeat timer, as when its TTL runs out), which promotes the backups of the
// primaries it held in the same Raft entry; when it can, the node is only suspect and
// is marked down SuspectGrace after its last heartbeat unless it heartbeats meanwhile
// (a path broken between the worker and the node alone). It reports whether the node
// is now down or suspect. A report of an older generation, of a job without backups,
// or of a shard whose primary is not live is ignored.
func (s *Server) SuspectShardLoss(ctx context.Context, jobID string, generation uint64, shard int) (bool, error) {
	if !s.IsLeader() {
		return false, s.notLeaderError()
	}
	snap := s.State().Snapshot()
	job, err := snap.JobByID(nil, jobID)
	if err != nil {
		return false, fmt.Errorf("server: shard loss: %w", err)
	}
	if job == nil || generation < job.GetGeneration() || scheduler.ShardReplicas(job) < 2 {
		return false, nil
	}
	allocs, err := snap.AllocsByJob(nil, jobID)
	if err != nil {
		return false, fmt.Errorf("server: shard loss: %w", err)
	}
	for _, a := range allocs {
		if a.GetKind() != cohortv1.TaskKind_TASK_KIND_PS_SHARD || a.GetReplica() != 0 || int(a.GetIndex()) != shard || !liveAllocState(a.GetState()) {
			continue
		}
		node, err := snap.NodeByID(nil, a.GetNodeId())
		if err != nil || node == nil {
			return false, err
		}
		grace, why := s.config.SuspectGrace, "reachable from the leader"
		d := net.Dialer{Timeout: shardProbeTimeout}
		conn, err := d.DialContext(ctx, "tcp", node.GetDataAddress())
		if err != nil {
			grace, why = 0, "unreachable from the leader too: "+err.Error()
		} else {
			_ = conn.Close()
		}
		at, ok := s.heartbeats.suspect(a.GetNodeId(), grace)
		if !ok {
			return false, nil
		}
		s.logger.Warn("a worker cannot reach a shard primary; its node is suspect", "job", jobID, "shard", shard,
			"generation", generation, "node", a.GetNodeId(), "alloc_id", a.GetId(), "confirmation", why, "down_unless_heartbeat_by", at)
		return true, nil
	}
	return false, nil
}
