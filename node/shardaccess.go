package node

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cohort-dev/cohort/internal/pki"
)

// tlsCaller is the parameter server's paramserver.CallerFunc on a TLS node: the name in
// the caller's verified certificate (a node agent's: its node ID), which the shard
// checks against its job's workers.
func tlsCaller(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", false
	}
	id, err := pki.IdentityFromTLS(info.State)
	if err != nil || id.Role != pki.RoleAgent {
		return "", false
	}
	return id.Name, true
}
