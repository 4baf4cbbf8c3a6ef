package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestSubmitRefusesJobsThatCanNeverFit runs a real coordinator over gRPC: a job larger
// than the registered nodes is refused at submit with the reason (InvalidArgument, so
// the CLI exits 2) unless wait_for_capacity is set; PlanJob answers the dry run; a
// pending job says which resource is short.
func TestSubmitRefusesJobsThatCanNeverFit(t *testing.T) {
	c := clustertest.TestCluster(t, 1)
	leader := c.WaitForLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jobs := leader.Jobs()
	submit := func(spec string, waitForCapacity bool) (*cohortv1.SubmitJobResponse, error) {
		return jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), WaitForCapacity: waitForCapacity})
	}

	// Before any node registers, any job is accepted and waits.
	if _, err := submit("name: early\ngpus: 64", false); err != nil {
		t.Fatalf("submit before any node: %v", err)
	}
	_, err := leader.Agent().RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
		Id: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
		DataAddress: "127.0.0.1:1", Labels: map[string]string{"zone": "a"},
		Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30, Gpus: 4, GpuModel: "H100", GpuMemoryBytes: 80 << 30},
	}})
	if err != nil {
		t.Fatalf("register node: %v", err)
	}

	refusals := []struct{ spec, want string }{
		{"name: big\ngpus: 8", "each needs (cpu 100m, memory 1.0MiB, gpus 8) but the largest registered worker node has (cpu 8000m, memory 8.0GiB, gpus 4)"},
		{"name: many\nworkers: 5\ngpus: 1", "the 1 registered worker node can hold at most 4"},
		{"name: elsewhere\nselector: zone=b", "no registered node with role worker matching node selector {zone=b}"},
	}
	for _, r := range refusals {
		_, err := submit(r.spec, false)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), r.want) || !strings.Contains(err.Error(), "--wait-for-capacity") {
			t.Fatalf("submit %q: got %v, want InvalidArgument naming %q", r.spec, err, r.want)
		}
	}
	waiting, err := submit("name: big\ngpus: 8", true)
	if err != nil || !waiting.Created || waiting.Job.State != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("submit with wait_for_capacity: %v %v", waiting, err)
	}

	plan, err := jobs.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("name: p\nworkers: 2\ngpus: 2")})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if !plan.Feasible || plan.NeverFits || len(plan.Placements) != 3 || len(plan.Reasons) != 0 {
		t.Fatalf("plan of a fitting job: %v", plan)
	}
	for _, p := range plan.Placements {
		if p.NodeId != "n1" {
			t.Fatalf("placement %v", p)
		}
	}
	plan, err = jobs.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("name: p\nworkers: 3\ngpus: 2")})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if plan.Feasible || !plan.NeverFits || len(plan.Placements) != 0 || len(plan.Reasons) == 0 {
		t.Fatalf("plan of a job that never fits: %v", plan)
	}

	// The waiting job's status says which resource is short, on how many nodes.
	stream, err := jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: waiting.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	const want = "workers: need 1 x (cpu 100m, memory 1.0MiB, gpus 8); 0 placed; 1 node short on gpus"
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if r := resp.Job.PendingReasons; len(r) > 0 {
			if r[0] != want {
				t.Fatalf("pending reasons %q, want %q", r, want)
			}
			break
		}
	}
}

