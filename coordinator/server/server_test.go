package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, cond func() bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-ticker.C
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("COHORT_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a single-voter coordinator in dir and waits until it leads.
func startServer(t *testing.T, dir string, mutate func(*server.Config)) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.NodeID = "c1"
	cfg.DataDir = dir
	cfg.RaftBindAddr = "127.0.0.1:0"
	cfg.Bootstrap = true
	cfg.Logger = testLogger()
	cfg.Registry = prometheus.NewRegistry()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	if cfg.Bootstrap {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.WaitForLeader(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "leadership", s.IsLeader, 10*time.Second)
	}
	return s
}

// fakeParse is the injected spec parser: "name: X" gives a 2-worker, 2-shard job.
func fakeParse(spec []byte) (*cohortv1.Job, error) {
	name, ok := strings.CutPrefix(strings.TrimSpace(string(spec)), "name: ")
	if !ok {
		return nil, errors.New("spec.yaml:1: metadata.name: required\nspec.yaml:2: spec: required")
	}
	return &cohortv1.Job{Name: name, Namespace: "hr", Priority: 50, WorkerCount: 2, ShardCount: 2,
		WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
		ShardResources:  &cohortv1.Resources{CpuMillis: 500, MemoryBytes: 1 << 29}}, nil
}

type clients struct {
	jobs  cohortv1.JobServiceClient
	agent cohortv1.AgentServiceClient
}

// serveGRPC serves both services of s on 127.0.0.1:0 and returns clients.
func serveGRPC(t *testing.T, s *server.Server) clients {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	cfg := api.Config{ParseSpec: fakeParse, Logger: testLogger()}
	cohortv1.RegisterJobServiceServer(gs, api.NewJobService(s, cfg))
	cohortv1.RegisterAgentServiceServer(gs, api.NewAgentService(s, cfg))
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
	})
	return clients{jobs: cohortv1.NewJobServiceClient(conn), agent: cohortv1.NewAgentServiceClient(conn)}
}

func registerNode(t *testing.T, ctx context.Context, c clients, name string, role cohortv1.NodeRole, dataAddr string) *cohortv1.Node {
	t.Helper()
	resp, err := c.agent.RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
		Name: name, Roles: []cohortv1.NodeRole{role}, DataAddress: dataAddr,
		Capacity: &cohortv1.Resources{CpuMillis: 2000, MemoryBytes: 4 << 30},
	}})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return resp.Node
}

func TestJobLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Submit, and retry with the same key.
	sub, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: attrition-mlp"), IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Created || !strings.HasPrefix(sub.Job.Id, "attrition-mlp-") || sub.Job.State != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("submit: %v", sub)
	}
	jobID := sub.Job.Id
	again, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: attrition-mlp"), IdempotencyKey: "k1"})
	if err != nil || again.Created || again.Job.Id != jobID {
		t.Fatalf("retry: %v, %v", again, err)
	}
	if _, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("bad")}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "metadata.name: required\nspec.yaml:2") {
		t.Fatalf("bad spec: %v", err)
	}

	// With no nodes the job stays pending with a reason.
	getJob := func() *cohortv1.GetJobResponse {
		r, err := c.jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: jobID})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	waitFor(t, "pending reasons", func() bool {
		return slices.Contains(getJob().Job.PendingReasons, "no ready, eligible node with role worker")
	}, 10*time.Second)

	// Watch the job from here on.
	watch, err := c.jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: jobID})
	if err != nil {
		t.Fatal(err)
	}

	registerNode(t, ctx, c, "worker-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	stream, err := c.agent.WatchAssignments(ctx, &cohortv1.WatchAssignmentsRequest{NodeId: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || len(first.Assignments) != 0 {
		t.Fatalf("first assignments: %v, %v", first, err)
	}
	registerNode(t, ctx, c, "worker-2", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	registerNode(t, ctx, c, "ps-1", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.1:7000")
	registerNode(t, ctx, c, "ps-2", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.2:7000")

	// The scheduling loop places the whole gang.
	waitFor(t, "job running", func() bool { return getJob().Job.State == cohortv1.JobState_JOB_STATE_RUNNING }, 10*time.Second)
	got := getJob()
	if len(got.Allocations) != 4 || len(got.Job.PendingReasons) != 0 || got.Job.Generation != 1 {
		t.Fatalf("placed job: %v", got)
	}
	kinds := map[cohortv1.TaskKind]int{}
	for _, a := range got.Allocations {
		kinds[a.Kind]++
		wantRole := map[cohortv1.TaskKind]string{cohortv1.TaskKind_TASK_KIND_WORKER: "worker-", cohortv1.TaskKind_TASK_KIND_PS_SHARD: "ps-"}[a.Kind]
		if !strings.HasPrefix(a.NodeId, wantRole) {
			t.Fatalf("allocation %s on node %s", a.Id, a.NodeId)
		}
	}
	if kinds[cohortv1.TaskKind_TASK_KIND_WORKER] != 2 || kinds[cohortv1.TaskKind_TASK_KIND_PS_SHARD] != 2 {
		t.Fatalf("kinds %v", kinds)
	}
	wantShards := make([]string, 2)
	for _, a := range got.Allocations {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			wantShards[a.Index] = map[string]string{"ps-1": "10.0.0.1:7000", "ps-2": "10.0.0.2:7000"}[a.NodeId]
		}
	}

	// The agent of worker-1 gets its assignment with the shard addresses.
	var assignment *cohortv1.Assignment
	for assignment == nil {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Assignments) > 0 {
			assignment = msg.Assignments[0]
		}
	}
	if assignment.Job.GetId() != jobID || assignment.Allocation.NodeId != "worker-1" ||
		!slices.Equal(assignment.ShardAddresses, wantShards) {
		t.Fatalf("assignment %v, want shards %v", assignment, wantShards)
	}

	// The chief reports success with metrics.
	var chief string
	for _, a := range got.Allocations {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && a.Index == 0 {
			chief = a.Id
		}
	}
	if _, err := c.agent.ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: []*cohortv1.TaskReport{{
		AllocationId: chief, JobId: jobID, State: cohortv1.TaskState_TASK_STATE_SUCCEEDED,
		Metrics: map[string]float64{"val_auc": 0.83, "val_loss": 0.41}, Checkpoint: "file:///ckpt/manifest.json",
	}}}); err != nil {
		t.Fatal(err)
	}
	var last *cohortv1.Job
	for {
		msg, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = msg.Job
	}
	if last.State != cohortv1.JobState_JOB_STATE_SUCCEEDED || last.Metrics["val_auc"] != 0.83 || last.Checkpoint == "" {
		t.Fatalf("watch ended with %v", last)
	}
	for _, a := range getJob().Allocations {
		if a.Id != chief && a.State != cohortv1.TaskState_TASK_STATE_STOPPED {
			t.Fatalf("allocation %s is %v after success", a.Id, a.State)
		}
	}
	if _, err := c.jobs.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: jobID}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cancel of succeeded job: %v", err)
	}
	// The assignment stream drops the ended job's allocations.
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Assignments) == 0 {
			break
		}
	}

	// Restart from the same data dir: the job is still there (durable log).
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, dir, nil)
	waitFor(t, "job replayed after restart", func() bool {
		j, _ := s2.State().JobByID(nil, jobID)
		return j != nil && j.State == cohortv1.JobState_JOB_STATE_SUCCEEDED && j.Metrics["val_auc"] == 0.83
	}, 10*time.Second)
	nodes, _ := s2.State().Nodes(nil)
	if len(nodes) != 4 {
		t.Fatalf("nodes after restart: %d", len(nodes))
	}
}

