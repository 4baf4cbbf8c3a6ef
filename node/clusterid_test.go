package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// logCapture is a slog handler that hands every record, with its attributes, to the
// test as one line.
type logCapture struct {
	lines chan string
	attrs []slog.Attr
}

func newLogCapture() *logCapture { return &logCapture{lines: make(chan string, 4096)} }

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{lines: c.lines, attrs: append(append([]slog.Attr(nil), c.attrs...), as...)}
}
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range c.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	select {
	case c.lines <- b.String():
	default: // a test that stopped reading
	}
	return nil
}

// waitLine waits for a captured line that holds every one of want.
func (c *logCapture) waitLine(t *testing.T, what string, want ...string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-c.lines:
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line of %s (with %q) within 30s", what, want)
		}
	}
}

// clusterCoordinator starts a one-voter coordinator at grpcAddr whose TLS directory
// holds the CA in caDir (nil: a new CA).
func clusterCoordinator(t *testing.T, id, grpcAddr, caDir string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = id, t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", grpcAddr
	if caDir != "" {
		nodetest.CopyCA(t, caDir, filepath.Join(co.DataDir, "tls"))
	}
	cfg.Coordinator, cfg.HTTPAddr = &co, "127.0.0.1:0"
	return start(t, cfg)
}

// clusterID waits until the coordinator at addr names its cluster's ID.
func clusterID(t *testing.T, addr, tlsDir string) string {
	t.Helper()
	jobs := cohortv1.NewJobServiceClient(conn(t, addr, tlsDir))
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := jobs.ListNodes(ctx, &cohortv1.ListNodesRequest{})
		cancel()
		if err == nil && resp.GetClusterId() != "" {
			return resp.GetClusterId()
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator %s names no cluster ID within 30s (last %v)", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// agentClientDir is a TLS directory with client credentials (for conn) of node agent
// nodeID, from the CA of coordinator node n.
func agentClientDir(t *testing.T, n *node.Node, nodeID string) string {
	t.Helper()
	dir := agentTLSDir(t, n, nodeID)
	for from, to := range map[string]string{pki.NodeCertFile: pki.ClientCertFile, pki.NodeKeyFile: pki.ClientKeyFile} {
		raw, err := os.ReadFile(filepath.Join(dir, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestAgentNeverJoinsAnotherCluster: a worker agent that joined cluster A keeps A's ID
// (in memory and in its TLS directory). When A's address comes to be served by cluster
// B, whose certificates the same CA signed, B refuses the agent's heartbeats and, after
// the agent restarts, its registration, naming both cluster IDs; the agent never shows
// up in B. A registration naming another cluster is refused by the coordinator too.
func TestAgentNeverJoinsAnotherCluster(t *testing.T) {
	coordA := clusterCoordinator(t, "a1", "127.0.0.1:0", "")
	addr := coordA.GRPCAddr()
	caDir := coordA.ClientTLSDir()
	idA := clusterID(t, addr, caDir)

	logs := newLogCapture()
	agentDir := agentTLSDir(t, coordA, "w1")
	workerConfig := func() node.Config {
		wcfg := node.DefaultConfig()
		w := node.DefaultWorkerConfig()
		w.NodeID, w.Join, w.GPUs = "w1", []string{addr}, 0
		wcfg.Workers, wcfg.Storage.Dir, wcfg.HTTPAddr = []node.WorkerConfig{w}, t.TempDir(), "127.0.0.1:0"
		wcfg.TLS = &node.TLSConfig{Dir: agentDir}
		wcfg.Logger = slog.New(logs)
		return wcfg
	}
	worker := start(t, workerConfig())
	logs.waitLine(t, "the agent joining cluster A", "joined cluster", idA)
	if raw, err := os.ReadFile(filepath.Join(agentDir, "cluster-id")); err != nil || strings.TrimSpace(string(raw)) != idA {
		t.Fatalf("the agent keeps cluster ID %q (%v), want %s", raw, err, idA)
	}

	// A goes away; B, from the same CA, comes up at A's address.
	if err := coordA.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	coordB := clusterCoordinator(t, "b1", addr, caDir)
	idB := clusterID(t, addr, coordB.ClientTLSDir())
	if idB == idA {
		t.Fatalf("two clusters have the same ID %s", idA)
	}
	logs.waitLine(t, "B refusing the running agent's heartbeat", "heartbeat failed", idA, idB, addr)

	// Restarted, the agent still knows A's ID: B refuses its registration.
	if err := worker.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted, err := node.New(workerConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Shutdown(context.Background()) })
	logs.waitLine(t, "B refusing the restarted agent's registration", "node registration failed", idA, idB, addr)
	resp, err := cohortv1.NewJobServiceClient(conn(t, addr, coordB.ClientTLSDir())).ListNodes(context.Background(), &cohortv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range resp.GetNodes() {
		if n.GetId() == "w1" {
			t.Fatalf("the agent of cluster %s registered with cluster %s: %v", idA, idB, n)
		}
	}

	// An agent that never registered says why when it stops.
	if err := restarted.Shutdown(context.Background()); !api.IsClusterMismatch(err) {
		t.Fatalf("the restarted agent stopped with %v, want its registration refused as a cluster mismatch", err)
	}

	// The coordinator's own check, for any agent that names another cluster.
	agentB := cohortv1.NewAgentServiceClient(conn(t, addr, agentClientDir(t, coordB, "w2")))
	_, err = agentB.RegisterNode(context.Background(), &cohortv1.RegisterNodeRequest{ClusterId: idA, Node: &cohortv1.Node{
		Id: "w2", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER}, Capacity: &cohortv1.Resources{CpuMillis: 1000}}})
	if status.Code(err) != codes.FailedPrecondition || !api.IsClusterMismatch(err) ||
		!strings.Contains(err.Error(), idA) || !strings.Contains(err.Error(), idB) {
		t.Fatalf("registration naming cluster %s at cluster %s: %v, want a cluster mismatch naming both", idA, idB, err)
	}
	reg, err := agentB.RegisterNode(context.Background(), &cohortv1.RegisterNodeRequest{ClusterId: idB, Node: &cohortv1.Node{
		Id: "w2", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER}, Capacity: &cohortv1.Resources{CpuMillis: 1000}}})
	if err != nil || reg.GetClusterId() != idB {
		t.Fatalf("registration naming its own cluster: %v (cluster %q), want %s", err, reg.GetClusterId(), idB)
	}
	_, err = agentB.Heartbeat(context.Background(), &cohortv1.HeartbeatRequest{NodeId: "w2", RegistrationGeneration: reg.GetNode().GetRegistrationGeneration(), ClusterId: idA})
	if !api.IsClusterMismatch(err) {
		t.Fatalf("heartbeat naming cluster %s: %v, want a cluster mismatch", idA, err)
	}
	stream, err := agentB.WatchAssignments(context.Background(), &cohortv1.WatchAssignmentsRequest{NodeId: "w2", ClusterId: idA})
	if err == nil {
		_, err = stream.Recv()
	}
	if !api.IsClusterMismatch(err) {
		t.Fatalf("assignment stream naming cluster %s: %v, want a cluster mismatch", idA, err)
	}
}
