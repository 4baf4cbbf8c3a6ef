package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrTokenExists and ErrTokenNotFound are the refusals of the token commands.
var (
	// ErrTokenExists means a create_token names an id that is taken.
	ErrTokenExists = errors.New("fsm: a join token with this id exists")
	// ErrTokenNotFound means a revoke_token names no token.
	ErrTokenNotFound = errors.New("fsm: no such join token")
)

// applyCreateToken adds a join-token record. Response: the stored *JoinToken.
func applyCreateToken(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	tok := cmd.GetCreateToken().GetToken()
	if tok.GetId() == "" || tok.GetSecretSha256() == "" {
		return nil, fmt.Errorf("fsm: create token: %w: id and secret hash are required", state.ErrInvalidObject)
	}
	existing, err := txn.TokenByID(nil, tok.Id)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		// The same record applied again (a create retried after its first try committed,
		// for example forwarded again to a new leader) is the one stored, so the caller's
		// token works; any other record with the id is refused.
		same := proto.Clone(existing).(*cohortv1.JoinToken)
		same.CreateIndex, same.ModifyIndex = tok.GetCreateIndex(), tok.GetModifyIndex()
		if proto.Equal(same, tok) {
			return existing, nil
		}
		return nil, fmt.Errorf("%w: %s", ErrTokenExists, tok.Id)
	}
	stored := proto.Clone(tok).(*cohortv1.JoinToken)
	if err := txn.UpsertToken(stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// applyRevokeToken marks a join token revoked (again is a no-op). Response: the stored
// *JoinToken.
func applyRevokeToken(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetRevokeToken()
	existing, err := txn.TokenByID(nil, c.GetId())
	if err != nil {
		return nil, err
	}
	if existing == nil {
		return nil, fmt.Errorf("%w: %q", ErrTokenNotFound, c.GetId())
	}
	if existing.Revoked {
		return existing, nil
	}
	stored := proto.Clone(existing).(*cohortv1.JoinToken)
	stored.Revoked, stored.RevokedUnixNano = true, c.GetRevokedUnixNano()
	if err := txn.UpsertToken(stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// ErrStaleKeyring means a set_gossip_keyring carries an older version than the stored
// keyring: two changes raced, and the later proposal must start again from the newer
// keyring.
var ErrStaleKeyring = errors.New("fsm: the gossip keyring changed meanwhile")

// applySetGossipKeyring replaces the sealed gossip keyring. Response: the stored
// *GossipKeyring.
func applySetGossipKeyring(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSetGossipKeyring()
	if len(c.GetSealed()) == 0 {
		return nil, fmt.Errorf("fsm: set gossip keyring: %w: empty keyring", state.ErrInvalidObject)
	}
	cur, err := txn.GossipKeyring(nil)
	if err != nil {
		return nil, err
	}
	if cur != nil && c.GetVersion() <= cur.GetVersion() {
		return nil, fmt.Errorf("%w: version %d, stored %d", ErrStaleKeyring, c.GetVersion(), cur.GetVersion())
	}
	k := &cohortv1.GossipKeyring{Sealed: append([]byte(nil), c.GetSealed()...), Version: c.GetVersion()}
	if err := txn.SetGossipKeyring(k); err != nil {
		return nil, err
	}
	return k, nil
}

// ErrStaleClusterCA means a set_cluster_ca carries a version no newer than the stored
// record: two rotations raced.
var ErrStaleClusterCA = errors.New("fsm: the cluster CA changed meanwhile")

// applySetClusterCA replaces the cluster CA record (a rotation or its end). The FSM
// checks only its shape: the proposer made and sealed it. Response: the stored
// *ClusterCA.
func applySetClusterCA(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSetClusterCa().GetCa()
	if len(c.GetActiveCertPem()) == 0 || len(c.GetSealedKey()) == 0 || len(c.GetTrustBundlePem()) == 0 {
		return nil, fmt.Errorf("fsm: set cluster CA: %w: the active certificate, its sealed key and the trust bundle are required", state.ErrInvalidObject)
	}
	cur, err := txn.ClusterCA(nil)
	if err != nil {
		return nil, err
	}
	if cur != nil && c.GetVersion() <= cur.GetVersion() {
		return nil, fmt.Errorf("%w: version %d, stored %d", ErrStaleClusterCA, c.GetVersion(), cur.GetVersion())
	}
	stored := proto.Clone(c).(*cohortv1.ClusterCA)
	if err := txn.SetClusterCA(stored); err != nil {
		return nil, err
	}
	return stored, nil
}
