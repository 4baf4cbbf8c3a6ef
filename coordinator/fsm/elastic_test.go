package fsm

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// elasticJob submits and places job id with workers workers (min 1, max 3) on nodes
// n1, n2, ... and one shard on p1.
func elasticJob(h *harness, id string, workers int32, min int32) {
	h.t.Helper()
	h.mustApply(&cohortv1.Command{TimeUnixNano: 100, Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
		Job: &cohortv1.Job{Id: id, Name: id, IdempotencyKey: "key-" + id, WorkerCount: workers, ShardCount: 1,
			MinWorkers: min, MaxWorkers: 3, MaxRestarts: 3}}}})
	var allocs []*cohortv1.Allocation
	for i := range workers {
		allocs = append(allocs, alloc(id, cohortv1.TaskKind_TASK_KIND_WORKER, i, "n"+string(rune('1'+i))))
	}
	allocs = append(allocs, alloc(id, cohortv1.TaskKind_TASK_KIND_PS_SHARD, 0, "p1"))
	h.mustApply(planCmd(id, allocs...))
}

func resizeCmd(id string, gen uint64, add []*cohortv1.Allocation, remove ...string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 700, Kind: &cohortv1.Command_ResizeJob{ResizeJob: &cohortv1.ResizeJobCommand{
		JobId: id, Generation: gen, Add: add, RemoveAllocationIds: remove, Reason: "test"}}}
}

// members returns the job's live workers as allocation ID -> rank, and checks that
// every live allocation is in the job's generation and the ranks are 0..n-1.
func members(t *testing.T, h *harness, id string) map[string]int32 {
	t.Helper()
	j := h.job(id)
	allocs, _ := h.f.State().AllocsByJob(nil, id)
	out := map[string]int32{}
	ranks := map[int32]bool{}
	for _, a := range allocs {
		if a.State == cohortv1.TaskState_TASK_STATE_STOPPED || a.State == cohortv1.TaskState_TASK_STATE_FAILED ||
			a.State == cohortv1.TaskState_TASK_STATE_SUCCEEDED {
			continue
		}
		if a.Generation != j.Generation {
			t.Fatalf("live allocation %s in generation %d, job in %d", a.Id, a.Generation, j.Generation)
		}
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER {
			out[a.Id] = a.Index
			ranks[a.Index] = true
		}
	}
	for r := range int32(len(out)) {
		if !ranks[r] {
			t.Fatalf("live worker ranks %v are not 0..%d", out, len(out)-1)
		}
	}
	if ActiveWorkers(j) != int32(len(out)) {
		t.Fatalf("job says %d active workers, %d are live", ActiveWorkers(j), len(out))
	}
	return out
}

