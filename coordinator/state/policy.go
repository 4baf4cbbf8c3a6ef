package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Table names of the scheduling policy.
const (
	// TableQuotas holds the per-namespace quotas, keyed by namespace.
	TableQuotas = "quotas"
	// TableQueues holds the queues' fair-share weights, keyed by name.
	TableQueues = "queues"
)

func policyTables() map[string]*memdb.TableSchema {
	return map[string]*memdb.TableSchema{
		TableQuotas: {
			Name: TableQuotas,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, func(obj any) (string, bool) {
					q, ok := obj.(*cohortv1.Quota)
					if !ok {
						return "", false
					}
					return q.GetNamespace(), true
				}),
			},
		},
		TableQueues: {
			Name: TableQueues,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, func(obj any) (string, bool) {
					q, ok := obj.(*cohortv1.Queue)
					if !ok {
						return "", false
					}
					return q.GetName(), true
				}),
			},
		},
	}
}

// Quotas returns every namespace quota, ordered by namespace.
func (s *Store) Quotas(ws memdb.WatchSet) ([]*cohortv1.Quota, error) { return s.reader().Quotas(ws) }

// QuotaByNamespace returns a namespace's quota, or nil.
func (s *Store) QuotaByNamespace(ws memdb.WatchSet, ns string) (*cohortv1.Quota, error) {
	return s.reader().QuotaByNamespace(ws, ns)
}

// Queues returns every queue record, ordered by name.
func (s *Store) Queues(ws memdb.WatchSet) ([]*cohortv1.Queue, error) { return s.reader().Queues(ws) }

// Quotas returns every namespace quota, ordered by namespace.
func (r Reader) Quotas(ws memdb.WatchSet) ([]*cohortv1.Quota, error) {
	return list[*cohortv1.Quota](r, ws, TableQuotas, "id")
}

// QuotaByNamespace returns a namespace's quota, or nil.
func (r Reader) QuotaByNamespace(ws memdb.WatchSet, ns string) (*cohortv1.Quota, error) {
	return first[*cohortv1.Quota](r, ws, TableQuotas, "id", ns)
}

// Queues returns every queue record, ordered by name.
func (r Reader) Queues(ws memdb.WatchSet) ([]*cohortv1.Queue, error) {
	return list[*cohortv1.Queue](r, ws, TableQueues, "id")
}

// QueueByName returns a queue record, or nil.
func (r Reader) QueueByName(ws memdb.WatchSet, name string) (*cohortv1.Queue, error) {
	return first[*cohortv1.Queue](r, ws, TableQueues, "id", name)
}

// UpsertQuota inserts or replaces a namespace's quota; the store takes ownership of it.
func (t *Txn) UpsertQuota(q *cohortv1.Quota) error {
	if q.GetNamespace() == "" {
		return fmt.Errorf("state: upsert quota: %w: empty namespace", ErrInvalidObject)
	}
	existing, err := t.QuotaByNamespace(nil, q.Namespace)
	if err != nil {
		return err
	}
	q.CreateIndex, q.ModifyIndex = t.index, t.index
	if existing != nil {
		q.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableQuotas, q); err != nil {
		return fmt.Errorf("state: upsert quota %q: %w", q.Namespace, err)
	}
	t.touched[TableQuotas] = true
	return nil
}

// DeleteQuota removes a namespace's quota; it reports whether one existed.
func (t *Txn) DeleteQuota(ns string) (bool, error) {
	n, err := t.txn.DeleteAll(TableQuotas, "id", ns)
	if err != nil {
		return false, fmt.Errorf("state: delete quota %q: %w", ns, err)
	}
	if n > 0 {
		t.touched[TableQuotas] = true
	}
	return n > 0, nil
}

// UpsertQueue inserts or replaces a queue record; the store takes ownership of it.
func (t *Txn) UpsertQueue(q *cohortv1.Queue) error {
	if q.GetName() == "" {
		return fmt.Errorf("state: upsert queue: %w: empty name", ErrInvalidObject)
	}
	existing, err := t.QueueByName(nil, q.Name)
	if err != nil {
		return err
	}
	q.CreateIndex, q.ModifyIndex = t.index, t.index
	if existing != nil {
		q.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableQueues, q); err != nil {
		return fmt.Errorf("state: upsert queue %q: %w", q.Name, err)
	}
	t.touched[TableQueues] = true
	return nil
}

// DeleteQueue removes a queue record; it reports whether one existed.
func (t *Txn) DeleteQueue(name string) (bool, error) {
	n, err := t.txn.DeleteAll(TableQueues, "id", name)
	if err != nil {
		return false, fmt.Errorf("state: delete queue %q: %w", name, err)
	}
	if n > 0 {
		t.touched[TableQueues] = true
	}
	return n > 0, nil
}

// RestoreQuota inserts a quota as it was persisted (snapshot restore).
func (t *Txn) RestoreQuota(q *cohortv1.Quota) error {
	if q.GetNamespace() == "" {
		return fmt.Errorf("state: restore quota: %w: empty namespace", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableQuotas, q); err != nil {
		return fmt.Errorf("state: restore quota %q: %w", q.Namespace, err)
	}
	return nil
}

// RestoreQueue inserts a queue record as it was persisted (snapshot restore).
func (t *Txn) RestoreQueue(q *cohortv1.Queue) error {
	if q.GetName() == "" {
		return fmt.Errorf("state: restore queue: %w: empty name", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableQueues, q); err != nil {
		return fmt.Errorf("state: restore queue %q: %w", q.Name, err)
	}
	return nil
}
