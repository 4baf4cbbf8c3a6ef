package fsm

import (
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// replicatedJob submits and places job j: two workers on n1 and n2, two shards with
// backups (replicas 2): ps0 on p1 (backup on p2), ps1 on p2 (backup on p3).
func replicatedJob(h *harness) {
	h.t.Helper()
	h.mustApply(&cohortv1.Command{TimeUnixNano: 100, Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
		Job: &cohortv1.Job{Id: "j", Name: "j", IdempotencyKey: "key-j", WorkerCount: 2, ShardCount: 2, ShardReplicas: 2, MaxRestarts: 3}}}})
	backup := func(idx int32, node string) *cohortv1.Allocation {
		a := alloc("j", cohortv1.TaskKind_TASK_KIND_PS_SHARD, idx, node)
		a.Id += "-b"
		a.Replica = 1
		return a
	}
	h.mustApply(planCmd("j",
		alloc("j", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1"), alloc("j", cohortv1.TaskKind_TASK_KIND_WORKER, 1, "n2"),
		alloc("j", cohortv1.TaskKind_TASK_KIND_PS_SHARD, 0, "p1"), backup(0, "p2"),
		alloc("j", cohortv1.TaskKind_TASK_KIND_PS_SHARD, 1, "p2"), backup(1, "p3")))
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: "s3://b/m1", Generation: 1}))
}

// TestReplicatedShardLoss: a lost primary (node down, drained, or its task failed) is
// replaced in the same Raft entry by its backup, promoted to replica 0 under a new
// generation that every live allocation moves to, with no restart spent and the
// checkpoint pointer untouched; a lost backup is only stopped; a node holding one
// shard's primary and another's backup promotes the one and stops the other; both
// copies of a shard lost fall back to the checkpoint requeue.
func TestReplicatedShardLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(h *harness)
		// want: "promote" (with the promoted backups), "backup-only" or "requeue".
		want     string
		promoted []string
		stopped  []string
	}{
		{name: "primary's node down", lose: func(h *harness) { h.mustApply(nodeDownCmd("p1")) },
			want: "promote", promoted: []string{"j-ps0-b"}, stopped: []string{"j-ps0"}},
		{name: "primary's task failed", lose: func(h *harness) {
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-ps1", State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "killed"}))
		}, want: "promote", promoted: []string{"j-ps1-b"}, stopped: []string{"j-ps1"}},
		{name: "primary's node drained", lose: func(h *harness) { h.mustApply(drainCmd("p1", 0, false)) },
			want: "promote", promoted: []string{"j-ps0-b"}, stopped: []string{"j-ps0"}},
		{name: "node with a primary and another shard's backup", lose: func(h *harness) { h.mustApply(nodeDownCmd("p2")) },
			want: "promote", promoted: []string{"j-ps1-b"}, stopped: []string{"j-ps1", "j-ps0-b"}},
		{name: "backup's node down", lose: func(h *harness) { h.mustApply(nodeDownCmd("p3")) },
			want: "backup-only", stopped: []string{"j-ps1-b"}},
		{name: "both copies lost", lose: func(h *harness) {
			h.mustApply(nodeDownCmd("p2"))
			h.mustApply(nodeDownCmd("p3"))
		}, want: "requeue"},
		{name: "a worker lost with a shard", lose: func(h *harness) {
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-w1", State: cohortv1.TaskState_TASK_STATE_FAILED, Message: "oom"}))
		}, want: "fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for _, n := range []string{"n1", "n2", "p1", "p2", "p3"} {
				h.mustApply(registerCmd(n))
			}
			replicatedJob(h)
			tc.lose(h)
			j := h.job("j")
			switch tc.want {
			case "promote":
				if j.State != cohortv1.JobState_JOB_STATE_RUNNING || j.Generation != 2 || j.Restarts != 0 || j.Checkpoint != "s3://b/m1" {
					t.Fatalf("job after the loss: state %v generation %d restarts %d checkpoint %q", j.State, j.Generation, j.Restarts, j.Checkpoint)
				}
				if !strings.Contains(j.StatusMessage, "promoted") {
					t.Errorf("status %q does not say a backup was promoted", j.StatusMessage)
				}
				for _, id := range tc.promoted {
					if a := h.alloc(id); a.Replica != 0 || a.Generation != 2 || a.State == cohortv1.TaskState_TASK_STATE_STOPPED {
						t.Errorf("promoted backup %s: replica %d generation %d state %v", id, a.Replica, a.Generation, a.State)
					}
				}
				allocs, _ := h.f.State().AllocsByJob(nil, "j")
				primaries := map[int32]int{}
				for _, a := range allocs {
					live := a.State != cohortv1.TaskState_TASK_STATE_STOPPED && a.State != cohortv1.TaskState_TASK_STATE_FAILED
					if live && a.Generation != 2 {
						t.Errorf("live allocation %s left in generation %d", a.Id, a.Generation)
					}
					if live && a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.Replica == 0 {
						primaries[a.Index]++
					}
				}
				if primaries[0] != 1 || primaries[1] != 1 {
					t.Errorf("live primaries per shard %v, want one each", primaries)
				}
			case "backup-only":
				if j.State != cohortv1.JobState_JOB_STATE_RUNNING || j.Generation != 1 || j.Restarts != 0 {
					t.Fatalf("job after losing a backup: state %v generation %d restarts %d", j.State, j.Generation, j.Restarts)
				}
			case "requeue":
				if j = requeued(t, h, "j", 3, "s3://b/m1"); j.Restarts < 1 { // generation 2 promoted ps1-b, which p3 then took
					t.Fatalf("requeued job spent no restart: %v", j)
				}
			case "fail":
				if j.State != cohortv1.JobState_JOB_STATE_FAILED {
					t.Fatalf("job: %v", j)
				}
			}
			for _, id := range tc.stopped {
				if a := h.alloc(id); a.State != cohortv1.TaskState_TASK_STATE_STOPPED && a.State != cohortv1.TaskState_TASK_STATE_FAILED {
					t.Errorf("lost copy %s still %v", id, a.State)
				}
			}
		})
	}
}