func TestElasticWorkerLoss(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int32
		min     int32
		lose    func(h *harness)
		// want: "shrink" with the surviving ranks, or "requeue" / "fail".
		want      string
		survivors map[string]int32
	}{
		{name: "node of the chief down: survivors renumbered", workers: 3, min: 1,
			lose: func(h *harness) { h.mustApply(nodeDownCmd("n1")) },
			want: "shrink", survivors: map[string]int32{"j-w1": 0, "j-w2": 1}},
		{name: "node of a middle rank down", workers: 3, min: 2,
			lose: func(h *harness) { h.mustApply(nodeDownCmd("n2")) },
			want: "shrink", survivors: map[string]int32{"j-w0": 0, "j-w2": 1}},
		{name: "worker task failed", workers: 2, min: 1,
			lose: func(h *harness) {
				h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "oom"}))
			},
			want: "shrink", survivors: map[string]int32{"j-w1": 0}},
		{name: "below min: requeued from the checkpoint", workers: 2, min: 2,
			lose: func(h *harness) { h.mustApply(nodeDownCmd("n2")) }, want: "requeue"},
		{name: "shard lost: requeued from the checkpoint", workers: 2, min: 1,
			lose: func(h *harness) { h.mustApply(nodeDownCmd("p1")) }, want: "requeue"},
		{name: "node drained: survivors go on", workers: 3, min: 1,
			lose: func(h *harness) { h.mustApply(drainCmd("n2", 0, false)) },
			want: "shrink", survivors: map[string]int32{"j-w0": 0, "j-w2": 1}},
		{name: "node drained below min: requeued without spending a restart", workers: 2, min: 2,
			lose: func(h *harness) { h.mustApply(drainCmd("n2", 0, false)) }, want: "requeue-free"},
		{name: "permanent failure fails the job at once, without shrinking", workers: 2, min: 1,
			lose: func(h *harness) {
				h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w1", State: cohortv1.TaskState_TASK_STATE_FAILED, Permanent: true,
					Message: `data.label: column "attrition" not found in the CSV (did you mean "Attrition"?)`}))
			}, want: "fail-permanent"},
		{name: "failed task below min fails the job", workers: 2, min: 2,
			lose: func(h *harness) {
				h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w1", State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "bad data"}))
			}, want: "fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for _, n := range []string{"n1", "n2", "n3", "p1"} {
				h.mustApply(registerCmd(n))
			}
			elasticJob(h, "j", tc.workers, tc.min)
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: "s3://b/m1", Generation: 1}))
			tc.lose(h)
			j := h.job("j")
			switch tc.want {
			case "shrink":
				if j.State != cohortv1.JobState_JOB_STATE_RUNNING || j.Generation != 2 || j.Restarts != 0 || j.Checkpoint != "s3://b/m1" {
					t.Fatalf("job after the loss: %v", j)
				}
				got := members(t, h, "j")
				if len(got) != len(tc.survivors) {
					t.Fatalf("live workers %v, want %v", got, tc.survivors)
				}
				for id, rank := range tc.survivors {
					if got[id] != rank {
						t.Fatalf("live workers %v, want %v", got, tc.survivors)
					}
				}
				if a := h.alloc("j-ps0"); a.State != cohortv1.TaskState_TASK_STATE_PENDING || a.Generation != 2 {
					t.Fatalf("shard after the loss: %v", a)
				}
			case "requeue":
				j = requeued(t, h, "j", 2, "s3://b/m1")
				if j.Restarts != 1 || j.ActiveWorkers != 0 {
					t.Fatalf("requeued job: %v", j)
				}
			case "requeue-free":
				if j = requeued(t, h, "j", 2, "s3://b/m1"); j.Restarts != 0 {
					t.Fatalf("drained job spent a restart: %v", j)
				}
			case "fail":
				if j.State != cohortv1.JobState_JOB_STATE_FAILED {
					t.Fatalf("job: %v", j)
				}
			case "fail-permanent":
				if j.State != cohortv1.JobState_JOB_STATE_FAILED || j.Generation != 1 || j.Restarts != 0 ||
					j.StatusMessage != `worker 1 failed: data.label: column "attrition" not found in the CSV (did you mean "Attrition"?)` {
					t.Fatalf("job after a permanent failure: state %v, generation %d, restarts %d, message %q",
						j.State, j.Generation, j.Restarts, j.StatusMessage)
				}
			}
		})
	}
}

