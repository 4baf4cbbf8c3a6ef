package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Running is a running job with its live allocations: a preemption candidate.
type Running struct {
	Job    *cohortv1.Job
	Allocs []*cohortv1.Allocation
	// FailedOn holds the nodes where a worker of the job failed; Grow places no new
	// worker there (a replacement that fails at once would otherwise be placed again
	// and again).
	FailedOn map[string]bool
}

// RunningJobs reads every running job with its live allocations from snap.
func RunningJobs(snap PolicySnapshot) ([]Running, error) {
	jobs, err := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_RUNNING)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read running jobs: %w", err)
	}
	out := make([]Running, 0, len(jobs))
	for _, j := range jobs {
		allocs, err := snap.AllocsByJob(nil, j.GetId())
		if err != nil {
			return nil, fmt.Errorf("scheduler: read allocations of job %q: %w", j.GetId(), err)
		}
		live := slices.DeleteFunc(slices.Clone(allocs), func(a *cohortv1.Allocation) bool { return taskTerminal(a.GetState()) })
		var failed map[string]bool
		for _, a := range allocs {
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_WORKER && a.GetState() == cohortv1.TaskState_TASK_STATE_FAILED {
				if failed == nil {
					failed = map[string]bool{}
				}
				failed[a.GetNodeId()] = true
			}
		}
		out = append(out, Running{Job: j, Allocs: live, FailedOn: failed})
	}
	return out, nil
}

// clone returns an independent copy of the Cluster's working view.
func (cl *Cluster) clone() *Cluster {
	c := &Cluster{err: cl.err, cands: make([]*candidate, len(cl.cands))}
	for i, cd := range cl.cands {
		cp := *cd
		c.cands[i] = &cp
	}
	p := *cl.policy
	p.nsUsed = maps.Clone(cl.policy.nsUsed)
	p.qUsed = maps.Clone(cl.policy.qUsed)
	c.policy = &p
	return c
}

// release gives a running job's capacity back to the view, as if it were evicted.
func (cl *Cluster) release(r Running) {
	byID := make(map[string]*candidate, len(r.Allocs))
	for _, a := range r.Allocs {
		byID[a.GetNodeId()] = nil
	}
	for _, c := range cl.cands {
		if _, ok := byID[c.node.GetId()]; ok {
			byID[c.node.GetId()] = c
		}
	}
	var use resources
	for _, a := range r.Allocs {
		need := toResources(a.GetResources())
		use = use.add(need)
		if c := byID[a.GetNodeId()]; c != nil {
			c.free = c.free.add(need)
		}
	}
	cl.policy.charge(r.Job, resources{}.sub(use))
}

// maxVictimCandidates bounds the running jobs one preemption search considers.
const maxVictimCandidates = 256

// Preempt finds the running gangs whose eviction would let job be placed: only jobs of
// strictly lower priority, the lowest priority first (then the largest, then the most
// recently submitted), and then drops every victim that turns out not to be needed,
// highest priority first, so the set is small and low. It returns the victims (by
// ID, in the order considered) and the plan that placing job after their eviction
// would give; ok is false when no set of lower-priority evictions makes job fit.
// The Cluster itself is not changed.
func (cl *Cluster) Preempt(job *cohortv1.Job, running []Running) (victims []string, plan Plan, ok bool) {
	var cands []Running
	for _, r := range running {
		if r.Job.GetPriority() < job.GetPriority() && r.Job.GetId() != job.GetId() && len(r.Allocs) > 0 {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return nil, Plan{}, false
	}
	slices.SortFunc(cands, func(a, b Running) int {
		return cmp.Or(
			cmp.Compare(a.Job.GetPriority(), b.Job.GetPriority()),
			cmp.Compare(len(b.Allocs), len(a.Allocs)),
			cmp.Compare(b.Job.GetSubmitTimeUnixNano(), a.Job.GetSubmitTimeUnixNano()),
			cmp.Compare(a.Job.GetId(), b.Job.GetId()),
		)
	})
	if len(cands) > maxVictimCandidates {
		cands = cands[:maxVictimCandidates]
	}
	// Cheap necessary condition: the free capacity plus everything the candidates hold
	// must cover the job's demand.
	var avail resources
	for _, c := range cl.cands {
		avail = avail.add(resources{cpu: max(c.free.cpu, 0), mem: max(c.free.mem, 0), gpus: max(c.free.gpus, 0)})
	}
	for _, r := range cands {
		for _, a := range r.Allocs {
			avail = avail.add(toResources(a.GetResources()))
		}
	}
	if !avail.fits(demand(job)) {
		return nil, Plan{}, false
	}
	tryWith := func(set []Running) Plan {
		c := cl.clone()
		for _, r := range set {
			c.release(r)
		}
		return c.Place(job)
	}
	// Grow: take the first 1, 2, 4, ... candidates until the job fits.
	n := 0
	for size := 1; ; size *= 2 {
		n = min(size, len(cands))
		if p := tryWith(cands[:n]); p.Feasible() {
			plan = p
			break
		}
		if n == len(cands) {
			return nil, Plan{}, false
		}
	}
	// Shrink: drop every victim not needed, the highest priority first.
	set := slices.Clone(cands[:n])
	for i := len(set) - 1; i >= 0; i-- {
		without := slices.Delete(slices.Clone(set), i, i+1)
		if p := tryWith(without); p.Feasible() {
			set, plan = without, p
		}
	}
	for _, r := range set {
		victims = append(victims, r.Job.GetId())
	}
	return victims, plan, true
}
