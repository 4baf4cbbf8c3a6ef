package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// PolicySnapshot is a Snapshot that also holds the scheduling policy (namespace quotas,
// queue weights) and the jobs whose allocations count against them;
// *state.StateSnapshot satisfies it. NewCluster uses it when the snapshot has it.
type PolicySnapshot interface {
	Snapshot
	Quotas(ws memdb.WatchSet) ([]*cohortv1.Quota, error)
	Queues(ws memdb.WatchSet) ([]*cohortv1.Queue, error)
	JobsByState(ws memdb.WatchSet, st cohortv1.JobState) ([]*cohortv1.Job, error)
	AllocsByJob(ws memdb.WatchSet, jobID string) ([]*cohortv1.Allocation, error)
}

// policy is the quota and fair-share state of a Cluster.
type policy struct {
	quotas  map[string]resources // namespace -> limit (0 in a dimension: unlimited)
	weights map[string]int32     // queue -> weight (absent: 1)
	nsUsed  map[string]resources // namespace -> live tasks' resources
	qUsed   map[string]resources // queue -> live tasks' resources
	total   resources            // ready nodes' capacity
}

func newPolicy() *policy {
	return &policy{quotas: map[string]resources{}, weights: map[string]int32{},
		nsUsed: map[string]resources{}, qUsed: map[string]resources{}}
}

// load reads quotas, weights and the usage of running jobs from snap.
func (p *policy) load(snap PolicySnapshot) error {
	quotas, err := snap.Quotas(nil)
	if err != nil {
		return fmt.Errorf("scheduler: read quotas: %w", err)
	}
	for _, q := range quotas {
		p.quotas[q.GetNamespace()] = toResources(q.GetLimit())
	}
	queues, err := snap.Queues(nil)
	if err != nil {
		return fmt.Errorf("scheduler: read queues: %w", err)
	}
	for _, q := range queues {
		p.weights[q.GetName()] = q.GetWeight()
	}
	running, err := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_RUNNING)
	if err != nil {
		return fmt.Errorf("scheduler: read running jobs: %w", err)
	}
	for _, j := range running {
		allocs, err := snap.AllocsByJob(nil, j.GetId())
		if err != nil {
			return fmt.Errorf("scheduler: read allocations of job %q: %w", j.GetId(), err)
		}
		var use resources
		for _, a := range allocs {
			if !taskTerminal(a.GetState()) {
				use = use.add(toResources(a.GetResources()))
			}
		}
		p.charge(j, use)
	}
	return nil
}

func (p *policy) charge(j *cohortv1.Job, use resources) {
	p.nsUsed[namespaceOf(j)] = p.nsUsed[namespaceOf(j)].add(use)
	p.qUsed[queueOf(j)] = p.qUsed[queueOf(j)].add(use)
}

func namespaceOf(j *cohortv1.Job) string { return cmp.Or(j.GetNamespace(), "default") }
func queueOf(j *cohortv1.Job) string     { return cmp.Or(j.GetQueue(), "default") }

// demand is everything a job's gang holds once placed.
func demand(j *cohortv1.Job) resources {
	var d resources
	for _, g := range groups(j) {
		if g.count > 0 {
			r := toResources(g.res)
			n := int64(g.count)
			if g.kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
				n *= int64(ShardReplicas(j))
			}
			d = d.add(resources{cpu: r.cpu * n, mem: r.mem * n, gpus: r.gpus * n})
		}
	}
	return d
}

// overQuota explains how use exceeds limit (a zero limit dimension is unlimited), or "".
func overQuota(use, limit resources) string {
	var parts []string
	if limit.gpus > 0 && use.gpus > limit.gpus {
		parts = append(parts, fmt.Sprintf("gpus %d > %d", use.gpus, limit.gpus))
	}
	if limit.cpu > 0 && use.cpu > limit.cpu {
		parts = append(parts, fmt.Sprintf("cpu %dm > %dm", use.cpu, limit.cpu))
	}
	if limit.mem > 0 && use.mem > limit.mem {
		parts = append(parts, fmt.Sprintf("memory %s > %s", formatBytes(use.mem), formatBytes(limit.mem)))
	}
	return strings.Join(parts, ", ")
}

// quotaReason says why placing j now would exceed its namespace's quota, or "".
func (p *policy) quotaReason(j *cohortv1.Job) string {
	ns := namespaceOf(j)
	limit, ok := p.quotas[ns]
	if !ok {
		return ""
	}
	used := p.nsUsed[ns]
	if over := overQuota(used.add(demand(j)), limit); over != "" {
		return fmt.Sprintf("namespace %q quota exceeded: %s in use + (%s) requested: %s",
			ns, describe(used), describe(demand(j)), over)
	}
	return ""
}

// share is a queue's weighted dominant share: the largest fraction of the cluster's
// CPU, memory or GPUs it holds, divided by its weight.
func (p *policy) share(queue string) float64 {
	u := p.qUsed[queue]
	var dom float64
	for _, d := range [][2]int64{{u.cpu, p.total.cpu}, {u.mem, p.total.mem}, {u.gpus, p.total.gpus}} {
		if d[1] > 0 {
			dom = max(dom, float64(d[0])/float64(d[1]))
		}
	}
	w := p.weights[queue]
	if w < 1 {
		w = 1
	}
	return dom / float64(w)
}

// Order returns pending jobs in the order a scheduling pass should try them: queues take
// turns by weighted fair share (the queue with the smallest weighted dominant share
// goes next, counting what its earlier jobs in the order would take; ties by name);
// inside a queue, higher priority first, then the oldest submission, then ID.
func (cl *Cluster) Order(pending []*cohortv1.Job) []*cohortv1.Job {
	byQueue := map[string][]*cohortv1.Job{}
	for _, j := range pending {
		byQueue[queueOf(j)] = append(byQueue[queueOf(j)], j)
	}
	names := make([]string, 0, len(byQueue))
	for q, js := range byQueue {
		names = append(names, q)
		slices.SortFunc(js, ByPriority)
	}
	slices.Sort(names)
	if len(names) == 1 {
		return byQueue[names[0]]
	}
	used := make(map[string]resources, len(names))
	for _, q := range names {
		used[q] = cl.policy.qUsed[q]
	}
	sim := &policy{qUsed: used, weights: cl.policy.weights, total: cl.policy.total}
	out := make([]*cohortv1.Job, 0, len(pending))
	for len(out) < len(pending) {
		best := ""
		var bestShare float64
		for _, q := range names {
			if len(byQueue[q]) == 0 {
				continue
			}
			if s := sim.share(q); best == "" || s < bestShare {
				best, bestShare = q, s
			}
		}
		j := byQueue[best][0]
		byQueue[best] = byQueue[best][1:]
		out = append(out, j)
		used[best] = used[best].add(demand(j))
	}
	return out
}

// ByPriority orders jobs inside a queue: higher priority first, then the oldest
// submission, then ID.
func ByPriority(a, b *cohortv1.Job) int {
	return cmp.Or(
		cmp.Compare(b.GetPriority(), a.GetPriority()),
		cmp.Compare(a.GetSubmitTimeUnixNano(), b.GetSubmitTimeUnixNano()),
		cmp.Compare(a.GetId(), b.GetId()),
	)
}
