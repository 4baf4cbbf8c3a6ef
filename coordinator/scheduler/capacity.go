package scheduler

import (
	"fmt"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// NeverFits reports why job could never be placed on the registered nodes even if
// they were all ready and empty: a task needs more of some resource than any matching
// node has, no registered node matches a group's role and node selector, or the gang
// needs more than the matching nodes hold together. It returns nil when the job could
// fit, and also when no node has registered yet (a job may be submitted before any
// node exists, and waits).
//
// Nodes that are down or draining still count: they are registered capacity.
func NeverFits(snap Snapshot, job *cohortv1.Job) ([]string, error) {
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read nodes: %w", err)
	}
	var reasons []string
	if len(nodes) == 0 {
		return nil, nil
	}
	for _, g := range groups(job) {
		if g.count <= 0 {
			continue
		}
		need := toResources(g.res)
		var (
			matching int
			largest  resources
			holds    int64
		)
		for _, n := range nodes {
			if !matches(n, g.role, job.GetNodeSelector(), g.res) {
				continue
			}
			matching++
			capa := toResources(n.GetCapacity())
			largest = resources{cpu: max(largest.cpu, capa.cpu), mem: max(largest.mem, capa.mem), gpus: max(largest.gpus, capa.gpus)}
			holds += tasksThatFit(capa, need)
		}
		switch {
		case matching == 0:
			reasons = append(reasons, fmt.Sprintf("%s: no registered node %s", g.label, matchWhat(g, job.GetNodeSelector())))
		case !largest.fits(need):
			reasons = append(reasons, fmt.Sprintf("%s: each needs (%s) but the largest registered %s node has (%s)",
				g.label, describe(need), roleName(g.role), describeGPUs(largest, need.gpus > 0)))
		case holds < int64(g.count):
			reasons = append(reasons, fmt.Sprintf("%s: need %d x (%s) but the %d registered %s %s can hold at most %d",
				g.label, g.count, describe(need), matching, roleName(g.role), plural(matching, "node", "nodes"), holds))
		}
	}
	return reasons, nil
}

// tasksThatFit is how many tasks of size need fit in capa.
func tasksThatFit(capa, need resources) int64 {
	n := int64(1 << 40)
	for _, d := range [][2]int64{{capa.cpu, need.cpu}, {capa.mem, need.mem}, {capa.gpus, need.gpus}} {
		if d[1] > 0 {
			n = min(n, d[0]/d[1])
		}
	}
	return max(n, 0)
}

// ExceedsQuota reports why job alone exceeds its namespace's quota (so it could never
// run, whatever else runs), or nil.
func ExceedsQuota(snap PolicySnapshot, job *cohortv1.Job) ([]string, error) {
	quotas, err := snap.Quotas(nil)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read quotas: %w", err)
	}
	var reasons []string
	for _, q := range quotas {
		if q.GetNamespace() != namespaceOf(job) {
			continue
		}
		if over := overQuota(demand(job), toResources(q.GetLimit())); over != "" {
			reasons = append(reasons, fmt.Sprintf("namespace %q quota: the job alone needs (%s): %s",
				q.GetNamespace(), describe(demand(job)), over))
		}
	}
	return reasons, nil
}
