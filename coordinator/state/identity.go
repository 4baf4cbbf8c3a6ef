package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TableClusterIdentity holds the one cluster identity record (id "cluster"), recorded
// once by the first leader.
const TableClusterIdentity = "cluster_identity"

const clusterIdentityID = "cluster"

func clusterIdentityTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableClusterIdentity,
		Indexes: map[string]*memdb.IndexSchema{
			"id": index("id", true, false, func(obj any) (string, bool) {
				_, ok := obj.(*cohortv1.ClusterIdentity)
				return clusterIdentityID, ok
			}),
		},
	}
}

// ClusterIdentity returns the cluster identity, or nil before the first leader
// recorded it.
func (s *Store) ClusterIdentity(ws memdb.WatchSet) (*cohortv1.ClusterIdentity, error) {
	return s.reader().ClusterIdentity(ws)
}

// ClusterIdentity returns the cluster identity, or nil before the first leader
// recorded it.
func (r Reader) ClusterIdentity(ws memdb.WatchSet) (*cohortv1.ClusterIdentity, error) {
	return first[*cohortv1.ClusterIdentity](r, ws, TableClusterIdentity, "id", clusterIdentityID)
}

// ClusterID returns the cluster's ID, or "" before the first leader recorded it.
func (s *Store) ClusterID() string {
	id, err := s.ClusterIdentity(nil)
	if err != nil || id == nil {
		return ""
	}
	return id.GetId()
}

// SetClusterIdentity records the cluster identity; the store takes ownership of it.
func (t *Txn) SetClusterIdentity(c *cohortv1.ClusterIdentity) error {
	c.ModifyIndex = t.index
	if err := t.txn.Insert(TableClusterIdentity, c); err != nil {
		return fmt.Errorf("state: set cluster identity: %w", err)
	}
	t.touched[TableClusterIdentity] = true
	return nil
}

// RestoreClusterIdentity inserts the record as it was persisted (snapshot restore).
func (t *Txn) RestoreClusterIdentity(c *cohortv1.ClusterIdentity) error {
	if c.GetId() == "" {
		return fmt.Errorf("state: restore cluster identity: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableClusterIdentity, c); err != nil {
		return fmt.Errorf("state: restore cluster identity: %w", err)
	}
	return nil
}

// CheckClusterID checks the shape of a cluster ID: 1 to 64 characters of [A-Za-z0-9-].
func CheckClusterID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: cluster ID %q must have 1 to 64 characters", ErrInvalidObject, id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: cluster ID %q has a character other than letters, digits and '-'", ErrInvalidObject, id)
		}
	}
	return nil
}