// TestQuotasAndQueuesOverGRPC sets quotas and queue weights through the API, and a job
// that exceeds its namespace's quota on its own is refused even with wait_for_capacity.
func TestQuotasAndQueuesOverGRPC(t *testing.T) {
	c := clustertest.TestCluster(t, 1)
	jobs := c.WaitForLeader(t).Jobs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	bad := []*cohortv1.SetQuotaRequest{
		{Quota: &cohortv1.Quota{Namespace: "Team_A"}},
		{Quota: &cohortv1.Quota{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: -1}}},
	}
	for _, req := range bad {
		if _, err := jobs.SetQuota(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("SetQuota(%v) = %v, want InvalidArgument", req, err)
		}
	}
	if _, err := jobs.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "default", Limit: &cohortv1.Resources{Gpus: 2}}}); err != nil {
		t.Fatal(err)
	}
	list, err := jobs.ListQuotas(ctx, &cohortv1.ListQuotasRequest{})
	if err != nil || len(list.Quotas) != 1 || list.Quotas[0].GetLimit().GetGpus() != 2 {
		t.Fatalf("ListQuotas = %v, %v", list, err)
	}
	_, err = jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: q\nworkers: 3\ngpus: 1"), WaitForCapacity: true})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `namespace "default" quota: the job alone needs`) {
		t.Fatalf("submit over quota: %v", err)
	}
	if _, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: q\nworkers: 2\ngpus: 1")}); err != nil {
		t.Fatalf("submit within quota: %v", err)
	}

	if _, err := jobs.SetQueue(ctx, &cohortv1.SetQueueRequest{Queue: &cohortv1.Queue{Name: "research", Weight: 0}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SetQueue weight 0 = %v", err)
	}
	if _, err := jobs.SetQueue(ctx, &cohortv1.SetQueueRequest{Queue: &cohortv1.Queue{Name: "research", Weight: 3}}); err != nil {
		t.Fatal(err)
	}
	queues, err := jobs.ListQueues(ctx, &cohortv1.ListQueuesRequest{})
	if err != nil || len(queues.Queues) != 1 || queues.Queues[0].Weight != 3 {
		t.Fatalf("ListQueues = %v, %v", queues, err)
	}
}

// TestPreemptionOverGRPC: a higher-priority job evicts a lower-priority gang on a real
// coordinator; the victim goes back to pending with its generation bumped and its
// checkpoint kept, and the preemptor runs.
func TestPreemptionOverGRPC(t *testing.T) {
	leader, jobs, ctx, waitFor := oneNodeLeader(t, 4)
	isRunning := func(j *cohortv1.Job) bool { return j.State == cohortv1.JobState_JOB_STATE_RUNNING }

	low, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: low\nworkers: 2\ngpus: 2\npriority: 10")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(low.Job.Id, isRunning)
	const ckpt = "s3://bucket/ckpt/low/manifest-000200.json"
	if _, err := leader.Agent().ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: []*cohortv1.TaskReport{{
		AllocationId: low.Job.Id + "-w0", JobId: low.Job.Id, State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: ckpt,
	}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(low.Job.Id, func(j *cohortv1.Job) bool { return j.Checkpoint == ckpt })

	plan, err := jobs.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte("name: high\nworkers: 1\ngpus: 2\npriority: 90")})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Feasible || len(plan.Preemptions) != 1 || plan.Preemptions[0] != low.Job.Id || len(plan.Placements) != 2 || len(plan.Reasons) == 0 {
		t.Fatalf("plan with preemption: %v", plan)
	}
	high, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: high\nworkers: 1\ngpus: 2\npriority: 90")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(high.Job.Id, isRunning)
	got, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: low.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	j := got.Job
	if j.State != cohortv1.JobState_JOB_STATE_PENDING || j.Generation != 2 || j.Checkpoint != ckpt ||
		!strings.Contains(j.StatusMessage, "preempted by job "+high.Job.Id) {
		t.Fatalf("victim after preemption: state %v generation %d checkpoint %q message %q", j.State, j.Generation, j.Checkpoint, j.StatusMessage)
	}
	for _, a := range got.Allocations {
		if a.State != cohortv1.TaskState_TASK_STATE_STOPPED {
			t.Fatalf("victim allocation %s is %v, want stopped", a.Id, a.State)
		}
	}
	// When the preemptor ends, the victim is placed again in a new generation.
	if _, err := jobs.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: high.Job.Id}); err != nil {
		t.Fatal(err)
	}
	waitFor(low.Job.Id, isRunning)
	got, err = jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: high.Job.Id})
	if err != nil || got.Job.State != cohortv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("preemptor: %v %v", got, err)
	}
	got, err = jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: low.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, a := range got.Allocations {
		if a.State == cohortv1.TaskState_TASK_STATE_PENDING {
			live++
			if a.Generation != 2 || !strings.HasSuffix(a.Id, "-g2") {
				t.Fatalf("re-placed allocation %s generation %d", a.Id, a.Generation)
			}
		}
	}
	if live != 3 || got.Job.Checkpoint != ckpt {
		t.Fatalf("re-placed victim: %d live allocations, checkpoint %q", live, got.Job.Checkpoint)
	}
}

