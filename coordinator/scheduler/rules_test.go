package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func gpuNode(id string, gpus int32, model string, labels map[string]string) *cohortv1.Node {
	n := worker(id, 64000, 256*gib)
	n.Capacity.Gpus = gpus
	n.Capacity.GpuModel = model
	n.Capacity.GpuMemoryBytes = 80 * gib
	n.Labels = labels
	return n
}

func gpuJob(workers, gpus int32) *cohortv1.Job {
	return &cohortv1.Job{Id: "j", WorkerCount: workers,
		WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: gib, Gpus: gpus}}
}

func gpuUsed(nodeID string, gpus int32) *cohortv1.Allocation {
	return &cohortv1.Allocation{Id: "other-" + nodeID, JobId: "other", NodeId: nodeID, State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Resources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: gib, Gpus: gpus}}
}

func TestPlaceGPURules(t *testing.T) {
	tests := []struct {
		name        string
		h           harness
		job         func() *cohortv1.Job
		want        map[string]string
		wantReasons []string
	}{
		{name: "bin packing fills the node with the fewest free GPUs, keeping whole nodes free",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g-empty", 8, "H100", nil), gpuNode("g-half", 8, "H100", nil)},
				allocs: []*cohortv1.Allocation{gpuUsed("g-half", 6)}},
			job:  func() *cohortv1.Job { return gpuJob(2, 1) },
			want: map[string]string{"j-w0": "g-half", "j-w1": "g-half"}},
		{name: "cpu-only tasks prefer nodes without GPUs",
			h:    harness{nodes: []*cohortv1.Node{gpuNode("a-gpu", 8, "H100", nil), worker("b-cpu", 64000, 256*gib)}},
			job:  func() *cohortv1.Job { return gpuJob(2, 0) },
			want: map[string]string{"j-w0": "b-cpu", "j-w1": "b-cpu"}},
		{name: "spread puts one task per node",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "H100", nil), gpuNode("g2", 8, "H100", nil), gpuNode("g3", 8, "H100", nil)}},
			job: func() *cohortv1.Job {
				j := gpuJob(3, 1)
				j.Spread = true
				return j
			},
			want: map[string]string{"j-w0": "g1", "j-w1": "g2", "j-w2": "g3"}},
		{name: "node selector restricts nodes",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "H100", map[string]string{"zone": "a"}), gpuNode("g2", 8, "H100", map[string]string{"zone": "b"})}},
			job: func() *cohortv1.Job {
				j := gpuJob(2, 1)
				j.NodeSelector = map[string]string{"zone": "b"}
				return j
			},
			want: map[string]string{"j-w0": "g2", "j-w1": "g2"}},
		{name: "node selector matching nothing",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "H100", map[string]string{"zone": "a"})}},
			job: func() *cohortv1.Job {
				j := gpuJob(1, 1)
				j.NodeSelector = map[string]string{"zone": "c", "disk": "ssd"}
				return j
			},
			wantReasons: []string{"no ready, eligible node with role worker matching node selector {disk=ssd,zone=c}"}},
		{name: "gpu model must match",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "A100", nil), gpuNode("g2", 8, "H100", nil)}},
			job: func() *cohortv1.Job {
				j := gpuJob(1, 1)
				j.WorkerResources.GpuModel = "h100"
				return j
			},
			want: map[string]string{"j-w0": "g2"}},
		{name: "gpu memory must suffice",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "H100", nil)}},
			job: func() *cohortv1.Job {
				j := gpuJob(1, 1)
				j.WorkerResources.GpuMemoryBytes = 141 * gib
				return j
			},
			wantReasons: []string{"no ready, eligible node with role worker and GPU memory >= 141.0GiB"}},
		{name: "gang of GPUs across nodes is all or nothing",
			h: harness{nodes: []*cohortv1.Node{gpuNode("g1", 4, "H100", nil), gpuNode("g2", 4, "H100", nil)},
				allocs: []*cohortv1.Allocation{gpuUsed("g2", 1)}},
			job:         func() *cohortv1.Job { return gpuJob(4, 2) },
			wantReasons: []string{"workers: need 4 x (cpu 1000m, memory 1.0GiB, gpus 2); 3 placed; 2 nodes short on gpus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(&tt.h, tt.job())
			if tt.want == nil {
				if p.Feasible() || !slices.Equal(p.Reasons, tt.wantReasons) {
					t.Fatalf("placed %v reasons %q, want nothing and %q", placement(p), p.Reasons, tt.wantReasons)
				}
				return
			}
			got := placement(p)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("placement %v (reasons %q), want %v", got, p.Reasons, tt.want)
			}
			if err := Fits(&tt.h, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFitsRechecksSelector(t *testing.T) {
	h := &harness{nodes: []*cohortv1.Node{gpuNode("g1", 8, "H100", map[string]string{"zone": "a"})}}
	j := gpuJob(1, 1)
	j.NodeSelector = map[string]string{"zone": "a"}
	p := Place(h, j)
	if !p.Feasible() {
		t.Fatal(p.Reasons)
	}
	h.nodes[0].Labels = map[string]string{"zone": "b"}
	if err := Fits(h, p); err == nil {
		t.Fatal("plan still fits after the node's labels changed")
	}
}

func TestClusterPlaceRollsBackAnInfeasibleGang(t *testing.T) {
	h := &harness{nodes: []*cohortv1.Node{gpuNode("g1", 4, "H100", nil)}}
	cl := NewCluster(h)
	if p := cl.Place(gpuJob(5, 1)); p.Feasible() {
		t.Fatal("5 GPUs placed on a 4-GPU node")
	}
	j := gpuJob(4, 1)
	j.Id = "k"
	if p := cl.Place(j); !p.Feasible() {
		t.Fatalf("capacity leaked from the refused gang: %v", p.Reasons)
	}
	j.Id = "l"
	if p := cl.Place(gpuJob(1, 1)); p.Feasible() {
		t.Fatal("the Cluster did not reserve the placed gang")
	}
}

func TestNeverFits(t *testing.T) {
	nodes := []*cohortv1.Node{gpuNode("g1", 8, "H100", map[string]string{"zone": "a"}), gpuNode("g2", 8, "H100", nil), ps("p1", 4000, 4*gib)}
	tests := []struct {
		name string
		h    harness
		job  func() *cohortv1.Job
		want string // "" when it can fit
	}{
		{name: "no nodes yet: accepted", h: harness{}, job: func() *cohortv1.Job { return gpuJob(100, 8) }},
		{name: "fits", h: harness{nodes: nodes}, job: func() *cohortv1.Job { return gpuJob(16, 1) }},
		{name: "busy nodes still count as capacity", h: harness{nodes: nodes, allocs: []*cohortv1.Allocation{gpuUsed("g1", 8)}},
			job: func() *cohortv1.Job { return gpuJob(2, 8) }},
		{name: "more GPUs per task than any node", h: harness{nodes: nodes}, job: func() *cohortv1.Job { return gpuJob(1, 9) },
			want: "workers: each needs (cpu 1000m, memory 1.0GiB, gpus 9) but the largest registered worker node has (cpu 64000m, memory 256.0GiB, gpus 8)"},
		{name: "more GPUs than the cluster", h: harness{nodes: nodes}, job: func() *cohortv1.Job { return gpuJob(17, 1) },
			want: "workers: need 17 x (cpu 1000m, memory 1.0GiB, gpus 1) but the 2 registered worker nodes can hold at most 16"},
		{name: "selector matches nothing", h: harness{nodes: nodes}, job: func() *cohortv1.Job {
			j := gpuJob(1, 1)
			j.NodeSelector = map[string]string{"zone": "z"}
			return j
		}, want: "workers: no registered node with role worker matching node selector {zone=z}"},
		{name: "shards bigger than any paramserver", h: harness{nodes: nodes}, job: func() *cohortv1.Job {
			j := testJob(1, 1)
			j.ShardResources.MemoryBytes = 5 * gib
			return j
		}, want: "ps shards: each needs (cpu 500m, memory 5.0GiB) but the largest registered paramserver node has (cpu 4000m, memory 4.0GiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NeverFits(&tt.h, tt.job())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "; ") != tt.want {
				t.Fatalf("NeverFits\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestPlaceProperties places random job streams on random clusters through one
// Cluster and checks the invariants: no node over-committed, gangs all or nothing,
// selectors honoured, and a job NeverFits refuses is never placed.
func TestPlaceProperties(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 99))
		h := &harness{}
		for i := range 1 + r.IntN(12) {
			n := gpuNode(fmt.Sprintf("n%02d", i), int32(r.IntN(9)), "H100", map[string]string{"zone": []string{"a", "b"}[r.IntN(2)]})
			n.Capacity.CpuMillis = int64(1+r.IntN(16)) * 1000
			n.Capacity.MemoryBytes = int64(1+r.IntN(32)) * gib
			if r.IntN(3) == 0 {
				n.Roles = append(n.Roles, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER)
			}
			h.nodes = append(h.nodes, n)
		}
		cl := NewCluster(h)
		for k := range 30 {
			j := &cohortv1.Job{Id: fmt.Sprintf("j%d", k), WorkerCount: int32(1 + r.IntN(8)), ShardCount: int32(r.IntN(3)), Spread: r.IntN(2) == 0,
				WorkerResources: &cohortv1.Resources{CpuMillis: int64(r.IntN(4000)), MemoryBytes: int64(r.IntN(8)) * gib, Gpus: int32(r.IntN(3))},
				ShardResources:  &cohortv1.Resources{CpuMillis: int64(r.IntN(2000)), MemoryBytes: int64(r.IntN(4)) * gib}}
			if r.IntN(4) == 0 {
				j.NodeSelector = map[string]string{"zone": "a"}
			}
			never, _ := NeverFits(h, j)
			p := cl.Place(j)
			if !p.Feasible() {
				continue
			}
			if len(never) > 0 {
				t.Fatalf("seed %d: job %s placed although NeverFits said %q", seed, j.Id, never)
			}
			if got := len(p.Allocations); got != int(j.WorkerCount+j.ShardCount) {
				t.Fatalf("seed %d: partial gang: %d of %d tasks", seed, got, j.WorkerCount+j.ShardCount)
			}
			if err := Fits(h, p); err != nil {
				t.Fatalf("seed %d: plan does not fit the state it was made for: %v", seed, err)
			}
			h.allocs = append(h.allocs, p.Allocations...)
		}
		for _, n := range h.nodes {
			var use resources
			for _, a := range h.allocs {
				if a.NodeId == n.Id {
					use = use.add(toResources(a.Resources))
				}
			}
			if !toResources(n.Capacity).fits(use) {
				t.Fatalf("seed %d: node %s over-committed: capacity %+v, used %+v", seed, n.Id, toResources(n.Capacity), use)
			}
		}
	}
}
