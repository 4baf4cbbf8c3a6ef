package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/clustertest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestLiveStateAcrossLeaderChange shows what survives a leader change. In-epoch
// progress and usage reach the leader through a follower and are served everywhere;
// after leadership moves, the new leader serves the replicated progress (the last
// durable report: an epoch end or a checkpoint) and no usage, until the next interim
// report and heartbeat refill its memory.
func TestLiveStateAcrossLeaderChange(t *testing.T) {
	c := clustertest.TestCluster(t, 3)
	leader := c.WaitForLeader(t)
	fs := followers(c, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := registerNode(t, ctx, clientsOf(leader), "w1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	registerNode(t, ctx, clientsOf(leader), "p1", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "10.0.0.1:7000")
	sub, err := leader.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: live"), IdempotencyKey: "k-live"})
	if err != nil {
		t.Fatal(err)
	}
	getJob := func(n *clustertest.Node) *cohortv1.GetJobResponse {
		t.Helper()
		r, err := n.Jobs().GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.Job.Id})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	waitFor(t, "job running", func() bool { return getJob(leader).Job.State == cohortv1.JobState_JOB_STATE_RUNNING }, 20*time.Second)
	var chief *cohortv1.Allocation
	for _, a := range getJob(leader).Allocations {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER {
			chief = a
		}
	}
	report := func(via *clustertest.Node, step int64, interim bool) {
		t.Helper()
		_, err := via.Agent().ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: []*cohortv1.TaskReport{{
			AllocationId: chief.Id, JobId: chief.JobId, State: cohortv1.TaskState_TASK_STATE_RUNNING, Interim: interim,
			Progress: &cohortv1.JobProgress{Step: step, TotalSteps: 100, TotalEpochs: 2},
		}}})
		if err != nil {
			t.Fatalf("report step %d via %s: %v", step, via.ID, err)
		}
	}
	beat := func(via *clustertest.Node, usage *cohortv1.Usage) {
		t.Helper()
		if _, err := via.Agent().Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: w.Id, RegistrationGeneration: w.RegistrationGeneration, Usage: usage,
			Tasks: []*cohortv1.TaskUsage{{AllocationId: chief.Id, Usage: usage}}}); err != nil {
			t.Fatalf("heartbeat via %s: %v", via.ID, err)
		}
	}
	usageOf := func(n *clustertest.Node) *cohortv1.Usage {
		t.Helper()
		for _, a := range getJob(n).Allocations {
			if a.Id == chief.Id {
				return a.GetUsage()
			}
		}
		return nil
	}

	// A watch on a follower: it reads the running job's in-epoch progress from the
	// leader.
	watch, err := fs[1].Jobs().WatchJob(ctx, &cohortv1.WatchJobRequest{Id: sub.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	watched := make(chan int64, 64)
	go func() {
		for {
			r, err := watch.Recv()
			if err != nil {
				close(watched)
				return
			}
			watched <- r.Job.GetProgress().GetStep()
		}
	}()

	report(fs[0], 20, false) // durable: an epoch end or a checkpoint
	waitFor(t, "durable progress", func() bool { return getJob(leader).Job.GetProgress().GetStep() == 20 }, 10*time.Second)
	report(fs[1], 30, true)
	beat(fs[1], &cohortv1.Usage{CpuCores: 1.25, MemoryBytes: 1 << 30})
	seen := false
	for step := range watched {
		if seen = step == 30; seen {
			break
		}
	}
	if !seen {
		t.Fatal("the follower's watch ended without the interim step 30")
	}
	for _, n := range c.Running() { // consistent reads, forwarded to the leader
		if got := getJob(n).Job.GetProgress().GetStep(); got != 30 {
			t.Fatalf("GetJob on %s: step %d, want the interim 30", n.ID, got)
		}
		if u := usageOf(n); u.GetCpuCores() != 1.25 {
			t.Fatalf("task usage on %s: %v", n.ID, u)
		}
	}

	resp, err := leader.Cluster().TransferLeadership(ctx, &cohortv1.TransferLeadershipRequest{Id: fs[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if l := c.WaitForLeader(t); l.ID != resp.LeaderId {
		t.Fatalf("leader %s, transfer said %s", l.ID, resp.LeaderId)
	}
	newLeader := c.Leader()
	waitFor(t, "the new leader serving", func() bool {
		_, err := newLeader.Jobs().GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.Job.Id})
		return err == nil
	}, 10*time.Second)
	if got := getJob(newLeader).Job.GetProgress().GetStep(); got != 20 {
		t.Fatalf("after the leader change: step %d, want the replicated 20", got)
	}
	if u := usageOf(newLeader); u != nil {
		t.Fatalf("after the leader change: usage %v, want none until the next heartbeat", u)
	}
	report(leader, 40, true) // the old leader, now a follower, forwards
	beat(newLeader, &cohortv1.Usage{CpuCores: 0.5, MemoryBytes: 1 << 29})
	if got := getJob(newLeader).Job.GetProgress().GetStep(); got != 40 {
		t.Fatalf("after the next interim report: step %d, want 40", got)
	}
	if u := usageOf(newLeader); u.GetCpuCores() != 0.5 {
		t.Fatalf("after the next heartbeat: usage %v", u)
	}
}