func TestResizeJob(t *testing.T) {
	h := newHarness(t)
	elasticJob(h, "j", 2, 1)
	newWorker := func(id, node string) *cohortv1.Allocation {
		return &cohortv1.Allocation{Id: id, JobId: "j", Kind: cohortv1.TaskKind_TASK_KIND_WORKER, NodeId: node,
			Resources: &cohortv1.Resources{CpuMillis: 1000}}
	}
	refused := func(cmd *cohortv1.Command, want error, what string) {
		t.Helper()
		before := h.f.State().LatestIndex()
		resp := h.apply(cmd)
		if err, ok := resp.(error); !ok || !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, resp, want)
		}
		if h.f.State().LatestIndex() != before {
			t.Fatalf("%s: a refused change changed the state", what)
		}
	}
	// Grow by one (generation 1 -> 2): the newcomer is the last rank.
	h.mustApply(resizeCmd("j", 1, []*cohortv1.Allocation{newWorker("j-w2-g2", "n3")}))
	if got := members(t, h, "j"); len(got) != 3 || got["j-w2-g2"] != 2 {
		t.Fatalf("after growth: %v", got)
	}
	if a := h.alloc("j-w2-g2"); a.State != cohortv1.TaskState_TASK_STATE_PENDING {
		t.Fatalf("new worker %v", a)
	}
	refused(resizeCmd("j", 1, nil, "j-w0"), ErrStaleGeneration, "a change planned at an older generation")
	refused(resizeCmd("j", 2, []*cohortv1.Allocation{newWorker("j-w3-g3", "n4")}), ErrInvalidCommand, "growth above max")
	refused(resizeCmd("j", 2, nil, "j-w0", "j-w1", "j-w2-g2"), ErrInvalidCommand, "shrink below min")
	refused(resizeCmd("j", 2, nil, "j-ps0"), ErrInvalidCommand, "removing a shard")
	refused(resizeCmd("j", 2, []*cohortv1.Allocation{newWorker("j-w0", "n4")}), ErrInvalidCommand, "reusing an allocation ID")
	refused(resizeCmd("nope", 0, nil, "x"), ErrNotFound, "an unknown job")
	// Shrink by two (preemption): the chief keeps rank 0.
	h.mustApply(resizeCmd("j", 2, nil, "j-w1", "j-w2-g2"))
	if got := members(t, h, "j"); len(got) != 1 || got["j-w0"] != 0 {
		t.Fatalf("after shrink: %v", got)
	}
	if a := h.alloc("j-w1"); a.State != cohortv1.TaskState_TASK_STATE_STOPPED || a.Message != "test" {
		t.Fatalf("removed worker %v", a)
	}
	// A job whose worker finished (SUCCEEDED without a change) is finishing: no growth.
	h.mustApply(resizeCmd("j", 3, []*cohortv1.Allocation{newWorker("j-w1-g4", "n2")}))
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w1-g4", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED}))
	refused(resizeCmd("j", 4, []*cohortv1.Allocation{newWorker("j-w1-g5", "n3")}), ErrInvalidCommand, "growth of a finishing job")
	// A pending job does not resize.
	h.mustApply(submitCmd("p", "key-p"))
	refused(resizeCmd("p", 0, nil, "p-w0"), ErrInvalidCommand, "resizing a pending job")
}

// TestStaleGenerationCheckpointRefused: a checkpoint pointer reported under an older
// membership generation than the job's is refused (and logged); the current
// generation's is taken, as is one from a report that does not say its generation.
func TestStaleGenerationCheckpointRefused(t *testing.T) {
	var logs bytes.Buffer
	f, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f}
	h.mustApply(registerCmd("n2"))
	elasticJob(h, "j", 2, 1)
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", Checkpoint: "s3://b/m100", Generation: 1}))
	h.mustApply(nodeDownCmd("n2")) // generation 2, with j-w0 alone
	resp := h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Checkpoint: "s3://b/m200", Generation: 1, Metrics: map[string]float64{"val_loss": 0.5}}))
	j := h.job("j")
	if j.Checkpoint != "s3://b/m100" {
		t.Fatalf("checkpoint %q after a stale-generation report; want the earlier s3://b/m100", j.Checkpoint)
	}
	if j.Metrics["val_loss"] != 0.5 {
		t.Fatalf("the rest of the stale report was not applied: %v", j.Metrics)
	}
	res, ok := resp.(*UpdateTasksResult)
	if !ok || len(res.StaleCheckpoints) != 1 || res.StaleCheckpoints[0].Generation != 1 || res.StaleCheckpoints[0].JobGeneration != 2 {
		t.Fatalf("result %#v", resp)
	}
	if line := logs.String(); !strings.Contains(line, "checkpoint report from a stale generation refused") ||
		!strings.Contains(line, "report_generation=1") || !strings.Contains(line, "job_generation=2") || !strings.Contains(line, "s3://b/m200") {
		t.Fatalf("log: %s", line)
	}
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", Checkpoint: "s3://b/m300", Generation: 2}))
	if j := h.job("j"); j.Checkpoint != "s3://b/m300" {
		t.Fatalf("current generation's checkpoint not taken: %q", j.Checkpoint)
	}
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", Checkpoint: "s3://b/m400"}))
	if j := h.job("j"); j.Checkpoint != "s3://b/m400" {
		t.Fatalf("checkpoint of a report without a generation not taken: %q", j.Checkpoint)
	}
}
