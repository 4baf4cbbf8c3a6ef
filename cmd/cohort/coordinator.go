package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/gossip"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/web"
)

type coordinatorFlags struct {
	nodeID     string
	dataDir    string
	raftAddr   string
	grpcAddr   string
	httpAddr   string
	bootstrap  bool
	join       string
	gossipAddr string
	gossipJoin string
	gossipKey  string
	logLevel   string

	raftLogStore    string
	raftHeartbeat   time.Duration
	raftElection    time.Duration
	raftLeaderLease time.Duration
	heartbeatTTL    time.Duration
	logs            logStoreFlags // where task logs are read from

	aclTokensFile string
	token         string // the global --token: sent with Join (needs an admin token when ACLs are on)
}

func newCoordinatorCmd(g *globalFlags) *cobra.Command {
	f := &coordinatorFlags{}
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a coordinator: a Raft voter with the gRPC API and /metrics",
		Long: `coordinator runs one voter of the highly available control plane (3 or 5 voters).

Start the first voter with --bootstrap, then the others with --join naming the gRPC
address of one or more running coordinators. A restarted voter finds its state in
--data-dir and needs neither. Any coordinator accepts every call and forwards writes
to the leader.

With --acl-tokens-file every gRPC call needs a token (role read, submit, admin or
agent) and the dashboard asks for one; give every coordinator the same file, and a
joining coordinator an admin token (--token or COHORT_TOKEN). kill -HUP reloads the
file. /metrics and /healthz stay open.`,
		Example: `  cohort coordinator --node-id c1 --data-dir /var/lib/cohort/c1 --raft-addr 10.0.0.1:7000 \
    --grpc-addr 10.0.0.1:7070 --http-addr 10.0.0.1:7071 --bootstrap
  cohort coordinator --node-id c2 --data-dir /var/lib/cohort/c2 --raft-addr 10.0.0.2:7000 \
    --grpc-addr 10.0.0.2:7070 --http-addr 10.0.0.2:7071 --join 10.0.0.1:7070`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.token = g.token
			return runCoordinator(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.nodeID, "node-id", "", "this voter's stable Raft server ID (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, stable store and snapshots (required)")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7000", "Raft TCP address (must be reachable by the other voters)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:7070", "gRPC API address (must be reachable by clients and the other voters)")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:7071", "HTTP address for /metrics and /healthz")
	fl.BoolVar(&f.bootstrap, "bootstrap", false, "start a new cluster with this voter as its first member")
	fl.StringVar(&f.join, "join", "", "comma-separated gRPC addresses of running coordinators to join")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist gossip address (empty: no gossip)")
	fl.StringVar(&f.gossipJoin, "gossip-join", "", "comma-separated gossip addresses of other coordinators")
	fl.StringVar(&f.gossipKey, "gossip-key", os.Getenv("COHORT_GOSSIP_KEY"), "base64 gossip encryption key of 16, 24 or 32 bytes (env COHORT_GOSSIP_KEY)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug|info|warn|error")
	fl.StringVar(&f.aclTokensFile, "acl-tokens-file", "", "YAML list of ACL tokens (name, secret or secret_sha256, role read|submit|admin|agent, namespaces); every call then needs a token, reloaded on SIGHUP (empty: ACLs off)")
	f.logs.register(cmd)
	d := server.DefaultConfig()
	fl.StringVar(&f.raftLogStore, "raft-log-store", "", "Raft log store: wal|boltdb (empty: what --data-dir holds, wal when new)")
	fl.DurationVar(&f.raftHeartbeat, "raft-heartbeat-timeout", d.RaftHeartbeatTimeout, "Raft heartbeat timeout (LAN default; raise it on slow networks)")
	fl.DurationVar(&f.raftElection, "raft-election-timeout", d.RaftElectionTimeout, "Raft election timeout (at least the heartbeat timeout)")
	fl.DurationVar(&f.raftLeaderLease, "raft-leader-lease-timeout", d.RaftLeaderLeaseTimeout, "Raft leader lease (at most the heartbeat timeout)")
	fl.DurationVar(&f.heartbeatTTL, "node-heartbeat-ttl", d.HeartbeatTTL, "how long the leader waits for a node's heartbeat before marking it down")
	return cmd
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// checkHostPort refuses an address that is not host:port.
func checkHostPort(flag, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usageErr("%s %q: not a host:port address: %v", flag, addr, err)
	}
	return nil
}

