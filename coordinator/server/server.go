// Package server wires the coordinator together: Raft (raft-wal log and stable
// store, file snapshots, TCP transport, mutual TLS when configured) over the FSM, batched proposals, and the
// leader-only machinery (scheduling loop with its plan applier, node heartbeat TTLs)
// that starts when this voter wins leadership and stops when it loses it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Errors returned by the server.
var (
	// ErrNotLeader is returned by writes on a voter that is not the leader; the error
	// message names the leader's address when known.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrShutdown is returned by calls on a server that is shutting down.
	ErrShutdown = errors.New("server is shut down")
	// ErrStaleRegistration is returned by Heartbeat with a registration generation that
	// is not the node's current one: the agent must register again.
	ErrStaleRegistration = errors.New("stale node registration")
)

// Server is one coordinator voter.
type Server struct {
	config Config
	logger *slog.Logger
	// searchMetrics are the search loop's metrics (search.go).
	searchMetrics *searchMetrics

	fsm       *fsm.FSM
	raft      *raft.Raft
	transport raft.Transport
	// store is the durable Raft log and stable store (raft-wal or raft-boltdb).
	store raftStore
	// hadState is whether DataDir held Raft state when the server started.
	hadState bool
	// leaderReady is set while this voter leads and its leader machinery runs (every
	// entry of earlier terms is applied locally).
	leaderReady atomic.Bool

	leaderNotify chan bool
	applyCh      chan *applyRequest
	inflight     chan struct{}
	heartbeats   *heartbeats
	// live holds in-epoch progress, heartbeat times and usage (live.go).
	live    *live
	metrics *metrics

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	shutdownErr  error
	wg           sync.WaitGroup
}

// applyRequest is one proposal waiting to enter raft.
type applyRequest struct {
	cmd   *cohortv1.Command
	data  []byte
	kind  string
	start time.Time
	done  chan applyResult // buffered 1
}

type applyResult struct {
	resp any
	err  error
}

// inflightApply is a proposal raft has accepted, waiting for commit and apply.
type inflightApply struct {
	future raft.ApplyFuture
	req    *applyRequest
}

// New builds a server from cfg and starts Raft. A voter with Bootstrap set and no Raft
// state in DataDir bootstraps a single-voter cluster.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: create data dir: %w", err)
	}
	logger := cfg.Logger.With("component", "coordinator", "node_id", cfg.NodeID)
	raftLogger := newHCLogAdapter(cfg.Logger.With("component", "raft", "node_id", cfg.NodeID), "raft", cfg.RaftLogLevel)

	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	f, err := fsm.New(fsm.Config{Logger: logger, Registry: cfg.Registry})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	sm, err := newSearchMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}

	s := &Server{
		config:       cfg,
		logger:       logger,
		fsm:          f,
		leaderNotify: make(chan bool, 16),
		applyCh:      make(chan *applyRequest),
		inflight:     make(chan struct{}, cfg.MaxInflightApplies),
		metrics:      m,
		shutdownCh:   make(chan struct{}),
	}
	s.searchMetrics = sm
	s.heartbeats = newHeartbeats(cfg.Clock, cfg.HeartbeatTTL, s.expireNode)
	s.live = newLive()
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(newUsageCollector(s)); err != nil {
			return nil, fmt.Errorf("server: register usage metrics: %w", err)
		}
	}

	if err := s.setupRaft(raftLogger); err != nil {
		s.closeStores()
		return nil, err
	}
	s.wg.Add(2)
	go s.proposeLoop()
	go s.monitorLeadership()
	return s, nil
}

