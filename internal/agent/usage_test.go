package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// beatCoordinator is fakeCoordinator that passes every heartbeat on.
type beatCoordinator struct {
	*fakeCoordinator
	beats chan *cohortv1.HeartbeatRequest
}

func (b *beatCoordinator) Heartbeat(_ context.Context, req *cohortv1.HeartbeatRequest) (*cohortv1.HeartbeatResponse, error) {
	select {
	case b.beats <- req:
	default:
	}
	return &cohortv1.HeartbeatResponse{}, nil
}

// burnRunner's task burns CPU on one goroutine and holds memory until stopped.
type burnRunner struct {
	started chan string
}

func (r *burnRunner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_WORKER }
func (r *burnRunner) Start(ctx context.Context, a *cohortv1.Assignment, report ReportFunc) {
	go func() {
		held := make([]byte, 64<<20)
		for i := range held {
			held[i] = byte(i)
		}
		r.started <- a.GetAllocation().GetId()
		x := 0
		for ctx.Err() == nil {
			for i := 0; i < 1<<16; i++ {
				x += int(held[(i*4099)%len(held)])
			}
		}
		runtime.KeepAlive(held)
		_ = x
	}()
}
func (r *burnRunner) Stop(string) {}

// TestHeartbeatsCarryNodeAndTaskUsage runs an agent whose task keeps a core busy and
// holds 64 MiB: once the task runs, a heartbeat reports the node's usage and the task's
// share of the process, with CPU and memory above what the task itself uses.
func TestHeartbeatsCarryNodeAndTaskUsage(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	fc := &beatCoordinator{
		fakeCoordinator: &fakeCoordinator{streams: make(chan []*cohortv1.WatchAssignmentsResponse, 4), reports: make(chan *cohortv1.TaskReport, 16)},
		beats:           make(chan *cohortv1.HeartbeatRequest, 64),
	}
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
	r := &burnRunner{started: make(chan string, 1)}
	cfg := DefaultConfig()
	cfg.Conn, cfg.Node, cfg.Runners = conn, &cohortv1.Node{Name: "n1"}, []Runner{r}
	cfg.HeartbeatInterval, cfg.RetryInterval = 100*time.Millisecond, time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.GPUUsage = func() (int64, float64, bool) { return 3 << 30, 0.5, true }
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	fc.streams <- []*cohortv1.WatchAssignmentsResponse{{Assignments: []*cohortv1.Assignment{
		assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_PENDING)}}}
	within(t, r.started, "task start")

	// The first heartbeat after the start may cover a sampling interval from before
	// it; one heartbeat later the interval is wholly the task's.
	seen := 0
	for {
		beat := within(t, fc.beats, "heartbeat")
		if len(beat.Tasks) == 0 {
			continue
		}
		if seen++; seen < 2 {
			continue
		}
		n := beat.GetUsage()
		if n.GetMemoryTotalBytes() <= 0 || n.GetMemoryBytes() <= 0 || n.GetMemoryBytes() > n.GetMemoryTotalBytes() || n.GetCpuCores() <= 0 {
			t.Fatalf("node usage %v", n)
		}
		if !n.GetGpuPresent() || n.GetGpuMemoryBytes() != 3<<30 || n.GetGpuUtilization() != 0.5 {
			t.Fatalf("node GPU usage %v", n)
		}
		if len(beat.Tasks) != 1 || beat.Tasks[0].GetAllocationId() != "j-w0" {
			t.Fatalf("task usages %v", beat.Tasks)
		}
		u := beat.Tasks[0].GetUsage()
		if u.GetCpuCores() < 0.05 || u.GetMemoryBytes() < 64<<20 || u.GetSharedProcess() {
			t.Fatalf("task usage %v: want at least 0.05 cores and 64 MiB, not shared", u)
		}
		return
	}
}

