package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// sim is an in-memory cluster on the real state store: it runs scheduling passes the
// way the leader does (NewCluster, Order, Place, Fits, commit) without raft.
type sim struct {
	t     testing.TB
	store *state.Store
	index uint64
}

func newSim(t testing.TB) *sim {
	st, err := state.NewStore()
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, store: st}
}

func (s *sim) write(f func(txn *state.Txn) error) {
	s.t.Helper()
	s.index++
	txn := s.store.WriteTxn(s.index)
	if err := f(txn); err != nil {
		txn.Abort()
		s.t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sim) addNode(n *cohortv1.Node) {
	s.write(func(txn *state.Txn) error { return txn.UpsertNode(n) })
}

func (s *sim) setQuota(ns string, limit *cohortv1.Resources) {
	s.write(func(txn *state.Txn) error { return txn.UpsertQuota(&cohortv1.Quota{Namespace: ns, Limit: limit}) })
}

func (s *sim) setQueue(name string, weight int32) {
	s.write(func(txn *state.Txn) error { return txn.UpsertQueue(&cohortv1.Queue{Name: name, Weight: weight}) })
}

func (s *sim) submit(j *cohortv1.Job) {
	j = proto.Clone(j).(*cohortv1.Job)
	j.State = cohortv1.JobState_JOB_STATE_PENDING
	s.write(func(txn *state.Txn) error { return txn.UpsertJob(j) })
}

// finish ends a running job and stops its allocations.
func (s *sim) finish(id string) {
	s.write(func(txn *state.Txn) error {
		j, err := txn.JobByID(nil, id)
		if err != nil || j == nil {
			return fmt.Errorf("finish %s: %v", id, err)
		}
		j = proto.Clone(j).(*cohortv1.Job)
		j.State = cohortv1.JobState_JOB_STATE_SUCCEEDED
		if err := txn.UpsertJob(j); err != nil {
			return err
		}
		allocs, err := txn.AllocsByJob(nil, id)
		if err != nil {
			return err
		}
		for _, a := range allocs {
			a = proto.Clone(a).(*cohortv1.Allocation)
			a.State = cohortv1.TaskState_TASK_STATE_SUCCEEDED
			if err := txn.UpsertAlloc(a); err != nil {
				return err
			}
		}
		return nil
	})
}

// pass runs one scheduling pass and returns the IDs of the jobs it placed, in order.
func (s *sim) pass() []string {
	s.t.Helper()
	snap := s.store.Snapshot()
	pending, err := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
	if err != nil {
		s.t.Fatal(err)
	}
	cl := NewCluster(snap)
	var placed []string
	for _, j := range cl.Order(pending) {
		p := cl.Place(j)
		if !p.Feasible() {
			continue
		}
		if err := Fits(s.store.Snapshot(), p); err != nil {
			s.t.Fatalf("plan applier rejected a plan made on the newest state: %v", err)
		}
		s.write(func(txn *state.Txn) error {
			r := proto.Clone(j).(*cohortv1.Job)
			r.State = cohortv1.JobState_JOB_STATE_RUNNING
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
		placed = append(placed, j.Id)
	}
	return placed
}

// check asserts the invariants: no node over-committed, every running job holds its
// whole gang, no pending job holds a task, and no namespace over its quota.
func (s *sim) check() {
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
			s.t.Fatalf("node %s over-committed: capacity %+v, used %+v", n.Id, toResources(n.Capacity), use)
		}
	}
	jobs, _ := snap.Jobs(nil)
	nsUse := map[string]resources{}
	for _, j := range jobs {
		allocs, _ := snap.AllocsByJob(nil, j.Id)
		live := 0
		var use resources
		for _, a := range allocs {
			if !taskTerminal(a.State) {
				live++
				use = use.add(toResources(a.Resources))
			}
		}
		switch j.State {
		case cohortv1.JobState_JOB_STATE_RUNNING:
			if live != int(j.WorkerCount+j.ShardCount) {
				s.t.Fatalf("running job %s holds %d of its %d tasks", j.Id, live, j.WorkerCount+j.ShardCount)
			}
		case cohortv1.JobState_JOB_STATE_PENDING:
			if live != 0 {
				s.t.Fatalf("pending job %s holds %d tasks", j.Id, live)
			}
		}
		nsUse[namespaceOf(j)] = nsUse[namespaceOf(j)].add(use)
	}
	quotas, _ := snap.Quotas(nil)
	for _, q := range quotas {
		if over := overQuota(nsUse[q.Namespace], toResources(q.Limit)); over != "" {
			s.t.Fatalf("namespace %s over its quota: %s", q.Namespace, over)
		}
	}
}

// checkWorkConserving asserts that after a pass no pending job could be placed now: a
// pass never leaves a job waiting that fits.
func (s *sim) checkWorkConserving() {
	s.t.Helper()
	snap := s.store.Snapshot()
	pending, _ := snap.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
	cl := NewCluster(snap) // an infeasible Place reserves nothing, so one view serves all
	for _, j := range pending {
		if p := cl.Place(j); p.Feasible() {
			s.t.Fatalf("job %s waits although it fits now", j.Id)
		}
	}
}

func simJob(id, ns, queue string, prio int32, submit int64, workers, gpus int32) *cohortv1.Job {
	return &cohortv1.Job{Id: id, Namespace: ns, Queue: queue, Priority: prio, SubmitTimeUnixNano: submit,
		WorkerCount: workers, WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: gib, Gpus: gpus}}
}