func TestHeartbeatTTL(t *testing.T) {
	const ttl = 300 * time.Millisecond
	clock := server.NewFakeClock(time.Unix(1_700_000_000, 0))
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.HeartbeatTTL, c.Clock = ttl, clock })
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := registerNode(t, ctx, c, "worker-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	nodeStatus := func() cohortv1.NodeStatus {
		got, _ := s.State().NodeByID(nil, n.Id)
		return got.GetStatus()
	}
	tests := []struct {
		name     string
		gen      uint64
		node     string
		wantCode codes.Code
	}{
		{name: "current generation", gen: n.RegistrationGeneration, node: n.Id, wantCode: codes.OK},
		{name: "generation unchecked", gen: 0, node: n.Id, wantCode: codes.OK},
		{name: "stale generation", gen: n.RegistrationGeneration + 1, node: n.Id, wantCode: codes.FailedPrecondition},
		{name: "unknown node", gen: 1, node: "nope", wantCode: codes.NotFound},
		{name: "missing node id", node: "", wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.agent.Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: tt.node, RegistrationGeneration: tt.gen})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("heartbeat: %v, want %v", err, tt.wantCode)
			}
		})
	}
	// Without heartbeats the node goes down once its TTL has passed on the leader's
	// clock; a heartbeat brings it back.
	clock.Advance(ttl - time.Millisecond)
	if got := nodeStatus(); got != cohortv1.NodeStatus_NODE_STATUS_READY {
		t.Fatalf("before the TTL: %v", got)
	}
	clock.Advance(time.Millisecond)
	waitNode(t, ctx, s, n.Id, func(n *cohortv1.Node) bool { return n.Status == cohortv1.NodeStatus_NODE_STATUS_DOWN })
	if got := nodeStatus(); got != cohortv1.NodeStatus_NODE_STATUS_DOWN {
		t.Fatalf("after the TTL: %v", got)
	}
	if _, err := c.agent.Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: n.Id, RegistrationGeneration: n.RegistrationGeneration}); err != nil {
		t.Fatal(err)
	}
	if got := nodeStatus(); got != cohortv1.NodeStatus_NODE_STATUS_READY {
		t.Fatalf("after heartbeat: %v", got)
	}
}

func TestNotLeader(t *testing.T) {
	// A voter that never bootstraps never learns of a leader.
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.Bootstrap = false })
	_, err := s.Apply(context.Background(), &cohortv1.Command{Kind: &cohortv1.Command_CancelJob{CancelJob: &cohortv1.CancelJobCommand{JobId: "j"}}})
	if !errors.Is(err, server.ErrNotLeader) {
		t.Fatalf("Apply on a follower: %v", err)
	}
	if err := s.Heartbeat("n", 1); !errors.Is(err, server.ErrNotLeader) {
		t.Fatalf("Heartbeat on a follower: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitForLeader(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForLeader: %v", err)
	}
}

func TestConcurrentApplies(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 300
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
				Job: &cohortv1.Job{Id: fmt.Sprintf("j%d", i), IdempotencyKey: fmt.Sprintf("k%d", i)}}}})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	jobs, _ := s.State().Jobs(nil)
	if len(jobs) != n {
		t.Fatalf("%d jobs, want %d", len(jobs), n)
	}
}
