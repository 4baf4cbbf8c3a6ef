package node

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/paramserver"
)

// revokedTokens is the set of revoked join tokens a node agent last heard of from the
// coordinators (WatchAssignmentsResponse.revoked_tokens). It is safe for concurrent
// use; the zero value is empty.
type revokedTokens struct {
	ids atomic.Pointer[[]string] // sorted
}

// set replaces the set (ids sorted, as the coordinators send them).
func (r *revokedTokens) set(ids []string) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	r.ids.Store(&ids)
}

// has reports whether id is revoked.
func (r *revokedTokens) has(id string) bool {
	p := r.ids.Load()
	if p == nil || id == "" {
		return false
	}
	_, found := slices.BinarySearch(*p, id)
	return found
}

// tlsCaller returns the parameter server's paramserver.CallerFunc on a TLS node: the
// name in the caller's verified certificate (a node agent's: its node ID), which the
// shard checks against its job's workers. A certificate enrolled with a join token in
// revoked is refused.
func tlsCaller(revoked *revokedTokens) paramserver.CallerFunc {
	return func(ctx context.Context) (string, error) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return "", pki.ErrNoIdentity
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok {
			return "", pki.ErrNoIdentity
		}
		id, err := pki.IdentityFromTLS(info.State)
		switch {
		case err != nil:
			return "", err
		case id.Role != pki.RoleAgent:
			return "", fmt.Errorf("the certificate of %s has role %s, not agent", id.Name, id.Role)
		case revoked.has(id.Token):
			return "", fmt.Errorf("the certificate of %s was enrolled with join token %s, which is revoked", id.Name, id.Token)
		}
		return id.Name, nil
	}
}