func TestQuota(t *testing.T) {
	s := newSim(t)
	s.addNode(gpuNode("g1", 8, "H100", nil))
	s.addNode(gpuNode("g2", 8, "H100", nil))
	s.setQuota("team-a", &cohortv1.Resources{Gpus: 4})
	s.submit(simJob("a1", "team-a", "default", 0, 1, 1, 3))
	s.submit(simJob("a2", "team-a", "default", 0, 2, 1, 2)) // 3 + 2 > 4
	s.submit(simJob("a3", "team-a", "default", 0, 3, 1, 1)) // 3 + 1 fits
	s.submit(simJob("b1", "team-b", "default", 0, 4, 2, 4)) // no quota
	got := s.pass()
	if fmt.Sprint(got) != "[a1 a3 b1]" {
		t.Fatalf("placed %v, want [a1 a3 b1]", got)
	}
	s.check()
	cl := NewCluster(s.store.Snapshot())
	j, _ := s.store.JobByID(nil, "a2")
	p := cl.Place(j)
	want := `namespace "team-a" quota exceeded: cpu 2000m, memory 2.0GiB, gpus 4 in use + (cpu 1000m, memory 1.0GiB, gpus 2) requested: gpus 6 > 4`
	if p.Feasible() || len(p.Reasons) != 1 || p.Reasons[0] != want {
		t.Fatalf("reasons %q\nwant %q", p.Reasons, want)
	}
	// The job alone over its quota is refused at submit.
	big := simJob("a4", "team-a", "default", 0, 5, 5, 1)
	if r, _ := ExceedsQuota(s.store.Snapshot(), big); len(r) != 1 || r[0] != `namespace "team-a" quota: the job alone needs (cpu 5000m, memory 5.0GiB, gpus 5): gpus 5 > 4` {
		t.Fatalf("ExceedsQuota = %q", r)
	}
	// Capacity freed in the namespace lets the waiting job in.
	s.finish("a1")
	if got := s.pass(); fmt.Sprint(got) != "[a2]" {
		t.Fatalf("after a1 finished placed %v, want [a2]", got)
	}
	s.check()
}

