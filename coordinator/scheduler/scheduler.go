// Package scheduler places training jobs on nodes. It is a pure function of a read-only
// state view and a job: no I/O, no clocks, no randomness, so the same input always
// yields the same plan.
//
// Placement is gang placement: every worker and every parameter-server shard of a job
// is placed, or nothing is. Each task is a feasibility step (ready and eligible node,
// right role, node selector, GPU model and memory, enough free capacity, the
// namespace's quota) followed by a ranking step: bin packing (the node with the fewest
// free GPUs, then the least free CPU and memory, ties by node ID), which keeps whole GPU
// nodes free for big gangs, or spread when the job asks for it.
//
// A Cluster is the working view of one scheduling pass: Order sorts the pending jobs
// (queues by weighted fair share, then priority, then FIFO), Place reserves each
// placed gang, Preempt finds the fewest, lowest-priority running gangs whose eviction
// lets a job in. Schedule and GrowPlan return each decision as one PlanResult
// (placement, shrinks, evictions, growth together), which the leader's plan applier
// re-checks against newer state with Recheck (Fits for a single placement) and commits
// in one Raft entry. NeverFits and ExceedsQuota say why a job could never run, for
// refusal at submit.
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
	// Notes explain a feasible placement where a preference shaped it (the spreading
	// of parameter-server shards, spread.go).
	Notes []string
	// Selector is the job's node selector, which Fits checks again.
	Selector map[string]string
	// job is the job placed, for Fits' quota re-check.
	job *cohortv1.Job
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

