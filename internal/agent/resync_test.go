package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// cutOffCoordinator is a coordinator the agent lost touch with: its first heartbeats
// fail, and its first assignment stream stays open without a message or a reset (a
// connection that died silently). Later streams send the assignment.
type cutOffCoordinator struct {
	fakeCoordinator
	mu             sync.Mutex
	failHeartbeats int
	streams        int
	assign         *cohortv1.Assignment
}

func (c *cutOffCoordinator) Heartbeat(context.Context, *cohortv1.HeartbeatRequest) (*cohortv1.HeartbeatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams == 0 || c.failHeartbeats > 0 { // cut off from before the stream opened
		if c.streams > 0 {
			c.failHeartbeats--
		}
		return nil, status.Error(codes.Unavailable, "cut off")
	}
	return &cohortv1.HeartbeatResponse{}, nil
}

func (c *cutOffCoordinator) WatchAssignments(_ *cohortv1.WatchAssignmentsRequest, s cohortv1.AgentService_WatchAssignmentsServer) error {
	c.mu.Lock()
	c.streams++
	first := c.streams == 1
	c.mu.Unlock()
	if !first {
		if err := s.Send(&cohortv1.WatchAssignmentsResponse{Assignments: []*cohortv1.Assignment{c.assign}}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return s.Context().Err()
}

// TestAgentReopensStreamWhenHeartbeatsRecover: when heartbeats get through again after
// failing, the agent reopens its assignment stream at once instead of waiting on the
// old one (which here never ends), and so receives what was assigned meanwhile.
func TestAgentReopensStreamWhenHeartbeatsRecover(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	cc := &cutOffCoordinator{failHeartbeats: 3,
		assign: assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_PENDING)}
	cc.reports = make(chan *cohortv1.TaskReport, 16)
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

	r := &fakeRunner{started: make(chan *cohortv1.Assignment, 4), stopped: make(chan string, 4)}
	cfg := DefaultConfig()
	cfg.Conn, cfg.Node, cfg.Runners = conn, &cohortv1.Node{Name: "n1"}, []Runner{r}
	cfg.RetryInterval, cfg.HeartbeatInterval = time.Millisecond, 5*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if got := within(t, r.started, "the assignment sent on a reopened stream"); got.GetAllocation().GetId() != "j-w0" {
		t.Fatalf("started %s", got.GetAllocation().GetId())
	}
	cancel()
	if err := within(t, done, "agent exit"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}