func (s *Server) setupRaft(hl hclog.Logger) error {
	cfg := s.config
	store, kind, err := openRaftStore(cfg.DataDir, cfg.RaftLogStore, s.logger)
	if err != nil {
		return err
	}
	s.store = store
	s.logger.Debug("raft log store opened", "kind", kind)
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fmt.Errorf("server: log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl)
	if err != nil {
		return fmt.Errorf("server: snapshot store: %w", err)
	}
	trans := cfg.Transport
	if trans == nil {
		var advertise net.Addr
		if cfg.RaftAdvertiseAddr != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertiseAddr)
			if err != nil {
				return fmt.Errorf("server: resolve raft advertise address: %w", err)
			}
			advertise = a
		}
		if cfg.RaftTLS != nil {
			tcfg := *cfg.RaftTLS
			if tcfg.Revoked == nil {
				tcfg.Revoked = s.tokenRevoked
			}
			stream, err := newTLSStreamLayer(cfg.RaftBindAddr, advertise, tcfg, s.logger.With("component", "raft-tls"))
			if err != nil {
				return fmt.Errorf("server: raft transport: %w", err)
			}
			trans = noPipeline{raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hl)}
		} else {
			tcp, err := raft.NewTCPTransportWithLogger(cfg.RaftBindAddr, advertise, 3, 10*time.Second, hl)
			if err != nil {
				return fmt.Errorf("server: raft transport: %w", err)
			}
			trans = noPipeline{tcp}
		}
	}
	s.transport = trans

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	rc.ElectionTimeout = cfg.RaftElectionTimeout
	rc.LeaderLeaseTimeout = cfg.RaftLeaderLeaseTimeout
	rc.CommitTimeout = cfg.RaftCommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.BatchApplyCh = true
	rc.NotifyCh = s.leaderNotify
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("server: raft config: %w", err)
	}

	has, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fmt.Errorf("server: check raft state: %w", err)
	}
	s.hadState = has
	if cfg.Bootstrap {
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       rc.LocalID,
				Address:  trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logs, store, snaps, trans, conf); err != nil {
				return fmt.Errorf("server: bootstrap raft: %w", err)
			}
			s.logger.Info("bootstrapped single-voter cluster", "raft_addr", trans.LocalAddr())
		}
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("server: start raft: %w", err)
	}
	s.raft = r
	return nil
}

// closeTransport closes the Raft transport when it can be closed (the TCP one can).
func (s *Server) closeTransport() error {
	if c, ok := s.transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

func (s *Server) closeStores() {
	if s.transport != nil {
		_ = s.closeTransport()
	}
	if s.store != nil {
		_ = s.store.Close()
	}
}

// State returns the current state store (local reads). Re-fetch it when the old
// store's AbandonCh closes (after a snapshot restore).
func (s *Server) State() *state.Store { return s.fsm.State() }

// tokenRevoked reports whether this voter's state records join token id as revoked.
func (s *Server) tokenRevoked(id string) bool {
	if s.fsm == nil {
		return false
	}
	rec, err := s.State().TokenByID(nil, id)
	return err == nil && rec != nil && rec.Revoked
}

// HadState reports whether DataDir already held Raft state when the server started
// (a restarted voter, as opposed to a new one that must bootstrap or join).
func (s *Server) HadState() bool { return s.hadState }

// NodeID returns this voter's Raft server ID.
func (s *Server) NodeID() string { return s.config.NodeID }

// Raft returns the underlying Raft instance (for operator verbs).
func (s *Server) Raft() *raft.Raft { return s.raft }

// RaftAddr returns the address this voter's Raft transport is reachable at.
func (s *Server) RaftAddr() string { return string(s.transport.LocalAddr()) }

// IsLeader reports whether this voter is the Raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// LeaderAddr returns the current leader's Raft address, or "" when none is known.
func (s *Server) LeaderAddr() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// LeaderCh delivers true when this voter becomes leader and false when it stops being
// leader. It is raft's single shared channel: use it from one consumer only; a slow
// consumer sees only the latest transition.
func (s *Server) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// WaitForLeader blocks until the cluster has a known leader or ctx ends.
func (s *Server) WaitForLeader(ctx context.Context) error {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		if s.LeaderAddr() != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server: wait for leader: %w", ctx.Err())
		case <-s.shutdownCh:
			return ErrShutdown
		case <-ticker.C:
		}
	}
}

func (s *Server) notLeaderError() error {
	if addr := s.LeaderAddr(); addr != "" {
		return fmt.Errorf("%w; leader is at %s", ErrNotLeader, addr)
	}
	return fmt.Errorf("%w; no leader is known", ErrNotLeader)
}

// Now returns the time on this coordinator's Clock (Config.Clock): the time its
// commands are stamped with and its deadlines are measured by.
func (s *Server) Now() time.Time { return s.config.Clock.Now() }