// TestDrainAndEligibilityOverGRPC: draining a node moves its job to another node in a
// new generation; an ineligible node takes no new task; a drain deadline (on the
// coordinator's fake clock) keeps the job running until it passes.
func TestDrainAndEligibilityOverGRPC(t *testing.T) {
	clock := server.NewFakeClock(time.Unix(1_700_000_000, 0))
	c := clustertest.TestCluster(t, 1, clustertest.Options{Mutate: func(cfg *server.Config) { cfg.Clock = clock }})
	leader := c.WaitForLeader(t)
	jobs := leader.Jobs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"n1", "n2"} {
		if _, err := leader.Agent().RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
			Id: id, Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
			DataAddress: "127.0.0.1:1", Capacity: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	watchUntil := func(id string, ok func(*cohortv1.GetJobResponse) bool) *cohortv1.GetJobResponse {
		t.Helper()
		stream, err := jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("watch %s: %v", id, err)
			}
			got, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
			if err != nil {
				t.Fatal(err)
			}
			if ok(got) {
				return got
			}
		}
	}
	onNode := func(node string, gen uint64) func(*cohortv1.GetJobResponse) bool {
		return func(r *cohortv1.GetJobResponse) bool {
			if r.Job.State != cohortv1.JobState_JOB_STATE_RUNNING || r.Job.Generation != gen {
				return false
			}
			for _, a := range r.Allocations {
				if a.State == cohortv1.TaskState_TASK_STATE_PENDING && a.NodeId != node {
					return false
				}
			}
			return true
		}
	}
	sub, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: d")})
	if err != nil {
		t.Fatal(err)
	}
	watchUntil(sub.Job.Id, onNode("n1", 1))
	if _, err := jobs.DrainNode(ctx, &cohortv1.DrainNodeRequest{NodeId: "n1", DeadlineSeconds: -1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative deadline: %v", err)
	}
	if _, err := jobs.DrainNode(ctx, &cohortv1.DrainNodeRequest{NodeId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("drain of an unknown node: %v", err)
	}
	drained, err := jobs.DrainNode(ctx, &cohortv1.DrainNodeRequest{NodeId: "n1"})
	if err != nil || drained.Node.Status != cohortv1.NodeStatus_NODE_STATUS_DRAINING {
		t.Fatalf("drain: %v %v", drained, err)
	}
	watchUntil(sub.Job.Id, onNode("n2", 2))

	if _, err := jobs.SetNodeEligibility(ctx, &cohortv1.SetNodeEligibilityRequest{NodeId: "n2", Eligible: false}); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: sub.Job.Id}); err != nil {
		t.Fatal(err)
	}
	next, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: e")})
	if err != nil {
		t.Fatal(err)
	}
	got := watchUntil(next.Job.Id, func(r *cohortv1.GetJobResponse) bool { return len(r.Job.PendingReasons) > 0 })
	if got.Job.PendingReasons[0] != "no ready, eligible node with role worker" {
		t.Fatalf("pending reasons with every node drained or ineligible: %q", got.Job.PendingReasons)
	}
	if _, err := jobs.SetNodeEligibility(ctx, &cohortv1.SetNodeEligibilityRequest{NodeId: "n2", Eligible: true}); err != nil {
		t.Fatal(err)
	}
	watchUntil(next.Job.Id, onNode("n2", 1))

	// With a deadline the job keeps running until it, then the leader moves it off.
	deadline := clock.Now().Add(time.Second)
	if _, err := jobs.DrainNode(ctx, &cohortv1.DrainNodeRequest{NodeId: "n2", DeadlineSeconds: 1}); err != nil {
		t.Fatal(err)
	}
	// The leader has seen the drain once it waits for its deadline.
	if !clock.WaitForTimer(deadline, ctx.Done()) {
		t.Fatal("the leader never waited for the drain deadline")
	}
	clock.Advance(time.Second - time.Millisecond)
	if got, _ := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: next.Job.Id}); got.Job.State != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job moved before the drain deadline: %v", got.Job.State)
	}
	clock.Advance(time.Millisecond)
	got = watchUntil(next.Job.Id, func(r *cohortv1.GetJobResponse) bool { return r.Job.Generation == 2 })
	if got.Job.State != cohortv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("after the drain deadline: %v", got.Job.State)
	}
}

