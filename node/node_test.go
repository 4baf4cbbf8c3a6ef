package node_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no %d within 30s (last %v, %v)", url, want, resp, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// conn dials addr with the client credentials in tlsDir.
func conn(t *testing.T, addr, tlsDir string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	creds, err := node.ClientTLSCredentials(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// agentTLSDir issues node agent nodeID a certificate from the CA of coordinator node n.
func agentTLSDir(t *testing.T, n *node.Node, nodeID string) string {
	t.Helper()
	return nodetest.IssueTLSDir(t, n.ClientTLSDir(), pki.Identity{Name: nodeID, Role: pki.RoleAgent, ACLRole: "agent"})
}

func start(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = nodetest.Logger()
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// TestDevNode: the dev node serves the same services and health endpoints as the real
// roles: JobService, AgentService and ClusterService; /healthz and /readyz 200 once
// ready; every agent registered. Shutdown removes its temporary state.
func TestDevNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{Workers: 2, PS: 1})
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, "http://"+c.HTTPAddr+p); code != http.StatusOK {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	if code, body := get(t, "http://"+c.HTTPAddr+"/metrics"); code != http.StatusOK || !strings.Contains(body, `node="dev-worker-1"`) {
		t.Errorf("GET /metrics: %d, want the workers' metrics labelled by node", code)
	}
	cc := conn(t, c.GRPCAddr, c.TLSDir)
	peers, err := cohortv1.NewClusterServiceClient(cc).ListPeers(ctx, &cohortv1.ListPeersRequest{})
	if err != nil || len(peers.GetPeers()) != 1 || !peers.GetPeers()[0].GetLeader() || peers.GetPeers()[0].GetGrpcAddress() != c.GRPCAddr {
		t.Fatalf("ListPeers: %v, %v; want the dev coordinator, leading, at %s", peers, err, c.GRPCAddr)
	}
	nodes, err := cohortv1.NewJobServiceClient(cc).ListNodes(ctx, &cohortv1.ListNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 3 {
		t.Fatalf("ListNodes: %v, %v; want 3 nodes", nodes, err)
	}
	if len(c.Node.DataAddrs()) != 1 || c.Store == nil || c.Node.Server() == nil || c.Node.RaftAddr() == "" {
		t.Errorf("accessors: data %v, store %v, raft %q", c.Node.DataAddrs(), c.Store, c.Node.RaftAddr())
	}
}

// TestRolesInSeparateNodes: a coordinator node and a worker node that joins it, as
// `cohort coordinator` and `cohort worker` run them: the worker's /healthz is 200 at
// once and its /readyz once it registered; Shutdown stops both cleanly.
func TestRolesInSeparateNodes(t *testing.T) {
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator, cfg.HTTPAddr = &co, "127.0.0.1:0"
	coord := start(t, cfg)
	waitStatus(t, "http://"+coord.HTTPAddr()+"/healthz", http.StatusOK)
	waitStatus(t, "http://"+coord.HTTPAddr()+"/readyz", http.StatusOK)

	wcfg := node.DefaultConfig()
	w := node.DefaultWorkerConfig()
	w.NodeID, w.Join, w.GPUs = "w1", []string{coord.GRPCAddr()}, 0
	wcfg.Workers, wcfg.Storage.Dir, wcfg.HTTPAddr = []node.WorkerConfig{w}, t.TempDir(), "127.0.0.1:0"
	wcfg.TLS = &node.TLSConfig{Dir: agentTLSDir(t, coord, "w1")}
	wn := start(t, wcfg)
	if code, _ := get(t, "http://"+wn.HTTPAddr()+"/healthz"); code != http.StatusOK {
		t.Errorf("worker /healthz: %d", code)
	}
	waitStatus(t, "http://"+wn.HTTPAddr()+"/readyz", http.StatusOK)
	if code, _ := get(t, "http://"+wn.HTTPAddr()+"/"); code != http.StatusNotFound {
		t.Errorf("worker /: %d, want 404 (the dashboard is the coordinator's)", code)
	}
	if wn.GRPCAddr() != "" || wn.Server() != nil {
		t.Errorf("a worker node has a coordinator: %q", wn.GRPCAddr())
	}
}

// TestCoordinatorACL: with an ACL tokens file a call's token, or without one its client
// certificate, is checked; the node agents
// register with theirs, the dashboard asks for one, and ReloadACLTokens puts a new file
// in force.
func TestCoordinatorACL(t *testing.T) {
	const readSecret, agentSecret, newRead = "node-read-secret-0123456789", "node-agent-secret-0123456789", "node-new-read-0123456789"
	// agentSecret is for agents of other processes.
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.yaml")
	write := func(read string) {
		body := "- {name: viewer, secret: " + read + ", role: read}\n- {name: agents, secret: " + agentSecret + ", role: agent}\n"
		if err := os.WriteFile(tokens, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(readSecret)
	cfg := node.DevConfig(1, 1, dir)
	cfg.Coordinator.GRPCAddr, cfg.HTTPAddr, cfg.Coordinator.ACLTokensFile = "127.0.0.1:0", "127.0.0.1:0", tokens
	n := start(t, cfg) // the local agents register with tokens the coordinator mints
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	list := func(secret string) error {
		var opts []grpc.DialOption
		if secret != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(api.BearerToken(secret)))
		}
		_, err := cohortv1.NewJobServiceClient(conn(t, n.GRPCAddr(), n.ClientTLSDir(), opts...)).ListNodes(ctx, &cohortv1.ListNodesRequest{})
		return err
	}
	// Without a token the client certificate is the credential: the operator's admin
	// certificate, or a read certificate.
	if err := list(""); err != nil {
		t.Errorf("ListNodes without a token, with the admin certificate: %v", err)
	}
	if _, err := cohortv1.NewJobServiceClient(conn(t, n.GRPCAddr(), n.ClientTLSDir())).SetQueue(ctx, &cohortv1.SetQueueRequest{Queue: &cohortv1.Queue{Name: "research", Weight: 2}}); err != nil {
		t.Errorf("SetQueue without a token, with the admin certificate: %v", err)
	}
	if _, err := cohortv1.NewJobServiceClient(conn(t, n.GRPCAddr(), n.ClientTLSDir(), grpc.WithPerRPCCredentials(api.BearerToken(readSecret)))).SetQueue(ctx,
		&cohortv1.SetQueueRequest{Queue: &cohortv1.Queue{Name: "research", Weight: 3}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("SetQueue with a read token over the admin certificate: %v, want PermissionDenied (a token sent is the credential)", err)
	}
	if err := list("not-a-token-0123456789"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListNodes with an unknown token: %v, want Unauthenticated", err)
	}
	if err := list(readSecret); err != nil {
		t.Errorf("ListNodes with the read token: %v", err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + n.HTTPAddr() + "/jobs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("dashboard without a token: %d, want a redirect to the login", resp.StatusCode)
	}
	if code, _ := get(t, "http://"+n.HTTPAddr()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with ACLs on: %d, want 200 (open)", code)
	}
	// A worker of another process registers with its agent token.
	wcfg := node.DefaultConfig()
	w := node.DefaultWorkerConfig()
	w.NodeID, w.Join, w.GPUs = "remote-worker", []string{n.GRPCAddr()}, 0
	wcfg.Workers, wcfg.Storage.Dir, wcfg.Token = []node.WorkerConfig{w}, t.TempDir(), agentSecret
	wcfg.TLS = &node.TLSConfig{Dir: agentTLSDir(t, n, "remote-worker")}
	if err := start(t, wcfg).WaitReady(ctx); err != nil {
		t.Fatalf("a worker with the agent token: %v", err)
	}

	write(newRead)
	if err := n.ReloadACLTokens(); err != nil {
		t.Fatal(err)
	}
	if err := list(newRead); err != nil {
		t.Errorf("ListNodes with the reloaded read token: %v", err)
	}
	if err := list(readSecret); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListNodes with the removed read token: %v, want Unauthenticated", err)
	}
	if err := os.WriteFile(tokens, []byte("- {name: x, role: root}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadACLTokens(); err == nil {
		t.Error("a tokens file that does not validate was reloaded")
	}
	if err := list(newRead); err != nil {
		t.Errorf("the tokens in force changed after a failed reload: %v", err)
	}
}

// TestStartErrors: what Start cannot do is an error cmd/ maps to its flags, and it
// leaves nothing running.
func TestStartErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	coordinator := func() node.Config {
		cfg := node.DefaultConfig()
		co := node.DefaultCoordinatorConfig()
		co.NodeID, co.DataDir = "c1", t.TempDir()
		co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Coordinator, cfg.Logger = &co, nodetest.Logger()
		return cfg
	}
	startErr := func(cfg node.Config) error {
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n.Start(context.Background())
	}

	cfg := coordinator()
	err = startErr(cfg)
	if !errors.Is(err, node.ErrNoClusterState) {
		t.Errorf("a voter without state, bootstrap or join: %v, want ErrNoClusterState", err)
	}

	cfg = coordinator()
	cfg.Coordinator.Bootstrap, cfg.HTTPAddr = true, busy.Addr().String()
	var ce *node.ConfigError
	if err := startErr(cfg); !errors.As(err, &ce) || ce.Field != "HTTPAddr" || ce.Value != busy.Addr().String() {
		t.Errorf("HTTP address in use: %v, want a ConfigError on HTTPAddr", err)
	}
	// The failed start released the Raft directory: a new start on it succeeds.
	cfg.HTTPAddr = ""
	start(t, cfg)

	cfg = coordinator()
	cfg.Coordinator.Join = []string{busy.Addr().String()} // listens, speaks no gRPC
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var je *node.JoinError
	if err := n.Start(ctx); !errors.As(err, &je) {
		t.Errorf("join of a non-coordinator: %v, want a JoinError", err)
	}
}
