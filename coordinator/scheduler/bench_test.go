package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// mapSnapshot is an in-memory Snapshot indexed by node, for large clusters.
type mapSnapshot struct {
	nodes  []*cohortv1.Node
	byNode map[string][]*cohortv1.Allocation
}

func (m *mapSnapshot) Nodes(memdb.WatchSet) ([]*cohortv1.Node, error) { return m.nodes, nil }

func (m *mapSnapshot) AllocsByNode(_ memdb.WatchSet, id string) ([]*cohortv1.Allocation, error) {
	return m.byNode[id], nil
}

// benchCluster builds n nodes: three quarters 8-GPU workers (64 cores, 512 GiB), the
// rest CPU-only workers that also host parameter servers.
func benchCluster(n int) *mapSnapshot {
	m := &mapSnapshot{byNode: map[string][]*cohortv1.Allocation{}}
	for i := range n {
		nd := &cohortv1.Node{Id: fmt.Sprintf("n%05d", i), Status: cohortv1.NodeStatus_NODE_STATUS_READY,
			Roles:    []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER},
			Capacity: &cohortv1.Resources{CpuMillis: 64000, MemoryBytes: 512 * gib, Gpus: 8, GpuModel: "H100", GpuMemoryBytes: 80 * gib}}
		if i%4 == 3 {
			nd.Roles = append(nd.Roles, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER)
			nd.Capacity = &cohortv1.Resources{CpuMillis: 64000, MemoryBytes: 256 * gib}
		}
		m.nodes = append(m.nodes, nd)
	}
	return m
}

// benchJobs returns gangs of 4-64 tasks (workers plus 1-4 shards) totalling tasks.
func benchJobs(tasks int, seed uint64) []*cohortv1.Job {
	r := rand.New(rand.NewPCG(seed, 1))
	var out []*cohortv1.Job
	for total := 0; total < tasks; {
		shards := 1 + r.IntN(4)
		workers := 4 + r.IntN(61) - shards
		if total+workers+shards > tasks {
			workers = max(1, tasks-total-shards)
		}
		wr := &cohortv1.Resources{CpuMillis: 2000, MemoryBytes: 8 * gib}
		if r.IntN(2) == 0 {
			wr.Gpus = 1
		}
		out = append(out, &cohortv1.Job{Id: fmt.Sprintf("job%06d", len(out)), WorkerCount: int32(workers), ShardCount: int32(shards),
			WorkerResources: wr, ShardResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 2 * gib}})
		total += workers + shards
	}
	return out
}

// BenchmarkSchedule10kNodes places 100,000 pending tasks in gangs of 4-64 on 10,000
// nodes through one Cluster (as one scheduling pass does) and reports placements/s.
func BenchmarkSchedule10kNodes(b *testing.B) {
	snap := benchCluster(10_000)
	jobs := benchJobs(100_000, 7)
	b.ReportAllocs()
	b.ResetTimer()
	placed := 0
	for range b.N {
		cl := NewCluster(snap)
		for _, j := range jobs {
			placed += len(cl.Place(j).Allocations)
		}
	}
	b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(placed)/float64(b.N), "placed/op")
}
