package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/server"
)

// Request metadata keys.
const (
	// StaleReadHeader, set to "true" in a read's request metadata, lets any coordinator
	// answer from its local state without confirming leadership (faster, possibly stale).
	StaleReadHeader = "cohort-stale"
	// forwardedHeader marks a call a coordinator forwarded to the leader; the receiver
	// never forwards it again (no forwarding loops while leadership moves).
	forwardedHeader = "cohort-forwarded"
)

// DefaultForwardTimeout bounds how long a coordinator keeps retrying to reach a leader
// for one call (an election with tuned timeouts takes well under a second).
const DefaultForwardTimeout = 10 * time.Second

// DefaultForwardAttemptTimeout bounds one forwarded attempt; a call retries after it.
const DefaultForwardAttemptTimeout = 5 * time.Second

// DefaultLeaderUnreachableTimeout is how long a call keeps failing to reach the same
// leader before it fails with Unavailable, naming that leader for the client to try.
const DefaultLeaderUnreachableTimeout = 2 * time.Second

// DefaultNoLeaderTimeout is how long a call waits for any leader to be known before it
// fails with Unavailable: about an election; a coordinator that knows no leader for
// longer is likely cut off from the majority.
const DefaultNoLeaderTimeout = time.Second

// Forwarder gives a follower a connection to the leader's gRPC API.
type Forwarder interface {
	// LeaderConn returns a connection to the current leader's API. It fails while no
	// leader is known, its address is not recorded yet, or this coordinator is the
	// leader itself.
	LeaderConn() (grpc.ClientConnInterface, error)
}

// LeaderLocator says where the leader's gRPC API is; *server.Server satisfies it.
type LeaderLocator interface {
	// LeaderGRPCAddr returns the leader's Raft ID and gRPC address.
	LeaderGRPCAddr() (id, addr string, ok bool)
	// NodeID returns this coordinator's Raft ID.
	NodeID() string
}

var _ LeaderLocator = (*server.Server)(nil)

// errNoLeader is LeaderConn's error while no leader can be forwarded to.
var errNoLeader = errors.New("no leader to forward to")

// LeaderForwarder is a Forwarder that keeps one client connection per coordinator
// address it has forwarded to.
type LeaderForwarder struct {
	loc  LeaderLocator
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	dialed map[string]time.Time // when each of conns was dialled
	closed bool
}

// minRedialInterval bounds how often RedialLeader replaces one address's connection
// (a variable for tests).
var minRedialInterval = time.Second

// NewLeaderForwarder returns a Forwarder that dials leaders with opts. A connection
// attempt to a leader gives up after a second (gRPC's default is 20 s), so that a
// leader this coordinator cannot reach fails calls fast instead of holding them.
func NewLeaderForwarder(loc LeaderLocator, opts ...grpc.DialOption) *LeaderForwarder {
	opts = append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: time.Second,
	})}, opts...)
	return &LeaderForwarder{loc: loc, opts: opts, conns: map[string]*grpc.ClientConn{}, dialed: map[string]time.Time{}}
}

// LeaderConn implements Forwarder.
func (f *LeaderForwarder) LeaderConn() (grpc.ClientConnInterface, error) {
	id, addr, ok := f.loc.LeaderGRPCAddr()
	switch {
	case id == "":
		return nil, fmt.Errorf("%w: no leader is known", errNoLeader)
	case id == f.loc.NodeID():
		return nil, fmt.Errorf("%w: this coordinator is the leader", errNoLeader)
	case !ok:
		return nil, fmt.Errorf("%w: the gRPC address of leader %q is not recorded yet", errNoLeader, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("%w: forwarder closed", errNoLeader)
	}
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, f.opts...)
	if err != nil {
		return nil, fmt.Errorf("api: dial leader %q at %s: %w", id, addr, err)
	}
	f.conns[addr] = c
	f.dialed[addr] = time.Now()
	return c, nil
}

// RedialLeader makes the next LeaderConn dial the current leader afresh, when the
// connection to it is older than minRedialInterval, and closes the old one after
// grace (what an attempt already on it may still take). A forwarded attempt that ran
// out its time while the leader stayed the leader calls it: the campaign (issue 22)
// saw a follower's connection to the leader stall for 10-22 s after 20% packet loss
// (TCP's retransmission backoff; keepalive closes it only after its own timeout)
// while fresh connections from the other coordinators went through at once.
func (f *LeaderForwarder) RedialLeader(grace time.Duration) {
	id, addr, ok := f.loc.LeaderGRPCAddr()
	if !ok || id == f.loc.NodeID() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, found := f.conns[addr]
	if !found || time.Since(f.dialed[addr]) < minRedialInterval {
		return
	}
	delete(f.conns, addr)
	delete(f.dialed, addr)
	time.AfterFunc(grace, func() { _ = c.Close() })
}

