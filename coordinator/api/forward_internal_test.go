package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/server"
)

// switchingForwarder is a follower's view of the leader: leader names it, conns[leader]
// is the connection to it; silent leaders block every call until the caller gives up.
type switchingForwarder struct {
	mu     sync.Mutex
	leader string
	silent map[string]bool
	down   map[string]bool // unreachable from this coordinator: calls fail Unavailable
	// started is signalled each time a call reaches a silent leader.
	started chan string
	// causes records why each call to a silent leader ended.
	causes []error
}

func (f *switchingForwarder) LeaderID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *switchingForwarder) LeaderAddr() string {
	if id := f.LeaderID(); id != "" {
		return id + ":7070"
	}
	return ""
}

func (f *switchingForwarder) setLeader(id string) {
	f.mu.Lock()
	f.leader = id
	f.mu.Unlock()
}

func (f *switchingForwarder) LeaderConn() (grpc.ClientConnInterface, error) {
	id := f.LeaderID()
	if id == "" {
		return nil, fmt.Errorf("%w: no leader is known", errNoLeader)
	}
	return fakeLeader{f: f, id: id}, nil
}

type fakeLeader struct {
	grpc.ClientConnInterface
	f  *switchingForwarder
	id string
}

// call is what remote runs: a silent leader blocks until ctx ends.
func (l fakeLeader) call(ctx context.Context) (string, error) {
	l.f.mu.Lock()
	silent, down := l.f.silent[l.id], l.f.down[l.id]
	l.f.mu.Unlock()
	if down {
		return "", status.Error(codes.Unavailable, "connection refused")
	}
	if !silent {
		return "ok from " + l.id, nil
	}
	l.f.started <- l.id
	<-ctx.Done()
	l.f.mu.Lock()
	l.f.causes = append(l.f.causes, context.Cause(ctx))
	l.f.mu.Unlock()
	return "", status.FromContextError(ctx.Err()).Err()
}

func notLeader(context.Context) (string, error) {
	return "", fmt.Errorf("%w; leader unknown here", server.ErrNotLeader)
}

func remoteCall(ctx context.Context, c grpc.ClientConnInterface) (string, error) {
	return c.(fakeLeader).call(ctx)
}

// TestLeaderCallAbandonsSilentLeaderOnLeaderChange: a forwarded call to a leader that
// went silent is abandoned as soon as this coordinator learns of a new leader, and
// retried there, long before the call's or the attempt's own timeout.
func TestLeaderCallAbandonsSilentLeaderOnLeaderChange(t *testing.T) {
	f := &switchingForwarder{leader: "c1", silent: map[string]bool{"c1": true}, started: make(chan string, 1)}
	cfg := Config{Forwarder: f, ForwardTimeout: time.Hour, ForwardAttemptTimeout: time.Hour}.withDefaults()
	go func() {
		<-f.started // the call is stuck at c1
		f.setLeader("c2")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	got, err := leaderCall(ctx, cfg, notLeader, remoteCall)
	if err != nil || got != "ok from c2" {
		t.Fatalf("leaderCall = %q, %v; want the new leader's answer", got, err)
	}
	if len(f.causes) != 1 || !errors.Is(f.causes[0], errLeaderChanged) {
		t.Fatalf("the attempt at c1 ended by %v, want the leader change", f.causes)
	}
}

// TestLeaderCallAttemptDeadline: an attempt at a leader that stays the leader but does
// not answer ends at the attempt deadline and is retried.
func TestLeaderCallAttemptDeadline(t *testing.T) {
	f := &switchingForwarder{leader: "c1", silent: map[string]bool{"c1": true}, started: make(chan string, 10)}
	cfg := Config{Forwarder: f, ForwardTimeout: time.Hour, ForwardAttemptTimeout: 20 * time.Millisecond}.withDefaults()
	go func() {
		<-f.started
		<-f.started // a second attempt: the first one ended at its deadline
		f.mu.Lock()
		f.silent["c1"] = false
		f.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := leaderCall(ctx, cfg, notLeader, remoteCall)
	if err != nil || got != "ok from c1" {
		t.Fatalf("leaderCall = %q, %v", got, err)
	}
	if len(f.causes) < 2 || !errors.Is(f.causes[0], errAttemptTimeout) {
		t.Fatalf("attempts ended by %v, want the attempt deadline", f.causes)
	}
}

// TestLeaderCallNoLeaderFailsFast: with no leader known for NoLeaderTimeout the call
// fails Unavailable before its ForwardTimeout, so a client tries another coordinator.
func TestLeaderCallNoLeaderFailsFast(t *testing.T) {
	f := &switchingForwarder{}
	cfg := Config{Forwarder: f, ForwardTimeout: time.Hour, NoLeaderTimeout: 50 * time.Millisecond}.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := leaderCall(ctx, cfg, notLeader, remoteCall)
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("leaderCall = %v (ctx %v), want Unavailable before the caller's deadline", err, ctx.Err())
	}
}

// TestLeaderCallUnreachableLeaderFailsFast: a leader this coordinator cannot reach (a
// one-way cut) makes the call fail Unavailable after LeaderUnreachableTimeout, well
// before ForwardTimeout, so the client can go to the leader itself.
func TestLeaderCallUnreachableLeaderFailsFast(t *testing.T) {
	f := &switchingForwarder{leader: "c2", down: map[string]bool{"c2": true}}
	cfg := Config{Forwarder: f, ForwardTimeout: time.Hour, LeaderUnreachableTimeout: 50 * time.Millisecond}.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := leaderCall(ctx, cfg, notLeader, remoteCall)
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("leaderCall = %v (ctx %v), want Unavailable before the caller's deadline", err, ctx.Err())
	}
}