func TestParseProcStatAndMeminfo(t *testing.T) {
	busy, all, cpus, err := parseProcStat([]byte("cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 0 0 0\nintr 1\n"))
	if err != nil || busy != 160 || all != 980 || cpus != 2 {
		t.Fatalf("parseProcStat = %d, %d, %d, %v; want 160, 980, 2", busy, all, cpus, err)
	}
	if _, _, _, err := parseProcStat([]byte("intr 1\n")); err == nil {
		t.Fatal("no cpu line: no error")
	}
	if _, _, _, err := parseProcStat([]byte("cpu 1 x 3 4\n")); err == nil {
		t.Fatal("bad field: no error")
	}
	total, used, err := parseMeminfo([]byte("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  400 kB\n"))
	if err != nil || total != 1000<<10 || used != 600<<10 {
		t.Fatalf("parseMeminfo = %d, %d, %v", total, used, err)
	}
	if _, _, err := parseMeminfo([]byte("MemTotal: 1000 kB\n")); err == nil {
		t.Fatal("no MemAvailable: no error")
	}
}

func FuzzParseProcFiles(f *testing.F) {
	f.Add([]byte("cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 1 2 3 4 5\n"))
	f.Add([]byte("MemTotal: 10 kB\nMemAvailable: 20 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if busy, all, cpus, err := parseProcStat(b); err == nil && (busy > all || cpus < 1) {
			t.Fatalf("parseProcStat(%q) = %d busy of %d, %d cpus", b, busy, all, cpus)
		}
		if total, used, err := parseMeminfo(b); err == nil && (used < 0 || used > total) {
			t.Fatalf("parseMeminfo(%q) = %d used of %d", b, used, total)
		}
	})
}

// stuckCoordinator's ReportTasks waits until release is closed.
type stuckCoordinator struct {
	*fakeCoordinator
	release chan struct{}
}

func (s *stuckCoordinator) ReportTasks(ctx context.Context, _ *cohortv1.ReportTasksRequest) (*cohortv1.ReportTasksResponse, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return &cohortv1.ReportTasksResponse{}, nil
}

// chattyRunner's task sends n interim reports, then closes done.
type chattyRunner struct {
	n    int
	done chan struct{}
}

func (r *chattyRunner) Kind() cohortv1.TaskKind { return cohortv1.TaskKind_TASK_KIND_WORKER }
func (r *chattyRunner) Start(_ context.Context, a *cohortv1.Assignment, report ReportFunc) {
	go func() {
		for i := range r.n {
			report(&cohortv1.TaskReport{AllocationId: a.GetAllocation().GetId(), Interim: true,
				State: cohortv1.TaskState_TASK_STATE_RUNNING, Progress: &cohortv1.JobProgress{Step: int64(i)}})
		}
		close(r.done)
	}()
}
func (r *chattyRunner) Stop(string) {}

// TestInterimReportsNeverBlockTheTask: while the coordinator does not take reports,
// a task sending far more interim reports than the queue holds is never held up; the
// surplus is dropped and counted.
func TestInterimReportsNeverBlockTheTask(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	sc := &stuckCoordinator{
		fakeCoordinator: &fakeCoordinator{streams: make(chan []*cohortv1.WatchAssignmentsResponse, 4), reports: make(chan *cohortv1.TaskReport, 16)},
		release:         make(chan struct{}),
	}
	gs := grpc.NewServer()
	cohortv1.RegisterAgentServiceServer(gs, sc)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	const sent = 5000
	r := &chattyRunner{n: sent, done: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.Conn, cfg.Node, cfg.Runners = conn, &cohortv1.Node{Name: "n1"}, []Runner{r}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	defer close(sc.release)
	sc.streams <- []*cohortv1.WatchAssignmentsResponse{{Assignments: []*cohortv1.Assignment{
		assignment("j-w0", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.TaskState_TASK_STATE_PENDING)}}}
	within(t, r.done, "the task's reports")
	if d := int(a.droppedInterim.Load()); d < sent-cap(a.reports)-64 || d >= sent {
		t.Fatalf("%d of %d interim reports dropped; want those beyond the queue", d, sent)
	}
}
