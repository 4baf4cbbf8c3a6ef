package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// agentService implements cohortv1.AgentServiceServer.
type agentService struct {
	cohortv1.UnimplementedAgentServiceServer
	b      Backend
	cfg    Config
	logger *slog.Logger
}

// NewAgentService returns the AgentService handlers (for node agents) over b.
func NewAgentService(b Backend, cfg Config) cohortv1.AgentServiceServer {
	cfg = cfg.withDefaults()
	return &agentService{b: b, cfg: cfg, logger: cfg.Logger.With("component", "api.agent")}
}

// nodeIDFromName derives a node ID from its name: lower case, [a-z0-9.-] only.
func nodeIDFromName(name string) string {
	id := strings.Trim(jobIDUnsafe.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(id) > 128 {
		id = id[:128]
	}
	return id
}

// RegisterNode registers (or re-registers) a node and returns it as stored, with its
// new registration generation. A node without an ID gets one derived from its name.
func (s *agentService) RegisterNode(ctx context.Context, req *cohortv1.RegisterNodeRequest) (*cohortv1.RegisterNodeResponse, error) {
	if req.Node == nil {
		return nil, toStatus(fmt.Errorf("%w: node is required", ErrInvalidArgument))
	}
	if err := s.checkClusterID(req.Node.GetId(), req.ClusterId); err != nil {
		return nil, err
	}
	node := proto.Clone(req.Node).(*cohortv1.Node)
	if node.Id == "" {
		node.Id = nodeIDFromName(node.Name)
	}
	if node.Id == "" {
		node.Id = "node-" + randomHex(4)
	}
	if node.Name == "" {
		node.Name = node.Id
	}
	if err := checkID("node.id", node.Id); err != nil {
		return nil, toStatus(err)
	}
	if len(node.Roles) == 0 {
		return nil, toStatus(fmt.Errorf("%w: node.roles is empty", ErrInvalidArgument))
	}
	for _, r := range node.Roles {
		if r != cohortv1.NodeRole_NODE_ROLE_WORKER && r != cohortv1.NodeRole_NODE_ROLE_PARAMSERVER {
			return nil, toStatus(fmt.Errorf("%w: node.roles has unknown role %v", ErrInvalidArgument, r))
		}
	}
	c := node.Capacity
	if c == nil || c.CpuMillis < 0 || c.MemoryBytes < 0 || c.Gpus < 0 || c.GpuMemoryBytes < 0 {
		return nil, toStatus(fmt.Errorf("%w: node.capacity is missing or negative", ErrInvalidArgument))
	}
	if c.Gpus == 0 && (c.GpuModel != "" || c.GpuMemoryBytes != 0) {
		return nil, toStatus(fmt.Errorf("%w: node.capacity names a GPU model or GPU memory but has no GPUs", ErrInvalidArgument))
	}
	if slices.Contains(node.Roles, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER) && node.DataAddress == "" {
		return nil, toStatus(fmt.Errorf("%w: a paramserver node needs a data_address", ErrInvalidArgument))
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.RegisterNodeResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_RegisterNode{
			RegisterNode: &cohortv1.RegisterNodeCommand{Node: node},
		}})
		if err != nil {
			return nil, err
		}
		stored, ok := out.(*cohortv1.Node)
		if !ok {
			return nil, fmt.Errorf("api: register node: unexpected response %T", out)
		}
		s.logger.Info("node registered", "node", stored.Id, "generation", stored.RegistrationGeneration)
		return &cohortv1.RegisterNodeResponse{Node: stored, ClusterId: s.b.State().ClusterID()}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.RegisterNodeResponse, error) {
		return cohortv1.NewAgentServiceClient(c).RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: node, ClusterId: req.ClusterId})
	})
}

// Heartbeat resets the node's heartbeat TTL on the leader (forwarded from a follower).
func (s *agentService) Heartbeat(ctx context.Context, req *cohortv1.HeartbeatRequest) (*cohortv1.HeartbeatResponse, error) {
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, toStatus(err)
	}
	if err := checkHeartbeatUsage(req); err != nil {
		return nil, toStatus(err)
	}
	if err := s.checkClusterID(req.NodeId, req.ClusterId); err != nil {
		return nil, err
	}
	return leaderCall(ctx, s.cfg, func(context.Context) (*cohortv1.HeartbeatResponse, error) {
		beat := s.b.Heartbeat
		if l := liveOf(s.b); l != nil {
			beat = func(id string, gen uint64) error { return l.HeartbeatWithUsage(id, gen, req.Usage, req.Tasks) }
		}
		if err := beat(req.NodeId, req.RegistrationGeneration); err != nil {
			return nil, err
		}
		return &cohortv1.HeartbeatResponse{ClusterId: s.b.State().ClusterID()}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.HeartbeatResponse, error) {
		return cohortv1.NewAgentServiceClient(c).Heartbeat(ctx, req)
	})
}

