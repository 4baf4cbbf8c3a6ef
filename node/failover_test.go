package node

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fakeCoordinator answers every unary call one way: "ok" (a ListJobs answer naming
// it), "minority" (Unavailable with a leader hint), "silent" (no answer until the
// caller gives up), "invalid" (InvalidArgument) or "othercluster" (the refusal of an
// agent of another cluster).
type fakeCoordinator struct {
	addr string
	mu   sync.Mutex
	mode string
	hint string
	hits int
}

func startFakeCoordinator(t *testing.T, mode string) *fakeCoordinator {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCoordinator{addr: lis.Addr().String(), mode: mode}
	g := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var req cohortv1.ListJobsRequest
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		f.mu.Lock()
		f.hits++
		mode, hint := f.mode, f.hint
		f.mu.Unlock()
		switch mode {
		case "minority":
			if hint != "" {
				stream.SetTrailer(metadata.Pairs(api.LeaderHintHeader, hint))
			}
			return status.Error(codes.Unavailable, "not the leader; no leader known")
		case "silent":
			<-stream.Context().Done()
			return stream.Context().Err()
		case "invalid":
			return status.Error(codes.InvalidArgument, "bad request")
		case "othercluster":
			return status.Error(codes.FailedPrecondition, api.ClusterMismatchPrefix+`: node "w1" joined cluster aaaa, but this coordinator belongs to cluster bbbb`)
		}
		return stream.SendMsg(&cohortv1.ListJobsResponse{Jobs: []*cohortv1.Job{{Id: f.addr}}})
	}))
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return f
}

func (f *fakeCoordinator) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

func listAt(t *testing.T, addrs ...string) (string, error) {
	t.Helper()
	conn, err := DialFailover(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cohortv1.NewJobServiceClient(conn).ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil {
		return "", err
	}
	return resp.GetJobs()[0].GetId(), nil
}

// TestDialFailoverFollowsLeaderHint: a coordinator cut off from the majority answers
// Unavailable naming the leader; the call goes there next, not to the silent one
// listed before it.
func TestDialFailoverFollowsLeaderHint(t *testing.T) {
	minority, silent, leader := startFakeCoordinator(t, "minority"), startFakeCoordinator(t, "silent"), startFakeCoordinator(t, "ok")
	minority.mu.Lock()
	minority.hint = leader.addr
	minority.mu.Unlock()
	got, err := listAt(t, minority.addr, silent.addr, leader.addr)
	if err != nil || got != leader.addr {
		t.Fatalf("ListJobs answered by %q (%v), want the leader %s", got, err, leader.addr)
	}
	if minority.calls() != 1 || silent.calls() != 0 {
		t.Fatalf("calls: minority %d, silent %d; want 1 and 0 (the hint skips the silent one)", minority.calls(), silent.calls())
	}
}

// TestDialFailoverPastSilentCoordinator: a coordinator that accepts the call and never
// answers is left after the per-attempt deadline, and the next one serves the call.
func TestDialFailoverPastSilentCoordinator(t *testing.T) {
	failoverAttemptTimeout = 100 * time.Millisecond
	t.Cleanup(func() { failoverAttemptTimeout = defaultFailoverAttemptTimeout })
	silent, ok := startFakeCoordinator(t, "silent"), startFakeCoordinator(t, "ok")
	got, err := listAt(t, silent.addr, ok.addr)
	if err != nil || got != ok.addr {
		t.Fatalf("ListJobs answered by %q (%v), want %s", got, err, ok.addr)
	}
	if silent.calls() != 1 {
		t.Fatalf("the silent coordinator got %d calls, want 1", silent.calls())
	}
}

// TestDialFailoverKeepsRefusals: an answer that is not about availability (bad input)
// is the call's answer; the other coordinators are not asked.
func TestDialFailoverKeepsRefusals(t *testing.T) {
	invalid, ok := startFakeCoordinator(t, "invalid"), startFakeCoordinator(t, "ok")
	_, err := listAt(t, invalid.addr, ok.addr)
	if status.Code(err) != codes.InvalidArgument || ok.calls() != 0 {
		t.Fatalf("err %v, %d calls to the other; want InvalidArgument and none", err, ok.calls())
	}
}

// TestDialFailoverAllUnavailable: when every coordinator is unavailable the call ends
// Unavailable (after a few rounds), not hanging.
func TestDialFailoverAllUnavailable(t *testing.T) {
	a, b := startFakeCoordinator(t, "minority"), startFakeCoordinator(t, "minority")
	_, err := listAt(t, a.addr, b.addr)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
	if a.calls() != failoverRounds || b.calls() != failoverRounds {
		t.Fatalf("calls %d and %d, want %d rounds over both", a.calls(), b.calls(), failoverRounds)
	}
}

// TestDialFailoverPastAnotherCluster: a coordinator of another cluster (its address
// reused) refuses the agent; the call goes on to the next coordinator, and when none
// is left the refusal names the address.
func TestDialFailoverPastAnotherCluster(t *testing.T) {
	other, ok := startFakeCoordinator(t, "othercluster"), startFakeCoordinator(t, "ok")
	got, err := listAt(t, other.addr, ok.addr)
	if err != nil || got != ok.addr {
		t.Fatalf("ListJobs answered by %q (%v), want %s", got, err, ok.addr)
	}
	_, err = listAt(t, other.addr, startFakeCoordinator(t, "othercluster").addr)
	if !api.IsClusterMismatch(err) || !strings.Contains(err.Error(), "coordinator 127.0.0.1:") {
		t.Fatalf("err %v, want a cluster mismatch naming the coordinator's address", err)
	}
}
