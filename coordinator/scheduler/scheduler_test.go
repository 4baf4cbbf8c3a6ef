package scheduler

import (
	"errors"
	"slices"
	"testing"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// harness is an in-memory Snapshot.
type harness struct {
	nodes  []*cohortv1.Node
	allocs []*cohortv1.Allocation
}

func (h *harness) Nodes(memdb.WatchSet) ([]*cohortv1.Node, error) { return h.nodes, nil }

func (h *harness) AllocsByNode(_ memdb.WatchSet, id string) ([]*cohortv1.Allocation, error) {
	var out []*cohortv1.Allocation
	for _, a := range h.allocs {
		if a.NodeId == id {
			out = append(out, a)
		}
	}
	return out, nil
}

const gib = 1 << 30

func node(id string, role cohortv1.NodeRole, cpu, mem int64) *cohortv1.Node {
	return &cohortv1.Node{Id: id, Roles: []cohortv1.NodeRole{role}, Status: cohortv1.NodeStatus_NODE_STATUS_READY,
		Capacity: &cohortv1.Resources{CpuMillis: cpu, MemoryBytes: mem}}
}

func worker(id string, cpu, mem int64) *cohortv1.Node {
	return node(id, cohortv1.NodeRole_NODE_ROLE_WORKER, cpu, mem)
}

func ps(id string, cpu, mem int64) *cohortv1.Node {
	return node(id, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, cpu, mem)
}

func down(n *cohortv1.Node) *cohortv1.Node {
	n.Status = cohortv1.NodeStatus_NODE_STATUS_DOWN
	return n
}

func testJob(workers, shards int32) *cohortv1.Job {
	return &cohortv1.Job{Id: "j", WorkerCount: workers, ShardCount: shards,
		WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: gib},
		ShardResources:  &cohortv1.Resources{CpuMillis: 500, MemoryBytes: gib / 2}}
}

func used(nodeID string, cpu, mem int64, st cohortv1.TaskState) *cohortv1.Allocation {
	return &cohortv1.Allocation{Id: "other-" + nodeID, JobId: "other", NodeId: nodeID, State: st,
		Resources: &cohortv1.Resources{CpuMillis: cpu, MemoryBytes: mem}}
}

