// Package state is the coordinator's state store: an in-memory go-memdb database of
// jobs, allocations and nodes that the FSM writes at Raft indexes and every other part
// of the coordinator reads.
//
// Stored objects are *cohortv1 protos treated as immutable: a reader must never modify
// an object it got from the store (proto.Clone it first), and a writer hands the store
// ownership of the object it upserts.
package state

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrInvalidObject is returned by writes of an object that cannot be stored (for
// example, one without an ID).
var ErrInvalidObject = errors.New("invalid object")

// Store is the state store. It is safe for concurrent use: one writer (the FSM) at a
// time, any number of readers.
type Store struct {
	db *memdb.MemDB

	abandonOnce sync.Once
	abandonCh   chan struct{}
}

// NewStore returns an empty state store.
func NewStore() (*Store, error) {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, fmt.Errorf("state: create memdb: %w", err)
	}
	return &Store{db: db, abandonCh: make(chan struct{})}, nil
}

// Abandon marks the store as replaced (by a snapshot restore): AbandonCh is closed, so
// blocking queries against this store wake up and re-read from the new one.
func (s *Store) Abandon() {
	s.abandonOnce.Do(func() { close(s.abandonCh) })
}

// AbandonCh is closed when the store has been replaced. Every read that takes a non-nil
// WatchSet adds it, so watchers never block forever on an abandoned store.
func (s *Store) AbandonCh() <-chan struct{} { return s.abandonCh }

// Snapshot returns an immutable point-in-time view of the store. It is cheap: it shares
// the current radix trees and copies nothing.
func (s *Store) Snapshot() *StateSnapshot {
	return &StateSnapshot{Reader: Reader{txn: s.db.Snapshot().Txn(false), abandonCh: s.abandonCh}}
}

func (s *Store) reader() Reader {
	return Reader{txn: s.db.Txn(false), abandonCh: s.abandonCh}
}

// LatestIndex returns the Raft index of the newest write to the store.
func (s *Store) LatestIndex() uint64 { return s.reader().LatestIndex() }

// JobByID returns the job with the given ID, or nil.
func (s *Store) JobByID(ws memdb.WatchSet, id string) (*cohortv1.Job, error) {
	return s.reader().JobByID(ws, id)
}

// JobByIdempotencyKey returns the job submitted with the given idempotency key, or nil.
func (s *Store) JobByIdempotencyKey(ws memdb.WatchSet, key string) (*cohortv1.Job, error) {
	return s.reader().JobByIdempotencyKey(ws, key)
}

// Jobs returns every job, ordered by ID.
func (s *Store) Jobs(ws memdb.WatchSet) ([]*cohortv1.Job, error) { return s.reader().Jobs(ws) }

// JobsByState returns the jobs in the given state, ordered by ID.
func (s *Store) JobsByState(ws memdb.WatchSet, st cohortv1.JobState) ([]*cohortv1.Job, error) {
	return s.reader().JobsByState(ws, st)
}

// AllocByID returns the allocation with the given ID, or nil.
func (s *Store) AllocByID(ws memdb.WatchSet, id string) (*cohortv1.Allocation, error) {
	return s.reader().AllocByID(ws, id)
}

// Allocs returns every allocation, ordered by ID.
func (s *Store) Allocs(ws memdb.WatchSet) ([]*cohortv1.Allocation, error) {
	return s.reader().Allocs(ws)
}

// AllocsByJob returns the allocations of a job, ordered by ID.
func (s *Store) AllocsByJob(ws memdb.WatchSet, jobID string) ([]*cohortv1.Allocation, error) {
	return s.reader().AllocsByJob(ws, jobID)
}

// AllocsByNode returns the allocations placed on a node, ordered by ID.
func (s *Store) AllocsByNode(ws memdb.WatchSet, nodeID string) ([]*cohortv1.Allocation, error) {
	return s.reader().AllocsByNode(ws, nodeID)
}

// Nodes returns every node, ordered by ID.
func (s *Store) Nodes(ws memdb.WatchSet) ([]*cohortv1.Node, error) { return s.reader().Nodes(ws) }

// NodeByID returns the node with the given ID, or nil.
func (s *Store) NodeByID(ws memdb.WatchSet, id string) (*cohortv1.Node, error) {
	return s.reader().NodeByID(ws, id)
}

// Coordinators returns every registered coordinator, ordered by ID.
func (s *Store) Coordinators(ws memdb.WatchSet) ([]*cohortv1.Coordinator, error) {
	return s.reader().Coordinators(ws)
}