// AllocIDGen is AllocID for a job's generation: generations after the first (a job
// placed again after preemption or a restart) get a "-g<N>" suffix, so a new placement
// never reuses the ID of a stopped allocation.
func AllocIDGen(jobID string, kind cohortv1.TaskKind, index int32, gen uint64) string {
	if gen <= 1 {
		return AllocID(jobID, kind, index)
	}
	return fmt.Sprintf("%s-g%d", AllocID(jobID, kind, index), gen)
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

func (r resources) add(o resources) resources {
	return resources{cpu: r.cpu + o.cpu, mem: r.mem + o.mem, gpus: r.gpus + o.gpus}
}

// short lists the dimensions in which need exceeds free.
func (r resources) short(need resources) (cpu, mem, gpus bool) {
	return need.cpu > r.cpu, need.mem > r.mem, need.gpus > r.gpus
}

func (r resources) fits(need resources) bool {
	c, m, g := r.short(need)
	return !c && !m && !g
}

// candidate is a node with its free capacity, as the plans being built leave it.
type candidate struct {
	node *cohortv1.Node
	free resources
}

// freeCapacity returns the free capacity of every READY node eligible for new tasks,
// ordered by node ID.
func freeCapacity(snap Snapshot) ([]*candidate, error) {
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read nodes: %w", err)
	}
	out := make([]*candidate, 0, len(nodes))
	for _, n := range nodes {
		if n.GetStatus() != cohortv1.NodeStatus_NODE_STATUS_READY || n.GetSchedulingIneligible() {
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

// matches reports whether node n may run a task of group g of a job with the given
// node selector: the right role, every selector label, and the GPU model and GPU
// memory the task asks for (when it asks for GPUs).
func matches(n *cohortv1.Node, role cohortv1.NodeRole, selector map[string]string, task *cohortv1.Resources) bool {
	if !hasRole(n, role) {
		return false
	}
	for k, v := range selector {
		if got, ok := n.GetLabels()[k]; !ok || got != v {
			return false
		}
	}
	if task.GetGpus() > 0 {
		capa := n.GetCapacity()
		if m := task.GetGpuModel(); m != "" && !strings.EqualFold(m, capa.GetGpuModel()) {
			return false
		}
		if task.GetGpuMemoryBytes() > capa.GetGpuMemoryBytes() {
			return false
		}
	}
	return true
}

func taskTerminal(s cohortv1.TaskState) bool {
	switch s {
	case cohortv1.TaskState_TASK_STATE_SUCCEEDED, cohortv1.TaskState_TASK_STATE_FAILED,
		cohortv1.TaskState_TASK_STATE_STOPPED:
		return true
	}
	return false
}

// binPackLess orders candidates for bin packing: fewest free GPUs first (so whole GPU
// nodes stay free for big gangs, and CPU-only tasks land on nodes without GPUs), then
// least free CPU, least free memory, and node ID.
func binPackLess(a, b *candidate) bool {
	if a.free.gpus != b.free.gpus {
		return a.free.gpus < b.free.gpus
	}
	if a.free.cpu != b.free.cpu {
		return a.free.cpu < b.free.cpu
	}
	if a.free.mem != b.free.mem {
		return a.free.mem < b.free.mem
	}
	return a.node.GetId() < b.node.GetId()
}

// spreadLess orders candidates for spreading: most free GPUs, CPU and memory first,
// then node ID.
func spreadLess(a, b *candidate) bool {
	if a.free.gpus != b.free.gpus {
		return a.free.gpus > b.free.gpus
	}
	if a.free.cpu != b.free.cpu {
		return a.free.cpu > b.free.cpu
	}
	if a.free.mem != b.free.mem {
		return a.free.mem > b.free.mem
	}
	return a.node.GetId() < b.node.GetId()
}

// candHeap is a binary min-heap of candidates under less.
type candHeap struct {
	items []*candidate
	less  func(a, b *candidate) bool
}

func (h *candHeap) init() {
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *candHeap) down(i int) {
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && h.less(h.items[r], h.items[l]) {
			j = r
		}
		if !h.less(h.items[j], h.items[i]) {
			return
		}
		h.items[i], h.items[j] = h.items[j], h.items[i]
		i = j
	}
}

// fixTop restores the heap after the top's key changed, or removes the top when it no
// longer fits (keep false).
func (h *candHeap) fixTop(keep bool) {
	if !keep {
		last := len(h.items) - 1
		h.items[0] = h.items[last]
		h.items = h.items[:last]
	}
	if len(h.items) > 0 {
		h.down(0)
	}
}

// Cluster is the scheduler's working view of a snapshot: every ready node's free
// capacity, reduced by each plan placed through it. Placing many jobs through one
// Cluster reads the snapshot once. A Cluster is not safe for concurrent use.
type Cluster struct {
	cands   []*candidate
	err     error
	scratch []*candidate // reused heap storage
	policy  *policy
}

// NewCluster reads the ready nodes and their free capacity from snap, and, when snap is
// a PolicySnapshot, the quotas, queue weights and what running jobs hold.
func NewCluster(snap Snapshot) *Cluster {
	cands, err := freeCapacity(snap)
	cl := &Cluster{cands: cands, err: err, policy: newPolicy()}
	for _, c := range cands {
		cl.policy.total = cl.policy.total.add(toResources(c.node.GetCapacity()))
	}
	if ps, ok := snap.(PolicySnapshot); ok && err == nil {
		cl.err = cl.policy.load(ps)
	}
	return cl
}

// Place computes a gang placement of job on the snapshot's nodes: all of its workers
// and parameter-server shards, or none with the reasons why.
func Place(snap Snapshot, job *cohortv1.Job) Plan {
	return NewCluster(snap).Place(job)
}

// reservation is capacity a plan under construction took from a candidate.
type reservation struct {
	c    *candidate
	need resources
}

// Place computes a gang placement of job and, when it is feasible, reserves its
// capacity in the Cluster so later plans see it taken.
//
// Each group (workers, shards) is placed by repeatedly taking the best matching node
// under the job's ranking (bin packing, or spread when job.Spread) and giving it one
// task; a node that still fits stays in the ranking. When any task cannot be placed,
// every reservation of the job is undone: all or nothing.
func (cl *Cluster) Place(job *cohortv1.Job) Plan {
	plan := Plan{JobID: job.GetId(), Selector: job.GetNodeSelector(), job: job}
	if job.GetWorkerCount() < 1 {
		plan.Reasons = []string{"job has no workers (worker_count < 1)"}
		return plan
	}
	if job.GetShardCount() < 0 {
		plan.Reasons = []string{"job has a negative shard_count"}
		return plan
	}
	if cl.err != nil {
		plan.Reasons = []string{cl.err.Error()}
		return plan
	}
	if r := cl.policy.quotaReason(job); r != "" {
		plan.Reasons = []string{r}
		return plan
	}
	gen := job.GetGeneration()
	if gen == 0 {
		gen = 1
	}
	less := binPackLess
	if job.GetSpread() {
		less = spreadLess
	}
	var (
		allocs     []*cohortv1.Allocation
		reserved   []reservation
		psEligible int
	)
	for _, g := range groups(job) {
		if g.count == 0 {
			continue
		}
		need := toResources(g.res)
		eligible := 0
		h := candHeap{less: less, items: cl.scratch[:0]}
		held := map[*candidate]int{}
		if g.kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			h.less = spreadShards(held, less)
		}
		for _, c := range cl.cands {
			if !matches(c.node, g.role, job.GetNodeSelector(), g.res) {
				continue
			}
			eligible++
			if c.free.fits(need) {
				h.items = append(h.items, c)
			}
		}
		if eligible == 0 {
			plan.Reasons = append(plan.Reasons, noNodeReason(g, job.GetNodeSelector()))
			continue
		}
		if g.kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			psEligible = eligible
		}
		h.init()
		res := proto.Clone(resourcesOrZero(g.res)).(*cohortv1.Resources)
		var placed int32
		for ; placed < g.count && len(h.items) > 0; placed++ {
			c := h.items[0]
			c.free = c.free.sub(need)
			held[c]++
			reserved = append(reserved, reservation{c, need})
			h.fixTop(c.free.fits(need))
			allocs = append(allocs, &cohortv1.Allocation{
				Id:         AllocIDGen(job.GetId(), g.kind, placed, gen),
				JobId:      job.GetId(),
				Kind:       g.kind,
				Index:      placed,
				NodeId:     c.node.GetId(),
				State:      cohortv1.TaskState_TASK_STATE_PENDING,
				Generation: gen,
				Resources:  res,
			})
		}
		cl.scratch = h.items[:0]
		if placed < g.count {
			plan.Reasons = append(plan.Reasons, shortfall(g, need, placed, cl.eligible(g, job.GetNodeSelector())))
		}
		if g.kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD && placed == g.count && ShardReplicas(job) > 1 {
			backups, took, reason := cl.placeBackups(job, allocs[len(allocs)-int(placed):], g, less, gen)
			allocs, reserved = append(allocs, backups...), append(reserved, took...)
			if reason != "" {
				plan.Reasons = append(plan.Reasons, reason)
			}
		}
	}
	if len(plan.Reasons) > 0 {
		for i := len(reserved) - 1; i >= 0; i-- {
			r := reserved[i]
			r.c.free = r.c.free.add(r.need)
		}
		return plan
	}
	plan.Allocations = allocs
	plan.Notes = shardNote(allocs, psEligible)
	cl.policy.charge(job, demand(job))
	return plan
}

