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