// sessionLossBackend is a Backend that can act on a lost worker session; *server.Server
// is one.
type sessionLossBackend interface {
	// SuspectSessionLoss shortens the TTL of the node running worker rank of job (see
	// server.Server.SuspectSessionLoss); it reports whether a live worker matched.
	SuspectSessionLoss(jobID string, generation uint64, rank int) (bool, error)
}

// ReportSessionLoss hands a parameter server's lost worker session to the leader
// (forwarded from a follower), which confirms by the worker node's heartbeats; or a
// worker's unreachable shard primary (shard_primary, replicas.go).
func (s *agentService) ReportSessionLoss(ctx context.Context, req *cohortv1.ReportSessionLossRequest) (*cohortv1.ReportSessionLossResponse, error) {
	if err := checkID("job_id", req.JobId); err != nil {
		return nil, toStatus(err)
	}
	if req.ShardPrimary {
		return s.reportShardLoss(ctx, req)
	}
	if req.WorkerRank < 0 {
		return nil, toStatus(fmt.Errorf("%w: worker_rank %d", ErrInvalidArgument, req.WorkerRank))
	}
	b, ok := s.b.(sessionLossBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this coordinator does not act on lost sessions")
	}
	return leaderCall(ctx, s.cfg, func(context.Context) (*cohortv1.ReportSessionLossResponse, error) {
		suspected, err := b.SuspectSessionLoss(req.JobId, req.Generation, int(req.WorkerRank))
		if err != nil {
			return nil, err
		}
		return &cohortv1.ReportSessionLossResponse{Suspected: suspected}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ReportSessionLossResponse, error) {
		return cohortv1.NewAgentServiceClient(c).ReportSessionLoss(ctx, req)
	})
}

// ReportTasks proposes the reports as one UpdateTasks command.
func (s *agentService) ReportTasks(ctx context.Context, req *cohortv1.ReportTasksRequest) (*cohortv1.ReportTasksResponse, error) {
	switch {
	case len(req.Reports) == 0:
		return &cohortv1.ReportTasksResponse{}, nil
	case len(req.Reports) > maxReportsPerCall:
		return nil, toStatus(fmt.Errorf("%w: %d reports, limit %d per call", ErrInvalidArgument, len(req.Reports), maxReportsPerCall))
	}
	for i, r := range req.Reports {
		if err := checkID(fmt.Sprintf("reports[%d].allocation_id", i), r.AllocationId); err != nil {
			return nil, toStatus(err)
		}
	}
	interim, durable := splitInterim(s.b, req.Reports)
	if len(interim) > 0 {
		if err := s.reportInterim(ctx, interim); err != nil {
			return nil, err
		}
	}
	if len(durable) == 0 {
		return &cohortv1.ReportTasksResponse{}, nil
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.ReportTasksResponse, error) {
		_, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_UpdateTasks{
			UpdateTasks: &cohortv1.UpdateTasksCommand{Reports: durable},
		}})
		if err != nil {
			return nil, err
		}
		return &cohortv1.ReportTasksResponse{}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ReportTasksResponse, error) {
		return cohortv1.NewAgentServiceClient(c).ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: durable})
	})
}

// WatchAssignments streams the node's live assignments: every allocation on the node
// whose job is not terminal (including allocations stopped while their job runs on),
// each with its job and, for workers, the data addresses of the job's shards. It sends
// the set now and again whenever it changes; an allocation missing from a later set
// must be stopped by the agent. It is served from this coordinator's local state (any
// coordinator, so agents keep their stream through a leader change); a node this
// coordinator has not applied yet is waited for up to Config.FollowerWait.
func (s *agentService) WatchAssignments(req *cohortv1.WatchAssignmentsRequest, stream cohortv1.AgentService_WatchAssignmentsServer) error {
	if err := checkID("node_id", req.NodeId); err != nil {
		return toStatus(err)
	}
	if err := s.checkClusterID(req.NodeId, req.ClusterId); err != nil {
		return err
	}
	ctx := stream.Context()
	var last []string
	first := true
	waitUntil := time.Now().Add(s.cfg.FollowerWait)
	for {
		ws := memdb.NewWatchSet()
		resp, key, err := assignments(s.b.State(), ws, req.NodeId)
		if errors.Is(err, fsm.ErrNotFound) && first && time.Now().Before(waitUntil) {
			if err := waitCatchUp(ctx, ws, waitUntil); err != nil {
				return toStatus(err)
			}
			continue
		}
		if err != nil {
			return toStatus(err)
		}
		if first || !slices.Equal(key, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			first, last = false, key
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return toStatus(err)
		}
	}
}

