// Package scheduler places training jobs on nodes. It is a pure function of a read-only
// state view and a job: no I/O, no clocks, no randomness, so the same input always
// yields the same plan.
//
// Placement is gang placement: every worker and every parameter-server shard of a job
// is placed, or nothing is. Each task is a feasibility step (ready node, right role,
// enough free capacity) followed by a ranking step (bin packing: the feasible node with
// the least free CPU, ties broken by node ID).
package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Snapshot is the read-only state view the scheduler needs; *state.StateSnapshot
// satisfies it. The watch sets may be nil and are ignored by the scheduler.
type Snapshot interface {
	Nodes(ws memdb.WatchSet) ([]*cohortv1.Node, error)
	AllocsByNode(ws memdb.WatchSet, nodeID string) ([]*cohortv1.Allocation, error)
}

// Plan is the outcome of placing one job.
type Plan struct {
	// JobID is the job the plan places.
	JobID string
	// Allocations is every task of the job, or empty when the job does not fit.
	Allocations []*cohortv1.Allocation
	// Reasons explains, when Allocations is empty, why the job cannot be placed now.
	Reasons []string
}

// Feasible reports whether the plan places the job.
func (p Plan) Feasible() bool { return len(p.Allocations) > 0 }

// ErrDoesNotFit is returned by Fits when a plan no longer fits the state.
var ErrDoesNotFit = errors.New("plan does not fit")

// AllocID returns the deterministic ID of a job's task.
func AllocID(jobID string, kind cohortv1.TaskKind, index int32) string {
	if kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
		return fmt.Sprintf("%s-ps%d", jobID, index)
	}
	return fmt.Sprintf("%s-w%d", jobID, index)
}

// group is one homogeneous set of tasks of a job (its workers, or its shards).
type group struct {
	label string // "workers", "ps shards"
	kind  cohortv1.TaskKind
	role  cohortv1.NodeRole
	count int32
	res   *cohortv1.Resources
}

func groups(job *cohortv1.Job) []group {
	return []group{
		{"workers", cohortv1.TaskKind_TASK_KIND_WORKER, cohortv1.NodeRole_NODE_ROLE_WORKER, job.GetWorkerCount(), job.GetWorkerResources()},
		{"ps shards", cohortv1.TaskKind_TASK_KIND_PS_SHARD, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, job.GetShardCount(), job.GetShardResources()},
	}
}

// resources is a plain copy of cohortv1.Resources for arithmetic.
type resources struct {
	cpu, mem int64
	gpus     int64
}

func toResources(r *cohortv1.Resources) resources {
	return resources{cpu: r.GetCpuMillis(), mem: r.GetMemoryBytes(), gpus: int64(r.GetGpus())}
}

func (r resources) sub(o resources) resources {
	return resources{cpu: r.cpu - o.cpu, mem: r.mem - o.mem, gpus: r.gpus - o.gpus}
}

// short lists the dimensions in which need exceeds free.
func (r resources) short(need resources) (cpu, mem, gpus bool) {
	return need.cpu > r.cpu, need.mem > r.mem, need.gpus > r.gpus
}

func (r resources) fits(need resources) bool {
	c, m, g := r.short(need)
	return !c && !m && !g
}

// candidate is a node with its free capacity, as the plan being built leaves it.
type candidate struct {
	node *cohortv1.Node
	free resources
}

// freeCapacity returns every READY node's free capacity, ordered by node ID.
func freeCapacity(snap Snapshot) ([]*candidate, error) {
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read nodes: %w", err)
	}
	var out []*candidate
	for _, n := range nodes {
		if n.GetStatus() != cohortv1.NodeStatus_NODE_STATUS_READY {
			continue
		}
		allocs, err := snap.AllocsByNode(nil, n.GetId())
		if err != nil {
			return nil, fmt.Errorf("scheduler: read allocations of node %q: %w", n.GetId(), err)
		}
		free := toResources(n.GetCapacity())
		for _, a := range allocs {
			if !taskTerminal(a.GetState()) {
				free = free.sub(toResources(a.GetResources()))
			}
		}
		out = append(out, &candidate{node: n, free: free})
	}
	slices.SortFunc(out, func(a, b *candidate) int { return strings.Compare(a.node.GetId(), b.node.GetId()) })
	return out, nil
}

func hasRole(n *cohortv1.Node, role cohortv1.NodeRole) bool {
	return slices.Contains(n.GetRoles(), role)
}

func taskTerminal(s cohortv1.TaskState) bool {
	switch s {
	case cohortv1.TaskState_TASK_STATE_SUCCEEDED, cohortv1.TaskState_TASK_STATE_FAILED,
		cohortv1.TaskState_TASK_STATE_STOPPED:
		return true
	}
	return false
}

// rank returns the best feasible candidate for need: the least free CPU that still
// fits (bin packing), ties by node ID; nil when none fits.
func rank(cands []*candidate, need resources) *candidate {
	var best *candidate
	for _, c := range cands { // cands are ordered by node ID, so ties keep the smaller ID
		if !c.free.fits(need) {
			continue
		}
		if best == nil || c.free.cpu < best.free.cpu {
			best = c
		}
	}
	return best
}