// Apply proposes cmd through Raft and returns the FSM's response value once it is
// applied locally. It stamps cmd.TimeUnixNano with this leader's Clock. On a follower
// it returns ErrNotLeader (wrapped, naming the leader). A response value that is an
// error is returned as the error. If ctx ends first, Apply returns ctx's error, but the
// command may still be committed.
//
// Proposals are pipelined: up to MaxInflightApplies are in flight in raft at once, so
// concurrent callers share log appends and fsyncs.
func (s *Server) Apply(ctx context.Context, cmd *cohortv1.Command) (any, error) {
	if !s.IsLeader() {
		return nil, s.notLeaderError()
	}
	kind := fsm.CommandKind(cmd)
	if kind == "" {
		return nil, fmt.Errorf("server: apply: %w: command has no kind", fsm.ErrInvalidCommand)
	}
	cmd.TimeUnixNano = s.Now().UnixNano()
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("server: marshal %s command: %w", kind, err)
	}
	req := &applyRequest{cmd: cmd, data: data, kind: kind, start: time.Now(), done: make(chan applyResult, 1)}
	select {
	case s.applyCh <- req:
	case <-ctx.Done():
		return nil, fmt.Errorf("server: apply %s: %w", kind, ctx.Err())
	case <-s.shutdownCh:
		return nil, ErrShutdown
	}
	select {
	case res := <-req.done:
		return res.resp, res.err
	case <-ctx.Done():
		return nil, fmt.Errorf("server: apply %s (may still be committed): %w", kind, ctx.Err())
	case <-s.shutdownCh:
		return nil, ErrShutdown
	}
}

// proposeLoop hands proposals to raft without waiting for them to commit; inflight
// (a semaphore of MaxInflightApplies slots) bounds how many are outstanding. Each
// accepted proposal is awaited by its own goroutine, so a future that raft never
// resolves (its queue is dropped at shutdown) cannot stall the server.
func (s *Server) proposeLoop() {
	defer s.wg.Done()
	for {
		select {
		case req := <-s.applyCh:
			select {
			case s.inflight <- struct{}{}:
			case <-s.shutdownCh:
				return
			}
			f := s.raft.Apply(req.data, s.config.ApplyEnqueueTimeout)
			s.metrics.inflight.Inc()
			go func() {
				res := s.complete(inflightApply{future: f, req: req})
				s.metrics.inflight.Dec()
				<-s.inflight
				req.done <- res
			}()
		case <-s.shutdownCh:
			return
		}
	}
}

// waitFuture waits for a raft future until ctx ends or the server shuts down.
func (s *Server) waitFuture(ctx context.Context, f raft.Future) error {
	errCh := make(chan error, 1)
	go func() { errCh <- f.Error() }()
	select {
	case err := <-errCh:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.shutdownCh:
		return ErrShutdown
	}
}

func (s *Server) complete(p inflightApply) applyResult {
	err := p.future.Error()
	outcome := "ok"
	defer func() {
		s.metrics.applyDuration.WithLabelValues(p.req.kind, outcome).Observe(time.Since(p.req.start).Seconds())
	}()
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		outcome = "not_leader"
		return applyResult{err: fmt.Errorf("%w: %w", s.notLeaderError(), err)}
	case errors.Is(err, raft.ErrRaftShutdown):
		outcome = "shutdown"
		return applyResult{err: ErrShutdown}
	case err != nil:
		outcome = "error"
		return applyResult{err: fmt.Errorf("server: apply %s: %w", p.req.kind, err)}
	}
	resp := p.future.Response()
	if rerr, ok := resp.(error); ok {
		outcome = "rejected"
		return applyResult{err: rerr}
	}
	s.afterApply(p.req.cmd, resp)
	return applyResult{resp: resp}
}

// afterApply keeps leader-side bookkeeping in step with applied commands.
func (s *Server) afterApply(cmd *cohortv1.Command, resp any) {
	switch k := cmd.Kind.(type) {
	case *cohortv1.Command_RegisterNode:
		if n, ok := resp.(*cohortv1.Node); ok {
			s.heartbeats.reset(n.Id)
		}
	case *cohortv1.Command_NodeStatus:
		if k.NodeStatus.Status == cohortv1.NodeStatus_NODE_STATUS_DOWN {
			s.heartbeats.clear(k.NodeStatus.NodeId)
		} else {
			s.heartbeats.reset(k.NodeStatus.NodeId)
		}
	}
}