// newLogger builds the process logger from a --log-level value.
func newLogger(level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr("--log-level: %q is not one of debug, info, warn, error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})), nil
}

// gossipKey decodes a --gossip-key value.
func gossipKey(v string) ([]byte, error) {
	if v == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, usageErr("--gossip-key: not base64: %v", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, usageErr("--gossip-key: %d bytes, want 16, 24 or 32", n)
	}
	return key, nil
}

// minNodeHeartbeatTTL is three heartbeat intervals of the node agents.
var minNodeHeartbeatTTL = 3 * agent.DefaultConfig().HeartbeatInterval

func runCoordinator(ctx context.Context, f *coordinatorFlags) error {
	switch {
	case f.nodeID == "":
		return usageErr("--node-id is required")
	case f.dataDir == "":
		return usageErr("--data-dir is required")
	case f.bootstrap && f.join != "":
		return usageErr("--bootstrap and --join are mutually exclusive: bootstrap starts a new cluster, join adds to one")
	case f.heartbeatTTL < minNodeHeartbeatTTL:
		// Node agents heartbeat every 2 s by default: a TTL under three intervals marks live
		// nodes down (and restarts their jobs) whenever one heartbeat is late.
		return usageErr("--node-heartbeat-ttl %s: must be at least %s (three node-agent heartbeat intervals)", f.heartbeatTTL, minNodeHeartbeatTTL)
	}
	for flag, addr := range map[string]string{"--raft-addr": f.raftAddr, "--grpc-addr": f.grpcAddr, "--http-addr": f.httpAddr} {
		if err := checkHostPort(flag, addr); err != nil {
			return err
		}
	}
	joinAddrs := splitList(f.join)
	for _, a := range joinAddrs {
		if err := checkHostPort("--join", a); err != nil {
			return err
		}
	}
	key, err := gossipKey(f.gossipKey)
	if err != nil {
		return err
	}
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	var tokens []api.Token
	if f.aclTokensFile != "" {
		if tokens, err = loadTokensFile(f.aclTokensFile); err != nil {
			return &exitError{code: 2, err: err}
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	glis, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return usageErr("--grpc-addr %s: %v", f.grpcAddr, err)
	}
	defer glis.Close()
	grpcAddr := glis.Addr().String()

	scfg := server.DefaultConfig()
	scfg.NodeID = f.nodeID
	scfg.DataDir = f.dataDir
	scfg.RaftBindAddr = f.raftAddr
	scfg.GRPCAddr = grpcAddr
	scfg.Bootstrap = f.bootstrap
	scfg.RaftLogStore = f.raftLogStore
	scfg.RaftHeartbeatTimeout = f.raftHeartbeat
	scfg.RaftElectionTimeout = f.raftElection
	scfg.RaftLeaderLeaseTimeout = f.raftLeaderLease
	scfg.HeartbeatTTL = f.heartbeatTTL
	scfg.Logger = logger.With("role", "coordinator")
	scfg.Registry = reg
	srv, err := server.New(scfg)
	if err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	defer func() { _ = srv.Shutdown() }()
	if !srv.HadState() && !f.bootstrap && len(joinAddrs) == 0 {
		return usageErr("%s holds no cluster state: start the first voter with --bootstrap, the others with --join", f.dataDir)
	}

	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgBytes), grpc.MaxCallSendMsgSize(maxMsgBytes)),
	}
	// The forwarder carries no token of its own: a forwarded call carries its caller's.
	fwd := api.NewLeaderForwarder(srv, dialOpts...)
	defer fwd.Close()
	acfg := api.Config{Logger: logger.With("role", "api"), ParseSpec: parseSpecTemplate, Forwarder: fwd}
	if logs, err := f.logs.open(ctx); err != nil {
		return err
	} else if logs != nil {
		acfg.Logs = logs
	}
	acl := newCoordinatorACL(f.aclTokensFile, tokens, srv.State, logger.With("role", "acl"))
	acl.reloadOnSIGHUP(ctx)
	gs := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxMsgBytes), grpc.MaxSendMsgSize(maxMsgBytes)}, acl.serverOptions()...)...)
	cohortv1.RegisterJobServiceServer(gs, api.NewJobService(srv, acfg))
	cohortv1.RegisterAgentServiceServer(gs, api.NewAgentService(srv, acfg))
	cohortv1.RegisterClusterServiceServer(gs, api.NewClusterService(srv, acfg))
	go func() { _ = gs.Serve(glis) }()
	defer gs.Stop()

	hlis, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return usageErr("--http-addr %s: %v", f.httpAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if srv.LeaderAddr() == "" {
			http.Error(w, "no leader", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// The dashboard reads the cluster through this coordinator's own gRPC API.
	webConn, err := dial(grpcAddr, tokenDialOptions(acl.dashboardToken(f.nodeID))...)
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	defer webConn.Close()
	webSrc := newWebSource(webConn, nil)
	webSrc.stale = acl != nil // its minted token is valid on this coordinator only
	mux.Handle("/", acl.protect(web.New(web.Config{Source: webSrc, Logger: logger.With("role", "web"), Context: ctx})))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(hlis) }()
	defer hs.Close()

	if len(joinAddrs) > 0 && !srv.HadState() {
		// Coordinators started together may not be listening yet: retry unreachable
		// ones for a minute; a refusal or a non-coordinator ends the attempt at once.
		jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		var resp *cohortv1.JoinResponse
		for back := 200 * time.Millisecond; ; back = min(2*back, 2*time.Second) {
			resp, err = api.JoinCluster(jctx, joinAddrs,
				&cohortv1.JoinRequest{Id: f.nodeID, RaftAddress: srv.RaftAddr(), GrpcAddress: grpcAddr}, slices.Concat(dialOpts, tokenDialOptions(f.token))...)
			c := status.Code(err)
			if err == nil || errors.Is(err, api.ErrNotCoordinator) || c == codes.AlreadyExists || c == codes.InvalidArgument || c == codes.FailedPrecondition {
				break
			}
			logger.Warn("join failed; retrying", "err", err, "backoff", back)
			select {
			case <-jctx.Done():
			case <-time.After(back):
			}
			if jctx.Err() != nil {
				break
			}
		}
		cancel()
		if err != nil {
			if c := status.Code(err); errors.Is(err, api.ErrNotCoordinator) || c == codes.AlreadyExists || c == codes.InvalidArgument {
				return &exitError{code: 2, err: fmt.Errorf("--join %s: %w", f.join, err)}
			}
			return fmt.Errorf("--join %s: %w", f.join, err)
		}
		logger.Info("joined the cluster", "leader", resp.GetLeaderId())
	}

	if f.gossipAddr != "" {
		gcfg := gossip.DefaultConfig()
		gcfg.Name, gcfg.BindAddr, gcfg.Seeds, gcfg.SecretKey = f.nodeID, f.gossipAddr, splitList(f.gossipJoin), key
		gcfg.Meta = gossip.Meta{Roles: []string{"coordinator"}, GRPCAddr: grpcAddr, NodeID: f.nodeID}
		gcfg.Logger, gcfg.Registry = logger, reg
		g, err := gossip.New(gcfg)
		if err != nil {
			return fmt.Errorf("gossip: %w", err)
		}
		defer func() { _ = g.Shutdown() }()
	}

	fmt.Fprintf(os.Stderr, "cohort coordinator %s: raft %s, grpc %s, metrics http://%s/metrics\n",
		f.nodeID, srv.RaftAddr(), grpcAddr, hlis.Addr())
	<-ctx.Done()
	logger.Info("shutting down")
	if err := srv.Shutdown(); err != nil && !errors.Is(err, server.ErrShutdown) {
		return err
	}
	return nil
}
