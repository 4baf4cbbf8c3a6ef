package fsm

import (
	"errors"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func registerCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 10, Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{
		Node: &cohortv1.Node{Id: id, Capacity: &cohortv1.Resources{CpuMillis: 8000}}}}}
}

func nodeDownCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 500, Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{
		NodeId: id, Status: cohortv1.NodeStatus_NODE_STATUS_DOWN}}}
}

func drainCmd(id string, deadline int64, cancel bool) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 1000, Kind: &cohortv1.Command_DrainNode{DrainNode: &cohortv1.DrainNodeCommand{
		NodeId: id, DeadlineUnixNano: deadline, Cancel: cancel}}}
}

// requeued asserts a job went back to pending in generation gen with its checkpoint
// and every allocation stopped.
func requeued(t *testing.T, h *harness, id string, gen uint64, ckpt string) *cohortv1.Job {
	t.Helper()
	j := h.job(id)
	if j.State != cohortv1.JobState_JOB_STATE_PENDING || j.Generation != gen || j.Checkpoint != ckpt {
		t.Fatalf("job %s: state %v generation %d checkpoint %q", id, j.State, j.Generation, j.Checkpoint)
	}
	allocs, _ := h.f.State().AllocsByJob(nil, id)
	for _, a := range allocs {
		if a.State != cohortv1.TaskState_TASK_STATE_STOPPED {
			t.Fatalf("allocation %s is %v", a.Id, a.State)
		}
	}
	return j
}

func TestPreemptJobs(t *testing.T) {
	h := newHarness(t)
	placedJob(h, "low")
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "low-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: "s3://b/m1"}))
	h.mustApply(&cohortv1.Command{TimeUnixNano: 600, Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{
		PreemptorJobId: "high", VictimJobIds: []string{"low"}, Reason: "preempted by job high (priority 90)"}}})
	j := requeued(t, h, "low", 2, "s3://b/m1")
	if j.Restarts != 0 || j.StatusMessage != "preempted by job high (priority 90)" {
		t.Fatalf("preempted job %v", j)
	}
	// A victim that is not running is refused, and nothing changes.
	resp := h.apply(&cohortv1.Command{Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{VictimJobIds: []string{"low"}}}})
	if err, ok := resp.(error); !ok || !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("preempting a pending job: %v", resp)
	}
	// Placed again, the new generation's allocations get new IDs.
	h.mustApply(planCmd("low", &cohortv1.Allocation{Id: "low-w0-g2", JobId: "low", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}))
	if a := h.alloc("low-w0-g2"); a.Generation != 2 {
		t.Fatalf("re-placed allocation generation %d", a.Generation)
	}
}

func TestNodeDownSpendsRestartBudget(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerCmd("n1"))
	h.mustApply(&cohortv1.Command{TimeUnixNano: 100, Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
		Job: &cohortv1.Job{Id: "j", Name: "j", IdempotencyKey: "k", WorkerCount: 1, MaxRestarts: 1}}}})
	h.mustApply(planCmd("j", alloc("j", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")))
	h.mustApply(nodeDownCmd("n1"))
	j := requeued(t, h, "j", 2, "")
	if j.Restarts != 1 || !strings.Contains(j.StatusMessage, "node n1 went down") {
		t.Fatalf("after the first loss: %v", j)
	}
	h.mustApply(registerCmd("n1"))
	h.mustApply(planCmd("j", &cohortv1.Allocation{Id: "j-w0-g2", JobId: "j", NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}))
	h.mustApply(nodeDownCmd("n1"))
	j = h.job("j")
	if j.State != cohortv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.StatusMessage, "restart budget of 1 spent") || j.EndTimeUnixNano != 500 {
		t.Fatalf("after the budget is spent: state %v message %q end %d", j.State, j.StatusMessage, j.EndTimeUnixNano)
	}
	if a := h.alloc("j-w0-g2"); a.State != cohortv1.TaskState_TASK_STATE_STOPPED {
		t.Fatalf("allocation of the failed job is %v", a.State)
	}
}

func TestDrainAndEligibility(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"n1", "n2", "p1"} {
		h.mustApply(registerCmd(n))
	}
	placedJob(h, "j") // tasks on n1, n2, p1
	// A drain with a future deadline only marks the node.
	node := h.mustApply(drainCmd("n2", 5000, false)).(*cohortv1.Node)
	if node.Status != cohortv1.NodeStatus_NODE_STATUS_DRAINING || node.DrainDeadlineUnixNano != 5000 || h.job("j").State != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("drain with a deadline: node %v job %v", node, h.job("j").State)
	}
	// A heartbeat or a re-registration does not end it.
	h.mustApply(&cohortv1.Command{Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{NodeId: "n2", Status: cohortv1.NodeStatus_NODE_STATUS_READY}}})
	h.mustApply(registerCmd("n2"))
	n2, _ := h.f.State().NodeByID(nil, "n2")
	if n2.Status != cohortv1.NodeStatus_NODE_STATUS_DRAINING {
		t.Fatalf("drain lost: %v", n2.Status)
	}
	// At the deadline the job moves off, without spending a restart.
	h.mustApply(&cohortv1.Command{TimeUnixNano: 5000, Kind: &cohortv1.Command_DrainNode{DrainNode: &cohortv1.DrainNodeCommand{NodeId: "n2", DeadlineUnixNano: 5000}}})
	if j := requeued(t, h, "j", 2, ""); j.Restarts != 0 || !strings.Contains(j.StatusMessage, "node n2 drained") {
		t.Fatalf("drained job %v", j)
	}
	h.mustApply(drainCmd("n2", 0, true))
	n2, _ = h.f.State().NodeByID(nil, "n2")
	if n2.Status != cohortv1.NodeStatus_NODE_STATUS_READY || n2.DrainDeadlineUnixNano != 0 {
		t.Fatalf("after cancel: %v", n2)
	}

	elig := func(id string, eligible bool) *cohortv1.Node {
		return h.mustApply(&cohortv1.Command{Kind: &cohortv1.Command_SetNodeEligibility{SetNodeEligibility: &cohortv1.SetNodeEligibilityCommand{
			NodeId: id, Eligible: eligible}}}).(*cohortv1.Node)
	}
	if n := elig("n1", false); !n.SchedulingIneligible {
		t.Fatal("not ineligible")
	}
	h.mustApply(registerCmd("n1"))
	if n, _ := h.f.State().NodeByID(nil, "n1"); !n.SchedulingIneligible {
		t.Fatal("re-registration made the node eligible")
	}
	if n := elig("n1", true); n.SchedulingIneligible {
		t.Fatal("still ineligible")
	}
	for _, bad := range []*cohortv1.Command{drainCmd("nope", 0, false),
		{Kind: &cohortv1.Command_SetNodeEligibility{SetNodeEligibility: &cohortv1.SetNodeEligibilityCommand{NodeId: "nope"}}}} {
		if err, ok := h.apply(bad).(error); !ok || !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s of an unknown node: %v", CommandKind(bad), err)
		}
	}
}
