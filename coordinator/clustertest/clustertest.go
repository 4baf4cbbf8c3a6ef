// Package clustertest runs a cluster of coordinators inside one test: real Raft over
// mutual TLS on 127.0.0.1, raft-boltdb in t.TempDir(), and each coordinator's gRPC API
// (JobService, AgentService, ClusterService, with forwarding to the leader) on its own
// loopback port, over mutual TLS with the certificate role rules. The cluster has its
// own CA; Cluster.DialOptions and AgentDialOptions are a client's and a node agent's
// credentials. Coordinators after the first join through the real Join path.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Options tune a test cluster.
type Options struct {
	// Mutate, when set, changes each coordinator's server config before it starts.
	Mutate func(*server.Config)
	// Logger receives every coordinator's logs (default: discarded unless
	// COHORT_TEST_LOGS is set with -v).
	Logger *slog.Logger
	// ServerOptions, when set, gives extra gRPC server options for each coordinator's
	// API (an ACL's interceptors).
	ServerOptions func(*server.Server) []grpc.ServerOption
	// ClientOptions are added to the dial options of the joins, of Node.Conn and of
	// Node.Agent (an ACL token).
	ClientOptions []grpc.DialOption
	// CA, when set, is the cluster's CA (nil: a new one): tests whose other processes
	// hold certificates from a CA of their own pass it.
	CA *pki.CA
	// ParseSpec, when set, replaces the fake spec parser ParseSpec (a test that submits
	// real job specs passes node.ParseJobSpec).
	ParseSpec func(spec []byte) (*cohortv1.Job, error)
	// API, when set, changes each coordinator's API config (its forwarding timeouts).
	API func(*api.Config)
}

// Node is one coordinator of a test cluster.
type Node struct {
	ID       string
	DataDir  string
	RaftAddr string
	GRPCAddr string

	t         testing.TB
	opts      Options
	pki       *clusterPKI
	certs     *pki.Reloader // this coordinator's certificate, issued at each start
	mu        sync.Mutex
	server    *server.Server
	grpc      *grpc.Server
	fwd       *api.LeaderForwarder
	conn      *grpc.ClientConn
	agentConn *grpc.ClientConn
	running   bool
}

// Cluster is a set of coordinators.
type Cluster struct {
	Nodes []*Node
	t     testing.TB
	pki   *clusterPKI
}

// clusterPKI is a test cluster's CA and the credentials of its clients.
type clusterPKI struct {
	ca     *pki.CA
	client *pki.Reloader // role client, ACL role admin
	agent  *pki.Reloader // role agent
}

func newClusterPKI(t testing.TB, ca *pki.CA) *clusterPKI {
	t.Helper()
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("clustertest CA", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	p := &clusterPKI{ca: ca}
	p.client = p.issue(t, pki.Identity{Name: "admin", Role: pki.RoleClient, ACLRole: "admin"})
	p.agent = p.issue(t, pki.Identity{Name: "agent", Role: pki.RoleAgent, ACLRole: "agent"})
	return p
}

// issue issues id a certificate naming loopback.
func (p *clusterPKI) issue(t testing.TB, id pki.Identity) *pki.Reloader {
	t.Helper()
	certPEM, keyPEM, err := p.ca.IssueFor(id, []string{"127.0.0.1", "localhost"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dialOptions presents certs to coordinators.
func (p *clusterPKI) dialOptions(certs *pki.Reloader) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(p.ca.Pool(), certs, pki.RoleCoordinator)))}
}

// CA returns the cluster's CA (to issue more certificates).
func (c *Cluster) CA() *pki.CA { return c.pki.ca }

// DialOptions are the dial options of a client of the cluster (people, tools): a client
// certificate from its CA (ACL role admin).
func (c *Cluster) DialOptions() []grpc.DialOption { return c.pki.dialOptions(c.pki.client) }

// IssueDialOptions are the dial options of a caller whose certificate, from the
// cluster's CA, names id.
func (c *Cluster) IssueDialOptions(t testing.TB, id pki.Identity) []grpc.DialOption {
	t.Helper()
	return c.pki.dialOptions(c.pki.issue(t, id))
}

// AgentDialOptions are the dial options of a node agent of the cluster: an agent
// certificate from its CA.
func (c *Cluster) AgentDialOptions() []grpc.DialOption { return c.pki.dialOptions(c.pki.agent) }