// CoordinatorByID returns the coordinator with the given Raft server ID, or nil.
func (s *Store) CoordinatorByID(ws memdb.WatchSet, id string) (*cohortv1.Coordinator, error) {
	return s.reader().CoordinatorByID(ws, id)
}

// WriteTxn starts the one write transaction of a Raft entry at index. Every object it
// writes gets modify_index = index (and create_index = index when new). The caller must
// Commit or Abort it; writes are visible to readers only after Commit.
func (s *Store) WriteTxn(index uint64) *Txn {
	txn := s.db.Txn(true)
	return &Txn{Reader: Reader{txn: txn}, index: index, touched: map[string]bool{}}
}

// StateSnapshot is an immutable, point-in-time read view of the store.
type StateSnapshot struct {
	Reader
}

// Reader holds the read queries shared by Store, StateSnapshot and Txn.
type Reader struct {
	txn       *memdb.Txn
	abandonCh <-chan struct{}
}

func (r Reader) watch(ws memdb.WatchSet, ch <-chan struct{}) {
	if ws == nil {
		return
	}
	ws.Add(ch)
	if r.abandonCh != nil {
		ws.Add(r.abandonCh)
	}
}

// LatestIndex returns the Raft index of the newest write in this view.
func (r Reader) LatestIndex() uint64 {
	it, err := r.txn.Get(TableIndex, "id")
	if err != nil {
		return 0
	}
	var max uint64
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if e := raw.(*indexEntry); e.Index > max {
			max = e.Index
		}
	}
	return max
}

// TableIndexes returns, per table, the Raft index of its newest write.
func (r Reader) TableIndexes() (map[string]uint64, error) {
	it, err := r.txn.Get(TableIndex, "id")
	if err != nil {
		return nil, fmt.Errorf("state: read index table: %w", err)
	}
	out := map[string]uint64{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := raw.(*indexEntry)
		out[e.Table] = e.Index
	}
	return out, nil
}

func first[T any](r Reader, ws memdb.WatchSet, table, index string, arg string) (T, error) {
	var zero T
	ch, raw, err := r.txn.FirstWatch(table, index, arg)
	if err != nil {
		return zero, fmt.Errorf("state: %s by %s: %w", table, index, err)
	}
	r.watch(ws, ch)
	if raw == nil {
		return zero, nil
	}
	return raw.(T), nil
}

func list[T any](r Reader, ws memdb.WatchSet, table, index string, args ...any) ([]T, error) {
	it, err := r.txn.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list %s by %s: %w", table, index, err)
	}
	r.watch(ws, it.WatchCh())
	var out []T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(T))
	}
	return out, nil
}

// WatchTable adds to ws a channel that fires on the next write to table (one of
// TableJobs, TableAllocations, TableNodes); cheaper than listing the table.
func (r Reader) WatchTable(ws memdb.WatchSet, table string) error {
	ch, _, err := r.txn.FirstWatch(TableIndex, "id", table)
	if err != nil {
		return fmt.Errorf("state: watch %s: %w", table, err)
	}
	r.watch(ws, ch)
	return nil
}

// JobByID returns the job with the given ID, or nil.
func (r Reader) JobByID(ws memdb.WatchSet, id string) (*cohortv1.Job, error) {
	return first[*cohortv1.Job](r, ws, TableJobs, "id", id)
}

// JobByIdempotencyKey returns the job submitted with the given idempotency key, or nil.
// The empty key matches nothing.
func (r Reader) JobByIdempotencyKey(ws memdb.WatchSet, key string) (*cohortv1.Job, error) {
	if key == "" {
		return nil, nil
	}
	return first[*cohortv1.Job](r, ws, TableJobs, "idempotency_key", key)
}

// Jobs returns every job, ordered by ID.
func (r Reader) Jobs(ws memdb.WatchSet) ([]*cohortv1.Job, error) {
	return list[*cohortv1.Job](r, ws, TableJobs, "id")
}

// JobsByState returns the jobs in the given state, ordered by ID.
func (r Reader) JobsByState(ws memdb.WatchSet, st cohortv1.JobState) ([]*cohortv1.Job, error) {
	return list[*cohortv1.Job](r, ws, TableJobs, "state", st.String())
}

// AllocByID returns the allocation with the given ID, or nil.
func (r Reader) AllocByID(ws memdb.WatchSet, id string) (*cohortv1.Allocation, error) {
	return first[*cohortv1.Allocation](r, ws, TableAllocations, "id", id)
}

