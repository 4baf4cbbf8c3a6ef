package server_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestHeartbeatsAdvanceLastHeartbeatAndCarryUsage drives heartbeats on a fake clock:
// every heartbeat moves the node's last heartbeat in ListNodes (registration time
// before), and the usage it carries is served for the node and its task, while Raft
// gets no entry for any of it.
func TestHeartbeatsAdvanceLastHeartbeatAndCarryUsage(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	clock := server.NewFakeClock(start)
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.HeartbeatTTL, c.Clock = time.Hour, clock })
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w1 := registerNode(t, ctx, c, "worker-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	registerNode(t, ctx, c, "worker-2", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	registerNode(t, ctx, c, "ps-1", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.1:7000")
	registerNode(t, ctx, c, "ps-2", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.2:7000")
	sub, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: attrition-mlp")})
	if err != nil {
		t.Fatal(err)
	}
	getJob := func() *cohortv1.GetJobResponse {
		r, err := c.jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.Job.Id})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	waitFor(t, "job running", func() bool { return getJob().Job.State == cohortv1.JobState_JOB_STATE_RUNNING }, 10*time.Second)
	var alloc *cohortv1.Allocation
	for _, a := range getJob().Allocations {
		if a.NodeId == w1.Id {
			alloc = a
		}
	}
	if alloc == nil {
		t.Fatalf("no allocation on %s: %v", w1.Id, getJob().Allocations)
	}
	lastBeat := func() *cohortv1.Node {
		resp, err := c.jobs.ListNodes(ctx, &cohortv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range resp.Nodes {
			if n.Id == w1.Id {
				return n
			}
		}
		t.Fatalf("node %s not listed", w1.Id)
		return nil
	}
	if got := lastBeat().LastHeartbeatUnixNano; got != w1.LastHeartbeatUnixNano {
		t.Fatalf("before any heartbeat: last heartbeat %d, want the registration's %d", got, w1.LastHeartbeatUnixNano)
	}
	index := s.State().LatestIndex()
	for i := 1; i <= 3; i++ {
		clock.Advance(2 * time.Second)
		usage := &cohortv1.Usage{CpuCores: 0.5 * float64(i), MemoryBytes: int64(i) << 28, MemoryTotalBytes: 4 << 30}
		tasks := []*cohortv1.TaskUsage{{AllocationId: alloc.Id, JobId: alloc.JobId, Usage: &cohortv1.Usage{CpuCores: 0.25 * float64(i), MemoryBytes: int64(i) << 27}}}
		if _, err := c.agent.Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: w1.Id, RegistrationGeneration: w1.RegistrationGeneration, Usage: usage, Tasks: tasks}); err != nil {
			t.Fatal(err)
		}
		n := lastBeat()
		if want := clock.Now().UnixNano(); n.LastHeartbeatUnixNano != want {
			t.Fatalf("heartbeat %d: last heartbeat %v, want %v", i, time.Unix(0, n.LastHeartbeatUnixNano), clock.Now())
		}
		if n.GetUsage().GetCpuCores() != usage.CpuCores || n.GetUsage().GetMemoryBytes() != usage.MemoryBytes {
			t.Fatalf("heartbeat %d: node usage %v, want %v", i, n.GetUsage(), usage)
		}
		var got *cohortv1.Usage
		for _, a := range getJob().Allocations {
			if a.Id == alloc.Id {
				got = a.GetUsage()
			} else if a.GetUsage() != nil {
				t.Fatalf("allocation %s has usage %v nobody reported", a.Id, a.GetUsage())
			}
		}
		if got.GetCpuCores() != 0.25*float64(i) || got.GetMemoryBytes() != int64(i)<<27 {
			t.Fatalf("heartbeat %d: task usage %v", i, got)
		}
	}
	if after := s.State().LatestIndex(); after != index {
		t.Fatalf("heartbeats wrote to Raft: index %d -> %d", index, after)
	}
}

