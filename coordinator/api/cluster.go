package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ClusterBackend is what the ClusterService handlers need of a coordinator;
// *server.Server satisfies it.
type ClusterBackend interface {
	// IsLeader reports whether this coordinator is the Raft leader.
	IsLeader() bool
	// ConsistentRead returns once the local state holds every committed write (leader
	// only).
	ConsistentRead(ctx context.Context) error
	// Peers returns the Raft configuration, leader marked.
	Peers() ([]server.Peer, error)
	// AddVoter adds (or confirms) a voter and records its gRPC address.
	AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error
	// RemovePeer removes a peer from the Raft configuration.
	RemovePeer(ctx context.Context, id string) error
	// TransferLeadershipFrom hands leadership to a voter, only while from leads (any
	// leader when from is empty), and returns the new leader's ID; when another voter
	// than from leads it returns that leader with server.ErrLeadershipMoved.
	TransferLeadershipFrom(ctx context.Context, id, from string) (string, error)
	// SnapshotSave writes a snapshot of the whole state to w.
	SnapshotSave(ctx context.Context, w io.Writer) error
	// SnapshotRestore replaces the whole state with the snapshot read from r.
	SnapshotRestore(ctx context.Context, r io.Reader) (uint64, error)
}

var _ ClusterBackend = (*server.Server)(nil)

// snapshotChunkBytes is the data size of one SnapshotChunk.
const snapshotChunkBytes = 1 << 20

// clusterService implements cohortv1.ClusterServiceServer.
type clusterService struct {
	cohortv1.UnimplementedClusterServiceServer
	b      ClusterBackend
	cfg    Config
	logger *slog.Logger
}

// NewClusterService returns the coordinators' ClusterService handlers over b. Leader-only
// calls that reach a follower are forwarded through cfg.Forwarder.
func NewClusterService(b ClusterBackend, cfg Config) cohortv1.ClusterServiceServer {
	cfg = cfg.withDefaults()
	return &clusterService{b: b, cfg: cfg, logger: cfg.Logger.With("component", "api.cluster")}
}

// Join adds the calling coordinator as a voter.
func (s *clusterService) Join(ctx context.Context, req *cohortv1.JoinRequest) (*cohortv1.JoinResponse, error) {
	if err := checkPeer(req.Id, req.RaftAddress, req.GrpcAddress, true); err != nil {
		return nil, toStatus(err)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.JoinResponse, error) {
		if err := s.b.AddVoter(ctx, req.Id, req.RaftAddress, req.GrpcAddress); err != nil {
			return nil, err
		}
		s.logger.Info("coordinator joined", "peer", req.Id, "raft_addr", req.RaftAddress, "grpc_addr", req.GrpcAddress)
		return &cohortv1.JoinResponse{LeaderId: leaderID(s.b)}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.JoinResponse, error) {
		return cohortv1.NewClusterServiceClient(c).Join(ctx, req)
	})
}

// ListPeers returns the leader's view of the Raft configuration (this coordinator's own
// view with the StaleReadHeader, which works without a leader).
func (s *clusterService) ListPeers(ctx context.Context, req *cohortv1.ListPeersRequest) (*cohortv1.ListPeersResponse, error) {
	list := func() (*cohortv1.ListPeersResponse, error) {
		peers, err := s.b.Peers()
		if err != nil {
			return nil, err
		}
		resp := &cohortv1.ListPeersResponse{}
		for _, p := range peers {
			resp.Peers = append(resp.Peers, &cohortv1.Peer{
				Id: p.ID, Address: p.RaftAddress, GrpcAddress: p.GRPCAddress, Leader: p.Leader, Voter: p.Voter,
			})
		}
		return resp, nil
	}
	if isStale(ctx) {
		resp, err := list()
		return resp, toStatus(err)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.ListPeersResponse, error) {
		if err := s.b.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		return list()
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListPeersResponse, error) {
		return cohortv1.NewClusterServiceClient(c).ListPeers(ctx, req)
	})
}

// AddVoter adds a voter (the operator's verb; Join is the coordinator's own).
func (s *clusterService) AddVoter(ctx context.Context, req *cohortv1.AddVoterRequest) (*cohortv1.AddVoterResponse, error) {
	if err := checkPeer(req.Id, req.RaftAddress, req.GrpcAddress, false); err != nil {
		return nil, toStatus(err)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.AddVoterResponse, error) {
		if err := s.b.AddVoter(ctx, req.Id, req.RaftAddress, req.GrpcAddress); err != nil {
			return nil, err
		}
		return &cohortv1.AddVoterResponse{}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.AddVoterResponse, error) {
		return cohortv1.NewClusterServiceClient(c).AddVoter(ctx, req)
	})
}

// RemovePeer removes a peer; removing the last voter is FailedPrecondition. Removing a
// coordinator that has left the configuration already succeeds with a note, so that a
// forwarded removal retried after its first try committed (its answer lost to a
// timeout or a leader change) does not fail.
func (s *clusterService) RemovePeer(ctx context.Context, req *cohortv1.RemovePeerRequest) (*cohortv1.RemovePeerResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.RemovePeerResponse, error) {
		if err := s.b.RemovePeer(ctx, req.Id); errors.Is(err, server.ErrPeerRemoved) {
			s.logger.Info("peer removed already", "peer", req.Id)
			return &cohortv1.RemovePeerResponse{Note: fmt.Sprintf("peer %s was not in the raft configuration: removed already", req.Id)}, nil
		} else if err != nil {
			return nil, err
		}
		s.logger.Info("peer removed", "peer", req.Id)
		return &cohortv1.RemovePeerResponse{}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.RemovePeerResponse, error) {
		return cohortv1.NewClusterServiceClient(c).RemovePeer(ctx, req)
	})
}

