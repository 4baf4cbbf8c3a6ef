package api

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// stallingProxy forwards TCP connections to a backend; stall makes every connection
// open at that moment a black hole (nothing more passes either way, nothing is
// closed), as a connection stuck in TCP's retransmission backoff looks to gRPC, while
// new connections pass.
type stallingProxy struct {
	ln       net.Listener
	backend  string
	era      atomic.Int64 // connections accepted in an older era are stalled
	accepted atomic.Int64
	done     chan struct{}
	wg       sync.WaitGroup
}

func newStallingProxy(t *testing.T, backend string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, backend: backend, done: make(chan struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.wg.Go(func() { p.serve(c, p.era.Load()) })
		}
	})
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *stallingProxy) addr() string { return p.ln.Addr().String() }
func (p *stallingProxy) stall()       { p.era.Add(1) }

func (p *stallingProxy) serve(c net.Conn, era int64) {
	defer c.Close()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer b.Close()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if p.era.Load() != era {
				<-p.done // a black hole until the test ends
				return
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil { // io.EOF or a closed connection
				return
			}
		}
	}
	go func() {
		<-p.done
		c.Close()
		b.Close()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { pipe(b, c) })
	wg.Go(func() { pipe(c, b) })
	wg.Wait()
}

// fixedLocator names one leader at one address.
type fixedLocator struct{ addr string }

func (l fixedLocator) LeaderGRPCAddr() (string, string, bool) { return "c1", l.addr, true }
func (l fixedLocator) NodeID() string                         { return "c2" }

// TestForwardRedialsStalledLeaderConnection: the campaign saw a follower's connection
// to the leader stall (after packet loss) while new connections went through; every
// forwarded attempt waited out its timeout on it until keepalive closed it, 10-22 s.
// A forwarded attempt that times out at a leader that stays the leader now makes the
// next attempt dial afresh: the call succeeds on the second attempt, over a second
// connection. Without the redial every attempt rides the stalled connection and the
// call fails Unavailable once the leader counts as unreachable.
func TestForwardRedialsStalledLeaderConnection(t *testing.T) {
	defer func(d time.Duration) { minRedialInterval = d }(minRedialInterval)
	minRedialInterval = 0

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()
	proxy := newStallingProxy(t, ln.Addr().String())

	f := NewLeaderForwarder(fixedLocator{proxy.addr()}, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer f.Close()
	cfg := Config{Forwarder: f, ForwardTimeout: time.Minute, ForwardAttemptTimeout: 300 * time.Millisecond,
		LeaderUnreachableTimeout: 2 * time.Second}.withDefaults()
	check := func(ctx context.Context, c grpc.ClientConnInterface) (string, error) {
		r, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
		return r.GetStatus().String(), err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, err := leaderCall(ctx, cfg, notLeader, check); err != nil || got != "SERVING" {
		t.Fatalf("first forwarded call: %q, %v", got, err)
	}
	if n := proxy.accepted.Load(); n != 1 {
		t.Fatalf("%d connections before the stall, want 1", n)
	}
	proxy.stall()
	if got, err := leaderCall(ctx, cfg, notLeader, check); err != nil || got != "SERVING" {
		t.Fatalf("forwarded call over a stalled connection: %q, %v; want it answered over a new one", got, err)
	}
	if n := proxy.accepted.Load(); n != 2 {
		t.Fatalf("%d connections after the stall, want 2 (one redial)", n)
	}
}
