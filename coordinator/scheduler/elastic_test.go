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

// elasticJob is simJob with workers.min and workers.max.
func elasticJob(id string, prio int32, submit int64, workers, min, max, gpus int32) *cohortv1.Job {
	j := simJob(id, "d", "q", prio, submit, workers, gpus)
	j.MinWorkers, j.MaxWorkers = min, max
	return j
}

// resize does what the FSM's resize_job does: stop the removed workers, add the new
// ones, bump the generation, renumber and record the active workers.
func (s *sim) resize(rs Resize) {
	s.t.Helper()
	s.write(func(txn *state.Txn) error {
		j, _ := txn.JobByID(nil, rs.JobID)
		if j.Generation != rs.Generation {
			return fmt.Errorf("resize of %s planned at generation %d, job at %d", rs.JobID, rs.Generation, j.Generation)
		}
		j = proto.Clone(j).(*cohortv1.Job)
		j.Generation = max(j.Generation, 1) + 1
		allocs, _ := txn.AllocsByJob(nil, rs.JobID)
		var live int32
		for _, a := range allocs {
			if taskTerminal(a.State) || a.Kind != cohortv1.TaskKind_TASK_KIND_WORKER {
				continue
			}
			a = proto.Clone(a).(*cohortv1.Allocation)
			if slices.Contains(rs.Remove, a.Id) {
				a.State = cohortv1.TaskState_TASK_STATE_STOPPED
			} else {
				a.Index, a.Generation = live, j.Generation
				live++
			}
			if err := txn.UpsertAlloc(a); err != nil {
				return err
			}
		}
		for _, a := range rs.Add {
			a = proto.Clone(a).(*cohortv1.Allocation)
			a.Index, a.Generation = live, j.Generation
			live++
			if err := txn.UpsertAlloc(a); err != nil {
				return err
			}
		}
		j.ActiveWorkers = live
		return txn.UpsertJob(j)
	})
}

// liveWorkers counts a job's live workers in the newest state.
func (s *sim) liveWorkers(id string) int32 {
	allocs, _ := s.store.AllocsByJob(nil, id)
	return int32(len(liveWorkerAllocs(allocs)))
}

