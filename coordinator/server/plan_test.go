package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// plansCounted returns the cohort_scheduler_plans_total counters of reg by result.
func plansCounted(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cohort_scheduler_plans_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestRefusedPreemptionKeepsVictimsRunning: a high-priority job fits only by evicting a
// running gang, and its placement is refused at commit (an allocation with the ID the
// placement would use already exists). The eviction and the placement are one plan, so
// the refusal leaves the victim running in its generation, its tasks live.
func TestRefusedPreemptionKeepsVictimsRunning(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startServer(t, t.TempDir(), func(c *server.Config) { c.Registry = reg })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	apply := func(cmd *cohortv1.Command) {
		t.Helper()
		if _, err := s.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	submit := func(j *cohortv1.Job) {
		t.Helper()
		j.Namespace, j.IdempotencyKey = "default", j.Id
		apply(&cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{Job: j}}})
	}
	apply(&cohortv1.Command{Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{Node: &cohortv1.Node{
		Id: "n1", Name: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER},
		Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30, Gpus: 4},
	}}}})
	gpus := func(n int32) *cohortv1.Resources {
		return &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30, Gpus: n}
	}
	submit(&cohortv1.Job{Id: "low", Priority: 10, WorkerCount: 2, WorkerResources: gpus(2)})
	low := waitJob(t, ctx, s, "low", func(j *cohortv1.Job) bool { return j.State == cohortv1.JobState_JOB_STATE_RUNNING })

	// A job without workers is never placed by the scheduler; commit a plan for it by
	// hand that takes the allocation ID "high" will be placed under.
	submit(&cohortv1.Job{Id: "decoy", Priority: 1})
	apply(&cohortv1.Command{Kind: &cohortv1.Command_CommitPlan{CommitPlan: &cohortv1.CommitPlanCommand{JobId: "decoy",
		Allocations: []*cohortv1.Allocation{{Id: "high-w0", JobId: "decoy", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}}}})

	before := plansCounted(t, reg)
	submit(&cohortv1.Job{Id: "high", Priority: 90, WorkerCount: 1, WorkerResources: gpus(4)})
	waitFor(t, "the scheduler's decision about job high", func() bool {
		after := plansCounted(t, reg)
		return after["rejected"] > before["rejected"] || after["error"] > before["error"]
	}, 10*time.Second)

	got, err := s.State().JobByID(nil, "low")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != cohortv1.JobState_JOB_STATE_RUNNING || got.Generation != low.Generation {
		t.Fatalf("victim of a refused plan: %v generation %d (was %d): %q", got.State, got.Generation, low.Generation, got.StatusMessage)
	}
	allocs, err := s.State().AllocsByJob(nil, "low")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.State != cohortv1.TaskState_TASK_STATE_PENDING {
			t.Fatalf("victim allocation %s is %v after a refused plan", a.Id, a.State)
		}
	}
	if high, _ := s.State().JobByID(nil, "high"); high.GetState() != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("high is %v, want pending", high.GetState())
	}
}

// waitJob waits, on the state store's watch channels, until job id satisfies ok.
func waitJob(t *testing.T, ctx context.Context, s *server.Server, id string, ok func(*cohortv1.Job) bool) *cohortv1.Job {
	t.Helper()
	for {
		ws := memdb.NewWatchSet()
		j, err := s.State().JobByID(ws, id)
		if err != nil {
			t.Fatal(err)
		}
		if j != nil && ok(j) {
			return j
		}
		if err := ws.WatchCtx(ctx); err != nil {
			t.Fatalf("waiting for job %s (now %v): %v", id, j, err)
		}
	}
}

// waitNode waits, on the state store's watch channels, until node id satisfies ok.
func waitNode(t *testing.T, ctx context.Context, s *server.Server, id string, ok func(*cohortv1.Node) bool) *cohortv1.Node {
	t.Helper()
	for {
		ws := memdb.NewWatchSet()
		n, err := s.State().NodeByID(ws, id)
		if err != nil {
			t.Fatal(err)
		}
		if n != nil && ok(n) {
			return n
		}
		if err := ws.WatchCtx(ctx); err != nil {
			t.Fatalf("waiting for node %s (now %v): %v", id, n, err)
		}
	}
}
