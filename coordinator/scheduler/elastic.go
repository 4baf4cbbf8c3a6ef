package scheduler

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Elastic jobs (workers.min < count or workers.max > count) change their worker
// membership while they run, without a restart (coordinator/fsm/elastic.go applies
// the change). The scheduler plans two kinds of change, both as a Resize: growth of a
// running job toward workers.max into free capacity (Grow), and shrinking running jobs
// toward workers.min to make room for a higher-priority one, before any whole gang is
// evicted (PreemptElastic).

// Resize is a planned membership change of one running job.
type Resize struct {
	// JobID is the job; Generation the generation the change was planned against (the
	// plan applier and the FSM refuse it once the job has moved on).
	JobID      string
	Generation uint64
	// Add holds new worker allocations (growth); Remove the IDs of live worker
	// allocations to stop (shrink).
	Add    []*cohortv1.Allocation
	Remove []string
	// Selector is the job's node selector, which Fits checks again for Add.
	Selector map[string]string
	job      *cohortv1.Job
}

// Plan returns the allocations of r to re-check with Fits.
func (r Resize) Plan() Plan {
	return Plan{JobID: r.JobID, Allocations: r.Add, Selector: r.Selector}
}

// minWorkers, maxWorkers and liveWorkerCount mirror the FSM's rules: workers.min and
// .max default to the worker count.
func minWorkers(j *cohortv1.Job) int32 {
	if m := j.GetMinWorkers(); m > 0 && m < j.GetWorkerCount() {
		return m
	}
	return j.GetWorkerCount()
}

func maxWorkers(j *cohortv1.Job) int32 { return max(j.GetMaxWorkers(), j.GetWorkerCount()) }

func activeWorkers(j *cohortv1.Job) int32 {
	if n := j.GetActiveWorkers(); n > 0 {
		return n
	}
	return j.GetWorkerCount()
}

func liveWorkerAllocs(allocs []*cohortv1.Allocation) []*cohortv1.Allocation {
	var out []*cohortv1.Allocation
	for _, a := range allocs {
		if a.GetKind() == cohortv1.TaskKind_TASK_KIND_WORKER && !taskTerminal(a.GetState()) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *cohortv1.Allocation) int {
		return cmp.Or(cmp.Compare(a.GetIndex(), b.GetIndex()), cmp.Compare(a.GetId(), b.GetId()))
	})
	return out
}

// workerDemand is what one worker of j holds.
func workerDemand(j *cohortv1.Job) resources { return toResources(j.GetWorkerResources()) }

// Grow plans adding workers to running job r toward workers.max: as many as fit, each
// on the best node under the job's ranking (never one where a worker of the job
// failed), within its namespace's quota. It reserves
// their capacity in the Cluster. ok is false when no worker can be added, or when the
// job is finishing (a worker of its membership has ended).
func (cl *Cluster) Grow(r Running) (rs Resize, ok bool) {
	job := r.Job
	live := int32(len(liveWorkerAllocs(r.Allocs)))
	want := maxWorkers(job) - live
	// A worker of the current membership that ended without a membership change has
	// finished its steps: the job is finishing, and a newcomer would have none to train.
	finishing := live < activeWorkers(job)
	if cl.err != nil || want <= 0 || finishing || job.GetState() != cohortv1.JobState_JOB_STATE_RUNNING {
		return Resize{}, false
	}
	need := workerDemand(job)
	res := proto.Clone(resourcesOrZero(job.GetWorkerResources())).(*cohortv1.Resources)
	less := binPackLess
	if job.GetSpread() {
		less = spreadLess
	}
	gen := max(job.GetGeneration(), 1)
	rs = Resize{JobID: job.GetId(), Generation: job.GetGeneration(), Selector: job.GetNodeSelector(), job: job}
	for range want {
		if cl.policy.quotaOver(job, need) {
			break
		}
		var best *candidate
		for _, c := range cl.cands {
			if matches(c.node, cohortv1.NodeRole_NODE_ROLE_WORKER, job.GetNodeSelector(), job.GetWorkerResources()) &&
				!r.FailedOn[c.node.GetId()] && c.free.fits(need) && (best == nil || less(c, best)) {
				best = c
			}
		}
		if best == nil {
			break
		}
		best.free = best.free.sub(need)
		cl.policy.charge(job, need)
		index := live + int32(len(rs.Add))
		rs.Add = append(rs.Add, &cohortv1.Allocation{
			Id:         AllocIDGen(job.GetId(), cohortv1.TaskKind_TASK_KIND_WORKER, index, gen+1),
			JobId:      job.GetId(),
			Kind:       cohortv1.TaskKind_TASK_KIND_WORKER,
			Index:      index,
			NodeId:     best.node.GetId(),
			State:      cohortv1.TaskState_TASK_STATE_PENDING,
			Generation: gen + 1,
			Resources:  res,
		})
	}
	return rs, len(rs.Add) > 0
}

