package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/test/bufconn"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// clusterCoordinator answers registrations and heartbeats for cluster id (switched
// by the test), recording the cluster ID each request names.
type clusterCoordinator struct {
	cohortv1.UnimplementedAgentServiceServer
	id    chan string // the cluster the coordinator answers for, read per call
	named chan string // the cluster ID each registration or heartbeat named
}

func (c *clusterCoordinator) current() string {
	id := <-c.id
	c.id <- id
	return id
}

func (c *clusterCoordinator) RegisterNode(_ context.Context, req *cohortv1.RegisterNodeRequest) (*cohortv1.RegisterNodeResponse, error) {
	c.named <- req.GetClusterId()
	n := req.GetNode()
	n.Id, n.RegistrationGeneration = "n1", 1
	return &cohortv1.RegisterNodeResponse{Node: n, ClusterId: c.current()}, nil
}

func (c *clusterCoordinator) Heartbeat(_ context.Context, req *cohortv1.HeartbeatRequest) (*cohortv1.HeartbeatResponse, error) {
	select {
	case c.named <- req.GetClusterId():
	default:
	}
	return &cohortv1.HeartbeatResponse{ClusterId: c.current()}, nil
}

func (c *clusterCoordinator) WatchAssignments(_ *cohortv1.WatchAssignmentsRequest, s cohortv1.AgentService_WatchAssignmentsServer) error {
	<-s.Context().Done()
	return s.Context().Err()
}

// TestAgentKeepsItsCluster: the agent learns the cluster ID at registration, keeps it
// in StateDir, names it in its heartbeats, and refuses an answer of another cluster
// (a coordinator that does not check) with an error naming both IDs; a new agent on
// the same StateDir starts with the kept ID.
func TestAgentKeepsItsCluster(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	cc := &clusterCoordinator{id: make(chan string, 1), named: make(chan string, 64)}
	cc.id <- "cluster-a"
	gs := grpc.NewServer()
	cohortv1.RegisterAgentServiceServer(gs, cc)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Conn, cfg.Node, cfg.StateDir = conn, &cohortv1.Node{Name: "n1"}, dir
	cfg.HeartbeatInterval, cfg.RetryInterval = 5*time.Millisecond, time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if got := within(t, cc.named, "registration"); got != "" {
		t.Fatalf("first registration named cluster %q, want none", got)
	}
	within(t, a.Ready(), "registered")
	if a.ClusterID() != "cluster-a" {
		t.Fatalf("agent cluster %q, want cluster-a", a.ClusterID())
	}
	if raw, err := os.ReadFile(filepath.Join(dir, clusterIDFile)); err != nil || strings.TrimSpace(string(raw)) != "cluster-a" {
		t.Fatalf("kept cluster ID %q (%v), want cluster-a", raw, err)
	}
	if got := within(t, cc.named, "heartbeat"); got != "cluster-a" {
		t.Fatalf("heartbeat named cluster %q, want cluster-a", got)
	}

	// The address now answers for another cluster: the agent refuses the answer.
	<-cc.id
	cc.id <- "cluster-b"
	err = a.learnCluster("cluster-b", &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 7070}})
	if !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), "cluster-a") || !strings.Contains(err.Error(), "cluster-b") ||
		!strings.Contains(err.Error(), "10.0.0.9:7070") {
		t.Fatalf("answer of another cluster: %v, want ErrOtherCluster naming both IDs and the address", err)
	}
	if a.ClusterID() != "cluster-a" {
		t.Fatalf("agent cluster %q after another cluster answered, want cluster-a", a.ClusterID())
	}
	cancel()
	<-done
	for len(cc.named) > 0 { // the heartbeats' names
		<-cc.named
	}

	// A restarted agent registers naming the kept ID and refuses cluster B's answer.
	a2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- a2.Run(ctx2) }()
	for range 3 { // the registration is refused and retried
		if got := within(t, cc.named, "registration of the restarted agent"); got != "cluster-a" {
			t.Fatalf("restarted agent named cluster %q, want cluster-a", got)
		}
	}
	select {
	case <-a2.Ready():
		t.Fatal("the restarted agent accepted a registration with cluster-b")
	default:
	}
	cancel2()
	if err := <-done2; !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("restarted agent ended with %v, want ErrOtherCluster", err)
	}
}
