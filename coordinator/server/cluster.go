package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Errors of the membership and snapshot operations.
var (
	// ErrDuplicatePeer is returned when a voter would join with an ID or a Raft address
	// that another voter already uses.
	ErrDuplicatePeer = errors.New("duplicate peer")
	// ErrUnknownPeer is returned for an ID that is not in the Raft configuration.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrLastVoter is returned when removing a peer would leave no voter.
	ErrLastVoter = errors.New("cannot remove the last voter")
	// ErrInvalidPeer is returned for a peer without an ID or address.
	ErrInvalidPeer = errors.New("invalid peer")
	// ErrPeerRemoved is returned by RemovePeer for a coordinator that the state records
	// but that is not in the Raft configuration any more: it was removed already (a
	// retried removal whose first try committed). Callers treat it as success.
	ErrPeerRemoved = errors.New("peer removed already")
	// ErrLeadershipMoved is returned by TransferLeadershipFrom when the voter the
	// caller saw leading leads no more: the transfer (or an election) happened
	// already. Callers treat it as success.
	ErrLeadershipMoved = errors.New("leadership moved already")
)

// MaxSnapshotBytes bounds an uploaded snapshot.
const MaxSnapshotBytes = 1 << 30

// membershipTimeout bounds one Raft configuration change.
const membershipTimeout = 10 * time.Second

// Peer is one member of the Raft configuration.
type Peer struct {
	ID          string
	RaftAddress string
	// GRPCAddress is the coordinator's API address as recorded in the state ("" when
	// it has not been recorded yet).
	GRPCAddress string
	Leader      bool
	Voter       bool
}

// Peers returns the Raft configuration as this voter knows it, leader marked.
func (s *Server) Peers() ([]Peer, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("server: read raft configuration: %w", err)
	}
	_, leaderID := s.raft.LeaderWithID()
	var out []Peer
	for _, srv := range f.Configuration().Servers {
		p := Peer{
			ID: string(srv.ID), RaftAddress: string(srv.Address),
			Leader: srv.ID == leaderID, Voter: srv.Suffrage == raft.Voter,
		}
		if c, err := s.State().CoordinatorByID(nil, p.ID); err == nil && c != nil {
			p.GRPCAddress = c.GrpcAddress
		}
		out = append(out, p)
	}
	return out, nil
}

// LeaderGRPCAddr returns the current leader's Raft ID and gRPC address. ok is false
// when no leader is known, or its gRPC address is not recorded (yet).
func (s *Server) LeaderGRPCAddr() (id, addr string, ok bool) {
	_, lid := s.raft.LeaderWithID()
	if lid == "" {
		return "", "", false
	}
	c, err := s.State().CoordinatorByID(nil, string(lid))
	if err != nil || c == nil || c.GrpcAddress == "" {
		return string(lid), "", false
	}
	return string(lid), c.GrpcAddress, true
}

// registerSelf records this leader's gRPC address in the state when it is not recorded
// yet (or changed). It also moves the FSM's applied index up to the current term, which
// lets consistent reads skip a barrier.
func (s *Server) registerSelf(ctx context.Context) error {
	if s.config.GRPCAddr == "" {
		return nil
	}
	_, err := s.Apply(ctx, registerCoordinatorCmd(s.config.NodeID, s.RaftAddr(), s.config.GRPCAddr))
	return err
}

// ensureClusterID records a new cluster ID when the cluster has none: the first leader
// of a new cluster (or of one made before cluster IDs) makes it, here and not in the
// FSM, so applying stays deterministic. The ID never changes afterwards.
func (s *Server) ensureClusterID(ctx context.Context) error {
	if id := s.State().ClusterID(); id != "" {
		return nil
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("make a cluster ID: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if _, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetClusterId{
		SetClusterId: &cohortv1.SetClusterIDCommand{ClusterId: id}}}); err != nil {
		return err
	}
	s.logger.Info("cluster ID recorded", "cluster_id", s.State().ClusterID())
	return nil
}