// assignments computes a node's assignment set and a key that changes exactly when
// something an agent acts on changes (allocation state, job state or generation, shard
// addresses, the revoked join tokens, the cluster CA record), so progress reports do not resend the set.
func assignments(store *state.Store, ws memdb.WatchSet, nodeID string) (*cohortv1.WatchAssignmentsResponse, []string, error) {
	snap := store.Snapshot()
	node, err := snap.NodeByID(ws, nodeID)
	if err != nil {
		return nil, nil, err
	}
	if node == nil {
		return nil, nil, fmt.Errorf("%w: node %q is not registered", fsm.ErrNotFound, nodeID)
	}
	allocs, err := snap.AllocsByNode(ws, nodeID)
	if err != nil {
		return nil, nil, err
	}
	resp := &cohortv1.WatchAssignmentsResponse{}
	var key []string
	shardsOf := map[string][]string{}
	for _, a := range allocs {
		job, err := snap.JobByID(ws, a.JobId)
		if err != nil {
			return nil, nil, err
		}
		if job == nil || state.JobTerminal(job.State) {
			continue
		}
		as := &cohortv1.Assignment{Allocation: a, Job: job}
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER {
			addrs, ok := shardsOf[job.Id]
			if !ok {
				if addrs, err = shardAddresses(snap, ws, job.Id); err != nil {
					return nil, nil, err
				}
				shardsOf[job.Id] = addrs
			}
			as.ShardAddresses = addrs
		}
		if a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			if as.AllowedWorkers, err = workerNodes(snap, ws, job.Id); err != nil {
				return nil, nil, err
			}
			if as.PeerAddress, as.PeerNodeId, err = peerAddress(snap, ws, a); err != nil {
				return nil, nil, err
			}
		}
		resp.Assignments = append(resp.Assignments, as)
		key = append(key, fmt.Sprintf("%s/%d/%s/%d/%s/%s/%s/%s", a.Id, a.ModifyIndex, job.State, job.Generation,
			job.Checkpoint, strings.Join(as.ShardAddresses, ","), strings.Join(as.AllowedWorkers, ","), as.PeerAddress))
	}
	// The revoked join tokens, which parameter servers refuse (their certificates).
	tokens, err := snap.Tokens(ws)
	if err != nil {
		return nil, nil, err
	}
	for _, t := range tokens {
		if t.GetRevoked() {
			resp.RevokedTokens = append(resp.RevokedTokens, t.GetId())
		}
	}
	key = append(key, "revoked:"+strings.Join(resp.RevokedTokens, ","))
	// The trust bundle after a CA rotation, so that agents drop the old CA when it ends.
	ca, err := snap.ClusterCA(ws)
	if err != nil {
		return nil, nil, err
	}
	if ca != nil {
		resp.TrustBundlePem = ca.GetTrustBundlePem()
		key = append(key, fmt.Sprintf("ca:%d", ca.GetVersion()))
	}
	return resp, key, nil
}

// shardAddresses returns the data address of the node of each live PS_SHARD
// allocation of a job, in shard index order.
func shardAddresses(snap *state.StateSnapshot, ws memdb.WatchSet, jobID string) ([]string, error) {
	allocs, err := snap.AllocsByJob(ws, jobID)
	if err != nil {
		return nil, err
	}
	var shards []*cohortv1.Allocation
	for _, a := range allocs {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD && !state.TaskTerminal(a.State) && a.Replica == 0 {
			shards = append(shards, a)
		}
	}
	slices.SortFunc(shards, func(a, b *cohortv1.Allocation) int { return cmp.Compare(a.Index, b.Index) })
	addrs := make([]string, 0, len(shards))
	for _, a := range shards {
		n, err := snap.NodeByID(ws, a.NodeId)
		if err != nil {
			return nil, err
		}
		addr := ""
		if n != nil {
			addr = n.DataAddress
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}
