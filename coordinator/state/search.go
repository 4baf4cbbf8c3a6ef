package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TableSearches holds the hyperparameter searches, keyed by ID.
const TableSearches = "searches"

func searchTables() map[string]*memdb.TableSchema {
	field := func(f func(*cohortv1.Search) string) func(any) (string, bool) {
		return func(obj any) (string, bool) {
			s, ok := obj.(*cohortv1.Search)
			if !ok {
				return "", false
			}
			return f(s), true
		}
	}
	return map[string]*memdb.TableSchema{
		TableSearches: {
			Name: TableSearches,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, field(func(s *cohortv1.Search) string { return s.GetId() })),
				"idempotency_key": index("idempotency_key", true, true,
					field(func(s *cohortv1.Search) string { return s.GetIdempotencyKey() })),
			},
		},
	}
}

// Searches returns every search, ordered by ID.
func (s *Store) Searches(ws memdb.WatchSet) ([]*cohortv1.Search, error) {
	return s.reader().Searches(ws)
}

// SearchByID returns a search, or nil.
func (s *Store) SearchByID(ws memdb.WatchSet, id string) (*cohortv1.Search, error) {
	return s.reader().SearchByID(ws, id)
}

// Searches returns every search, ordered by ID.
func (r Reader) Searches(ws memdb.WatchSet) ([]*cohortv1.Search, error) {
	return list[*cohortv1.Search](r, ws, TableSearches, "id")
}

// SearchByID returns a search, or nil.
func (r Reader) SearchByID(ws memdb.WatchSet, id string) (*cohortv1.Search, error) {
	return first[*cohortv1.Search](r, ws, TableSearches, "id", id)
}

// SearchByIdempotencyKey returns the search submitted with key, or nil ("" finds none).
func (r Reader) SearchByIdempotencyKey(ws memdb.WatchSet, key string) (*cohortv1.Search, error) {
	if key == "" {
		return nil, nil
	}
	return first[*cohortv1.Search](r, ws, TableSearches, "idempotency_key", key)
}

// UpsertSearch inserts or replaces a search; the store takes ownership of it.
func (t *Txn) UpsertSearch(s *cohortv1.Search) error {
	if s.GetId() == "" {
		return fmt.Errorf("state: upsert search: %w: empty id", ErrInvalidObject)
	}
	existing, err := t.SearchByID(nil, s.Id)
	if err != nil {
		return err
	}
	s.CreateIndex, s.ModifyIndex = t.index, t.index
	if existing != nil {
		s.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableSearches, s); err != nil {
		return fmt.Errorf("state: upsert search %q: %w", s.Id, err)
	}
	t.touched[TableSearches] = true
	return nil
}

// RestoreSearch inserts a search as it was persisted (snapshot restore).
func (t *Txn) RestoreSearch(s *cohortv1.Search) error {
	if s.GetId() == "" {
		return fmt.Errorf("state: restore search: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableSearches, s); err != nil {
		return fmt.Errorf("state: restore search %q: %w", s.Id, err)
	}
	return nil
}