// Heartbeat records a node agent's heartbeat on the leader: it resets the node's TTL
// timer (heartbeats are not written to Raft). A node that was marked DOWN is marked
// READY again. An unknown node is an error wrapping fsm.ErrNotFound; a registration
// generation other than the node's current one (0 skips the check) wraps
// ErrStaleRegistration.
func (s *Server) Heartbeat(nodeID string, gen uint64) error {
	if !s.IsLeader() {
		return s.notLeaderError()
	}
	node, err := s.State().NodeByID(nil, nodeID)
	if err != nil {
		return fmt.Errorf("server: heartbeat: %w", err)
	}
	if node == nil {
		return fmt.Errorf("server: heartbeat: %w: node %q is not registered", fsm.ErrNotFound, nodeID)
	}
	if gen != 0 && gen != node.RegistrationGeneration {
		return fmt.Errorf("server: heartbeat of node %q: %w: generation %d, current %d",
			nodeID, ErrStaleRegistration, gen, node.RegistrationGeneration)
	}
	if node.Status == cohortv1.NodeStatus_NODE_STATUS_DOWN {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{
			NodeId: nodeID, Status: cohortv1.NodeStatus_NODE_STATUS_READY, HeartbeatUnixNano: s.Now().UnixNano(),
		}}})
		if err != nil {
			return fmt.Errorf("server: mark node %q ready: %w", nodeID, err)
		}
		s.logger.Info("node is back", "node", nodeID)
		return nil
	}
	if !s.heartbeats.reset(nodeID) {
		// Leadership is won but its machinery is not running yet, or was just lost.
		return s.notLeaderError()
	}
	s.recordHeartbeat(nodeID, s.Now(), nil, nil)
	return nil
}

// Shutdown stops the leader machinery and Raft and closes the stores. It is safe to
// call more than once.
func (s *Server) Shutdown() error {
	s.shutdownOnce.Do(func() {
		close(s.shutdownCh)
		var errs []error
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		s.wg.Wait()
		if err := s.closeTransport(); err != nil {
			errs = append(errs, fmt.Errorf("close transport: %w", err))
		}
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log store: %w", err))
		}
		s.metrics.leader.Set(0)
		if len(errs) > 0 {
			s.shutdownErr = fmt.Errorf("server: shutdown: %w", errors.Join(errs...))
		}
	})
	return s.shutdownErr
}

// SuspectSessionLoss handles a parameter server's report that the session of worker
// rank of job at generation ended without the worker closing it: the fast sign of a
// worker process that died. The leader does not drop the worker on the report alone;
// it shortens the TTL of the node running that rank to Config.SuspectGrace after the
// node's last heartbeat, so a dead node is marked DOWN (and its elastic jobs shrink)
// within about that time, while a slow but live one, which keeps heartbeating, keeps
// its full TTL. It reports whether a live worker allocation matched. A report of an
// older generation than the job's is stale and ignored.
func (s *Server) SuspectSessionLoss(jobID string, generation uint64, rank int) (bool, error) {
	if !s.IsLeader() {
		return false, s.notLeaderError()
	}
	job, err := s.State().JobByID(nil, jobID)
	if err != nil {
		return false, fmt.Errorf("server: session loss: %w", err)
	}
	if job == nil || generation < job.GetGeneration() {
		return false, nil
	}
	allocs, err := s.State().AllocsByJob(nil, jobID)
	if err != nil {
		return false, fmt.Errorf("server: session loss: %w", err)
	}
	for _, a := range allocs {
		if a.GetKind() != cohortv1.TaskKind_TASK_KIND_WORKER || int(a.GetIndex()) != rank || !liveAllocState(a.GetState()) {
			continue
		}
		at, ok := s.heartbeats.suspect(a.GetNodeId(), s.config.SuspectGrace)
		if !ok {
			return false, nil
		}
		s.logger.Warn("worker session lost at a parameter server; its node is suspect", "job", jobID, "rank", rank,
			"generation", generation, "node", a.GetNodeId(), "alloc_id", a.GetId(), "down_unless_heartbeat_by", at)
		return true, nil
	}
	return false, nil
}

// liveAllocState reports whether an allocation in state st is placed and not ended.
func liveAllocState(st cohortv1.TaskState) bool {
	return st == cohortv1.TaskState_TASK_STATE_PENDING || st == cohortv1.TaskState_TASK_STATE_RUNNING
}