func TestPreemptElastic(t *testing.T) {
	tests := []struct {
		name    string
		running []*cohortv1.Job
		job     *cohortv1.Job
		// wantShrink maps a job to the workers it gives up; wantVictims lists evicted
		// gangs; neither: no room can be made.
		wantShrink  map[string]int
		wantVictims []string
	}{
		{name: "shrink an elastic job rather than evict a gang",
			running: []*cohortv1.Job{elasticJob("e", 10, 1, 4, 1, 4, 2), simJob("rigid", "d", "q", 10, 2, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 2, 2), wantShrink: map[string]int{"e": 2}},
		{name: "the fewest workers: one, not all the spare ones",
			running: []*cohortv1.Job{elasticJob("e", 10, 1, 4, 1, 4, 2), simJob("rigid", "d", "q", 10, 2, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 1, 2), wantShrink: map[string]int{"e": 1}},
		{name: "the lowest priority shrinks first",
			running: []*cohortv1.Job{elasticJob("e20", 20, 1, 4, 1, 4, 2), elasticJob("e10", 10, 2, 4, 1, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 1, 4), wantShrink: map[string]int{"e10": 2}},
		{name: "two elastic jobs shrink together before any eviction",
			running: []*cohortv1.Job{elasticJob("a", 10, 1, 4, 2, 4, 2), elasticJob("b", 20, 2, 4, 2, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 4, 2), wantShrink: map[string]int{"a": 2, "b": 2}},
		{name: "never below min: not enough, so a gang is evicted",
			running: []*cohortv1.Job{elasticJob("e", 10, 1, 4, 3, 4, 2), simJob("rigid", "d", "q", 10, 2, 4, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 4, 2), wantVictims: []string{"rigid"}},
		{name: "equal priority never shrinks",
			running: []*cohortv1.Job{elasticJob("e", 50, 1, 8, 1, 8, 2)},
			job:     simJob("hi", "d", "q", 50, 3, 1, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t)
			s.addNode(gpuNode("g1", 8, "H100", nil))
			s.addNode(gpuNode("g2", 8, "H100", nil))
			for _, j := range tt.running {
				s.submit(j)
			}
			if got := s.pass(); len(got) != len(tt.running) {
				t.Fatalf("setup placed %v", got)
			}
			snap := s.store.Snapshot()
			running, _ := RunningJobs(snap)
			shrinks, victims, plan, ok := NewCluster(snap).PreemptElastic(tt.job, running)
			if tt.wantShrink == nil && tt.wantVictims == nil {
				if ok {
					t.Fatalf("made room: shrinks %v, victims %v", shrinks, victims)
				}
				return
			}
			if !ok || !plan.Feasible() {
				t.Fatalf("no room made (ok=%v)", ok)
			}
			if !slices.Equal(victims, tt.wantVictims) {
				t.Fatalf("victims %v, want %v", victims, tt.wantVictims)
			}
			got := map[string]int{}
			for _, rs := range shrinks {
				got[rs.JobID] = len(rs.Remove)
				if len(rs.Add) != 0 {
					t.Fatalf("a shrink adds workers: %v", rs.Add)
				}
			}
			if len(got) != len(tt.wantShrink) {
				t.Fatalf("shrinks %v, want %v", got, tt.wantShrink)
			}
			for id, n := range tt.wantShrink {
				if got[id] != n {
					t.Fatalf("shrinks %v, want %v", got, tt.wantShrink)
				}
			}
			// Applied, the shrinks make room on the newest state; the chief stays.
			for _, rs := range shrinks {
				for _, id := range rs.Remove {
					if id == AllocID(rs.JobID, cohortv1.TaskKind_TASK_KIND_WORKER, 0) {
						t.Fatalf("shrink of %s removes its chief", rs.JobID)
					}
				}
				s.resize(rs)
			}
			s.evict(victims)
			if p := NewCluster(s.store.Snapshot()).Place(tt.job); !p.Feasible() {
				t.Fatalf("the job does not fit after the shrinks: %v", p.Reasons)
			}
			s.checkElastic(0, false)
		})
	}
}

func TestGrow(t *testing.T) {
	s := newSim(t)
	s.addNode(gpuNode("g1", 12, "H100", nil))
	s.submit(elasticJob("e", 10, 1, 2, 1, 3, 2))  // may grow by 1
	s.submit(elasticJob("f", 10, 2, 1, 1, 10, 2)) // may grow by 9
	s.pass()
	snap := s.store.Snapshot()
	running, _ := RunningJobs(snap)
	cl := NewCluster(snap)
	for _, r := range running {
		rs, ok := cl.Grow(r)
		want := map[string]int{"e": 1, "f": 2}[r.Job.Id] // 12 GPUs, 6 taken: room for 3 more workers of 2
		if !ok || len(rs.Add) != want || rs.Generation != r.Job.Generation {
			t.Fatalf("growth of %s: %v ok=%v, want %d workers", r.Job.Id, rs.Add, ok, want)
		}
		if err := Fits(s.store.Snapshot(), rs.Plan()); err != nil {
			t.Fatal(err)
		}
		s.resize(rs)
	}
	if e, f := s.liveWorkers("e"), s.liveWorkers("f"); e != 3 || f != 3 {
		t.Fatalf("after growth: e %d workers, f %d", e, f)
	}
	s.checkElastic(0, true)
	snap = s.store.Snapshot()
	running, _ = RunningJobs(snap)
	for _, r := range running {
		if rs, ok := NewCluster(snap).Grow(r); ok {
			t.Fatalf("%s grew into a full node: %v", r.Job.Id, rs.Add)
		}
	}
	// No growth onto a node where a worker of the job failed.
	s.addNode(gpuNode("g2", 8, "H100", nil))
	snap = s.store.Snapshot()
	f := Running{Job: mustJob(t, s, "f"), Allocs: running[1].Allocs}
	if _, ok := NewCluster(snap).Grow(f); !ok {
		t.Fatal("f does not grow onto the new node")
	}
	f.FailedOn = map[string]bool{"g2": true}
	if rs, ok := NewCluster(snap).Grow(f); ok {
		t.Fatalf("grew onto a node where a worker failed: %v", rs.Add)
	}
	// A job with a finished worker (live below its active workers) does not grow.
	s.finishWorker("f")
	snap = s.store.Snapshot()
	running, _ = RunningJobs(snap)
	for _, r := range running {
		rs, ok := NewCluster(snap).Grow(r)
		if r.Job.Id == "f" && ok {
			t.Fatalf("a finishing job grew: %v", rs.Add)
		}
		if r.Job.Id == "e" && ok {
			t.Fatalf("a job at its max grew: %v", rs.Add)
		}
	}
}

// finishWorker marks the highest rank of a job's live workers SUCCEEDED, as a worker
// that trained its last step does.
func (s *sim) finishWorker(id string) {
	s.write(func(txn *state.Txn) error {
		allocs, _ := txn.AllocsByJob(nil, id)
		live := liveWorkerAllocs(allocs)
		a := proto.Clone(live[len(live)-1]).(*cohortv1.Allocation)
		a.State = cohortv1.TaskState_TASK_STATE_SUCCEEDED
		return txn.UpsertAlloc(a)
	})
}

// TestElasticProperties runs random streams of elastic and rigid jobs through the
// leader's passes (place; for a job that does not fit, shrink elastic jobs or evict
// gangs; then grow running elastic jobs into what is left) and checks after each pass:
// no node over-committed and no quota exceeded; every running job holds all its shards
// and between workers.min and workers.max workers; no gang was evicted while shrinking
// lower-priority elastic jobs to their minimum would have made room; and no running
// elastic job could still grow.
func TestElasticProperties(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 11))
		s := newSim(t)
		for i := range 2 + r.IntN(4) {
			s.addNode(gpuNode(fmt.Sprintf("n%d", i), int32(2+r.IntN(7)), "H100", nil))
		}
		if r.IntN(3) == 0 {
			s.setQuota("d", &cohortv1.Resources{Gpus: int32(6 + r.IntN(8))})
		}
		var live []string
		for step := range 30 {
			workers := int32(1 + r.IntN(4))
			j := simJob(fmt.Sprintf("j%d", step), "d", "q", int32(r.IntN(5)*10), int64(step), workers, int32(1+r.IntN(2)))
			if r.IntN(2) == 0 {
				j.MinWorkers, j.MaxWorkers = int32(1+r.IntN(int(workers))), workers+int32(r.IntN(3))
			}
			if never, _ := NeverFits(s.store.Snapshot(), j); len(never) > 0 {
				continue
			}
			if q, _ := ExceedsQuota(s.store.Snapshot(), j); len(q) > 0 {
				continue
			}
			s.submit(j)
			live = append(live, s.elasticPass(seed)...)
			s.checkElastic(seed, true)
			if r.IntN(4) == 0 && len(live) > 0 { // a job ends
				k := r.IntN(len(live))
				if v, _ := s.store.JobByID(nil, live[k]); v.State == cohortv1.JobState_JOB_STATE_RUNNING {
					s.finish(live[k])
					live = append(live, s.elasticPass(seed)...)
					s.checkElastic(seed, true)
				}
				live = slices.Delete(live, k, k+1)
			}
		}
	}
}

// elasticPass is the leader's scheduling pass (coordinator/server schedulePass): each
// decision is one PlanResult, re-checked (Recheck) and applied whole; it returns the
// jobs placed.
func (s *sim) elasticPass(seed uint64) (placed []string) {
	s.t.Helper()
	for {
		snap := s.store.Snapshot()
		pending, _ := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
		cl := NewCluster(snap)
		running, _ := RunningJobs(snap)
		preempted := false
		waiting := int32(-1)
		for _, j := range cl.Order(pending) {
			pr, err := cl.Schedule(j, func() ([]Running, error) { return running, nil })
			if err != nil {
				s.t.Fatal(err)
			}
			if !pr.Placement.Feasible() {
				waiting = max(waiting, j.Priority)
				continue
			}
			if pr.Preempts() {
				if len(pr.Evictions) > 0 && s.shrinkWouldDo(j, running) {
					s.t.Fatalf("seed %d: job %s evicted %v although shrinking elastic jobs would make room", seed, j.Id, pr.Evictions)
				}
				for _, rs := range pr.Shrinks {
					if rs.Generation != s.generation(rs.JobID) {
						s.t.Fatalf("seed %d: shrink planned at a stale generation", seed)
					}
				}
				preempted = true
			}
			s.apply(j, pr)
			running = append(running, Running{Job: j, Allocs: pr.Placement.Allocations})
			placed = append(placed, j.Id)
			if preempted {
				break
			}
		}
		if preempted {
			continue
		}
		// Growth, the highest priority first, into what the pass left free.
		snap = s.store.Snapshot()
		running, _ = RunningJobs(snap)
		slices.SortFunc(running, func(a, b Running) int { return int(b.Job.Priority - a.Job.Priority) })
		gcl := NewCluster(snap)
		for _, r := range running {
			if r.Job.Priority <= waiting {
				continue
			}
			if pr, ok := gcl.GrowPlan(r); ok {
				s.apply(r.Job, pr)
			}
		}
		return placed
	}
}

func (s *sim) generation(id string) uint64 {
	j, _ := s.store.JobByID(nil, id)
	return j.Generation
}

// shrinkWouldDo reports whether shrinking every lower-priority elastic job to its
// minimum would let job be placed (computed independently of PreemptElastic).
func (s *sim) shrinkWouldDo(job *cohortv1.Job, running []Running) bool {
	c := NewCluster(s.store.Snapshot())
	for _, r := range running {
		if r.Job.Priority >= job.Priority {
			continue
		}
		w := liveWorkerAllocs(r.Allocs)
		if spare := len(w) - int(max(minWorkers(r.Job), 1)); spare > 0 {
			c.release(Running{Job: r.Job, Allocs: w[len(w)-spare:]})
		}
	}
	return c.Place(job).Feasible()
}

// checkElastic is sim.check for elastic jobs: capacity and quotas, and every running
// job holds all its shards and workers.min..workers.max workers (exactly the worker
// count for a rigid job), as many as its record says are active; and no running job
// could still grow (with growth set, when no pending job waits).
func (s *sim) checkElastic(seed uint64, growth bool) {
	s.t.Helper()
	snap := s.store.Snapshot()
	nodes, _ := snap.Nodes(nil)
	for _, n := range nodes {
		allocs, _ := snap.AllocsByNode(nil, n.Id)
		var use resources
		for _, a := range allocs {
			if !taskTerminal(a.State) {
				use = use.add(toResources(a.Resources))
			}
		}
		if !toResources(n.Capacity).fits(use) {
			s.t.Fatalf("seed %d: node %s over-committed: capacity %+v, used %+v", seed, n.Id, toResources(n.Capacity), use)
		}
	}
	jobs, _ := snap.Jobs(nil)
	var nsUse resources
	for _, j := range jobs {
		allocs, _ := snap.AllocsByJob(nil, j.Id)
		workers, shards := int32(0), int32(0)
		for _, a := range allocs {
			if taskTerminal(a.State) {
				continue
			}
			nsUse = nsUse.add(toResources(a.Resources))
			if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER {
				workers++
			} else {
				shards++
			}
		}
		switch j.State {
		case cohortv1.JobState_JOB_STATE_RUNNING:
			if workers < minWorkers(j) || workers > maxWorkers(j) || workers != activeWorkers(j) || shards != j.ShardCount {
				s.t.Fatalf("seed %d: running job %s holds %d workers (min %d, max %d, active %d) and %d of %d shards",
					seed, j.Id, workers, minWorkers(j), maxWorkers(j), activeWorkers(j), shards, j.ShardCount)
			}
		case cohortv1.JobState_JOB_STATE_PENDING:
			if workers+shards != 0 {
				s.t.Fatalf("seed %d: pending job %s holds %d tasks", seed, j.Id, workers+shards)
			}
		}
	}
	quotas, _ := snap.Quotas(nil)
	for _, q := range quotas {
		if over := overQuota(nsUse, toResources(q.Limit)); over != "" {
			s.t.Fatalf("seed %d: namespace %s over its quota: %s", seed, q.Namespace, over)
		}
	}
	if pending, _ := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING); growth && len(pending) == 0 {
		running, _ := RunningJobs(snap)
		cl := NewCluster(snap)
		for _, r := range running {
			if rs, ok := cl.Grow(r); ok {
				s.t.Fatalf("seed %d: job %s could still grow by %d workers", seed, r.Job.Id, len(rs.Add))
			}
		}
	}
}

func mustJob(t *testing.T, s *sim, id string) *cohortv1.Job {
	t.Helper()
	j, err := s.store.JobByID(nil, id)
	if err != nil || j == nil {
		t.Fatalf("job %s: %v %v", id, j, err)
	}
	return j
}