// oneNodeLeader starts a one-voter coordinator with one worker and parameter-server node
// of gpus GPUs (8 CPUs, 8 GiB), and returns its JobService client, a context bounding the
// test, and waitFor, which follows a job until ok holds.
func oneNodeLeader(t *testing.T, gpus int32) (*clustertest.Node, cohortv1.JobServiceClient, context.Context, func(id string, ok func(*cohortv1.Job) bool) *cohortv1.Job) {
	t.Helper()
	c := clustertest.TestCluster(t, 1)
	leader := c.WaitForLeader(t)
	jobs := leader.Jobs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	_, err := leader.Agent().RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
		Id: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
		DataAddress: "127.0.0.1:1", Capacity: &cohortv1.Resources{CpuMillis: 8000, MemoryBytes: 8 << 30, Gpus: gpus},
	}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(id string, ok func(*cohortv1.Job) bool) *cohortv1.Job {
		t.Helper()
		stream, err := jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("watch %s: %v", id, err)
			}
			if ok(resp.Job) {
				return resp.Job
			}
		}
	}
	return leader, jobs, ctx, waitFor
}

// TestForwardedSubmitKeepsKeyOverGRPC: on a three-voter cluster a follower forwards a
// submission with the caller's key, or with the one key it minted for a keyless call;
// a retry with that key through another coordinator returns the first job; a spec the
// follower refuses gets the same code and message as on the leader.
func TestForwardedSubmitKeepsKeyOverGRPC(t *testing.T) {
	c := clustertest.TestCluster(t, 3)
	leader := c.WaitForLeader(t)
	var fs []*clustertest.Node
	for _, n := range c.Running() {
		if n != leader {
			fs = append(fs, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, key := range []string{"k-caller", ""} {
		sub, err := fs[0].Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: fwd"), IdempotencyKey: key})
		if err != nil || !sub.Created {
			t.Fatalf("submit with key %q through a follower: %v %v", key, sub, err)
		}
		got := sub.Job.IdempotencyKey
		if (key != "" && got != key) || (key == "" && (!strings.HasPrefix(got, "auto-") || len(got) != len("auto-")+32)) {
			t.Fatalf("stored key %q for caller's key %q", got, key)
		}
		for _, n := range []*clustertest.Node{fs[1], leader} {
			again, err := n.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: fwd"), IdempotencyKey: got})
			if err != nil || again.Created || again.Job.Id != sub.Job.Id {
				t.Fatalf("retry through %s: %v %v, want the first job %s", n.ID, again, err, sub.Job.Id)
			}
		}
	}
	const want = "invalid job spec:\nspec.yaml:1: metadata.name: required"
	for _, n := range []*clustertest.Node{fs[0], leader} {
		_, err := n.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("bad")})
		if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != want {
			t.Fatalf("bad spec through %s: %v, want %q", n.ID, err, want)
		}
	}
	list, err := leader.Jobs().ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil || len(list.Jobs) != 2 {
		t.Fatalf("jobs stored: %v %v, want 2", list, err)
	}
}
