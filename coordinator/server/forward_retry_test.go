package server_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// answerLoss loses the answer of one forwarded call: armed with a method, the first
// forwarded call of it that a coordinator receives runs to the end (it commits), then
// its answer is held until the forwarding coordinator gives the attempt up (its
// per-attempt deadline, or the leader change the call made) and is never sent.
type answerLoss struct {
	mu      sync.Mutex
	method  string
	dropped []string // the methods whose answer was lost
}

func (a *answerLoss) arm(method string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.method = method
}

func (a *answerLoss) lost() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.dropped)
}

func (a *answerLoss) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get("cohort-forwarded")) == 0 || err != nil {
		return resp, err
	}
	a.mu.Lock()
	drop := a.method == info.FullMethod
	if drop {
		a.method = ""
		a.dropped = append(a.dropped, info.FullMethod)
	}
	a.mu.Unlock()
	if !drop {
		return resp, err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestForwardedAdminCallAnswerLost: a follower forwards a non-idempotent admin call
// to the leader, the leader commits it, and the answer is lost; the follower retries
// the call (at the same or the new leader) and the caller gets success, the change
// made once:
//   - transfer-leadership (to any voter): leadership moves once (the Raft term rises
//     by one), the retry answers with the new leader and a note, not a second move;
//   - remove-peer: the peer is removed, the retry finds it gone and answers success
//     with a note instead of NotFound; an ID that never was a peer is still NotFound.
func TestForwardedAdminCallAnswerLost(t *testing.T) {
	loss := &answerLoss{}
	c := clustertest.TestCluster(t, 3, clustertest.Options{
		API: func(cfg *api.Config) { cfg.ForwardAttemptTimeout = time.Second },
		ServerOptions: func(*server.Server) []grpc.ServerOption {
			return []grpc.ServerOption{grpc.ChainUnaryInterceptor(loss.intercept)}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	leader := c.WaitForLeader(t)
	via := followers(c, leader)[0]
	term := leader.Server().Raft().CurrentTerm()
	loss.arm("/cohort.v1.ClusterService/TransferLeadership")
	tr, err := via.Cluster().TransferLeadership(ctx, &cohortv1.TransferLeadershipRequest{})
	if err != nil {
		t.Fatalf("forwarded transfer with its answer lost: %v", err)
	}
	if got := loss.lost(); len(got) != 1 {
		t.Fatalf("answers lost: %v, want the transfer's", got)
	}
	now := c.WaitForLeader(t)
	if now == leader || tr.LeaderId != now.ID || tr.Note == "" {
		t.Fatalf("transfer answered leader %q note %q; leader now %s (was %s)", tr.LeaderId, tr.Note, now.ID, leader.ID)
	}
	// Leadership moved once: one election, whatever the retry did.
	if got := now.Server().Raft().CurrentTerm(); got != term+1 {
		t.Fatalf("term %d after the transfer, want %d (one move); leader %s", got, term+1, now.ID)
	}

	// Remove a follower through the other follower, the answer lost.
	leader = now
	fs := followers(c, leader)
	via, gone := fs[0], fs[1]
	loss.arm("/cohort.v1.ClusterService/RemovePeer")
	rp, err := via.Cluster().RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: gone.ID})
	if err != nil {
		t.Fatalf("forwarded remove-peer with its answer lost: %v", err)
	}
	if got := loss.lost(); len(got) != 2 {
		t.Fatalf("answers lost: %v, want the transfer's and the removal's", got)
	}
	if rp.Note == "" {
		t.Fatalf("the retried removal answered without a note: %v", rp)
	}
	gone.Stop()
	want := []string{leader.ID, via.ID}
	slices.Sort(want)
	if got := peerIDs(t, ctx, via); !slices.Equal(got, want) {
		t.Fatalf("peers = %v, want %v", got, want)
	}
	_, err = via.Cluster().RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: "never-a-peer"})
	wantCode(t, "remove a peer that never was", err, codes.NotFound, "not in the raft configuration")
}