// Place computes a gang placement of job on the snapshot's nodes: all of its workers
// and parameter-server shards, or none with the reasons why.
func Place(snap Snapshot, job *cohortv1.Job) Plan {
	plan := Plan{JobID: job.GetId()}
	if job.GetWorkerCount() < 1 {
		plan.Reasons = []string{"job has no workers (worker_count < 1)"}
		return plan
	}
	if job.GetShardCount() < 0 {
		plan.Reasons = []string{"job has a negative shard_count"}
		return plan
	}
	cands, err := freeCapacity(snap)
	if err != nil {
		plan.Reasons = []string{err.Error()}
		return plan
	}
	gen := job.GetGeneration()
	if gen == 0 {
		gen = 1
	}
	var allocs []*cohortv1.Allocation
	for _, g := range groups(job) {
		if g.count == 0 {
			continue
		}
		eligible := slices.DeleteFunc(slices.Clone(cands), func(c *candidate) bool { return !hasRole(c.node, g.role) })
		if len(eligible) == 0 {
			plan.Reasons = append(plan.Reasons, "no ready node with role "+roleName(g.role))
			continue
		}
		need := toResources(g.res)
		var placed int32
		for ; placed < g.count; placed++ {
			c := rank(eligible, need)
			if c == nil {
				break
			}
			c.free = c.free.sub(need)
			allocs = append(allocs, &cohortv1.Allocation{
				Id:         AllocID(job.GetId(), g.kind, placed),
				JobId:      job.GetId(),
				Kind:       g.kind,
				Index:      placed,
				NodeId:     c.node.GetId(),
				State:      cohortv1.TaskState_TASK_STATE_PENDING,
				Generation: gen,
				Resources:  proto.Clone(resourcesOrZero(g.res)).(*cohortv1.Resources),
			})
		}
		if placed < g.count {
			plan.Reasons = append(plan.Reasons, shortfall(g, need, placed, eligible))
		}
	}
	if len(plan.Reasons) == 0 {
		plan.Allocations = allocs
	}
	return plan
}

func resourcesOrZero(r *cohortv1.Resources) *cohortv1.Resources {
	if r == nil {
		return &cohortv1.Resources{}
	}
	return r
}

// shortfall explains why a group could not be fully placed, counting the eligible
// nodes short in each dimension (after the group's earlier tasks were placed).
func shortfall(g group, need resources, placed int32, eligible []*candidate) string {
	var cpu, mem, gpus int
	for _, c := range eligible {
		sc, sm, sg := c.free.short(need)
		if sc {
			cpu++
		}
		if sm {
			mem++
		}
		if sg {
			gpus++
		}
	}
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{{cpu, "cpu"}, {mem, "memory"}, {gpus, "gpus"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s short on %s", p.n, plural(p.n, "node", "nodes"), p.what))
		}
	}
	return fmt.Sprintf("%s: need %d x (%s); %d placed; %s", g.label, g.count, describe(need), placed, strings.Join(parts, ", "))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func roleName(r cohortv1.NodeRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "NODE_ROLE_"))
}

// describe formats a resource need, e.g. "cpu 1000m, memory 1.0GiB".
func describe(r resources) string {
	s := fmt.Sprintf("cpu %dm, memory %s", r.cpu, formatBytes(r.mem))
	if r.gpus > 0 {
		s += fmt.Sprintf(", gpus %d", r.gpus)
	}
	return s
}

func formatBytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(b)/unit, 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

// Fits re-checks a plan against a (newer) snapshot: every allocation's node must be
// READY, have the role its task needs, and have the free capacity for it, counting the
// plan's other allocations. The error wraps ErrDoesNotFit and says which allocation
// failed.
func Fits(snap Snapshot, plan Plan) error {
	cands, err := freeCapacity(snap)
	if err != nil {
		return err
	}
	byID := make(map[string]*candidate, len(cands))
	for _, c := range cands {
		byID[c.node.GetId()] = c
	}
	// Check in a fixed order so the reported allocation is deterministic.
	allocs := slices.Clone(plan.Allocations)
	slices.SortFunc(allocs, func(a, b *cohortv1.Allocation) int { return cmp.Compare(a.GetId(), b.GetId()) })
	for _, a := range allocs {
		c, ok := byID[a.GetNodeId()]
		if !ok {
			return fmt.Errorf("%w: allocation %s: node %q is not ready", ErrDoesNotFit, a.GetId(), a.GetNodeId())
		}
		role := cohortv1.NodeRole_NODE_ROLE_WORKER
		if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			role = cohortv1.NodeRole_NODE_ROLE_PARAMSERVER
		}
		if !hasRole(c.node, role) {
			return fmt.Errorf("%w: allocation %s: node %q lacks role %s", ErrDoesNotFit, a.GetId(), a.GetNodeId(), roleName(role))
		}
		need := toResources(a.GetResources())
		if !c.free.fits(need) {
			return fmt.Errorf("%w: allocation %s: node %q has (%s) free, needs (%s)",
				ErrDoesNotFit, a.GetId(), a.GetNodeId(), describe(c.free), describe(need))
		}
		c.free = c.free.sub(need)
	}
	return nil
}