// quotaOver reports whether j's namespace would exceed its quota with extra more.
func (p *policy) quotaOver(j *cohortv1.Job, extra resources) bool {
	limit, ok := p.quotas[namespaceOf(j)]
	return ok && overQuota(p.nsUsed[namespaceOf(j)].add(extra), limit) != ""
}

// releaseWorkers gives back the capacity of some of a running job's workers.
func (cl *Cluster) releaseWorkers(job *cohortv1.Job, allocs []*cohortv1.Allocation) {
	cl.release(Running{Job: job, Allocs: allocs})
}

// PreemptElastic finds room for job among lower-priority running jobs, shrinking
// elastic ones toward workers.min before evicting any whole gang: the candidates are
// taken lowest priority first (then the largest, then the most recently submitted),
// each giving up its highest ranks first, one worker at a time, until job fits; then
// every shrink that turns out not to be needed is undone, highest priority first. Only
// when shrinking every candidate to its minimum still leaves job without room does it
// fall back to Preempt (whole gangs). It returns the shrinks, the evicted gangs and the
// plan that placing job after them would give; ok is false when nothing makes room.
// The Cluster itself is not changed.
func (cl *Cluster) PreemptElastic(job *cohortv1.Job, running []Running) (shrinks []Resize, victims []string, plan Plan, ok bool) {
	type surplus struct {
		r     Running
		spare []*cohortv1.Allocation // releasable workers, highest rank first
	}
	var cands []surplus
	for _, r := range running {
		if r.Job.GetPriority() >= job.GetPriority() || r.Job.GetId() == job.GetId() {
			continue
		}
		live := liveWorkerAllocs(r.Allocs)
		n := int32(len(live)) - max(minWorkers(r.Job), 1)
		if n <= 0 {
			continue
		}
		spare := slices.Clone(live[len(live)-int(n):])
		slices.Reverse(spare)
		cands = append(cands, surplus{r: r, spare: spare})
	}
	slices.SortFunc(cands, func(a, b surplus) int {
		return cmp.Or(
			cmp.Compare(a.r.Job.GetPriority(), b.r.Job.GetPriority()),
			cmp.Compare(len(b.r.Allocs), len(a.r.Allocs)),
			cmp.Compare(b.r.Job.GetSubmitTimeUnixNano(), a.r.Job.GetSubmitTimeUnixNano()),
			cmp.Compare(a.r.Job.GetId(), b.r.Job.GetId()),
		)
	})
	// take[i] is how many spare workers candidate i gives up.
	take := make([]int, len(cands))
	tryWith := func(take []int) Plan {
		c := cl.clone()
		for i, k := range take {
			if k > 0 {
				c.releaseWorkers(cands[i].r.Job, cands[i].spare[:k])
			}
		}
		return c.Place(job)
	}
	found := false
	for i := range cands {
		for k := 1; k <= len(cands[i].spare) && !found; k++ {
			take[i] = k
			if p := tryWith(take); p.Feasible() {
				plan, found = p, true
			}
		}
		if found {
			break
		}
	}
	if !found {
		victims, plan, ok = cl.Preempt(job, running)
		return nil, victims, plan, ok
	}
	// Undo every shrink not needed, the highest priority first, then the extra workers
	// of the remaining ones.
	for i := len(take) - 1; i >= 0; i-- {
		for take[i] > 0 {
			take[i]--
			if p := tryWith(take); p.Feasible() {
				plan = p
				continue
			}
			take[i]++
			break
		}
	}
	for i, k := range take {
		if k == 0 {
			continue
		}
		r := cands[i].r
		rs := Resize{JobID: r.Job.GetId(), Generation: r.Job.GetGeneration(), Selector: r.Job.GetNodeSelector(), job: r.Job}
		for _, a := range cands[i].spare[:k] {
			rs.Remove = append(rs.Remove, a.GetId())
		}
		shrinks = append(shrinks, rs)
	}
	return shrinks, nil, plan, true
}
