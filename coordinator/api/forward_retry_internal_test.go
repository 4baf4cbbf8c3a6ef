package api

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// lossyTokenLeader is the leader's TokenService as a follower's forwarder sees it:
// every CreateToken runs on the leader's handler (it commits), and the first answer
// is lost (the forwarder sees Unavailable, as after a timeout or a leader change).
type lossyTokenLeader struct {
	leader cohortv1.TokenServiceServer
	mu     sync.Mutex
	calls  []*cohortv1.CreateTokenRequest
}

func (l *lossyTokenLeader) LeaderConn() (grpc.ClientConnInterface, error) { return l, nil }

func (l *lossyTokenLeader) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	req, ok := args.(*cohortv1.CreateTokenRequest)
	if !ok || method != cohortv1.TokenService_CreateToken_FullMethodName {
		return status.Errorf(codes.Unimplemented, "%s", method)
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	resp, err := l.leader.CreateToken(metadata.NewIncomingContext(ctx, md), req)
	l.mu.Lock()
	l.calls = append(l.calls, proto.Clone(req).(*cohortv1.CreateTokenRequest))
	first := len(l.calls) == 1
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if first {
		return status.Error(codes.Unavailable, "answer lost")
	}
	proto.Merge(reply.(*cohortv1.CreateTokenResponse), resp)
	return nil
}

func (l *lossyTokenLeader) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams")
}

// TestCreateTokenForwardedAnswerLost: a follower forwards `token create`, the leader
// stores the token, and the answer is lost; the follower's retry proposes the same
// token, so the caller gets the token that is stored (its secret matches the stored
// hash) and the cluster holds one token, not a second one nobody knows the secret of.
func TestCreateTokenForwardedAnswerLost(t *testing.T) {
	b := newBackend(t)
	ca, err := pki.NewCA("test cluster CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ec := EnrollConfig{CA: func() *pki.CA { return ca }}
	conn := &lossyTokenLeader{leader: NewTokenService(b, Config{}, ec)}
	follower := NewTokenService(followerBackend{b}, Config{Forwarder: conn}, ec)
	resp, err := follower.CreateToken(context.Background(), &cohortv1.CreateTokenRequest{Role: "agent", Description: "w9"})
	if err != nil {
		t.Fatalf("forwarded create with its first answer lost: %v", err)
	}
	if len(conn.calls) != 2 {
		t.Fatalf("%d forwarded attempts, want 2 (the lost one and the retry)", len(conn.calls))
	}
	if conn.calls[0].MintedToken == "" || conn.calls[0].MintedToken != conn.calls[1].MintedToken ||
		conn.calls[0].MintedUnixNano != conn.calls[1].MintedUnixNano {
		t.Fatalf("the attempts proposed different tokens: %q at %d, %q at %d", conn.calls[0].MintedToken, conn.calls[0].MintedUnixNano,
			conn.calls[1].MintedToken, conn.calls[1].MintedUnixNano)
	}
	toks, err := b.State().Tokens(nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.ParseToken(resp.Token)
	if err != nil {
		t.Fatalf("answered token %q: %v", resp.Token, err)
	}
	if len(toks) != 1 || toks[0].Id != tok.ID || toks[0].SecretSha256 != pki.HashSecret(tok.Secret) {
		t.Fatalf("stored tokens %v; answered %s: want exactly the answered one", toks, tok.Redacted())
	}
	// A call that is not forwarded cannot choose its token.
	direct, err := NewTokenService(b, Config{}, ec).CreateToken(context.Background(), &cohortv1.CreateTokenRequest{Role: "agent",
		MintedToken: resp.Token, MintedUnixNano: conn.calls[0].MintedUnixNano})
	if err != nil {
		t.Fatal(err)
	}
	if direct.Token == resp.Token {
		t.Fatal("a direct call's minted_token was honoured")
	}
}