// LeaderID returns the Raft ID of the leader this coordinator knows ("" none).
func (f *LeaderForwarder) LeaderID() string {
	id, _, _ := f.loc.LeaderGRPCAddr()
	return id
}

// LeaderAddr returns the gRPC address of the leader this coordinator knows, when it
// is another coordinator whose address is recorded ("" otherwise).
func (f *LeaderForwarder) LeaderAddr() string {
	id, addr, ok := f.loc.LeaderGRPCAddr()
	if !ok || id == f.loc.NodeID() {
		return ""
	}
	return addr
}

// Close closes every connection.
func (f *LeaderForwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	var errs []error
	for addr, c := range f.conns {
		errs = append(errs, c.Close())
		delete(f.conns, addr)
		delete(f.dialed, addr)
	}
	return errors.Join(errs...)
}

// isForwarded reports whether the incoming call was forwarded by another coordinator.
func isForwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedHeader)) > 0
}

// isStale reports whether the caller allows a stale local read.
func isStale(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(StaleReadHeader) {
		if v == "true" || v == "1" {
			return true
		}
	}
	return false
}

// forwardContext marks ctx's outgoing call as forwarded and passes the caller's ACL
// token on (see forwardedAuth).
func forwardContext(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(forwardedAuth(ctx), forwardedHeader, "1")
}

