package api

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// shardLossBackend is a Backend that can act on a worker's unreachable shard primary;
// *server.Server is one.
type shardLossBackend interface {
	// SuspectShardLoss confirms and acts on the report that the primary of shard of
	// job is unreachable (see server.Server.SuspectShardLoss).
	SuspectShardLoss(ctx context.Context, jobID string, generation uint64, shard int) (bool, error)
}

// reportShardLoss hands a worker's unreachable shard primary to the leader (forwarded
// from a follower).
func (s *agentService) reportShardLoss(ctx context.Context, req *cohortv1.ReportSessionLossRequest) (*cohortv1.ReportSessionLossResponse, error) {
	if req.Shard < 0 {
		return nil, toStatus(fmt.Errorf("%w: shard %d", ErrInvalidArgument, req.Shard))
	}
	b, ok := s.b.(shardLossBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this coordinator does not act on lost shards")
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.ReportSessionLossResponse, error) {
		suspected, err := b.SuspectShardLoss(ctx, req.JobId, req.Generation, int(req.Shard))
		if err != nil {
			return nil, err
		}
		return &cohortv1.ReportSessionLossResponse{Suspected: suspected}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ReportSessionLossResponse, error) {
		return cohortv1.NewAgentServiceClient(c).ReportSessionLoss(ctx, req)
	})
}

// peerAddress returns, for a PS_SHARD allocation of a job with replicated shards, the
// data address of the node of the live other copy of the same shard (the backup for
// the primary, the primary for the backup), or "" when there is none.
func peerAddress(snap *state.StateSnapshot, ws memdb.WatchSet, a *cohortv1.Allocation) (addr, nodeID string, err error) {
	allocs, err := snap.AllocsByJob(ws, a.JobId)
	if err != nil {
		return "", "", err
	}
	for _, o := range allocs {
		if o.Id == a.Id || o.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD || o.Index != a.Index ||
			o.Replica == a.Replica || state.TaskTerminal(o.State) {
			continue
		}
		n, err := snap.NodeByID(ws, o.NodeId)
		if err != nil || n == nil {
			return "", "", err
		}
		return n.DataAddress, o.NodeId, nil
	}
	return "", "", nil
}
