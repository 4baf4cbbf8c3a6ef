package state

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := NewStore()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, s *Store, index uint64, f func(*Txn) error) {
	t.Helper()
	txn := s.WriteTxn(index)
	if err := f(txn); err != nil {
		txn.Abort()
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
}

// fired reports whether ws fires within a short bound (it must fire promptly or not
// at all: the write happened before the call).
func fired(ws memdb.WatchSet) bool {
	return !ws.Watch(time.After(time.Second))
}

func TestStoreIndexesAndQueries(t *testing.T) {
	s := newStore(t)
	write(t, s, 3, func(txn *Txn) error {
		return errors.Join(
			txn.UpsertJob(&cohortv1.Job{Id: "a", IdempotencyKey: "ka", State: cohortv1.JobState_JOB_STATE_PENDING}),
			txn.UpsertJob(&cohortv1.Job{Id: "b", State: cohortv1.JobState_JOB_STATE_PENDING}),
			txn.UpsertJob(&cohortv1.Job{Id: "c", State: cohortv1.JobState_JOB_STATE_RUNNING}),
			txn.UpsertAlloc(&cohortv1.Allocation{Id: "c-w0", JobId: "c", NodeId: "n1"}),
			txn.UpsertNode(&cohortv1.Node{Id: "n1"}),
		)
	})
	write(t, s, 7, func(txn *Txn) error {
		return txn.UpsertJob(&cohortv1.Job{Id: "a", IdempotencyKey: "ka", State: cohortv1.JobState_JOB_STATE_RUNNING})
	})
	tests := []struct {
		name string
		got  func() (int, error)
		want int
	}{
		{"jobs", func() (int, error) { j, err := s.Jobs(nil); return len(j), err }, 3},
		{"pending", func() (int, error) {
			j, err := s.JobsByState(nil, cohortv1.JobState_JOB_STATE_PENDING)
			return len(j), err
		}, 1},
		{"running", func() (int, error) {
			j, err := s.JobsByState(nil, cohortv1.JobState_JOB_STATE_RUNNING)
			return len(j), err
		}, 2},
		{"allocs by job", func() (int, error) { a, err := s.AllocsByJob(nil, "c"); return len(a), err }, 1},
		{"allocs by node", func() (int, error) { a, err := s.AllocsByNode(nil, "n1"); return len(a), err }, 1},
		{"allocs by other node", func() (int, error) { a, err := s.AllocsByNode(nil, "n2"); return len(a), err }, 0},
		{"nodes", func() (int, error) { n, err := s.Nodes(nil); return len(n), err }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	a, _ := s.JobByIdempotencyKey(nil, "ka")
	if a.GetId() != "a" || a.CreateIndex != 3 || a.ModifyIndex != 7 {
		t.Fatalf("job a: %v", a)
	}
	if j, _ := s.JobByIdempotencyKey(nil, ""); j != nil {
		t.Fatalf("empty key matched %v", j)
	}
	if s.LatestIndex() != 7 {
		t.Fatalf("latest index %d", s.LatestIndex())
	}
}

func TestStoreRefusesObjectsWithoutID(t *testing.T) {
	s := newStore(t)
	txn := s.WriteTxn(1)
	defer txn.Abort()
	for name, err := range map[string]error{
		"job":   txn.UpsertJob(&cohortv1.Job{}),
		"alloc": txn.UpsertAlloc(&cohortv1.Allocation{Id: "x"}),
		"node":  txn.UpsertNode(&cohortv1.Node{}),
	} {
		if !errors.Is(err, ErrInvalidObject) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestWatchAndSnapshot(t *testing.T) {
	s := newStore(t)
	write(t, s, 1, func(txn *Txn) error { return txn.UpsertJob(&cohortv1.Job{Id: "a"}) })
	snap := s.Snapshot()

	jobWS := memdb.NewWatchSet()
	if _, err := s.JobByID(jobWS, "a"); err != nil {
		t.Fatal(err)
	}
	nodesWS := memdb.NewWatchSet()
	if err := snap.WatchTable(nodesWS, TableNodes); err != nil {
		t.Fatal(err)
	}

	write(t, s, 2, func(txn *Txn) error { return txn.UpsertJob(&cohortv1.Job{Id: "a", Name: "changed"}) })
	if !fired(jobWS) {
		t.Fatal("watch on job a did not fire")
	}
	if j, _ := snap.JobByID(nil, "a"); j.Name != "" {
		t.Fatal("snapshot saw a later write")
	}
	write(t, s, 3, func(txn *Txn) error { return txn.UpsertNode(&cohortv1.Node{Id: "n"}) })
	if !fired(nodesWS) {
		t.Fatal("table watch on nodes did not fire")
	}

	abandonWS := memdb.NewWatchSet()
	if _, err := s.Jobs(abandonWS); err != nil {
		t.Fatal(err)
	}
	s.Abandon()
	if !fired(abandonWS) {
		t.Fatal("abandon did not wake the watcher")
	}
}

func TestAbortDiscards(t *testing.T) {
	s := newStore(t)
	txn := s.WriteTxn(5)
	if err := txn.UpsertJob(&cohortv1.Job{Id: "a"}); err != nil {
		t.Fatal(err)
	}
	txn.Abort()
	if j, _ := s.JobByID(nil, "a"); j != nil || s.LatestIndex() != 0 {
		t.Fatalf("aborted write visible: %v, index %d", j, s.LatestIndex())
	}
}