// keepClusterIdentity gives the restored state in txn the identity of cur when it has
// none of its own.
func keepClusterIdentity(txn *state.Txn, cur *state.Store) error {
	if id, err := txn.ClusterIdentity(nil); err != nil || id != nil {
		return err
	}
	own, err := cur.ClusterIdentity(nil)
	if err != nil || own == nil {
		return err
	}
	return txn.RestoreClusterIdentity(proto.Clone(own).(*cohortv1.ClusterIdentity))
}

func registerCoordinatorCmd(id, raftAddr, grpcAddr string) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_RegisterCoordinator{RegisterCoordinator: &cohortv1.RegisterCoordinatorCommand{
		Coordinator: &cohortv1.Coordinator{Id: id, RaftAddress: raftAddr, GrpcAddress: grpcAddr},
	}}}
}

// ConsistentRead returns once the local state reflects every write committed before
// the call (a read index: the commit index is taken, leadership is confirmed with a
// quorum, and the FSM is waited for). On a follower it returns ErrNotLeader.
func (s *Server) ConsistentRead(ctx context.Context) error {
	if !s.IsLeader() {
		return s.notLeaderError()
	}
	start := time.Now()
	defer func() { s.metrics.readIndexDuration.Observe(time.Since(start).Seconds()) }()
	idx := s.raft.CommitIndex()
	if err := s.waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		return s.raftErr("verify leadership", err)
	}
	if s.leaderReady.Load() {
		// Usually already true; entries in flight are a few milliseconds away.
		deadline := time.Now().Add(20 * time.Millisecond)
		for s.fsm.AppliedIndex() < idx && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("server: consistent read: %w", ctx.Err())
			case <-time.After(200 * time.Microsecond):
			}
		}
		if s.fsm.AppliedIndex() >= idx {
			return nil
		}
	}
	// The newest committed entries are not commands (or this leader is new): a barrier
	// waits until everything before it is applied.
	s.metrics.readBarriers.Inc()
	if err := s.waitFuture(ctx, s.raft.Barrier(s.config.ApplyEnqueueTimeout)); err != nil {
		return s.raftErr("read barrier", err)
	}
	return nil
}

// raftErr maps a raft error to the server's errors.
func (s *Server) raftErr(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %s: %w", s.notLeaderError(), what, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	case err != nil:
		return fmt.Errorf("server: %s: %w", what, err)
	}
	return nil
}

// AddVoter adds a coordinator as a voter (the join path) and records its gRPC address
// when given. Adding a voter again with the same ID and address is a no-op; an ID or
// address already used by another voter is refused with ErrDuplicatePeer, leaving the
// configuration unchanged. Leader only.
func (s *Server) AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error {
	if id == "" || raftAddr == "" {
		return fmt.Errorf("server: add voter: %w: id and raft address are required", ErrInvalidPeer)
	}
	if !s.IsLeader() {
		return s.notLeaderError()
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return s.raftErr("read raft configuration", err)
	}
	member := false
	for _, srv := range f.Configuration().Servers {
		switch {
		case string(srv.ID) == id && string(srv.Address) == raftAddr:
			member = true
		case string(srv.ID) == id:
			return fmt.Errorf("server: add voter: %w: ID %q is already used by the voter at %s (remove that peer first)",
				ErrDuplicatePeer, id, srv.Address)
		case string(srv.Address) == raftAddr:
			return fmt.Errorf("server: add voter: %w: raft address %s is already used by voter %q",
				ErrDuplicatePeer, raftAddr, srv.ID)
		}
	}
	if !member {
		if err := s.waitFuture(ctx, s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, membershipTimeout)); err != nil {
			return s.raftErr("add voter "+id, err)
		}
		s.logger.Info("voter added", "peer", id, "raft_addr", raftAddr)
	}
	if grpcAddr != "" {
		if _, err := s.Apply(ctx, registerCoordinatorCmd(id, raftAddr, grpcAddr)); err != nil {
			return fmt.Errorf("server: record coordinator %q: %w", id, err)
		}
	}
	return nil
}