// Allocs returns every allocation, ordered by ID.
func (r Reader) Allocs(ws memdb.WatchSet) ([]*cohortv1.Allocation, error) {
	return list[*cohortv1.Allocation](r, ws, TableAllocations, "id")
}

// AllocsByJob returns the allocations of a job, ordered by ID.
func (r Reader) AllocsByJob(ws memdb.WatchSet, jobID string) ([]*cohortv1.Allocation, error) {
	return list[*cohortv1.Allocation](r, ws, TableAllocations, "job_id", jobID)
}

// AllocsByNode returns the allocations placed on a node, ordered by ID.
func (r Reader) AllocsByNode(ws memdb.WatchSet, nodeID string) ([]*cohortv1.Allocation, error) {
	return list[*cohortv1.Allocation](r, ws, TableAllocations, "node_id", nodeID)
}

// Nodes returns every node, ordered by ID.
func (r Reader) Nodes(ws memdb.WatchSet) ([]*cohortv1.Node, error) {
	return list[*cohortv1.Node](r, ws, TableNodes, "id")
}

// NodeByID returns the node with the given ID, or nil.
func (r Reader) NodeByID(ws memdb.WatchSet, id string) (*cohortv1.Node, error) {
	return first[*cohortv1.Node](r, ws, TableNodes, "id", id)
}

// Coordinators returns every registered coordinator, ordered by ID.
func (r Reader) Coordinators(ws memdb.WatchSet) ([]*cohortv1.Coordinator, error) {
	return list[*cohortv1.Coordinator](r, ws, TableCoordinators, "id")
}

// CoordinatorByID returns the coordinator with the given Raft server ID, or nil.
func (r Reader) CoordinatorByID(ws memdb.WatchSet, id string) (*cohortv1.Coordinator, error) {
	return first[*cohortv1.Coordinator](r, ws, TableCoordinators, "id", id)
}

// Txn is a write transaction at one Raft index. Its reads see its own writes.
type Txn struct {
	Reader
	index   uint64
	touched map[string]bool
	done    bool
}

// Index returns the Raft index the transaction writes at.
func (t *Txn) Index() uint64 { return t.index }

// UpsertJob inserts or replaces a job. The store takes ownership of job: the caller must
// not modify it afterwards (clone a stored job before changing it).
func (t *Txn) UpsertJob(job *cohortv1.Job) error {
	if job.GetId() == "" {
		return fmt.Errorf("state: upsert job: %w: empty id", ErrInvalidObject)
	}
	existing, err := t.JobByID(nil, job.Id)
	if err != nil {
		return err
	}
	job.CreateIndex, job.ModifyIndex = t.index, t.index
	if existing != nil {
		job.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableJobs, job); err != nil {
		return fmt.Errorf("state: upsert job %q: %w", job.Id, err)
	}
	t.touched[TableJobs] = true
	return nil
}

// UpsertAlloc inserts or replaces an allocation; the store takes ownership of it.
func (t *Txn) UpsertAlloc(alloc *cohortv1.Allocation) error {
	if alloc.GetId() == "" || alloc.GetJobId() == "" {
		return fmt.Errorf("state: upsert allocation: %w: empty id or job id", ErrInvalidObject)
	}
	existing, err := t.AllocByID(nil, alloc.Id)
	if err != nil {
		return err
	}
	alloc.CreateIndex, alloc.ModifyIndex = t.index, t.index
	if existing != nil {
		alloc.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableAllocations, alloc); err != nil {
		return fmt.Errorf("state: upsert allocation %q: %w", alloc.Id, err)
	}
	t.touched[TableAllocations] = true
	return nil
}

// UpsertNode inserts or replaces a node; the store takes ownership of it.
func (t *Txn) UpsertNode(node *cohortv1.Node) error {
	if node.GetId() == "" {
		return fmt.Errorf("state: upsert node: %w: empty id", ErrInvalidObject)
	}
	existing, err := t.NodeByID(nil, node.Id)
	if err != nil {
		return err
	}
	node.CreateIndex, node.ModifyIndex = t.index, t.index
	if existing != nil {
		node.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableNodes, node); err != nil {
		return fmt.Errorf("state: upsert node %q: %w", node.Id, err)
	}
	t.touched[TableNodes] = true
	return nil
}