// TestRaftConfig sets short Raft timeouts suited to loopback tests on a loaded machine.
func TestRaftConfig(c *server.Config) {
	c.RaftHeartbeatTimeout = 200 * time.Millisecond
	c.RaftElectionTimeout = 200 * time.Millisecond
	c.RaftLeaderLeaseTimeout = 100 * time.Millisecond
	c.RaftCommitTimeout = 5 * time.Millisecond
	c.SchedulerRetryInterval = 100 * time.Millisecond
}

// Logger returns the logger tests use: discarded unless -v and COHORT_TEST_LOGS are set.
func Logger() *slog.Logger {
	if testing.Verbose() && os.Getenv("COHORT_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// ParseSpec is the injected spec parser: "name: X" gives a 1-worker, 1-shard job.
// Further lines "workers: N", "gpus: N" (per worker), "shards: N", "priority: N",
// "min: N" and "max: N" (workers.min and .max), "selector: k=v" and "namespace: NS"
// change it.
func ParseSpec(spec []byte) (*cohortv1.Job, error) {
	lines := strings.Split(strings.TrimSpace(string(spec)), "\n")
	name, ok := strings.CutPrefix(strings.TrimSpace(lines[0]), "name: ")
	if !ok || name == "" {
		return nil, errors.New("spec.yaml:1: metadata.name: required")
	}
	job := &cohortv1.Job{Name: name, Namespace: "default", Priority: 50, WorkerCount: 1, ShardCount: 1,
		WorkerResources: &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20},
		ShardResources:  &cohortv1.Resources{CpuMillis: 100, MemoryBytes: 1 << 20}}
	for i, l := range lines[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ": ")
		if !ok {
			return nil, fmt.Errorf("spec.yaml:%d: want \"key: value\"", i+2)
		}
		if k == "namespace" {
			job.Namespace = v
			continue
		}
		if k == "selector" {
			lk, lv, _ := strings.Cut(v, "=")
			job.NodeSelector = map[string]string{lk: lv}
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("spec.yaml:%d: %s: %w", i+2, k, err)
		}
		switch k {
		case "workers":
			job.WorkerCount = int32(n)
		case "gpus":
			job.WorkerResources.Gpus = int32(n)
		case "shards":
			job.ShardCount = int32(n)
		case "priority":
			job.Priority = int32(n)
		case "min":
			job.MinWorkers = int32(n)
		case "max":
			job.MaxWorkers = int32(n)
		default:
			return nil, fmt.Errorf("spec.yaml:%d: unknown field %q", i+2, k)
		}
	}
	return job, nil
}

// TestCluster starts n coordinators: the first bootstraps, the others join through its
// ClusterService. It returns once every one is a voter and a leader is known. The
// cluster is shut down when the test ends.
func TestCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Logger == nil {
		o.Logger = Logger()
	}
	c := &Cluster{t: t, pki: newClusterPKI(t, o.CA)}
	for i := range n {
		node := &Node{ID: fmt.Sprintf("c%d", i+1), DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", t: t, opts: o, pki: c.pki}
		if err := node.start(i == 0); err != nil {
			t.Fatalf("start coordinator %s: %v", node.ID, err)
		}
		t.Cleanup(node.Stop)
		c.Nodes = append(c.Nodes, node)
		if i == 0 {
			c.WaitForLeader(t)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := api.JoinCluster(ctx, []string{c.Nodes[0].GRPCAddr},
			&cohortv1.JoinRequest{Id: node.ID, RaftAddress: node.RaftAddr, GrpcAddress: node.GRPCAddr}, append(node.coordinatorDialOptions(), o.ClientOptions...)...)
		cancel()
		if err != nil {
			t.Fatalf("join coordinator %s: %v", node.ID, err)
		}
	}
	c.WaitForLeader(t)
	return c
}

// start starts (or restarts, on the same directory and addresses) the coordinator.
func (n *Node) start(bootstrap bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	glis, err := net.Listen("tcp", n.GRPCAddr)
	if err != nil {
		return err
	}
	n.GRPCAddr = glis.Addr().String()
	n.certs = n.pki.issue(n.t, pki.Identity{Name: n.ID, Role: pki.RoleCoordinator})
	cfg := server.DefaultConfig()
	TestRaftConfig(&cfg)
	cfg.NodeID = n.ID
	cfg.DataDir = n.DataDir
	cfg.RaftBindAddr = n.RaftAddr
	cfg.GRPCAddr = n.GRPCAddr
	cfg.Bootstrap = bootstrap
	cfg.Logger = n.opts.Logger.With("coordinator", n.ID)
	cfg.Registry = prometheus.NewRegistry()
	cfg.RaftTLS = &server.TLSConfig{CA: n.pki.ca.Pool(), Certs: n.certs}
	if n.opts.Mutate != nil {
		n.opts.Mutate(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		_ = glis.Close()
		return err
	}
	n.RaftAddr = s.RaftAddr()
	n.server = s
	n.fwd = api.NewLeaderForwarder(s, n.coordinatorDialOptions()...)
	acfg := api.Config{ParseSpec: ParseSpec, Logger: cfg.Logger, Forwarder: n.fwd}
	if n.opts.ParseSpec != nil {
		acfg.ParseSpec = n.opts.ParseSpec
	}
	if n.opts.API != nil {
		n.opts.API(&acfg)
	}
	sopts := append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(pki.ServerTLSConfig(n.pki.ca.Pool(), n.certs, true)))},
		api.CertRoleServerOptions(cfg.Logger, nil)...)
	if n.opts.ServerOptions != nil {
		sopts = append(sopts, n.opts.ServerOptions(s)...)
	}
	gs := grpc.NewServer(sopts...)
	cohortv1.RegisterJobServiceServer(gs, api.NewJobService(s, acfg))
	cohortv1.RegisterAgentServiceServer(gs, api.NewAgentService(s, acfg))
	cohortv1.RegisterClusterServiceServer(gs, api.NewClusterService(s, acfg))
	n.grpc = gs
	go func() { _ = gs.Serve(glis) }()
	conn, err := grpc.NewClient(n.GRPCAddr, append(n.pki.dialOptions(n.pki.client), n.opts.ClientOptions...)...)
	if err != nil {
		return err
	}
	n.conn = conn
	if n.agentConn, err = grpc.NewClient(n.GRPCAddr, append(n.pki.dialOptions(n.pki.agent), n.opts.ClientOptions...)...); err != nil {
		return err
	}
	n.running = true
	return nil
}