// RemovePeer removes a peer from the Raft configuration. An ID that is not in the
// configuration is ErrPeerRemoved when the state records it as a coordinator (it was
// a member: removed already, so a retried removal is safe), ErrUnknownPeer otherwise;
// removing the only voter is ErrLastVoter. Leader only.
func (s *Server) RemovePeer(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("server: remove peer: %w: id is required", ErrInvalidPeer)
	}
	if !s.IsLeader() {
		return s.notLeaderError()
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return s.raftErr("read raft configuration", err)
	}
	found, voters := false, 0
	var target raft.Server
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if string(srv.ID) == id {
			found, target = true, srv
		}
	}
	switch {
	case !found:
		if err := s.ConsistentRead(ctx); err != nil {
			return err
		}
		if c, err := s.State().CoordinatorByID(nil, id); err == nil && c != nil {
			return fmt.Errorf("server: remove peer: %w: %q is not in the raft configuration any more", ErrPeerRemoved, id)
		}
		return fmt.Errorf("server: remove peer: %w: %q is not in the raft configuration", ErrUnknownPeer, id)
	case target.Suffrage == raft.Voter && voters <= 1:
		return fmt.Errorf("server: remove peer %q: %w", id, ErrLastVoter)
	}
	if err := s.waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout)); err != nil {
		return s.raftErr("remove peer "+id, err)
	}
	s.logger.Info("peer removed", "peer", id)
	return nil
}

// TransferLeadership hands leadership to the voter id (to any up-to-date voter when
// id is empty) and returns the new leader's ID when known. Leader only.
func (s *Server) TransferLeadership(ctx context.Context, id string) (string, error) {
	return s.TransferLeadershipFrom(ctx, id, "")
}

// TransferLeadershipFrom is TransferLeadership that moves leadership only away from
// the voter from (any leader when from is empty): when this leader is another voter,
// leadership has moved since the caller looked, and the answer is this leader's ID
// with ErrLeadershipMoved, nothing transferred, so that a retried transfer whose first
// try committed does not move leadership a second time. Leader only.
func (s *Server) TransferLeadershipFrom(ctx context.Context, id, from string) (string, error) {
	if !s.IsLeader() {
		return "", s.notLeaderError()
	}
	if from != "" && from != s.config.NodeID {
		return s.config.NodeID, fmt.Errorf("server: transfer leadership: %w: %s leads now, not %s", ErrLeadershipMoved, s.config.NodeID, from)
	}
	var fut raft.Future
	if id == "" {
		fut = s.raft.LeadershipTransfer()
	} else {
		peers, err := s.Peers()
		if err != nil {
			return "", err
		}
		addr := ""
		for _, p := range peers {
			if p.ID == id && p.Voter {
				addr = p.RaftAddress
			}
		}
		switch {
		case addr == "":
			return "", fmt.Errorf("server: transfer leadership: %w: %q is not a voter", ErrUnknownPeer, id)
		case id == s.config.NodeID:
			return id, nil
		}
		fut = s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := s.waitFuture(ctx, fut); err != nil {
		// hashicorp/raft answers "leadership transfer timeout" when the target's
		// election takes longer than the election timeout, and the target may still win
		// it: answer what happened, not what the future said, so that a caller (or a
		// forwarding follower) does not retry a transfer that took place. Another
		// voter than the one asked for leading is still a failed transfer.
		if lid := s.awaitOtherLeader(ctx); lid != "" && (id == "" || lid == id) {
			s.logger.Info("leadership transferred after the transfer reported an error", "to", lid, "err", err)
			return lid, nil
		}
		return "", s.raftErr("transfer leadership", err)
	}
	// The old leader learns the new one from its first heartbeat.
	deadline := time.Now().Add(2 * s.config.RaftElectionTimeout)
	_, lid := s.raft.LeaderWithID()
	for lid == "" && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		_, lid = s.raft.LeaderWithID()
	}
	s.logger.Info("leadership transferred", "to", string(lid))
	return string(lid), nil
}

