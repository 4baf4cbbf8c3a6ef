package scheduler

import (
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestBackupsAvoidTheirPrimariesNode: with shard_replicas 2 every shard gets a backup
// allocation (replica 1, its own ID) on another node than its primary, and the gang
// is infeasible, with a reason naming parameterServers.replicas, when some backup has
// no other node; with one replica nothing changes.
func TestBackupsAvoidTheirPrimariesNode(t *testing.T) {
	workers := []*cohortv1.Node{worker("w1", 4000, 8*gib)}
	tests := []struct {
		name     string
		nodes    []*cohortv1.Node
		allocs   []*cohortv1.Allocation
		shards   int32
		replicas int32
		backups  int    // backups expected when feasible
		reason   string // infeasible: a reason containing this
	}{
		{name: "one replica: no backups", nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib)}, shards: 2, replicas: 1},
		{name: "stored before the field (0 reads as 1)", nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib)}, shards: 1, replicas: 0},
		{name: "two shards on two nodes", nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)}, shards: 2, replicas: 2, backups: 2},
		{name: "three shards on two nodes", nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)}, shards: 3, replicas: 2, backups: 3},
		{name: "three nodes", nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib), ps("p3", 4000, 4*gib)}, shards: 1, replicas: 2, backups: 1},
		{name: "one node: backups cannot be placed",
			nodes: []*cohortv1.Node{ps("p1", 8000, 8*gib)}, shards: 2, replicas: 2,
			reason: "spec.resources.parameterServers.replicas: 2 needs each shard's backup on a different parameter-server node than its primary: only 1 eligible parameter-server node (p1)"},
		{name: "the other node is full",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			allocs: []*cohortv1.Allocation{used("p2", 3800, gib, cohortv1.TaskState_TASK_STATE_RUNNING)},
			shards: 1, replicas: 2,
			reason: "no node for the backup of ps 0 (primary on p1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{nodes: append(append([]*cohortv1.Node{}, workers...), tt.nodes...), allocs: tt.allocs}
			job := testJob(1, tt.shards)
			job.ShardReplicas = tt.replicas
			plan := Place(h, job)
			if tt.reason != "" {
				if plan.Feasible() {
					t.Fatalf("feasible %v, want infeasible because %q", placement(plan), tt.reason)
				}
				if !strings.Contains(strings.Join(plan.Reasons, "\n"), tt.reason) {
					t.Fatalf("reasons %q, want one containing %q", plan.Reasons, tt.reason)
				}
				return
			}
			if !plan.Feasible() {
				t.Fatalf("infeasible: %v", plan.Reasons)
			}
			primary := map[int32]string{}
			backup := map[int32]*cohortv1.Allocation{}
			ids := map[string]bool{}
			for _, a := range plan.Allocations {
				if ids[a.Id] {
					t.Fatalf("allocation ID %s twice", a.Id)
				}
				ids[a.Id] = true
				switch {
				case a.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD:
				case IsBackup(a):
					backup[a.Index] = a
				default:
					primary[a.Index] = a.NodeId
				}
			}
			if len(primary) != int(tt.shards) || len(backup) != tt.backups {
				t.Fatalf("%d primaries and %d backups placed, want %d and %d: %v", len(primary), len(backup), tt.shards, tt.backups, placement(plan))
			}
			for i, b := range backup {
				if b.NodeId == primary[i] {
					t.Errorf("shard %d: backup on its primary's node %s", i, b.NodeId)
				}
				if b.Id != BackupAllocID("j", i, 1) || b.Generation != 1 || b.State != cohortv1.TaskState_TASK_STATE_PENDING {
					t.Errorf("backup %+v", b)
				}
			}
			if tt.backups > 0 {
				// The backups are capacity: a quota check sees them.
				if d, want := demand(job).cpu, int64(1000+500*2*tt.shards); d != want {
					t.Errorf("demand cpu %dm, want %dm", d, want)
				}
			}
		})
	}
}

