package node

// Multi-address dialing: the CLI's `--address a,b,c` and a node agent's --join name
// several coordinators. gRPC's
// pick_first sticks to the first that answers, which is no help when that one is cut
// off from the majority: it answers every call, Unavailable, while the others would
// serve it. So the CLI keeps one connection per coordinator and routes each call
// itself: to the coordinator that answered last (or that another coordinator named as
// the leader), those whose connection is failing last, with
// a per-attempt deadline on the first round, trying the next coordinator when one is
// unavailable or silent.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
)

// Failover tuning of a multi-address connection.
const (
	// defaultFailoverAttemptTimeout bounds a unary call at one coordinator during the first
	// round over the addresses: a coordinator that neither answers nor fails in this
	// time (a silent host, a leader cut off from its followers) is left for the next.
	// It is a few election timeouts; later rounds wait for as long as the caller does,
	// so that a legitimately slow call still completes.
	defaultFailoverAttemptTimeout = 2 * time.Second
	// failoverRounds is how many times a call goes over every address.
	failoverRounds = 4
	// failoverBackoff is the pause after a round where every coordinator was
	// unavailable; it doubles each round.
	failoverBackoff = 200 * time.Millisecond
)

// failoverAttemptTimeout is defaultFailoverAttemptTimeout; tests shorten it.
var failoverAttemptTimeout = defaultFailoverAttemptTimeout

// coordinatorSet routes the calls of one client connection over several coordinators.
type coordinatorSet struct {
	addrs []string
	conns []*grpc.ClientConn

	mu   sync.Mutex
	pref int // index of the coordinator to try first
}

// DialFailover opens a client connection over the coordinators at addrs (two or more)
// that routes every call as the top of this file says. The connection it returns only
// carries the routing interceptors; closing it closes the per-coordinator connections.
func DialFailover(addrs []string, creds credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	s := &coordinatorSet{addrs: addrs}
	// Each coordinator's own connection: no gRPC retries there, this set retries.
	sub := append(append([]grpc.DialOption(nil), extra...), grpc.WithDisableRetry())
	for _, a := range addrs {
		c, err := DialCoordinators([]string{a}, creds, sub...)
		if err != nil {
			s.close()
			return nil, err
		}
		c.Connect()
		s.conns = append(s.conns, c)
	}
	outer, err := DialCoordinators(addrs[:1], creds, append(extra,
		grpc.WithChainUnaryInterceptor(s.unary), grpc.WithChainStreamInterceptor(s.stream))...)
	if err != nil {
		s.close()
		return nil, err
	}
	go func() {
		// The outer connection never connects (the interceptors never call through
		// it); it leaves Idle only when closed.
		for st := outer.GetState(); st != connectivity.Shutdown; st = outer.GetState() {
			outer.WaitForStateChange(context.Background(), st)
		}
		s.close()
	}()
	return outer, nil
}

func (s *coordinatorSet) close() {
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// order returns the coordinators' indexes in the order to try them: the preferred one
// first, then the others in their order, those whose connection is failing last.
func (s *coordinatorSet) order() []int {
	s.mu.Lock()
	pref := s.pref
	s.mu.Unlock()
	var out, failing []int
	for k := range s.conns {
		i := (pref + k) % len(s.conns)
		switch s.conns[i].GetState() {
		case connectivity.TransientFailure, connectivity.Shutdown:
			failing = append(failing, i)
		default:
			out = append(out, i)
		}
	}
	return append(out, failing...)
}

func (s *coordinatorSet) prefer(i int) {
	s.mu.Lock()
	s.pref = i
	s.mu.Unlock()
}

// preferAddr prefers the coordinator at addr, when it is one of the set; it reports
// whether it is.
func (s *coordinatorSet) preferAddr(addr string) bool {
	for i, a := range s.addrs {
		if a == addr {
			s.prefer(i)
			return true
		}
	}
	return false
}

// failover reports whether a call that ended with err at one coordinator should be
// tried at another: it was unavailable, or silent past the attempt's own deadline
// while the caller still waits, or it belongs to another cluster than the node agent
// that called (its address now serves another cluster).
func failover(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || api.IsClusterMismatch(err)
}

// withAddress names the coordinator's address in a cluster-mismatch refusal, which
// the coordinator cannot (it does not know the address the agent dialed).
func withAddress(err error, addr string) error {
	if !api.IsClusterMismatch(err) {
		return err
	}
	return status.Errorf(codes.FailedPrecondition, "%s (coordinator %s)", status.Convert(err).Message(), addr)
}

func (s *coordinatorSet) unary(ctx context.Context, method string, req, reply any, _ *grpc.ClientConn,
	_ grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var last error
	back := failoverBackoff
	for round := range failoverRounds {
		tried := map[int]bool{}
		for k := 0; k < len(s.conns); k++ {
			// A leader hint from the coordinator before moves that one to the front.
			order := s.order()
			i := order[0]
			for _, j := range order {
				if !tried[j] {
					i = j
					break
				}
			}
			tried[i] = true
			actx, cancel := ctx, context.CancelFunc(func() {})
			if round == 0 {
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > failoverAttemptTimeout {
					actx, cancel = context.WithTimeout(ctx, failoverAttemptTimeout)
				}
			}
			var trailer metadata.MD
			err := s.conns[i].Invoke(actx, method, req, reply, append(opts, grpc.Trailer(&trailer))...)
			cancel()
			if err == nil {
				s.prefer(i)
				return nil
			}
			err = withAddress(err, s.addrs[i])
			if !failover(ctx, err) {
				return err
			}
			last = err
			slog.Debug("coordinator unavailable, trying another", "address", s.addrs[i], "method", method, "err", err)
			if hint := trailer.Get(api.LeaderHintHeader); len(hint) > 0 && !tried[s.indexOf(hint[0])] {
				s.preferAddr(hint[0])
			} else {
				s.prefer((i + 1) % len(s.conns))
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(back):
		}
		back *= 2
	}
	return last
}

// indexOf returns the index of addr in the set, or -1.
func (s *coordinatorSet) indexOf(addr string) int {
	for i, a := range s.addrs {
		if a == addr {
			return i
		}
	}
	return -1
}

// stream opens a stream at the first coordinator that accepts it.
func (s *coordinatorSet) stream(ctx context.Context, desc *grpc.StreamDesc, _ *grpc.ClientConn, method string,
	_ grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var last error
	for _, i := range s.order() {
		cs, err := s.conns[i].NewStream(ctx, desc, method, opts...)
		if err == nil {
			return cs, nil
		}
		if !failover(ctx, err) {
			return nil, err
		}
		last = err
	}
	return nil, last
}