// awaitOtherLeader waits up to twice the election timeout for another voter to lead,
// and returns its ID; "" when this node still leads (or no leader is known) by then.
func (s *Server) awaitOtherLeader(ctx context.Context) string {
	deadline := time.Now().Add(2 * s.config.RaftElectionTimeout)
	for {
		if _, lid := s.raft.LeaderWithID(); lid != "" && string(lid) != s.config.NodeID && !s.IsLeader() {
			return string(lid)
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return ""
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SnapshotSave writes a snapshot of the whole state (in the FSM's snapshot format) to
// w, after a consistent-read barrier. Leader only.
func (s *Server) SnapshotSave(ctx context.Context, w io.Writer) error {
	if err := s.ConsistentRead(ctx); err != nil {
		return err
	}
	if err := fsm.WriteSnapshot(w, s.State().Snapshot()); err != nil {
		return fmt.Errorf("server: write snapshot: %w", err)
	}
	return nil
}

// SnapshotRestore replaces the whole state with the snapshot read from r (at most
// MaxSnapshotBytes). The snapshot is spooled to DataDir and decoded in full first: a
// corrupt or truncated one is refused with an error wrapping fsm.ErrBadSnapshot and
// nothing changes. This cluster's own coordinator records are kept (the snapshot's are
// of the cluster it was taken from). It returns the Raft index the state was installed
// at. Leader only.
func (s *Server) SnapshotRestore(ctx context.Context, r io.Reader) (uint64, error) {
	if !s.IsLeader() {
		return 0, s.notLeaderError()
	}
	in, err := os.CreateTemp(s.config.DataDir, "restore-upload-*.snap")
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: spool: %w", err)
	}
	defer func() { _ = in.Close(); _ = os.Remove(in.Name()) }()
	n, err := io.Copy(in, io.LimitReader(r, MaxSnapshotBytes+1))
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: receive: %w", err)
	}
	if n > MaxSnapshotBytes {
		return 0, fmt.Errorf("server: snapshot restore: %w: larger than %d bytes", fsm.ErrBadSnapshot, MaxSnapshotBytes)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	restored, err := fsm.ReadSnapshot(in)
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	// Keep this cluster's coordinator records.
	coords, err := s.State().Coordinators(nil)
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	txn := restored.WriteTxn(0)
	if err := txn.ReplaceCoordinators(coords); err != nil {
		txn.Abort()
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	// The snapshot's cluster ID goes with its nodes (a rebuilt cluster takes the
	// identity of the one it restores, so that cluster's agents come back); a snapshot
	// from before cluster IDs leaves this cluster its own.
	if err := keepClusterIdentity(txn, s.State()); err != nil {
		txn.Abort()
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	if err := txn.Commit(); err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	out, err := os.CreateTemp(s.config.DataDir, "restore-*.snap")
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	defer func() { _ = out.Close(); _ = os.Remove(out.Name()) }()
	if err := fsm.WriteSnapshot(out, restored.Snapshot()); err != nil {
		return 0, fmt.Errorf("server: snapshot restore: rewrite: %w", err)
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("server: snapshot restore: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := s.raft.Restore(meta, out, s.config.ApplyEnqueueTimeout+membershipTimeout); err != nil {
		return 0, s.raftErr("restore snapshot", err)
	}
	// Restored nodes get a fresh TTL from now.
	if nodes, err := s.State().Nodes(nil); err == nil {
		for _, n := range nodes {
			if n.Status != cohortv1.NodeStatus_NODE_STATUS_DOWN {
				s.heartbeats.reset(n.Id)
			}
		}
	}
	idx := s.raft.AppliedIndex()
	s.logger.Warn("state restored from an uploaded snapshot", "bytes", n, "index", idx)
	return idx, nil
}