// TestInterimProgressStaysInLeaderMemory sends in-epoch progress: GetJob and WatchJob
// serve it at once, Raft gets no entry, and a report behind the job's replicated
// progress is ignored.
func TestInterimProgressStaysInLeaderMemory(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.HeartbeatTTL = time.Hour })
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	registerNode(t, ctx, c, "worker-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	registerNode(t, ctx, c, "ps-1", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.1:7000")
	sub, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: attrition-mlp")})
	if err != nil {
		t.Fatal(err)
	}
	getJob := func() *cohortv1.GetJobResponse {
		r, err := c.jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.Job.Id})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	waitFor(t, "job running", func() bool { return getJob().Job.State == cohortv1.JobState_JOB_STATE_RUNNING }, 10*time.Second)
	var chief *cohortv1.Allocation
	for _, a := range getJob().Allocations {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && a.Index == 0 {
			chief = a
		}
	}
	watch, err := c.jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: sub.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	report := func(step int64, interim bool) {
		t.Helper()
		_, err := c.agent.ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: []*cohortv1.TaskReport{{
			AllocationId: chief.Id, JobId: chief.JobId, State: cohortv1.TaskState_TASK_STATE_RUNNING, Interim: interim,
			Progress: &cohortv1.JobProgress{Step: step, TotalSteps: 1000, TotalEpochs: 10, IntervalLoss: 0.5, IntervalRows: 64, TimeUnixNano: step},
		}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	index := s.State().LatestIndex()
	for _, step := range []int64{10, 20, 30} {
		report(step, true)
		if got := getJob().Job.GetProgress().GetStep(); got != step {
			t.Fatalf("GetJob after interim step %d: step %d", step, got)
		}
		w, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Job.GetProgress().GetStep(); got != step {
			t.Fatalf("WatchJob after interim step %d: step %d", step, got)
		}
	}
	if after := s.State().LatestIndex(); after != index {
		t.Fatalf("interim progress wrote to Raft: index %d -> %d", index, after)
	}
	// A report of an unknown allocation is dropped, as the FSM drops it, without failing
	// the call (an agent would otherwise retry it forever).
	if _, err := c.agent.ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: []*cohortv1.TaskReport{{
		AllocationId: "gone-w0", Interim: true, Progress: &cohortv1.JobProgress{Step: 99}}}}); err != nil {
		t.Fatalf("interim report of an unknown allocation: %v", err)
	}
	// A durable report (an epoch end) goes through Raft; a later interim report behind
	// it does not move progress back.
	report(50, false)
	waitFor(t, "durable progress", func() bool { return getJob().Job.GetProgress().GetStep() == 50 }, 10*time.Second)
	report(40, true)
	if got := getJob().Job.GetProgress().GetStep(); got != 50 {
		t.Fatalf("an interim report behind the replicated progress moved it to %d", got)
	}
}

// TestHeartbeatUsageBadInput: a heartbeat with a negative or non-finite usage figure,
// or a task usage without an allocation ID, is refused with the field named.
func TestHeartbeatUsageBadInput(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.HeartbeatTTL = time.Hour })
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := registerNode(t, ctx, c, "worker-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	for _, tt := range []struct {
		name  string
		req   *cohortv1.HeartbeatRequest
		field string
	}{
		{"negative cpu", &cohortv1.HeartbeatRequest{Usage: &cohortv1.Usage{CpuCores: -1}}, "usage.cpu_cores"},
		{"NaN utilization", &cohortv1.HeartbeatRequest{Usage: &cohortv1.Usage{GpuUtilization: math.NaN()}}, "usage.gpu_utilization"},
		{"negative task memory", &cohortv1.HeartbeatRequest{Tasks: []*cohortv1.TaskUsage{{AllocationId: "a", Usage: &cohortv1.Usage{MemoryBytes: -5}}}}, "tasks[0].usage.memory_bytes"},
		{"task without allocation", &cohortv1.HeartbeatRequest{Tasks: []*cohortv1.TaskUsage{{Usage: &cohortv1.Usage{}}}}, "tasks[0].allocation_id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.NodeId, tt.req.RegistrationGeneration = n.Id, n.RegistrationGeneration
			_, err := c.agent.Heartbeat(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("heartbeat: %v; want InvalidArgument naming %s", err, tt.field)
			}
		})
	}
}
