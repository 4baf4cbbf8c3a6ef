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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fakeCoordinator serves AgentService from scripted assignment streams: each stream
// sends the next batch of messages from streams, then fails (like a lost leader).
type fakeCoordinator struct {
	cohortv1.UnimplementedAgentServiceServer
	streams chan []*cohortv1.WatchAssignmentsResponse
	reports chan *cohortv1.TaskReport

	mu         sync.Mutex
	registered int
}

func (f *fakeCoordinator) RegisterNode(_ context.Context, req *cohortv1.RegisterNodeRequest) (*cohortv1.RegisterNodeResponse, error) {
	f.mu.Lock()
	f.registered++
	f.mu.Unlock()
	n := req.GetNode()
	n.Id, n.RegistrationGeneration = "n1", 1
	return &cohortv1.RegisterNodeResponse{Node: n}, nil
}

func (f *fakeCoordinator) Heartbeat(context.Context, *cohortv1.HeartbeatRequest) (*cohortv1.HeartbeatResponse, error) {
	return &cohortv1.HeartbeatResponse{}, nil
}

func (f *fakeCoordinator) ReportTasks(_ context.Context, req *cohortv1.ReportTasksRequest) (*cohortv1.ReportTasksResponse, error) {
	for _, r := range req.GetReports() {
		f.reports <- r
	}
	return &cohortv1.ReportTasksResponse{}, nil
}

func (f *fakeCoordinator) WatchAssignments(req *cohortv1.WatchAssignmentsRequest, s cohortv1.AgentService_WatchAssignmentsServer) error {
	if req.GetNodeId() != "n1" {
		return errors.New("unexpected node id " + req.GetNodeId())
	}
	select {
	case msgs := <-f.streams:
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				return err
			}
		}
		return errors.New("leader lost")
	case <-s.Context().Done():
		return s.Context().Err()
	}
}

// fakeRunner records starts and stops.
type fakeRunner struct {
	started chan *cohortv1.Assignment
	stopped chan string
}

func (r *fakeRunner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_WORKER }
func (r *fakeRunner) Start(_ context.Context, a *cohortv1.Assignment, report ReportFunc) {
	report(&cohortv1.TaskReport{AllocationId: a.GetAllocation().GetId(), State: cohortv1.TaskState_TASK_STATE_RUNNING})
	r.started <- a
}
func (r *fakeRunner) Stop(id string) { r.stopped <- id }

func assignment(id string, kind cohortv1.TaskKind, st cohortv1.TaskState) *cohortv1.Assignment {
	return &cohortv1.Assignment{
		Allocation: &cohortv1.Allocation{Id: id, JobId: "j", Kind: kind, State: st},
		Job:        &cohortv1.Job{Id: "j", State: cohortv1.JobState_JOB_STATE_RUNNING},
	}
}

func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestAgentReconcilesAcrossReconnects: the agent starts a live allocation once, keeps it
// running when the stream is re-opened with the same set (a leader change), refuses a
// kind it has no runner for, and stops the allocation once it is no longer assigned.
func TestAgentReconcilesAcrossReconnects(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	fc := &fakeCoordinator{streams: make(chan []*cohortv1.WatchAssignmentsResponse, 4), reports: make(chan *cohortv1.TaskReport, 16)}
	gs := grpc.NewServer()
	cohortv1.RegisterAgentServiceServer(gs, fc)
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
	cfg.RetryInterval = time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	live := assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_PENDING)
	shard := assignment("j-ps0", cohortv1.TaskKind_TASK_KIND_PS_SHARD, cohortv1.TaskState_TASK_STATE_PENDING)
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{{Assignments: []*cohortv1.Assignment{live, shard}}}
	if got := within(t, r.started, "start"); got.GetAllocation().GetId() != "j-w0" {
		t.Fatalf("started %s", got.GetAllocation().GetId())
	}
	reports := map[string]cohortv1.TaskState{}
	for range 2 {
		rep := within(t, fc.reports, "report")
		reports[rep.GetAllocationId()] = rep.GetState()
	}
	if reports["j-w0"] != cohortv1.TaskState_TASK_STATE_RUNNING || reports["j-ps0"] != cohortv1.TaskState_TASK_STATE_FAILED {
		t.Errorf("reports %v: want j-w0 running and j-ps0 failed (no runner for shards)", reports)
	}

	// Reconnect: the same allocation, now running, must not start again; then the
	// next stream no longer lists it, so it is stopped.
	running := assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_RUNNING)
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{{Assignments: []*cohortv1.Assignment{running}}}
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{{}}
	if id := within(t, r.stopped, "stop"); id != "j-w0" {
		t.Fatalf("stopped %s", id)
	}
	select {
	case a := <-r.started:
		t.Fatalf("allocation %s started twice", a.GetAllocation().GetId())
	default:
	}
	cancel()
	if err := within(t, done, "agent exit"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.registered != 1 {
		t.Errorf("registered %d times, want once", fc.registered)
	}
}

// updatingRunner is a fakeRunner that records the assignments handed to Update.
type updatingRunner struct {
	fakeRunner
	updated chan *cohortv1.Assignment
}

func (r *updatingRunner) Update(a *cohortv1.Assignment) { r.updated <- a }

// TestAgentHandsOverTheRecordedCheckpoint: a running allocation's runner is updated
// when its job record points at another checkpoint although the allocation itself did
// not change (the chief's retention keeps that checkpoint), once per change.
func TestAgentHandsOverTheRecordedCheckpoint(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	fc := &fakeCoordinator{streams: make(chan []*cohortv1.WatchAssignmentsResponse, 4), reports: make(chan *cohortv1.TaskReport, 16)}
	gs := grpc.NewServer()
	cohortv1.RegisterAgentServiceServer(gs, fc)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	r := &updatingRunner{fakeRunner: fakeRunner{started: make(chan *cohortv1.Assignment, 4), stopped: make(chan string, 4)},
		updated: make(chan *cohortv1.Assignment, 8)}
	cfg := DefaultConfig()
	cfg.Conn, cfg.Node, cfg.Runners = conn, &cohortv1.Node{Name: "n1"}, []Runner{r}
	cfg.RetryInterval = time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	const ckpt = "file:///s/jobs/j/checkpoints/000000000004/manifest.json"
	first := assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_RUNNING)
	recorded := assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_RUNNING)
	recorded.Job.Checkpoint = ckpt
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{
		{Assignments: []*cohortv1.Assignment{first}},
		{Assignments: []*cohortv1.Assignment{recorded}},
		{Assignments: []*cohortv1.Assignment{recorded}},
	}
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{{}}
	within(t, r.started, "start")
	if id := within(t, r.stopped, "stop"); id != "j-w0" {
		t.Fatalf("stopped %s", id)
	}
	cancel()
	if err := within(t, done, "agent exit"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	close(r.updated)
	var got []string
	for u := range r.updated {
		got = append(got, u.GetJob().GetCheckpoint())
	}
	if len(got) != 1 || got[0] != ckpt {
		t.Fatalf("updates carried checkpoints %q, want exactly one with %q", got, ckpt)
	}
}
