package scheduler

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// PlanResult is one scheduling decision: the unit the leader's plan applier re-checks
// (Recheck) and commits in one Raft entry, which the FSM applies all or nothing. It is
// the placement of one pending job (or why it waits) together with the shrinks and
// evictions that make room for it, or the growth of a running elastic job. (nomad's
// structs.PlanResult, which carries NodePreemptions with the placements.)
type PlanResult struct {
	// Placement places a pending job or, infeasible, says why it waits. Its JobID is
	// empty in a result that only grows.
	Placement Plan
	// Shrinks take workers from lower-priority running elastic jobs, Evictions send
	// whole lower-priority gangs back to pending, to make room for Placement.
	Shrinks   []Resize
	Evictions []Eviction
	// Growth adds workers to running elastic jobs.
	Growth []Resize
}

// Eviction is a whole running gang a plan sends back to pending.
type Eviction struct {
	JobID string
	// Generation is the job's generation the eviction was planned against.
	Generation uint64
}

// Preempts reports whether the result shrinks or evicts running jobs.
func (pr PlanResult) Preempts() bool { return len(pr.Shrinks) > 0 || len(pr.Evictions) > 0 }

// Empty reports whether the result decides nothing.
func (pr PlanResult) Empty() bool {
	return pr.Placement.JobID == "" && !pr.Preempts() && len(pr.Growth) == 0
}

// ErrStalePlan is returned by Recheck when a job of the plan is no longer where the
// plan found it (another state, another generation, a task already ended or an
// allocation ID already taken).
var ErrStalePlan = errors.New("plan is stale")

// Schedule decides job in the pass's working view. When it fits as things are, the
// result places it and its capacity is reserved in the Cluster. When it does not,
// running is called (at most once) for the running jobs, and the result places job
// after shrinking lower-priority elastic jobs or, when that cannot make room, evicting
// whole lower-priority gangs (PreemptElastic; the Cluster is not changed then). When
// nothing makes room the result is the infeasible placement with its reasons. An error
// comes only from running.
func (cl *Cluster) Schedule(job *cohortv1.Job, running func() ([]Running, error)) (PlanResult, error) {
	plan := cl.Place(job)
	if plan.Feasible() {
		return PlanResult{Placement: plan}, nil
	}
	rs, err := running()
	if err != nil {
		return PlanResult{}, err
	}
	shrinks, victims, after, ok := cl.PreemptElastic(job, rs)
	if !ok {
		return PlanResult{Placement: plan}, nil
	}
	pr := PlanResult{Placement: after, Shrinks: shrinks}
	for _, id := range victims {
		gen := uint64(0)
		if i := slices.IndexFunc(rs, func(r Running) bool { return r.Job.GetId() == id }); i >= 0 {
			gen = rs[i].Job.GetGeneration()
		}
		pr.Evictions = append(pr.Evictions, Eviction{JobID: id, Generation: gen})
	}
	return pr, nil
}

// GrowPlan is Grow as a PlanResult: it plans adding workers to running job r toward
// workers.max and reserves them in the Cluster; ok is false when none can be added.
func (cl *Cluster) GrowPlan(r Running) (pr PlanResult, ok bool) {
	rs, ok := cl.Grow(r)
	if !ok {
		return PlanResult{}, false
	}
	return PlanResult{Growth: []Resize{rs}}, true
}

// PlanSnapshot is the read-only view the plan applier re-checks a PlanResult against;
// *state.StateSnapshot satisfies it.
type PlanSnapshot interface {
	PolicySnapshot
	JobByID(ws memdb.WatchSet, id string) (*cohortv1.Job, error)
	AllocByID(ws memdb.WatchSet, id string) (*cohortv1.Allocation, error)
}

