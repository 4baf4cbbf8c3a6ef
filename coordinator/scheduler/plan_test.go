package scheduler

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// apply does to the sim what the FSM's apply_plan does with pr.
func (s *sim) apply(job *cohortv1.Job, pr PlanResult) {
	s.t.Helper()
	if err := Recheck(s.store.Snapshot(), pr); err != nil {
		s.t.Fatalf("plan applier rejected a plan made on the newest state: %v", err)
	}
	for _, rs := range pr.Shrinks {
		s.resize(rs)
	}
	var victims []string
	for _, ev := range pr.Evictions {
		victims = append(victims, ev.JobID)
	}
	s.evict(victims)
	if pr.Placement.Feasible() {
		s.commit(job, pr.Placement)
	}
	for _, rs := range pr.Growth {
		s.resize(rs)
	}
}

func noRunning() ([]Running, error) {
	return nil, errors.New("running jobs read although the job fits")
}

// TestScheduleAndRecheck: Schedule returns one decision per job (a placement, or a
// placement with the evictions or shrinks that make room for it, or the reasons);
// Recheck accepts it on the state it was made on, counting the capacity its shrinks and
// evictions free, and refuses it once the state moved under it.
func TestScheduleAndRecheck(t *testing.T) {
	setup := func() *sim {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.submit(simJob("low", "d", "q", 10, 1, 1, 8))
		if got := s.pass(); !slices.Equal(got, []string{"low"}) {
			t.Fatalf("setup placed %v", got)
		}
		return s
	}
	decide := func(s *sim, job *cohortv1.Job) PlanResult {
		t.Helper()
		snap := s.store.Snapshot()
		pr, err := NewCluster(snap).Schedule(job, func() ([]Running, error) { return RunningJobs(snap) })
		if err != nil {
			t.Fatal(err)
		}
		return pr
	}

	t.Run("placement without preemption", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		pr, err := NewCluster(s.store.Snapshot()).Schedule(simJob("a", "d", "q", 10, 1, 2, 4), noRunning)
		if err != nil || !pr.Placement.Feasible() || pr.Preempts() || len(pr.Growth) > 0 {
			t.Fatalf("decision %+v, %v", pr, err)
		}
	})

	t.Run("eviction and placement together", func(t *testing.T) {
		s := setup()
		hi := simJob("hi", "d", "q", 90, 2, 1, 8)
		s.submit(hi)
		pr := decide(s, hi)
		if !pr.Placement.Feasible() || len(pr.Evictions) != 1 || pr.Evictions[0].JobID != "low" {
			t.Fatalf("decision %+v", pr)
		}
		snap := s.store.Snapshot()
		if err := Fits(snap, pr.Placement); !errors.Is(err, ErrDoesNotFit) {
			t.Fatalf("the placement alone fits the state before the eviction: %v", err)
		}
		if err := Recheck(snap, pr); err != nil {
			t.Fatalf("recheck of the decision on its own state: %v", err)
		}
		s.apply(hi, pr)
		s.check()
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrStalePlan) {
			t.Fatalf("recheck of an applied plan: %v, want ErrStalePlan", err)
		}
	})

	t.Run("stale victim generation", func(t *testing.T) {
		s := setup()
		hi := simJob("hi", "d", "q", 90, 2, 1, 8)
		s.submit(hi)
		pr := decide(s, hi)
		s.evict([]string{"low"})
		s.commit(mustJob(t, s, "low"), NewCluster(s.store.Snapshot()).Place(mustJob(t, s, "low")))
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrStalePlan) {
			t.Fatalf("recheck after the victim moved on: %v, want ErrStalePlan", err)
		}
	})

	t.Run("capacity taken meanwhile", func(t *testing.T) {
		s := setup()
		s.addNode(gpuNode("g2", 4, "H100", nil))
		hi := simJob("hi", "d", "q", 90, 2, 1, 8)
		s.submit(hi)
		pr := decide(s, hi)
		// Another task takes part of what the eviction frees.
		s.write(func(txn *state.Txn) error {
			return txn.UpsertAlloc(&cohortv1.Allocation{Id: "other", JobId: "other", NodeId: "g1", State: cohortv1.TaskState_TASK_STATE_RUNNING,
				Resources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: gib, Gpus: 1}})
		})
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrDoesNotFit) {
			t.Fatalf("recheck with the freed capacity taken: %v, want ErrDoesNotFit", err)
		}
	})

	t.Run("shrink and placement together", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.submit(elasticJob("el", 10, 1, 4, 1, 4, 2))
		s.elasticPass(1)
		hi := simJob("hi", "d", "q", 90, 2, 1, 4)
		s.submit(hi)
		pr := decide(s, hi)
		if !pr.Placement.Feasible() || len(pr.Shrinks) != 1 || len(pr.Evictions) != 0 || len(pr.Shrinks[0].Remove) != 2 {
			t.Fatalf("decision %+v", pr)
		}
		if err := Recheck(s.store.Snapshot(), pr); err != nil {
			t.Fatalf("recheck: %v", err)
		}
		// A removed worker that ended meanwhile makes the plan stale.
		s.finishWorker("el") // its highest rank, which the shrink removes
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrStalePlan) {
			t.Fatalf("recheck after a removed worker ended: %v, want ErrStalePlan", err)
		}
	})

	t.Run("growth within quota", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.submit(elasticJob("el", 10, 1, 1, 1, 4, 2))
		if got := s.pass(); len(got) != 1 {
			t.Fatalf("placed %v", got)
		}
		snap := s.store.Snapshot()
		running, _ := RunningJobs(snap)
		pr, ok := NewCluster(snap).GrowPlan(running[0])
		if !ok || len(pr.Growth) != 1 || len(pr.Growth[0].Add) != 3 || pr.Placement.JobID != "" {
			t.Fatalf("growth %+v", pr)
		}
		if err := Recheck(snap, pr); err != nil {
			t.Fatalf("recheck: %v", err)
		}
		s.setQuota("d", &cohortv1.Resources{Gpus: 4})
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrDoesNotFit) {
			t.Fatalf("recheck of growth over a new quota: %v, want ErrDoesNotFit", err)
		}
	})

	t.Run("placement of a job no longer pending", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		j := simJob("a", "d", "q", 10, 1, 1, 4)
		s.submit(j)
		pr := decide(s, j)
		s.write(func(txn *state.Txn) error {
			c := proto.Clone(j).(*cohortv1.Job)
			c.State = cohortv1.JobState_JOB_STATE_CANCELLED
			return txn.UpsertJob(c)
		})
		if err := Recheck(s.store.Snapshot(), pr); !errors.Is(err, ErrStalePlan) {
			t.Fatalf("recheck of a cancelled job's placement: %v, want ErrStalePlan", err)
		}
	})
}