// UpsertCoordinator inserts or replaces a coordinator record; the store takes ownership
// of it.
func (t *Txn) UpsertCoordinator(c *cohortv1.Coordinator) error {
	if c.GetId() == "" {
		return fmt.Errorf("state: upsert coordinator: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableCoordinators, c); err != nil {
		return fmt.Errorf("state: upsert coordinator %q: %w", c.Id, err)
	}
	t.touched[TableCoordinators] = true
	return nil
}

// ReplaceCoordinators replaces every coordinator record with cs; the store takes
// ownership of them.
func (t *Txn) ReplaceCoordinators(cs []*cohortv1.Coordinator) error {
	if _, err := t.txn.DeleteAll(TableCoordinators, "id"); err != nil {
		return fmt.Errorf("state: delete coordinators: %w", err)
	}
	t.touched[TableCoordinators] = true
	for _, c := range cs {
		if err := t.UpsertCoordinator(c); err != nil {
			return err
		}
	}
	return nil
}

// RestoreCoordinator inserts a coordinator record as it was persisted.
func (t *Txn) RestoreCoordinator(c *cohortv1.Coordinator) error {
	if c.GetId() == "" {
		return fmt.Errorf("state: restore coordinator: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableCoordinators, c); err != nil {
		return fmt.Errorf("state: restore coordinator %q: %w", c.Id, err)
	}
	return nil
}

// RestoreJob inserts a job as it was persisted, keeping its indexes (snapshot restore).
func (t *Txn) RestoreJob(job *cohortv1.Job) error {
	if job.GetId() == "" {
		return fmt.Errorf("state: restore job: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableJobs, job); err != nil {
		return fmt.Errorf("state: restore job %q: %w", job.Id, err)
	}
	return nil
}

// RestoreAlloc inserts an allocation as it was persisted, keeping its indexes.
func (t *Txn) RestoreAlloc(alloc *cohortv1.Allocation) error {
	if alloc.GetId() == "" || alloc.GetJobId() == "" {
		return fmt.Errorf("state: restore allocation: %w: empty id or job id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableAllocations, alloc); err != nil {
		return fmt.Errorf("state: restore allocation %q: %w", alloc.Id, err)
	}
	return nil
}

// RestoreNode inserts a node as it was persisted, keeping its indexes.
func (t *Txn) RestoreNode(node *cohortv1.Node) error {
	if node.GetId() == "" {
		return fmt.Errorf("state: restore node: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableNodes, node); err != nil {
		return fmt.Errorf("state: restore node %q: %w", node.Id, err)
	}
	return nil
}

// RestoreTableIndex records the newest write index of a table (snapshot restore).
func (t *Txn) RestoreTableIndex(table string, index uint64) error {
	switch table {
	case TableJobs, TableAllocations, TableNodes, TableCoordinators, TableQuotas, TableQueues, TableSearches, TableTokens, TableGossipKeyring, TableClusterCA, TableClusterIdentity:
	default:
		return fmt.Errorf("state: restore index: %w: unknown table %q", ErrInvalidObject, table)
	}
	if err := t.txn.Insert(TableIndex, &indexEntry{Table: table, Index: index}); err != nil {
		return fmt.Errorf("state: restore index of %s: %w", table, err)
	}
	return nil
}

// Commit records the transaction's index for every table it wrote and makes its writes
// visible. A transaction that wrote nothing leaves the indexes alone.
func (t *Txn) Commit() error {
	if t.done {
		return nil
	}
	for table := range t.touched {
		if err := t.txn.Insert(TableIndex, &indexEntry{Table: table, Index: t.index}); err != nil {
			t.Abort()
			return fmt.Errorf("state: update index of %s: %w", table, err)
		}
	}
	t.done = true
	t.txn.Commit()
	return nil
}

// Abort discards the transaction's writes. It is a no-op after Commit.
func (t *Txn) Abort() {
	if t.done {
		return
	}
	t.done = true
	t.txn.Abort()
}

// JobTerminal reports whether a job state never changes again.
func JobTerminal(s cohortv1.JobState) bool {
	switch s {
	case cohortv1.JobState_JOB_STATE_SUCCEEDED, cohortv1.JobState_JOB_STATE_FAILED,
		cohortv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// TaskTerminal reports whether an allocation state never changes again.
func TaskTerminal(s cohortv1.TaskState) bool {
	switch s {
	case cohortv1.TaskState_TASK_STATE_SUCCEEDED, cohortv1.TaskState_TASK_STATE_FAILED,
		cohortv1.TaskState_TASK_STATE_STOPPED:
		return true
	}
	return false
}
