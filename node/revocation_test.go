package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestParameterServerRefusesRevokedTokens: a parameter server learns the revoked join
// tokens with its assignments and refuses (PermissionDenied, naming the revocation)
// the calls of an agent certificate enrolled with a revoked token, while the same
// call with a certificate of a valid token, or of none, still reaches the shard check
// (NotFound: no such shard). Real dev cluster, real mutual TLS, real Raft.
func TestParameterServerRefusesRevokedTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{PS: 1})
	ca, err := pki.LoadCA(c.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	admin := c.Dial(t)
	revokedTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent"})
	validTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent"})
	pull := func(token string) error {
		certs := issueReloader(t, ca, pki.Identity{Name: "w-intruder", Role: pki.RoleAgent, ACLRole: "agent", Token: token})
		conn, err := grpc.NewClient(c.Node.DataAddrs()[0], grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), certs, pki.RoleAgent))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := cohortv1.NewParameterServiceClient(conn).Pull(cctx, &cohortv1.PullRequest{Ref: &cohortv1.ShardRef{JobId: "j-none", Generation: 1}})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	for _, tok := range []string{revokedTok.ID, validTok.ID, ""} {
		if err := pull(tok); status.Code(err) != codes.NotFound {
			t.Fatalf("before the revocation, token %q: %v, want NotFound (no such shard)", tok, err)
		}
	}
	if _, err := cohortv1.NewTokenServiceClient(admin).RevokeToken(ctx, &cohortv1.RevokeTokenRequest{Id: revokedTok.ID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the parameter server to refuse the revoked token's certificate", func() bool {
		err := pull(revokedTok.ID)
		return status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "revoked")
	})
	for _, tok := range []string{validTok.ID, ""} {
		if err := pull(tok); status.Code(err) != codes.NotFound {
			t.Errorf("after the revocation, token %q: %v, want NotFound (no such shard)", tok, err)
		}
	}
}
