// Package node assembles a Cohort process from a Config, as nomad's command/agent
// does: a coordinator (Raft voter, gRPC API, dashboard), worker and parameter-server
// node agents, their storage, metrics, health endpoints and gossip. `cohort dev` is a
// DevConfig of it; `cohort coordinator`, `cohort worker` and `cohort paramserver` are
// Configs with one role. cmd/ only turns flags and files into a Config.
//
// This is the one package outside cmd/ that imports both the coordinator and the node
// roles (see scripts/check-imports.sh).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/gossip"
	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// MaxMessageBytes bounds every control-plane message (the CLI's too).
const MaxMessageBytes = 16 << 20

// leaderWait bounds how long Start waits for a leader before it starts local agents.
const leaderWait = 30 * time.Second

// Node is a Cohort process: the roles its Config names, started by Start and stopped
// by Shutdown.
type Node struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	tokens []api.Token // the ACL tokens, loaded by New
	tls    *nodeTLS    // the TLS material, loaded by New; nil without TLS
	// plaintext are the non-loopback addresses an Insecure node serves or calls.
	plaintext []string
	gossip    *gossip.Gossip // nil without gossip
	// bootstrapToken is the file holding the first admin join token ("" when none).
	bootstrapToken string

	runCtx context.Context // the running roles' context; cancelled by Shutdown
	cancel context.CancelFunc

	// Set by Start, read-only afterwards.
	rawStore storage.Blob // as opened
	store    storage.Blob // instrumented: what the roles use
	srv      *server.Server
	gs       *grpc.Server // the coordinator's gRPC API
	acl      *nodeACL
	grpcAddr string
	httpAddr string
	// httpRoutes is the HTTP mux with the patterns registered on it (tests walk them).
	httpRoutes *httpRoutes
	data       []string // the parameter servers' data addresses

	mu        sync.Mutex
	started   bool
	agents    []*agent.Agent
	agentErrs []error
	closers   []func() error

	agentWG  sync.WaitGroup // the node agents' Run
	serveWG  sync.WaitGroup // the servers' Serve
	stopOnce sync.Once
	stopErr  error
}

// New checks cfg and loads what it names (the ACL tokens file); it starts nothing.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry()}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if co := cfg.Coordinator; co != nil && co.ACLTokensFile != "" {
		tokens, err := loadTokensFile(co.ACLTokensFile, n.log)
		if err != nil {
			return nil, err
		}
		n.tokens = tokens
	}
	tlsm, err := loadTLS(&cfg, n.log.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	n.tls = tlsm
	if tlsm == nil {
		if n.plaintext, err = checkPlaintext(&cfg); err != nil {
			return nil, err
		}
	} else if err := checkHTTPPlaintext(&cfg); err != nil {
		return nil, err
	}
	n.runCtx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// Start starts every role: storage, the coordinator (and its join), HTTP, the node
// agents, gossip. ctx bounds the start only; the roles run until Shutdown. Local agents
// start once the local coordinator knows a leader. Start returns before the agents
// have registered (see WaitReady). On an error everything started is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return errors.New("node: already started")
	}
	n.started = true
	n.mu.Unlock()
	defer func() {
		if err != nil {
			_ = n.Shutdown(context.Background())
		}
	}()
	if err := n.openStorage(ctx); err != nil {
		return err
	}
	n.startTLS()
	if n.cfg.Coordinator != nil {
		if err := n.startCoordinator(); err != nil {
			return err
		}
		n.ensureBootstrapToken(n.runCtx)
		n.ensureGossipKeyring(n.runCtx)
		n.followClusterCA(n.runCtx)
	}
	if n.cfg.HTTPAddr != "" {
		if err := n.startHTTP(); err != nil {
			return err
		}
	}
	if n.cfg.Coordinator != nil {
		if err := n.join(ctx); err != nil {
			return err
		}
		if n.agentCount() > 0 {
			wctx, cancel := context.WithTimeout(ctx, leaderWait)
			err := n.srv.WaitForLeader(wctx)
			cancel()
			if err != nil {
				return fmt.Errorf("coordinator: no leader: %w", err)
			}
		}
	}
	if err := n.startAgents(); err != nil {
		return err
	}
	return n.startGossip()
}

// WaitReady blocks until the node is ready (see Ready) or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	if n.srv != nil {
		if err := n.srv.WaitForLeader(ctx); err != nil {
			return err
		}
	}
	n.mu.Lock()
	agents := n.agents
	n.mu.Unlock()
	for _, a := range agents {
		select {
		case <-a.Ready():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n.log.Info("node ready", "grpc", n.grpcAddr, "http", n.httpAddr,
		"workers", len(n.cfg.Workers), "ps", len(n.cfg.ParameterServers))
	return nil
}

// Ready reports what /readyz answers: the node runs, its coordinator (if any) knows a
// leader, and every node agent has registered.
func (n *Node) Ready() bool {
	if n.runCtx.Err() != nil {
		return false
	}
	if n.srv != nil && n.srv.LeaderAddr() == "" {
		return false
	}
	n.mu.Lock()
	agents := n.agents
	n.mu.Unlock()
	if len(agents) < n.agentCount() {
		return false
	}
	for _, a := range agents {
		select {
		case <-a.Ready():
		default:
			return false
		}
	}
	return true
}

// Shutdown stops the node: the agents first (their tasks end), then the servers in
// reverse start order. It returns the errors of the coordinator's shutdown and of node
// agents that ended other than by the shutdown (one still registering, say), or ctx's
// error when the node did not stop in time. Only the first call does anything.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx) })
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) error {
	n.cancel()
	var errs []error
	if err := waitGroup(ctx, &n.agentWG); err != nil {
		errs = append(errs, fmt.Errorf("node agents: %w", err))
	}
	n.mu.Lock()
	closers := n.closers
	n.closers = nil
	errs = append(errs, n.agentErrs...)
	n.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if err := waitGroup(ctx, &n.serveWG); err != nil {
		errs = append(errs, fmt.Errorf("servers: %w", err))
	}
	return errors.Join(errs...)
}