// TestPlaceBackups: after a backup's node went down, a PlaceBackupsCommand at the job's
// generation adds a new backup for that shard, pending, without a generation change;
// one at another generation, on the primary's node, for a shard that has a live
// backup, or repeating an ID is refused.
func TestPlaceBackups(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"n1", "n2", "p1", "p2", "p3", "p4"} {
		h.mustApply(registerCmd(n))
	}
	replicatedJob(h)
	h.mustApply(nodeDownCmd("p3")) // j-ps1-b lost
	cmd := func(gen uint64, id string, idx int32, node string) *cohortv1.Command {
		return &cohortv1.Command{TimeUnixNano: 900, Kind: &cohortv1.Command_PlaceBackups{PlaceBackups: &cohortv1.PlaceBackupsCommand{
			JobId: "j", Generation: gen, Add: []*cohortv1.Allocation{{Id: id, JobId: "j", Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD,
				Index: idx, NodeId: node, Replica: 1, Resources: &cohortv1.Resources{CpuMillis: 500}}}}}}
	}
	for name, bad := range map[string]*cohortv1.Command{
		"another generation":        cmd(2, "j-ps1-b2", 1, "p4"),
		"on the primary's node":     cmd(1, "j-ps1-b2", 1, "p2"),
		"shard with a live backup":  cmd(1, "j-ps0-b2", 0, "p4"),
		"an existing allocation ID": cmd(1, "j-ps1-b", 1, "p4"),
	} {
		if _, ok := h.apply(bad).(error); !ok {
			t.Errorf("%s: accepted", name)
		}
	}
	h.mustApply(cmd(1, "j-ps1-b2", 1, "p4"))
	a := h.alloc("j-ps1-b2")
	if a.State != cohortv1.TaskState_TASK_STATE_PENDING || a.Generation != 1 || a.Replica != 1 {
		t.Fatalf("new backup %+v", a)
	}
	if j := h.job("j"); j.Generation != 1 || j.State != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job after a backup was placed: generation %d state %v", j.Generation, j.State)
	}
}

// TestReplicatedShardLastCopyFailed: a replicated shard's task failing when its other
// copy is already gone (a promoted backup that cannot serve) requeues the job from its
// checkpoint instead of failing it.
func TestReplicatedShardLastCopyFailed(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"n1", "n2", "p1", "p2", "p3"} {
		h.mustApply(registerCmd(n))
	}
	replicatedJob(h)
	h.mustApply(nodeDownCmd("p1")) // j-ps0-b promoted at generation 2
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j-ps0-b", State: cohortv1.TaskState_TASK_STATE_FAILED,
		Message: "promoted backup cannot serve: not initialised"}))
	j := h.job("j")
	if j.State != cohortv1.JobState_JOB_STATE_PENDING || j.Generation != 3 || j.Checkpoint != "s3://b/m1" || j.Restarts != 1 {
		t.Fatalf("job after its last shard copy failed: state %v generation %d checkpoint %q restarts %d", j.State, j.Generation, j.Checkpoint, j.Restarts)
	}
	allocs, _ := h.f.State().AllocsByJob(nil, "j")
	for _, a := range allocs {
		if a.State != cohortv1.TaskState_TASK_STATE_STOPPED && a.State != cohortv1.TaskState_TASK_STATE_FAILED {
			t.Errorf("allocation %s still %v", a.Id, a.State)
		}
	}
}