func TestOrder(t *testing.T) {
	t.Run("priority then FIFO inside a queue", func(t *testing.T) {
		cl := NewCluster(&harness{})
		jobs := []*cohortv1.Job{
			simJob("old-low", "d", "q", 10, 1, 1, 0), simJob("new-high", "d", "q", 90, 5, 1, 0),
			simJob("old-high", "d", "q", 90, 2, 1, 0), simJob("mid", "d", "q", 50, 0, 1, 0),
		}
		if got := ids(cl.Order(jobs)); got != "[old-high new-high mid old-low]" {
			t.Fatalf("order %s", got)
		}
	})
	t.Run("weighted fair share between queues", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.setQueue("a", 3)
		var jobs []*cohortv1.Job
		for i := range 8 {
			jobs = append(jobs, simJob(fmt.Sprintf("a%d", i), "d", "a", 0, int64(i), 1, 1),
				simJob(fmt.Sprintf("b%d", i), "d", "b", 100, int64(i), 1, 1))
		}
		order := NewCluster(s.store.Snapshot()).Order(jobs)
		if got := ids(order[:8]); got != "[a0 b0 a1 a2 a3 b1 a4 a5]" {
			t.Fatalf("first 8 of the order %s, want queue a (weight 3) to get 3 of every 4", got)
		}
	})
	t.Run("what a queue already runs counts", func(t *testing.T) {
		s := newSim(t)
		s.addNode(gpuNode("g1", 8, "H100", nil))
		s.submit(simJob("r", "d", "a", 0, 0, 1, 4))
		s.pass()
		order := NewCluster(s.store.Snapshot()).Order([]*cohortv1.Job{simJob("a1", "d", "a", 0, 1, 1, 1), simJob("b1", "d", "b", 0, 2, 1, 1)})
		if got := ids(order); got != "[b1 a1]" {
			t.Fatalf("order %s", got)
		}
	})
}

func ids(js []*cohortv1.Job) string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.Id
	}
	return fmt.Sprint(out)
}

// TestReplayDay replays a day of synthetic submissions, one scheduling pass a minute,
// on a 40-node cluster with quotas and weighted queues, and checks the invariants
// after every pass.
func TestReplayDay(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 11))
	s := newSim(t)
	for i := range 40 {
		n := gpuNode(fmt.Sprintf("n%02d", i), []int32{0, 4, 8}[i%3], "H100", map[string]string{"zone": []string{"a", "b"}[i%2]})
		if i%5 == 0 {
			n.Roles = append(n.Roles, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER)
		}
		s.addNode(n)
	}
	s.setQuota("team-a", &cohortv1.Resources{Gpus: 40})
	s.setQuota("team-b", &cohortv1.Resources{Gpus: 24, CpuMillis: 200_000})
	s.setQueue("research", 3)
	type running struct {
		id  string
		end int
	}
	var live []running
	submitted, placed := 0, 0
	for minute := range 24 * 60 {
		for range r.IntN(2) { // ~1 submission every two minutes
			j := simJob(fmt.Sprintf("j%05d", submitted), []string{"team-a", "team-b", "team-c"}[r.IntN(3)],
				[]string{"research", "prod"}[r.IntN(2)], int32(r.IntN(4)*100), int64(minute), int32(1+r.IntN(8)), int32(r.IntN(3)))
			j.ShardCount = int32(r.IntN(3))
			j.ShardResources = &cohortv1.Resources{CpuMillis: 500, MemoryBytes: gib}
			if r.IntN(5) == 0 {
				j.NodeSelector = map[string]string{"zone": "a"}
			}
			if never, _ := NeverFits(s.store.Snapshot(), j); len(never) > 0 {
				continue // refused at submit
			}
			if q, _ := ExceedsQuota(s.store.Snapshot(), j); len(q) > 0 {
				continue
			}
			s.submit(j)
			submitted++
		}
		for _, id := range s.pass() {
			live = append(live, running{id, minute + 10 + r.IntN(120)})
			placed++
		}
		s.check()
		s.checkWorkConserving()
		kept := live[:0]
		for _, l := range live {
			if l.end <= minute {
				s.finish(l.id)
			} else {
				kept = append(kept, l)
			}
		}
		live = kept
	}
	t.Logf("day replayed: %d jobs submitted, %d placed", submitted, placed)
	if placed < submitted*7/10 {
		t.Fatalf("only %d of %d jobs placed in a day", placed, submitted)
	}
}