// waitGroup waits for wg or ctx.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onStop registers f to run at Shutdown (in reverse registration order).
func (n *Node) onStop(f func() error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closers = append(n.closers, f)
}

// serve serves gs on lis until Shutdown.
func (n *Node) serve(gs *grpc.Server, lis net.Listener) {
	n.serveWG.Add(1)
	go func() { defer n.serveWG.Done(); _ = gs.Serve(lis) }()
	n.onStop(func() error { gs.Stop(); return nil })
}

func (n *Node) agentCount() int { return len(n.cfg.Workers) + len(n.cfg.ParameterServers) }

// openStorage opens the node's storage and instruments it (its traffic shows on
// /metrics).
func (n *Node) openStorage(ctx context.Context) error {
	s := n.cfg.Storage
	switch {
	case s.S3 != nil:
		s3, err := storage.NewS3(ctx, *s.S3)
		if err != nil {
			return configErr("Storage.S3", "", err)
		}
		n.rawStore = s3
	case s.Dir != "":
		local, err := storage.NewLocal(s.Dir)
		if err != nil {
			return configErr("Storage.Dir", "", err)
		}
		n.rawStore = local
	default:
		return nil
	}
	sm, err := storage.NewMetrics(n.reg)
	if err != nil {
		return err
	}
	n.store = storage.Instrument(n.rawStore, sm)
	return nil
}

// startGossip joins the gossip pool when configured: one member for the process, named
// by its coordinator (else its first agent), carrying every role it runs.
func (n *Node) startGossip() error {
	g := n.cfg.Gossip
	if g.BindAddr == "" {
		return nil
	}
	gcfg := gossip.DefaultConfig()
	gcfg.BindAddr, gcfg.Seeds, gcfg.SecretKey = g.BindAddr, g.Seeds, g.Key
	var kr keyring
	if n.gossipKeysFromCluster() { // encrypted with the cluster's keyring, fetched over mutual TLS
		var err error
		if kr, err = n.firstGossipKeyring(n.runCtx); err != nil {
			return err
		}
		gcfg.Keys = kr.keys
	}
	var meta gossip.Meta
	if co := n.cfg.Coordinator; co != nil {
		meta = gossip.Meta{Roles: []string{"coordinator"}, GRPCAddr: n.grpcAddr, NodeID: co.NodeID}
	}
	if len(n.cfg.ParameterServers) > 0 {
		meta.Roles = append(meta.Roles, "paramserver")
		if meta.NodeID == "" {
			meta.NodeID, meta.GRPCAddr = n.cfg.ParameterServers[0].NodeID, n.data[0]
		}
	}
	if len(n.cfg.Workers) > 0 {
		meta.Roles = append(meta.Roles, "worker")
		if meta.NodeID == "" {
			meta.NodeID = n.cfg.Workers[0].NodeID
		}
	}
	gcfg.Name, gcfg.Meta = meta.NodeID, meta
	gcfg.Logger, gcfg.Registry = n.log, n.reg
	member, err := gossip.New(gcfg)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	n.onStop(func() error { _ = member.Shutdown(); return nil })
	n.gossip = member
	if n.gossipKeysFromCluster() {
		n.serveWG.Go(func() { n.followGossipKeyring(n.runCtx, member, kr.version) })
	}
	return nil
}

// Gossip is the node's gossip member (nil without gossip).
func (n *Node) Gossip() *gossip.Gossip { return n.gossip }

// GRPCAddr is the coordinator's gRPC API address ("" without a coordinator).
func (n *Node) GRPCAddr() string { return n.grpcAddr }

// RaftAddr is the coordinator's Raft address ("" without a coordinator).
func (n *Node) RaftAddr() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.RaftAddr()
}

// HTTPAddr is the address /metrics, /healthz and /readyz are served on ("" without).
func (n *Node) HTTPAddr() string { return n.httpAddr }

// DataAddrs are the parameter servers' data addresses, in Config order.
func (n *Node) DataAddrs() []string { return n.data }

// Store is the node's storage as opened (nil without storage).
func (n *Node) Store() storage.Blob { return n.rawStore }

// Server is the coordinator (nil without one).
func (n *Node) Server() *server.Server { return n.srv }

// Registry is the node's Prometheus registry (what /metrics serves).
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// ParseJobSpec parses and validates a job spec into the coordinator's job template.
func ParseJobSpec(raw []byte) (*cohortv1.Job, error) {
	spec, err := jobs.Parse(raw)
	if err != nil {
		return nil, err
	}
	return spec.JobTemplate()
}
