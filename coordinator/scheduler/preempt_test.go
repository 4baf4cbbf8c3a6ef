package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// preemptPass is sim.pass with the leader's preemption step: a job that does not fit
// evicts lower-priority gangs when that makes it fit, and is placed at once.
func (s *sim) preemptPass() (placed, evicted []string) {
	s.t.Helper()
	for {
		snap := s.store.Snapshot()
		pending, _ := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
		cl := NewCluster(snap)
		running, err := RunningJobs(snap)
		if err != nil {
			s.t.Fatal(err)
		}
		preempted := false
		for _, j := range cl.Order(pending) {
			p := cl.Place(j)
			if !p.Feasible() {
				victims, _, ok := cl.Preempt(j, running)
				if !ok {
					continue
				}
				s.evict(victims)
				evicted = append(evicted, victims...)
				p = NewCluster(s.store.Snapshot()).Place(j)
				if !p.Feasible() {
					s.t.Fatalf("job %s does not fit after evicting %v: %v", j.Id, victims, p.Reasons)
				}
				preempted = true
			}
			s.commit(j, p)
			running = append(running, Running{Job: j, Allocs: p.Allocations})
			placed = append(placed, j.Id)
			if preempted {
				break
			}
		}
		if !preempted {
			return placed, evicted
		}
	}
}

func (s *sim) commit(j *cohortv1.Job, p Plan) {
	s.t.Helper()
	if err := Fits(s.store.Snapshot(), p); err != nil {
		s.t.Fatalf("plan applier rejected a plan made on the newest state: %v", err)
	}
	s.write(func(txn *state.Txn) error {
		r := proto.Clone(j).(*cohortv1.Job)
		r.State = cohortv1.JobState_JOB_STATE_RUNNING
		r.ActiveWorkers = 0 // placed with all of its workers, as the FSM's commit_plan does
		if err := txn.UpsertJob(r); err != nil {
			return err
		}
		for _, a := range p.Allocations {
			if err := txn.UpsertAlloc(proto.Clone(a).(*cohortv1.Allocation)); err != nil {
				return err
			}
		}
		return nil
	})
}

// evict does what the FSM's preempt_jobs does.
func (s *sim) evict(ids []string) {
	s.write(func(txn *state.Txn) error {
		for _, id := range ids {
			j, _ := txn.JobByID(nil, id)
			j = proto.Clone(j).(*cohortv1.Job)
			j.State = cohortv1.JobState_JOB_STATE_PENDING
			j.Generation = max(j.Generation, 1) + 1
			if err := txn.UpsertJob(j); err != nil {
				return err
			}
			allocs, _ := txn.AllocsByJob(nil, id)
			for _, a := range allocs {
				if taskTerminal(a.State) {
					continue
				}
				a = proto.Clone(a).(*cohortv1.Allocation)
				a.State = cohortv1.TaskState_TASK_STATE_STOPPED
				if err := txn.UpsertAlloc(a); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func TestPreempt(t *testing.T) {
	setup := func() *sim {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.addNode(gpuNode("g2", 8, "H100", nil))
		return s
	}
	tests := []struct {
		name    string
		running []*cohortv1.Job
		job     *cohortv1.Job
		want    []string // nil: no preemption possible
	}{
		{name: "lowest priority gang first",
			running: []*cohortv1.Job{simJob("p10", "d", "q", 10, 1, 4, 2), simJob("p20", "d", "q", 20, 2, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 4, 2),
			want:    []string{"p10"}},
		{name: "fewest victims: one big gang rather than two small ones of the same priority",
			running: []*cohortv1.Job{simJob("s1", "d", "q", 10, 1, 1, 4), simJob("s2", "d", "q", 10, 2, 1, 4), simJob("big", "d", "q", 10, 3, 1, 8)},
			job:     simJob("hi", "d", "q", 50, 4, 1, 8),
			want:    []string{"big"}},
		{name: "unneeded victims are dropped",
			running: []*cohortv1.Job{simJob("a", "d", "q", 10, 1, 2, 4), simJob("b", "d", "q", 20, 2, 2, 4)},
			job:     simJob("hi", "d", "q", 50, 3, 1, 4),
			want:    []string{"a"}},
		{name: "equal priority never preempts",
			running: []*cohortv1.Job{simJob("a", "d", "q", 50, 1, 2, 8)},
			job:     simJob("hi", "d", "q", 50, 3, 1, 4)},
		{name: "no set of lower-priority gangs is enough",
			running: []*cohortv1.Job{simJob("a", "d", "q", 10, 1, 1, 8), simJob("b", "d", "q", 90, 2, 1, 8)},
			job:     simJob("hi", "d", "q", 50, 3, 2, 8)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := setup()
			for _, j := range tt.running {
				s.submit(j)
			}
			if got := s.pass(); len(got) != len(tt.running) {
				t.Fatalf("setup placed %v", got)
			}
			snap := s.store.Snapshot()
			running, _ := RunningJobs(snap)
			victims, plan, ok := NewCluster(snap).Preempt(tt.job, running)
			if tt.want == nil {
				if ok {
					t.Fatalf("preempted %v", victims)
				}
				return
			}
			if !ok || !slices.Equal(victims, tt.want) || !plan.Feasible() {
				t.Fatalf("victims %v ok=%v, want %v", victims, ok, tt.want)
			}
		})
	}
}

// TestPreemptionProperties runs random job streams with priorities through passes
// with preemption and checks after each: the invariants of sim.check, and that no
// pending job could be placed by evicting lower-priority gangs (so no lower-priority
// job runs while a higher one that could fit by preemption waits). Evicted jobs come
// back with their generation bumped.
func TestPreemptionProperties(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 5))
		s := newSim(t)
		for i := range 2 + r.IntN(6) {
			s.addNode(gpuNode(fmt.Sprintf("n%d", i), int32(2+r.IntN(7)), "H100", nil))
		}
		if r.IntN(2) == 0 {
			s.setQuota("a", &cohortv1.Resources{Gpus: int32(4 + r.IntN(8))})
		}
		var live []string
		for step := range 40 {
			j := simJob(fmt.Sprintf("j%d", step), []string{"a", "b"}[r.IntN(2)], []string{"x", "y"}[r.IntN(2)],
				int32(r.IntN(5)*10), int64(step), int32(1+r.IntN(4)), int32(1+r.IntN(3)))
			if never, _ := NeverFits(s.store.Snapshot(), j); len(never) > 0 {
				continue
			}
			if q, _ := ExceedsQuota(s.store.Snapshot(), j); len(q) > 0 {
				continue
			}
			s.submit(j)
			placed, evicted := s.preemptPass()
			live = append(live, placed...)
			for _, id := range evicted {
				if v, _ := s.store.JobByID(nil, id); v.Generation < 2 {
					t.Fatalf("seed %d: evicted job %s generation %d", seed, id, v.Generation)
				}
			}
			s.check()
			snap := s.store.Snapshot()
			pending, _ := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
			running, _ := RunningJobs(snap)
			cl := NewCluster(snap)
			for _, p := range pending {
				if victims, _, ok := cl.Preempt(p, running); ok {
					t.Fatalf("seed %d: job %s (priority %d) waits although evicting %v would place it", seed, p.Id, p.Priority, victims)
				}
			}
			if r.IntN(4) == 0 && len(live) > 0 { // a job ends
				k := r.IntN(len(live))
				if j, _ := s.store.JobByID(nil, live[k]); j.State == cohortv1.JobState_JOB_STATE_RUNNING {
					s.finish(live[k])
				}
				live = slices.Delete(live, k, k+1)
			}
		}
	}
}