// eligible returns the candidates that match group g and selector.
func (cl *Cluster) eligible(g group, selector map[string]string) []*candidate {
	var out []*candidate
	for _, c := range cl.cands {
		if matches(c.node, g.role, selector, g.res) {
			out = append(out, c)
		}
	}
	return out
}

func noNodeReason(g group, selector map[string]string) string {
	return "no ready, eligible node " + matchWhat(g, selector)
}

// matchWhat describes what a node must have to run group g under selector.
func matchWhat(g group, selector map[string]string) string {
	s := "with role " + roleName(g.role)
	if len(selector) > 0 {
		s += " matching node selector " + formatSelector(selector)
	}
	if g.res.GetGpus() > 0 {
		if m := g.res.GetGpuModel(); m != "" {
			s += " and GPU model " + m
		}
		if b := g.res.GetGpuMemoryBytes(); b > 0 {
			s += " and GPU memory >= " + formatBytes(b)
		}
	}
	return s
}

func formatSelector(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return "{" + strings.Join(parts, ",") + "}"
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
	return describeGPUs(r, false)
}

// describeGPUs is describe that also prints "gpus 0" when withZero is set.
func describeGPUs(r resources, withZero bool) string {
	s := fmt.Sprintf("cpu %dm, memory %s", r.cpu, formatBytes(r.mem))
	if r.gpus > 0 || withZero {
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
// READY, have the role its task needs, match the job's node selector and have the free
// capacity for it, counting the plan's other allocations; and, when snap is a
// PolicySnapshot, the job must still fit its namespace's quota. The error wraps
// ErrDoesNotFit and says which allocation failed.
func Fits(snap Snapshot, plan Plan) error {
	return fitsAll(snap, []Plan{plan}, nil)
}

// fitsAll is Fits for the placements and growth of one PlanResult together: their
// allocations are checked against the same free capacity, each counting the others,
// and (when snap is a PolicySnapshot) each placed job and each grown job must fit its
// namespace's quota, counting the earlier ones.
func fitsAll(snap Snapshot, plans []Plan, growth []Resize) error {
	cands, err := freeCapacity(snap)
	if err != nil {
		return err
	}
	if ps, ok := snap.(PolicySnapshot); ok {
		p := newPolicy()
		loaded := false
		load := func() error {
			if loaded {
				return nil
			}
			loaded = true
			return p.load(ps)
		}
		for _, plan := range plans {
			if plan.job == nil {
				continue
			}
			if err := load(); err != nil {
				return err
			}
			if r := p.quotaReason(plan.job); r != "" {
				return fmt.Errorf("%w: %s", ErrDoesNotFit, r)
			}
			p.charge(plan.job, demand(plan.job))
		}
		for _, rs := range growth {
			if rs.job == nil {
				continue
			}
			if err := load(); err != nil {
				return err
			}
			var need resources
			for _, a := range rs.Add {
				need = need.add(toResources(a.GetResources()))
			}
			if p.quotaOver(rs.job, need) {
				return fmt.Errorf("%w: growth of job %s by %d workers exceeds namespace %q quota",
					ErrDoesNotFit, rs.JobID, len(rs.Add), namespaceOf(rs.job))
			}
			p.charge(rs.job, need)
		}
	}
	byID := make(map[string]*candidate, len(cands))
	for _, c := range cands {
		byID[c.node.GetId()] = c
	}
	type task struct {
		a        *cohortv1.Allocation
		selector map[string]string
	}
	var tasks []task
	for _, plan := range plans {
		for _, a := range plan.Allocations {
			tasks = append(tasks, task{a, plan.Selector})
		}
	}
	for _, rs := range growth {
		for _, a := range rs.Add {
			tasks = append(tasks, task{a, rs.Selector})
		}
	}
	// Check in a fixed order so the reported allocation is deterministic.
	slices.SortFunc(tasks, func(a, b task) int { return cmp.Compare(a.a.GetId(), b.a.GetId()) })
	for _, t := range tasks {
		a := t.a
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
		if !matches(c.node, role, t.selector, a.GetResources()) {
			return fmt.Errorf("%w: allocation %s: node %q no longer matches the job's node selector or GPU model", ErrDoesNotFit, a.GetId(), a.GetNodeId())
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