// TransferLeadership asks the leader to hand leadership over. A follower forwards the
// call with from_leader set to the leader it forwards to (unless the caller set it),
// so that an attempt retried after the first one committed (its answer lost to a
// timeout or to the very leader change it made) finds leadership moved and answers
// with the new leader and a note instead of moving leadership again.
func (s *clusterService) TransferLeadership(ctx context.Context, req *cohortv1.TransferLeadershipRequest) (*cohortv1.TransferLeadershipResponse, error) {
	if len(req.Id) > maxIDLen {
		return nil, toStatus(fmt.Errorf("%w: id is longer than %d bytes", ErrInvalidArgument, maxIDLen))
	}
	if len(req.FromLeader) > maxIDLen {
		return nil, toStatus(fmt.Errorf("%w: from_leader is longer than %d bytes", ErrInvalidArgument, maxIDLen))
	}
	from := req.FromLeader
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.TransferLeadershipResponse, error) {
		id, err := s.b.TransferLeadershipFrom(ctx, req.Id, from)
		if errors.Is(err, server.ErrLeadershipMoved) {
			return &cohortv1.TransferLeadershipResponse{LeaderId: id,
				Note: fmt.Sprintf("%s leads already (not %s): nothing transferred", id, from)}, nil
		}
		if err != nil {
			return nil, err
		}
		return &cohortv1.TransferLeadershipResponse{LeaderId: id}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.TransferLeadershipResponse, error) {
		fwd := proto.Clone(req).(*cohortv1.TransferLeadershipRequest)
		if from == "" {
			// The first attempt's leader, kept for every retry.
			from = forwardLeader(s.cfg)
		}
		fwd.FromLeader = from
		return cohortv1.NewClusterServiceClient(c).TransferLeadership(ctx, fwd)
	})
}

// chunkWriter sends everything written to it as SnapshotChunks.
type chunkWriter struct {
	send func(*cohortv1.SnapshotChunk) error
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), snapshotChunkBytes)
		if err := w.send(&cohortv1.SnapshotChunk{Data: p[:k]}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// SnapshotSave streams a snapshot of the whole state, taken on the leader (a follower
// relays the leader's stream).
func (s *clusterService) SnapshotSave(req *cohortv1.SnapshotSaveRequest, stream cohortv1.ClusterService_SnapshotSaveServer) error {
	ctx := stream.Context()
	if s.b.IsLeader() || s.cfg.Forwarder == nil || isForwarded(ctx) {
		return toStatus(s.b.SnapshotSave(ctx, chunkWriter{send: stream.Send}))
	}
	conn, err := s.cfg.Forwarder.LeaderConn()
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	up, err := cohortv1.NewClusterServiceClient(conn).SnapshotSave(forwardContext(ctx), req)
	if err != nil {
		return err
	}
	for {
		c, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
}

// chunkReader reads the data of a stream of SnapshotChunks.
type chunkReader struct {
	recv func() (*cohortv1.SnapshotChunk, error)
	buf  []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		c, err := r.recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		r.buf = c.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// SnapshotRestore replaces the whole state with the uploaded snapshot (on the leader; a
// follower relays the upload). A corrupt snapshot is InvalidArgument and changes nothing.
func (s *clusterService) SnapshotRestore(stream cohortv1.ClusterService_SnapshotRestoreServer) error {
	ctx := stream.Context()
	in := &chunkReader{recv: stream.Recv}
	if s.b.IsLeader() || s.cfg.Forwarder == nil || isForwarded(ctx) {
		idx, err := s.b.SnapshotRestore(ctx, in)
		if err != nil {
			return toStatus(err)
		}
		s.logger.Warn("state restored from an uploaded snapshot", "index", idx)
		return stream.SendAndClose(&cohortv1.SnapshotRestoreResponse{Index: idx})
	}
	conn, err := s.cfg.Forwarder.LeaderConn()
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	up, err := cohortv1.NewClusterServiceClient(conn).SnapshotRestore(forwardContext(ctx))
	if err != nil {
		return err
	}
	if _, err := io.Copy(chunkWriter{send: up.Send}, in); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// checkPeer validates a peer's ID and addresses.
func checkPeer(id, raftAddr, grpcAddr string, needGRPC bool) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	switch {
	case raftAddr == "":
		return fmt.Errorf("%w: raft_address is required", ErrInvalidArgument)
	case needGRPC && grpcAddr == "":
		return fmt.Errorf("%w: grpc_address is required", ErrInvalidArgument)
	case len(raftAddr) > maxIDLen || len(grpcAddr) > maxIDLen:
		return fmt.Errorf("%w: address is longer than %d bytes", ErrInvalidArgument, maxIDLen)
	case strings.ContainsAny(id, " \t\n/"):
		return fmt.Errorf("%w: id %q contains whitespace or '/'", ErrInvalidArgument, id)
	}
	return nil
}

func leaderID(b ClusterBackend) string {
	peers, err := b.Peers()
	if err != nil {
		return ""
	}
	for _, p := range peers {
		if p.Leader {
			return p.ID
		}
	}
	return ""
}