// leaderCall serves a call that only the leader may answer: it runs local here and,
// when this coordinator is not the leader, runs remote against the leader through
// cfg.Forwarder. While leadership is moving (no leader known, or the leader answered
// Unavailable) it retries until ctx ends or cfg.ForwardTimeout passes. Every call it
// retries must be idempotent: submissions carry an idempotency key by then.
//
// Each forwarded attempt has its own deadline (cfg.ForwardAttemptTimeout) and is
// abandoned as soon as this coordinator learns of another leader than the one it
// forwarded to (a leader that went silent is replaced within an election timeout, and
// waiting on it would hold the caller for the whole call timeout). When no leader has
// been known for cfg.NoLeaderTimeout the call fails with Unavailable, so a client that
// knows other coordinators tries them: this one is likely cut off from the majority.
// An Unavailable answer carries the leader this coordinator knows, if any, as the
// LeaderHintHeader trailer.
//
// An abandoned attempt may have committed (only its answer was lost), so every call
// through here must be safe to run twice: submissions, searches, resumes, gate
// overrides and CA rotations carry an idempotency key minted before the first attempt;
// removing a peer that has gone, installing an installed gossip key, removing a removed
// one, and a transfer of leadership that has moved (from_leader) succeed with a note;
// the rest set a state (quotas, queues, drains, eligibility, heartbeats, reports).
func leaderCall[T any](ctx context.Context, cfg Config, local func(context.Context) (T, error),
	remote func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	deadline := time.Now().Add(cfg.ForwardTimeout)
	back := 10 * time.Millisecond
	var noLeaderSince, unreachableSince time.Time
	unreachable := "" // the leader the attempts since unreachableSince failed to reach
	for {
		v, err := local(ctx)
		if err == nil || !errors.Is(err, server.ErrNotLeader) || cfg.Forwarder == nil || isForwarded(ctx) {
			if status.Code(toStatus(err)) == codes.Unavailable {
				setLeaderHint(ctx, cfg)
			}
			return v, toStatus(err)
		}
		var serr error = err
		leader := forwardLeader(cfg)
		conn, ferr := cfg.Forwarder.LeaderConn()
		if ferr == nil {
			noLeaderSince = time.Time{}
			actx, cancel := attemptContext(ctx, cfg, leader, deadline)
			v, rerr := remote(forwardContext(actx), conn)
			abandoned := context.Cause(actx)
			if abandoned == nil && ctx.Err() == nil && status.Code(rerr) == codes.DeadlineExceeded {
				// The attempt's deadline travels with the call, and the leader's copy of
				// it can fire first: the leader gave up on the attempt's deadline, which
				// is the attempt's own timeout, not the caller's.
				abandoned = errAttemptTimeout
			}
			cancel()
			switch {
			case rerr == nil:
				return v, nil
			case ctx.Err() == nil && abandoned != nil:
				// The attempt's own deadline or a leader change: try again, on a fresh
				// connection when the same leader did not answer in time.
				cfg.Logger.Debug("forwarded call abandoned", "leader", leader, "why", abandoned, "err", rerr)
				if r, ok := cfg.Forwarder.(leaderRedialer); ok && errors.Is(abandoned, errAttemptTimeout) {
					r.RedialLeader(cfg.ForwardAttemptTimeout)
				}
				rerr = status.Error(codes.Unavailable, fmt.Sprintf("forward to leader %q: %v", leader, abandoned))
			case status.Code(rerr) != codes.Unavailable:
				return v, rerr
			}
			serr = rerr
			if leader == "" || leader != unreachable {
				unreachable, unreachableSince = leader, time.Now()
			}
		} else if noLeaderSince.IsZero() {
			noLeaderSince = time.Now()
		}
		noLeader := !noLeaderSince.IsZero() && time.Since(noLeaderSince) >= cfg.NoLeaderTimeout
		// A leader this coordinator cannot reach (a one-way cut, a partition between
		// the two) may well be reachable from the client: answer with its address.
		cutOff := unreachable != "" && ferr == nil && time.Since(unreachableSince) >= cfg.LeaderUnreachableTimeout
		if ctx.Err() != nil || time.Now().After(deadline) || noLeader || cutOff {
			var zero T
			setLeaderHint(ctx, cfg)
			if ferr != nil {
				return zero, status.Error(codes.Unavailable, fmt.Sprintf("%v (%v)", err, ferr))
			}
			return zero, toStatus(serr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(back):
		}
		back = min(back*2, 250*time.Millisecond)
	}
}

// LeaderHintHeader is the trailer key of the leader's gRPC address on an Unavailable
// answer from a coordinator that is not the leader (or cannot reach it): a client
// that knows several coordinators tries that one next.
const LeaderHintHeader = "cohort-leader"

// errLeaderChanged abandons a forwarded attempt whose leader was replaced.
var errLeaderChanged = errors.New("the leader changed")

// errAttemptTimeout abandons a forwarded attempt that ran past its own deadline.
var errAttemptTimeout = errors.New("the leader did not answer in time")

// leaderWatcher is a Forwarder that can say which leader its connections go to.
type leaderWatcher interface {
	// LeaderID returns the Raft ID of the leader this coordinator knows ("" none).
	LeaderID() string
}

// leaderRedialer is a Forwarder that can replace its connection to the leader.
type leaderRedialer interface {
	// RedialLeader makes the next LeaderConn dial the leader afresh; the old
	// connection closes after grace.
	RedialLeader(grace time.Duration)
}

// forwardLeader returns the leader cfg.Forwarder forwards to, or "" when it cannot say.
func forwardLeader(cfg Config) string {
	if w, ok := cfg.Forwarder.(leaderWatcher); ok {
		return w.LeaderID()
	}
	return ""
}

// attemptContext bounds one forwarded attempt: by cfg.ForwardAttemptTimeout (and the
// call's deadline), and, when the Forwarder can say, by leader staying the leader.
func attemptContext(ctx context.Context, cfg Config, leader string, deadline time.Time) (context.Context, context.CancelFunc) {
	d := min(cfg.ForwardAttemptTimeout, time.Until(deadline))
	actx, cancelTimeout := context.WithTimeoutCause(ctx, max(d, time.Millisecond), errAttemptTimeout)
	w, ok := cfg.Forwarder.(leaderWatcher)
	if !ok || leader == "" {
		return actx, cancelTimeout
	}
	actx, cancel := context.WithCancelCause(actx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cfg.LeaderPollInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-actx.Done():
				return
			case <-t.C:
				if now := w.LeaderID(); now != leader {
					cancel(fmt.Errorf("%w: from %q to %q", errLeaderChanged, leader, now))
					return
				}
			}
		}
	}()
	return actx, func() {
		close(done)
		cancel(nil)
		cancelTimeout()
	}
}

// setLeaderHint sets the LeaderHintHeader trailer of a unary call when cfg.Forwarder
// knows the leader's address; a stream's handler has no such trailer and is left alone.
func setLeaderHint(ctx context.Context, cfg Config) {
	h, ok := cfg.Forwarder.(interface{ LeaderAddr() string })
	if !ok {
		return
	}
	if addr := h.LeaderAddr(); addr != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderHintHeader, addr))
	}
}

// readCall serves a read: locally when the caller allows stale reads, otherwise after
// the leader confirms its leadership (forwarded to the leader from a follower).
func readCall[T any](ctx context.Context, b Backend, cfg Config, read func() (T, error),
	remote func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	if isStale(ctx) {
		v, err := read()
		return v, toStatus(err)
	}
	return leaderCall(ctx, cfg, func(ctx context.Context) (T, error) {
		if err := b.ConsistentRead(ctx); err != nil {
			var zero T
			return zero, err
		}
		return read()
	}, remote)
}