// Server returns the coordinator's server (nil while stopped).
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.server
}

// Running reports whether the coordinator is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// Conn returns a client connection to this coordinator's gRPC API.
func (n *Node) Conn() *grpc.ClientConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conn
}

// coordinatorDialOptions present this coordinator's certificate (forwarding, joins).
func (n *Node) coordinatorDialOptions() []grpc.DialOption { return n.pki.dialOptions(n.certs) }

// Jobs returns a JobService client of this coordinator.
func (n *Node) Jobs() cohortv1.JobServiceClient { return cohortv1.NewJobServiceClient(n.Conn()) }

// Agent returns an AgentService client of this coordinator, calling with a node agent's
// certificate.
func (n *Node) Agent() cohortv1.AgentServiceClient {
	n.mu.Lock()
	defer n.mu.Unlock()
	return cohortv1.NewAgentServiceClient(n.agentConn)
}

// Cluster returns a ClusterService client of this coordinator.
func (n *Node) Cluster() cohortv1.ClusterServiceClient {
	return cohortv1.NewClusterServiceClient(n.Conn())
}

// Stop kills the coordinator abruptly: the gRPC server drops every connection and Raft
// shuts down (its data directory stays). It is a no-op when stopped.
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return
	}
	n.running = false
	n.grpc.Stop()
	_ = n.conn.Close()
	_ = n.agentConn.Close()
	_ = n.fwd.Close()
	_ = n.server.Shutdown()
}

// Restart starts a stopped coordinator again on its data directory and addresses.
func (n *Node) Restart() error {
	if n.Running() {
		return errors.New("clustertest: coordinator is running")
	}
	return n.start(false)
}

// WaitForLeader waits until every running coordinator knows the same leader and that
// leader runs its leader machinery with its gRPC address recorded, and returns it.
func (c *Cluster) WaitForLeader(t testing.TB) *Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := c.leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("clustertest: no leader after 30s")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// Leader returns the leading coordinator, or nil.
func (c *Cluster) Leader() *Node { return c.leader() }

func (c *Cluster) leader() *Node {
	var leader *Node
	leaderID := ""
	for _, n := range c.Nodes {
		s := n.Server()
		if s == nil || !n.Running() {
			continue
		}
		id, _, ok := s.LeaderGRPCAddr()
		if !ok {
			return nil
		}
		if leaderID != "" && id != leaderID {
			return nil
		}
		leaderID = id
		if n.ID == id && s.IsLeader() {
			leader = n
		}
	}
	return leader
}

// Running returns the running coordinators.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}