// Recheck re-checks a plan against a (newer) snapshot, the way the FSM will apply it:
// every shrunk, evicted or grown job must still be running at the generation the plan
// was made against (and every worker a shrink removes still live); the placed job must
// still be pending at its generation, with none of the new allocation IDs taken; and,
// once the shrinks and evictions have freed their capacity, every new allocation
// (placement and growth) must fit as Fits checks it, within its namespace's quota. An
// infeasible placement (reasons only) is not checked. The error wraps ErrStalePlan or
// ErrDoesNotFit and says what failed.
func Recheck(snap PlanSnapshot, pr PlanResult) error {
	view := planView{PlanSnapshot: snap, stopped: map[string]bool{}, evicted: map[string]bool{}}
	running := func(what, id string, gen uint64) (*cohortv1.Job, error) {
		j, err := snap.JobByID(nil, id)
		switch {
		case err != nil:
			return nil, err
		case j == nil:
			return nil, fmt.Errorf("%w: %s job %q no longer exists", ErrStalePlan, what, id)
		case j.GetState() != cohortv1.JobState_JOB_STATE_RUNNING:
			return nil, fmt.Errorf("%w: %s job %q is %s, not running", ErrStalePlan, what, id, j.GetState())
		case j.GetGeneration() != gen:
			return nil, fmt.Errorf("%w: %s job %q is at generation %d, planned at %d", ErrStalePlan, what, id, j.GetGeneration(), gen)
		}
		return j, nil
	}
	for _, rs := range pr.Shrinks {
		if _, err := running("shrunk", rs.JobID, rs.Generation); err != nil {
			return err
		}
		for _, id := range rs.Remove {
			a, err := snap.AllocByID(nil, id)
			if err != nil {
				return err
			}
			if a == nil || a.GetJobId() != rs.JobID || a.GetKind() != cohortv1.TaskKind_TASK_KIND_WORKER || taskTerminal(a.GetState()) {
				return fmt.Errorf("%w: worker %q of job %q is no longer live", ErrStalePlan, id, rs.JobID)
			}
			view.stopped[id] = true
		}
	}
	for _, ev := range pr.Evictions {
		if _, err := running("evicted", ev.JobID, ev.Generation); err != nil {
			return err
		}
		allocs, err := snap.AllocsByJob(nil, ev.JobID)
		if err != nil {
			return err
		}
		for _, a := range allocs {
			view.stopped[a.GetId()] = true
		}
		view.evicted[ev.JobID] = true
	}
	var placements []Plan
	if p := pr.Placement; p.Feasible() {
		j, err := snap.JobByID(nil, p.JobID)
		switch {
		case err != nil:
			return err
		case j == nil:
			return fmt.Errorf("%w: job %q no longer exists", ErrStalePlan, p.JobID)
		case j.GetState() != cohortv1.JobState_JOB_STATE_PENDING:
			return fmt.Errorf("%w: job %q is %s, not pending", ErrStalePlan, p.JobID, j.GetState())
		case p.job != nil && j.GetGeneration() != p.job.GetGeneration():
			return fmt.Errorf("%w: job %q is at generation %d, planned at %d", ErrStalePlan, p.JobID, j.GetGeneration(), p.job.GetGeneration())
		}
		placements = append(placements, p)
	}
	for _, rs := range pr.Growth {
		if _, err := running("grown", rs.JobID, rs.Generation); err != nil {
			return err
		}
	}
	for _, p := range append(slices.Clone(placements), growthPlans(pr.Growth)...) {
		for _, a := range p.Allocations {
			taken, err := snap.AllocByID(nil, a.GetId())
			if err != nil {
				return err
			}
			if taken != nil {
				return fmt.Errorf("%w: allocation ID %q is already taken", ErrStalePlan, a.GetId())
			}
		}
	}
	return fitsAll(view, placements, pr.Growth)
}

func growthPlans(growth []Resize) []Plan {
	out := make([]Plan, 0, len(growth))
	for _, rs := range growth {
		out = append(out, rs.Plan())
	}
	return out
}

// planView is a snapshot as it will be once a plan's shrinks and evictions are
// applied: their allocations no longer hold capacity and the evicted jobs no longer
// run.
type planView struct {
	PlanSnapshot
	stopped map[string]bool // allocation IDs
	evicted map[string]bool // job IDs
}

func (v planView) live(allocs []*cohortv1.Allocation) []*cohortv1.Allocation {
	if len(v.stopped) == 0 {
		return allocs
	}
	return slices.DeleteFunc(slices.Clone(allocs), func(a *cohortv1.Allocation) bool { return v.stopped[a.GetId()] })
}

func (v planView) AllocsByNode(ws memdb.WatchSet, nodeID string) ([]*cohortv1.Allocation, error) {
	allocs, err := v.PlanSnapshot.AllocsByNode(ws, nodeID)
	return v.live(allocs), err
}

func (v planView) AllocsByJob(ws memdb.WatchSet, jobID string) ([]*cohortv1.Allocation, error) {
	allocs, err := v.PlanSnapshot.AllocsByJob(ws, jobID)
	return v.live(allocs), err
}

func (v planView) JobsByState(ws memdb.WatchSet, st cohortv1.JobState) ([]*cohortv1.Job, error) {
	jobs, err := v.PlanSnapshot.JobsByState(ws, st)
	if st != cohortv1.JobState_JOB_STATE_RUNNING || len(v.evicted) == 0 {
		return jobs, err
	}
	return slices.DeleteFunc(slices.Clone(jobs), func(j *cohortv1.Job) bool { return v.evicted[j.GetId()] }), err
}
