package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/node"
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
	insecure      bool
	tokenFile     string          // --token-file: the join token, from a file
	joinTokenDir  string          // --join-token-dir
	tls           *node.TLSConfig // from --tls-dir and --insecure
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

Every connection (gRPC API, Raft, forwarding, joins) is mutual TLS. The first voter
creates the cluster CA in --data-dir/tls and writes the operator's client credentials
there (admin.crt, admin.key; it prints where). A joining voter needs a certificate of
role coordinator in its --data-dir/tls (or --tls-dir): 'cohort tls issue', or a copy of
the CA (ca.crt, ca.key), from which it issues its own. Without a certificate, only
loopback addresses are served, unless --insecure.

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
			f.token, f.tls = aclToken(g), withHTTPS(cmd, nodeTLSConfig(g, f.insecure))
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
	fl.BoolVar(&f.insecure, "insecure", false, insecureUsage)
	fl.Bool("https", false, httpsUsage)
	fl.StringVar(&f.tokenFile, "token-file", "", tokenFileUsage)
	fl.StringVar(&f.joinTokenDir, "join-token-dir", "", "with --bootstrap: write coordinator.token and agent.token (0600, never expiring) there for a deployment's other voters and agents (--token-file)")
	fl.StringVar(&f.aclTokensFile, "acl-tokens-file", "", "YAML list of ACL tokens (name, secret or secret_sha256, role read|submit|admin|agent, namespaces); a call then needs a token, or without one a client certificate, whose ACL role is enforced in any case; reloaded on SIGHUP (empty: ACLs off)")
	f.logs.register(cmd)
	d := node.DefaultCoordinatorConfig()
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
var minNodeHeartbeatTTL = 3 * node.DefaultHeartbeatInterval

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
	logs, err := f.logs.config()
	if err != nil {
		return err
	}

	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap, co.Join = f.nodeID, f.dataDir, f.bootstrap, joinAddrs
	co.RaftAddr, co.GRPCAddr = f.raftAddr, f.grpcAddr
	co.RaftLogStore, co.HeartbeatTTL = f.raftLogStore, f.heartbeatTTL
	co.RaftHeartbeatTimeout, co.RaftElectionTimeout, co.RaftLeaderLeaseTimeout = f.raftHeartbeat, f.raftElection, f.raftLeaderLease
	co.ACLTokensFile = f.aclTokensFile
	cfg.Coordinator, cfg.HTTPAddr, cfg.Storage, cfg.Logger, cfg.Token = &co, f.httpAddr, logs, logger, f.token
	cfg.TLS = f.tls
	cfg.TLS.JoinTokenFile, cfg.TLS.JoinTokenDir = f.tokenFile, f.joinTokenDir
	cfg.Gossip = node.GossipConfig{BindAddr: f.gossipAddr, Seeds: splitList(f.gossipJoin), Key: key}
	if f.aclTokensFile == "" {
		logger.With("role", "acl").Warn("ACLs are off: anyone who reaches the gRPC API may submit, cancel and administer; " +
			"start every coordinator with --acl-tokens-file to require tokens")
	}
	n, err := startNode(ctx, cfg, coordinatorFlagOf)
	var je *node.JoinError
	switch {
	case errors.Is(err, node.ErrNoClusterState):
		return usageErr("%s holds no cluster state: start the first voter with --bootstrap, the others with --join", f.dataDir)
	case errors.As(err, &je) && je.Refused:
		return &exitError{code: 2, err: fmt.Errorf("--join %s: %w", f.join, je.Err)}
	case errors.As(err, &je):
		return fmt.Errorf("--join %s: %w", f.join, je.Err)
	case err != nil:
		return err
	}
	defer func() { _ = n.Shutdown(context.Background()) }()
	if f.aclTokensFile != "" {
		reloadACLOnSIGHUP(ctx, n)
	}
	fmt.Fprintf(os.Stderr, "cohort coordinator %s: raft %s, grpc %s, metrics http://%s/metrics\n",
		f.nodeID, n.RaftAddr(), n.GRPCAddr(), n.HTTPAddr())
	printClientCredentials(n)
	<-ctx.Done()
	logger.Info("shutting down")
	return n.Shutdown(context.Background())
}

// coordinatorFlagOf names the coordinator flag that sets a node.Config field.
var coordinatorFlagOf = map[string]string{
	"Coordinator.GRPCAddr": "--grpc-addr", "HTTPAddr": "--http-addr", "Coordinator.DataDir": "--data-dir",
	"Coordinator.ACLTokensFile": "--acl-tokens-file", "Coordinator.HeartbeatTTL": "--node-heartbeat-ttl",
	"Storage.Dir": "--storage-dir", "Storage.S3": "--s3-endpoint/--s3-bucket",
	"Coordinator.RaftAddr": "--raft-addr", "Coordinator.Join": "--join", "TLS.Dir": "--tls-dir",
}

// startNode builds a node from cfg and starts it. An error about a Config field is bad
// input (exit 2) naming the flag (flagOf) that set the field.
func startNode(ctx context.Context, cfg node.Config, flagOf map[string]string) (*node.Node, error) {
	n, err := node.New(cfg)
	if err == nil {
		err = n.Start(ctx)
	}
	if err == nil {
		return n, nil
	}
	var ce *node.ConfigError
	switch {
	case !errors.As(err, &ce):
		return nil, err
	case flagOf[ce.Field] == "":
		return nil, usageErr("%v", err)
	case ce.Value != "":
		return nil, usageErr("%s %s: %v", flagOf[ce.Field], ce.Value, ce.Err)
	}
	return nil, usageErr("%s: %v", flagOf[ce.Field], ce.Err)
}