// TestBackupsMakeTheGangInfeasibleAllOrNothing: a job whose backups do not fit takes no
// capacity: the next job sees every node free.
func TestBackupsMakeTheGangInfeasibleAllOrNothing(t *testing.T) {
	h := &harness{nodes: []*cohortv1.Node{worker("w1", 4000, 8*gib), ps("p1", 1000, 4*gib)}}
	cl := NewCluster(h)
	job := testJob(1, 1)
	job.ShardReplicas = 2
	if p := cl.Place(job); p.Feasible() {
		t.Fatalf("placed %v with one parameter-server node", placement(p))
	}
	other := testJob(4, 2)
	other.Id = "k"
	if p := cl.Place(other); !p.Feasible() {
		t.Fatalf("the failed gang kept capacity: %v", p.Reasons)
	}
}

// TestBackupPlanReplacesMissingBackups: a running job whose shard 0 lost its backup
// (stopped) and whose shard 1 has one gets exactly one new backup, for shard 0, off
// its primary's node, with an ID its stopped predecessor does not have; a job with
// every backup live, or with one replica, gets none; no node but the primary's: none,
// with the reason.
func TestBackupPlanReplacesMissingBackups(t *testing.T) {
	shard := func(id string, idx int32, node string, replica int32, st cohortv1.TaskState) *cohortv1.Allocation {
		return &cohortv1.Allocation{Id: id, JobId: "j", Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD, Index: idx, NodeId: node,
			Replica: replica, State: st, Generation: 1, Resources: &cohortv1.Resources{CpuMillis: 500, MemoryBytes: gib / 2}}
	}
	running, stopped := cohortv1.TaskState_TASK_STATE_RUNNING, cohortv1.TaskState_TASK_STATE_STOPPED
	allocs := []*cohortv1.Allocation{
		shard("j-ps0", 0, "p1", 0, running), shard("j-ps0-b", 0, "p2", 1, stopped),
		shard("j-ps1", 1, "p2", 0, running), shard("j-ps1-b", 1, "p3", 1, running),
	}
	job := testJob(1, 2)
	job.ShardReplicas, job.Generation, job.State = 2, 1, cohortv1.JobState_JOB_STATE_RUNNING
	h := &harness{nodes: []*cohortv1.Node{worker("w1", 4000, 8*gib), ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib), down(ps("p3", 4000, 4*gib))}, allocs: allocs}
	plan, ok := NewCluster(h).BackupPlan(job, allocs)
	if !ok || len(plan.Allocations) != 1 {
		t.Fatalf("backup plan %v (%v), want one backup", placement(plan), plan.Reasons)
	}
	b := plan.Allocations[0]
	if b.Index != 0 || b.NodeId == "p1" || b.Replica != 1 || b.Id != "j-ps0-b2" {
		t.Fatalf("new backup %+v: want shard 0's, off p1, replica 1, ID j-ps0-b2", b)
	}
	if err := Fits(h, plan); err != nil {
		t.Fatalf("the plan does not fit its own snapshot: %v", err)
	}

	allocs[1].State = running
	if plan, ok := NewCluster(h).BackupPlan(job, allocs); ok {
		t.Fatalf("backups placed for a job that has all of them: %v", placement(plan))
	}
	one := testJob(1, 2)
	if _, ok := NewCluster(h).BackupPlan(one, allocs[:1]); ok {
		t.Fatal("a backup placed for a job with one replica")
	}
	allocs[1].State = stopped
	alone := &harness{nodes: []*cohortv1.Node{worker("w1", 4000, 8*gib), ps("p1", 4000, 4*gib)}, allocs: allocs}
	if plan, ok := NewCluster(alone).BackupPlan(job, allocs); ok || len(plan.Reasons) != 1 || !strings.Contains(plan.Reasons[0], "replicas: 2") {
		t.Fatalf("with only the primary's node: ok %v reasons %q", ok, plan.Reasons)
	}
}
