package fsm

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func applyPlanCmd(c *cohortv1.ApplyPlanCommand) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 900, Kind: &cohortv1.Command_ApplyPlan{ApplyPlan: c}}
}

// planSetup gives a running elastic job "el" (3 workers on n1..n3, min 1, generation
// 1), a running gang "low" (generation 1) and a pending job "high".
func planSetup(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	elasticJob(h, "el", 3, 1)
	placedJob(h, "low")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "low-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: "s3://b/low"}))
	h.mustApply(submitCmd("high", "key-high"))
	return h
}

// preemptingPlan shrinks "el" by its rank-2 worker, evicts "low" and places "high".
func preemptingPlan(highAllocs ...*cohortv1.Allocation) *cohortv1.ApplyPlanCommand {
	if highAllocs == nil {
		highAllocs = []*cohortv1.Allocation{
			alloc("high", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1"),
			alloc("high", cohortv1.TaskKind_TASK_KIND_WORKER, 1, "n2"),
			alloc("high", cohortv1.TaskKind_TASK_KIND_PS_SHARD, 0, "p1"),
		}
	}
	return &cohortv1.ApplyPlanCommand{
		PreemptorJobId: "high",
		Shrinks:        []*cohortv1.ResizeJobCommand{{JobId: "el", Generation: 1, RemoveAllocationIds: []string{"el-w2"}, Reason: "shrunk for job high (priority 90)"}},
		Evictions:      []*cohortv1.PlanEviction{{JobId: "low", Generation: 1, Reason: "preempted by job high (priority 90)"}},
		Placements:     []*cohortv1.CommitPlanCommand{{JobId: "high", Allocations: highAllocs}},
	}
}

// TestApplyPlanAllOrNothing: a plan's shrinks, evictions, placements and growth apply
// in one transaction at the entry's index; when any part is refused, nothing does.
func TestApplyPlanAllOrNothing(t *testing.T) {
	t.Run("applies every part at one index", func(t *testing.T) {
		h := planSetup(t)
		res, ok := h.mustApply(applyPlanCmd(preemptingPlan())).(*ApplyPlanResult)
		if !ok || len(res.Shrunk) != 1 || len(res.Evicted) != 1 || len(res.Placed) != 1 {
			t.Fatalf("result %+v", res)
		}
		idx := h.index
		if el := h.job("el"); el.Generation != 2 || el.ActiveWorkers != 2 || el.ModifyIndex != idx {
			t.Fatalf("shrunk job: generation %d, %d workers, index %d", el.Generation, el.ActiveWorkers, el.ModifyIndex)
		}
		if a := h.alloc("el-w2"); a.State != cohortv1.TaskState_TASK_STATE_STOPPED {
			t.Fatalf("removed worker is %v", a.State)
		}
		low := requeued(t, h, "low", 2, "s3://b/low")
		if low.StatusMessage != "preempted by job high (priority 90)" || low.Restarts != 0 || low.ModifyIndex != idx {
			t.Fatalf("evicted job: %v", low)
		}
		high := h.job("high")
		if high.State != cohortv1.JobState_JOB_STATE_RUNNING || high.StartTimeUnixNano != 900 || high.ModifyIndex != idx {
			t.Fatalf("placed job: %v", high)
		}
		if a := h.alloc("high-w1"); a.Generation != 1 || a.State != cohortv1.TaskState_TASK_STATE_PENDING {
			t.Fatalf("placed allocation: %v", a)
		}

		// Growth: add a worker to the shrunk job in its new generation.
		grow := applyPlanCmd(&cohortv1.ApplyPlanCommand{Growth: []*cohortv1.ResizeJobCommand{{JobId: "el", Generation: 2,
			Add: []*cohortv1.Allocation{{Id: "el-w2-g3", JobId: "el", NodeId: "n4", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}, Reason: "grew by 1 workers"}}})
		if res := h.mustApply(grow).(*ApplyPlanResult); len(res.Grown) != 1 || res.Grown[0].ActiveWorkers != 3 {
			t.Fatalf("growth: %+v", res)
		}
		// An infeasible placement records its reasons (and is a no-op once the job runs).
		h.mustApply(submitCmd("wait", "key-wait"))
		h.mustApply(applyPlanCmd(&cohortv1.ApplyPlanCommand{Placements: []*cohortv1.CommitPlanCommand{{JobId: "wait", PendingReasons: []string{"short on gpus"}}}}))
		if r := h.job("wait").PendingReasons; len(r) != 1 || r[0] != "short on gpus" {
			t.Fatalf("pending reasons %q", r)
		}
	})

	refusals := []struct {
		name    string
		prepare func(h *harness)
		plan    func() *cohortv1.ApplyPlanCommand
		want    error
	}{
		{name: "placement of an allocation ID that exists", plan: func() *cohortv1.ApplyPlanCommand {
			return preemptingPlan(&cohortv1.Allocation{Id: "low-w0", JobId: "high", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER})
		}, want: ErrInvalidCommand},
		{name: "preemptor no longer pending", prepare: func(h *harness) { h.mustApply(cancelCmd("high")) },
			plan: func() *cohortv1.ApplyPlanCommand { return preemptingPlan() }, want: ErrNotPending},
		{name: "placement planned for another generation", plan: func() *cohortv1.ApplyPlanCommand {
			a := alloc("high", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")
			a.Generation = 2
			return preemptingPlan(a)
		}, want: ErrStaleGeneration},
		{name: "victim moved to another generation", prepare: func(h *harness) {
			h.mustApply(&cohortv1.Command{Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{VictimJobIds: []string{"low"}}}})
			h.mustApply(planCmd("low", &cohortv1.Allocation{Id: "low-w0-g2", JobId: "low", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}))
		}, plan: func() *cohortv1.ApplyPlanCommand { return preemptingPlan() }, want: ErrStaleGeneration},
		{name: "victim not running", prepare: func(h *harness) { h.mustApply(cancelCmd("low")) },
			plan: func() *cohortv1.ApplyPlanCommand { return preemptingPlan() }, want: ErrInvalidCommand},
		{name: "shrink of a stale generation", prepare: func(h *harness) {
			h.mustApply(resizeCmd("el", 1, nil, "el-w1"))
		}, plan: func() *cohortv1.ApplyPlanCommand { return preemptingPlan() }, want: ErrStaleGeneration},
		{name: "growth beyond workers.max", plan: func() *cohortv1.ApplyPlanCommand {
			p := preemptingPlan()
			p.Growth = []*cohortv1.ResizeJobCommand{{JobId: "el", Generation: 2, Add: []*cohortv1.Allocation{
				{Id: "el-w2-g3", JobId: "el", NodeId: "n4", Kind: cohortv1.TaskKind_TASK_KIND_WORKER},
				{Id: "el-w3-g3", JobId: "el", NodeId: "n5", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}}}
			return p
		}, want: ErrInvalidCommand},
		{name: "a shrink that adds", plan: func() *cohortv1.ApplyPlanCommand {
			p := preemptingPlan()
			p.Shrinks[0].Add = []*cohortv1.Allocation{{Id: "x", JobId: "el", NodeId: "n9", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}
			return p
		}, want: ErrInvalidCommand},
		{name: "empty plan", plan: func() *cohortv1.ApplyPlanCommand { return &cohortv1.ApplyPlanCommand{} }, want: ErrInvalidCommand},
	}
	for _, tt := range refusals {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			h := planSetup(t)
			if tt.prepare != nil {
				tt.prepare(h)
			}
			before := h.f.State().Snapshot()
			resp := h.apply(applyPlanCmd(tt.plan()))
			if err, ok := resp.(error); !ok || !errors.Is(err, tt.want) {
				t.Fatalf("apply: %v, want an error wrapping %v", resp, tt.want)
			}
			assertUnchanged(t, before, h.f.State())
		})
	}
}

// assertUnchanged fails when any job, allocation or table index differs between before
// and the store now.
func assertUnchanged(t *testing.T, before *state.StateSnapshot, after *state.Store) {
	t.Helper()
	if after.LatestIndex() != before.LatestIndex() {
		t.Fatalf("latest index moved from %d to %d", before.LatestIndex(), after.LatestIndex())
	}
	jobs, _ := after.Jobs(nil)
	for _, j := range jobs {
		if old, _ := before.JobByID(nil, j.Id); !proto.Equal(old, j) {
			t.Fatalf("job %s changed: %v -> %v", j.Id, old, j)
		}
	}
	allocs, _ := after.Allocs(nil)
	oldAllocs, _ := before.Allocs(nil)
	if len(allocs) != len(oldAllocs) {
		t.Fatalf("%d allocations, %d before", len(allocs), len(oldAllocs))
	}
	for _, a := range allocs {
		if old, _ := before.AllocByID(nil, a.Id); !proto.Equal(old, a) {
			t.Fatalf("allocation %s changed: %v -> %v", a.Id, old, a)
		}
	}
}

// TestOldCommandKindsStillApplied: entries written before apply_plan existed
// (commit_plan, preempt_jobs, resize_job), as raw log bytes, apply as they always did;
// every kind of the Command oneof has an apply function.
func TestOldCommandKindsStillApplied(t *testing.T) {
	kinds := (&cohortv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("kind").Fields()
	for i := range kinds.Len() {
		if name := kinds.Get(i).Name(); appliers[name] == nil {
			t.Errorf("command kind %s has no apply function", name)
		}
	}
	if _, ok := appliers[protoreflect.Name("apply_plan")]; !ok {
		t.Fatal("apply_plan is not dispatched")
	}

	h := newHarness(t)
	raw := func(cmd *cohortv1.Command) any {
		t.Helper()
		h.index++
		resp := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: mustMarshal(t, cmd)})
		if err, ok := resp.(error); ok {
			t.Fatalf("old %s entry refused: %v", CommandKind(cmd), err)
		}
		return resp
	}
	elasticJob(h, "el", 3, 1) // commit_plan
	placedJob(h, "low")       // commit_plan
	raw(resizeCmd("el", 1, nil, "el-w2"))
	if el := h.job("el"); el.Generation != 2 || el.ActiveWorkers != 2 {
		t.Fatalf("after an old resize_job: generation %d, %d workers", el.Generation, el.ActiveWorkers)
	}
	raw(&cohortv1.Command{TimeUnixNano: 600, Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{
		PreemptorJobId: "high", VictimJobIds: []string{"low"}, Reason: "preempted by job high (priority 90)"}}})
	requeued(t, h, "low", 2, "")
	// An old commit_plan is not checked against the allocations' generation.
	raw(planCmd("low", &cohortv1.Allocation{Id: "low-w0-g2", JobId: "low", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER, Generation: 7}))
	if a := h.alloc("low-w0-g2"); a.Generation != 7 || h.job("low").State != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("after an old commit_plan: allocation generation %d, job %v", a.Generation, h.job("low").State)
	}
	raw(resizeCmd("el", 2, []*cohortv1.Allocation{{Id: "el-w2-g3", JobId: "el", NodeId: "n4", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}))
	if el := h.job("el"); el.Generation != 3 || el.ActiveWorkers != 3 {
		t.Fatalf("after an old growth resize_job: generation %d, %d workers", el.Generation, el.ActiveWorkers)
	}
}