// placement maps allocation ID to node ID.
func placement(p Plan) map[string]string {
	out := map[string]string{}
	for _, a := range p.Allocations {
		out[a.Id] = a.NodeId
	}
	return out
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name        string
		h           harness
		job         *cohortv1.Job
		want        map[string]string // nil: infeasible
		wantReasons []string
	}{
		{name: "gang fits across nodes",
			h:    harness{nodes: []*cohortv1.Node{worker("w1", 1000, gib), worker("w2", 1000, gib), ps("p1", 4000, 4*gib)}},
			job:  testJob(2, 2),
			want: map[string]string{"j-w0": "w1", "j-w1": "w2", "j-ps0": "p1", "j-ps1": "p1"}},
		{name: "bin packing prefers the fullest node that fits, ties by id",
			h: harness{nodes: []*cohortv1.Node{worker("w-big", 8000, 8*gib), worker("w-b", 2000, 8*gib), worker("w-a", 2000, 8*gib)},
				allocs: []*cohortv1.Allocation{used("w-big", 1000, 0, cohortv1.TaskState_TASK_STATE_RUNNING)}},
			job:  testJob(3, 0),
			want: map[string]string{"j-w0": "w-a", "j-w1": "w-a", "j-w2": "w-b"}},
		{name: "terminal allocations free their capacity",
			h: harness{nodes: []*cohortv1.Node{worker("w1", 1000, gib), ps("p1", 500, gib)},
				allocs: []*cohortv1.Allocation{used("w1", 1000, gib, cohortv1.TaskState_TASK_STATE_STOPPED)}},
			job:  testJob(1, 1),
			want: map[string]string{"j-w0": "w1", "j-ps0": "p1"}},
		{name: "no worker nodes",
			h:           harness{nodes: []*cohortv1.Node{ps("p1", 4000, 4*gib)}},
			job:         testJob(1, 1),
			wantReasons: []string{"no ready, eligible node with role worker"}},
		{name: "down nodes are not candidates",
			h:           harness{nodes: []*cohortv1.Node{down(worker("w1", 4000, 4*gib)), down(ps("p1", 4000, 4*gib))}},
			job:         testJob(1, 1),
			wantReasons: []string{"no ready, eligible node with role worker", "no ready, eligible node with role paramserver"}},
		{name: "all or nothing: one worker short places nothing",
			h: harness{nodes: []*cohortv1.Node{worker("w1", 1000, gib), worker("w2", 500, gib), worker("w3", 500, gib),
				worker("w4", 4000, gib/2), ps("p1", 4000, 4*gib)}},
			job:         testJob(2, 1),
			wantReasons: []string{"workers: need 2 x (cpu 1000m, memory 1.0GiB); 1 placed; 3 nodes short on cpu, 2 nodes short on memory"}},
		{name: "shards short on memory",
			h:           harness{nodes: []*cohortv1.Node{worker("w1", 4000, 4*gib), ps("p1", 4000, gib/4)}},
			job:         testJob(1, 2),
			wantReasons: []string{"ps shards: need 2 x (cpu 500m, memory 512.0MiB); 0 placed; 1 node short on memory"}},
		{name: "gpus are a dimension",
			h:           harness{nodes: []*cohortv1.Node{worker("w1", 4000, 4*gib)}},
			job:         &cohortv1.Job{Id: "j", WorkerCount: 1, WorkerResources: &cohortv1.Resources{CpuMillis: 1, Gpus: 1}},
			wantReasons: []string{"workers: need 1 x (cpu 1m, memory 0B, gpus 1); 0 placed; 1 node short on gpus"}},
		{name: "no workers requested",
			h:           harness{nodes: []*cohortv1.Node{worker("w1", 4000, 4*gib)}},
			job:         testJob(0, 0),
			wantReasons: []string{"job has no workers (worker_count < 1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(&tt.h, tt.job)
			if p.JobID != tt.job.Id {
				t.Fatalf("plan job id %q", p.JobID)
			}
			if tt.want == nil {
				if p.Feasible() {
					t.Fatalf("placed %v, want nothing", placement(p))
				}
				if !slices.Equal(p.Reasons, tt.wantReasons) {
					t.Fatalf("reasons\n got %q\nwant %q", p.Reasons, tt.wantReasons)
				}
				return
			}
			if len(p.Reasons) != 0 {
				t.Fatalf("reasons %q", p.Reasons)
			}
			got := placement(p)
			if len(got) != len(tt.want) {
				t.Fatalf("placement %v, want %v", got, tt.want)
			}
			for id, n := range tt.want {
				if got[id] != n {
					t.Fatalf("placement %v, want %v", got, tt.want)
				}
			}
			for _, a := range p.Allocations {
				if a.JobId != "j" || a.Generation != 1 || a.State != cohortv1.TaskState_TASK_STATE_PENDING || a.Resources == nil {
					t.Fatalf("allocation %v", a)
				}
			}
			if err := Fits(&tt.h, p); err != nil {
				t.Fatalf("a fresh plan does not fit: %v", err)
			}
		})
	}
}

func TestPlaceIsDeterministic(t *testing.T) {
	h := &harness{nodes: []*cohortv1.Node{worker("w3", 4000, 8*gib), worker("w1", 4000, 8*gib), worker("w2", 4000, 8*gib), ps("p2", 2000, gib), ps("p1", 2000, gib)}}
	first := placement(Place(h, testJob(5, 2)))
	for range 20 {
		slices.Reverse(h.nodes)
		got := placement(Place(h, testJob(5, 2)))
		for id, n := range first {
			if got[id] != n {
				t.Fatalf("placement changed with node order: %v vs %v", got, first)
			}
		}
	}
}

func TestFits(t *testing.T) {
	base := func() *harness {
		return &harness{nodes: []*cohortv1.Node{worker("w1", 2000, 2*gib), ps("p1", 1000, gib)}}
	}
	plan := Place(base(), testJob(2, 1))
	if !plan.Feasible() {
		t.Fatalf("setup: %v", plan.Reasons)
	}
	tests := []struct {
		name   string
		change func(h *harness)
		ok     bool
	}{
		{name: "unchanged state", change: func(*harness) {}, ok: true},
		{name: "node went down", change: func(h *harness) { down(h.nodes[0]) }},
		{name: "node disappeared", change: func(h *harness) { h.nodes = h.nodes[1:] }},
		{name: "capacity taken meanwhile", change: func(h *harness) {
			h.allocs = append(h.allocs, used("w1", 500, 0, cohortv1.TaskState_TASK_STATE_PENDING))
		}},
		{name: "node lost its role", change: func(h *harness) { h.nodes[1].Roles = []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := base()
			tt.change(h)
			err := Fits(h, plan)
			if tt.ok != (err == nil) {
				t.Fatalf("Fits = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrDoesNotFit) {
				t.Fatalf("error %v does not wrap ErrDoesNotFit", err)
			}
		})
	}
}
