package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TableTokens holds the join-token records, keyed by token id. A record keeps only the
// SHA-256 of the token's secret.
const TableTokens = "tokens"

func tokenTables() map[string]*memdb.TableSchema {
	return map[string]*memdb.TableSchema{
		TableTokens: {
			Name: TableTokens,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, func(obj any) (string, bool) {
					t, ok := obj.(*cohortv1.JoinToken)
					if !ok {
						return "", false
					}
					return t.GetId(), true
				}),
			},
		},
		TableGossipKeyring:   gossipKeyringTable(),
		TableClusterCA:       clusterCATable(),
		TableClusterIdentity: clusterIdentityTable(),
	}
}

// Tokens returns every join-token record, ordered by id.
func (s *Store) Tokens(ws memdb.WatchSet) ([]*cohortv1.JoinToken, error) {
	return s.reader().Tokens(ws)
}

// TokenByID returns a join-token record, or nil.
func (s *Store) TokenByID(ws memdb.WatchSet, id string) (*cohortv1.JoinToken, error) {
	return s.reader().TokenByID(ws, id)
}

// Tokens returns every join-token record, ordered by id.
func (r Reader) Tokens(ws memdb.WatchSet) ([]*cohortv1.JoinToken, error) {
	return list[*cohortv1.JoinToken](r, ws, TableTokens, "id")
}

// TokenByID returns a join-token record, or nil.
func (r Reader) TokenByID(ws memdb.WatchSet, id string) (*cohortv1.JoinToken, error) {
	return first[*cohortv1.JoinToken](r, ws, TableTokens, "id", id)
}

// UpsertToken inserts or replaces a join-token record; the store takes ownership of it.
func (t *Txn) UpsertToken(tok *cohortv1.JoinToken) error {
	if tok.GetId() == "" {
		return fmt.Errorf("state: upsert token: %w: empty id", ErrInvalidObject)
	}
	existing, err := t.TokenByID(nil, tok.Id)
	if err != nil {
		return err
	}
	tok.CreateIndex, tok.ModifyIndex = t.index, t.index
	if existing != nil {
		tok.CreateIndex = existing.CreateIndex
	}
	if err := t.txn.Insert(TableTokens, tok); err != nil {
		return fmt.Errorf("state: upsert token %q: %w", tok.Id, err)
	}
	t.touched[TableTokens] = true
	return nil
}

// RestoreToken inserts a join-token record as it was persisted (snapshot restore).
func (t *Txn) RestoreToken(tok *cohortv1.JoinToken) error {
	if tok.GetId() == "" {
		return fmt.Errorf("state: restore token: %w: empty id", ErrInvalidObject)
	}
	if err := t.txn.Insert(TableTokens, tok); err != nil {
		return fmt.Errorf("state: restore token %q: %w", tok.Id, err)
	}
	return nil
}

// TableGossipKeyring holds the one sealed gossip keyring (id "keyring").
const TableGossipKeyring = "gossip_keyring"

const gossipKeyringID = "keyring"

func gossipKeyringTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableGossipKeyring,
		Indexes: map[string]*memdb.IndexSchema{
			"id": index("id", true, false, func(obj any) (string, bool) {
				_, ok := obj.(*cohortv1.GossipKeyring)
				return gossipKeyringID, ok
			}),
		},
	}
}

// GossipKeyring returns the sealed gossip keyring, or nil when none was set.
func (s *Store) GossipKeyring(ws memdb.WatchSet) (*cohortv1.GossipKeyring, error) {
	return s.reader().GossipKeyring(ws)
}

// GossipKeyring returns the sealed gossip keyring, or nil when none was set.
func (r Reader) GossipKeyring(ws memdb.WatchSet) (*cohortv1.GossipKeyring, error) {
	return first[*cohortv1.GossipKeyring](r, ws, TableGossipKeyring, "id", gossipKeyringID)
}

// SetGossipKeyring replaces the sealed gossip keyring; the store takes ownership of it.
func (t *Txn) SetGossipKeyring(k *cohortv1.GossipKeyring) error {
	k.ModifyIndex = t.index
	if err := t.txn.Insert(TableGossipKeyring, k); err != nil {
		return fmt.Errorf("state: set gossip keyring: %w", err)
	}
	t.touched[TableGossipKeyring] = true
	return nil
}

// RestoreGossipKeyring inserts the keyring as it was persisted (snapshot restore).
func (t *Txn) RestoreGossipKeyring(k *cohortv1.GossipKeyring) error {
	if err := t.txn.Insert(TableGossipKeyring, k); err != nil {
		return fmt.Errorf("state: restore gossip keyring: %w", err)
	}
	return nil
}

// TableClusterCA holds the one cluster CA record (id "ca"), set by CA rotations.
const TableClusterCA = "cluster_ca"

const clusterCAID = "ca"

func clusterCATable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableClusterCA,
		Indexes: map[string]*memdb.IndexSchema{
			"id": index("id", true, false, func(obj any) (string, bool) {
				_, ok := obj.(*cohortv1.ClusterCA)
				return clusterCAID, ok
			}),
		},
	}
}

// ClusterCA returns the cluster CA record, or nil before the first rotation.
func (s *Store) ClusterCA(ws memdb.WatchSet) (*cohortv1.ClusterCA, error) {
	return s.reader().ClusterCA(ws)
}

// ClusterCA returns the cluster CA record, or nil before the first rotation.
func (r Reader) ClusterCA(ws memdb.WatchSet) (*cohortv1.ClusterCA, error) {
	return first[*cohortv1.ClusterCA](r, ws, TableClusterCA, "id", clusterCAID)
}

// SetClusterCA replaces the cluster CA record; the store takes ownership of it.
func (t *Txn) SetClusterCA(c *cohortv1.ClusterCA) error {
	c.ModifyIndex = t.index
	if err := t.txn.Insert(TableClusterCA, c); err != nil {
		return fmt.Errorf("state: set cluster CA: %w", err)
	}
	t.touched[TableClusterCA] = true
	return nil
}

// RestoreClusterCA inserts the record as it was persisted (snapshot restore).
func (t *Txn) RestoreClusterCA(c *cohortv1.ClusterCA) error {
	if err := t.txn.Insert(TableClusterCA, c); err != nil {
		return fmt.Errorf("state: restore cluster CA: %w", err)
	}
	return nil
}
