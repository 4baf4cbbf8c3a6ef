package paramserver

import (
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// countingServer serves srv (or impl, when set, in its place) and counts the Session
// streams it accepts.
func countingServer(t *testing.T, srv *Server, impl cohortv1.ParameterServiceServer) (addr string, sessions *atomic.Int64) {
	t.Helper()
	sessions = new(atomic.Int64)
	count := func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == cohortv1.ParameterService_Session_FullMethodName {
			sessions.Add(1)
		}
		return h(s, ss)
	}
	g := grpc.NewServer(append(ServerOptions(), grpc.StreamInterceptor(count))...)
	if impl == nil {
		impl = srv
	}
	cohortv1.RegisterParameterServiceServer(g, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String(), sessions
}

func newQuietServer(chunkBytes int) *Server {
	return NewServer(ServerConfig{Logger: quietLogger(), Registry: prometheus.NewRegistry(), ChunkBytes: chunkBytes})
}

// trainSync runs steps sync steps of 2 workers against 2 shards (Adam) and returns
// worker 0's final parameters.
func trainSync(t *testing.T, noSessions bool, steps int) []float32 {
	t.Helper()
	ctx := testCtx(t)
	const n = 3001 // odd, and several chunks of 1 KiB per shard
	var addrs []string
	for shard := range 2 {
		srv := newQuietServer(1024)
		if err := srv.AddShard(ShardConfig{JobID: "j", Shard: shard, Generation: 1, Workers: 2,
			Optimizer: OptimizerConfig{Name: "adam", LearningRate: 1e-2}}); err != nil {
			t.Fatal(err)
		}
		addr, _ := countingServer(t, srv, nil)
		addrs = append(addrs, addr)
	}
	var clients [2]*Client
	for r := range clients {
		clients[r] = newTestClient(t, ClientConfig{Addresses: addrs, JobID: "j", Generation: 1, Rank: r,
			TotalParams: n, ChunkBytes: 1024, NoSessions: noSessions})
		if err := clients[r].Init(ctx, initialValues(n)); err != nil {
			t.Fatal(err)
		}
	}
	params := [2][]float32{initialValues(n), initialValues(n)}
	for step := range int64(steps) {
		errs := make(chan error, 2)
		for r, c := range clients {
			g := make([]float32, n)
			workerGrad(r, params[r], g)
			go func() {
				err := c.Push(ctx, step, g, int64(10+r))
				if err == nil {
					_, err = c.Pull(ctx, step+1, params[r])
				}
				errs <- err
			}()
		}
		for range clients {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	return params[0]
}

// TestSessionMatchesPerCallRPCs: training through sessions gives bit-identical
// parameters to training through the per-call Push and Pull RPCs.
func TestSessionMatchesPerCallRPCs(t *testing.T) {
	a, b := trainSync(t, false, 12), trainSync(t, true, 12)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("parameter %d: %v through sessions, %v through per-call RPCs", i, a[i], b[i])
		}
	}
}

// TestSessionRefusalKeepsStream: a refused push comes back with the status the
// per-call RPC returns, and the following operations reuse the same stream.
func TestSessionRefusalKeepsStream(t *testing.T) {
	ctx := testCtx(t)
	srv := newQuietServer(0)
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.5}}); err != nil {
		t.Fatal(err)
	}
	addr, sessions := countingServer(t, srv, nil)
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: 8})
	if err := c.Init(ctx, make([]float32, 8)); err != nil {
		t.Fatal(err)
	}
	grad := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	wantCode(t, c.Push(ctx, 5, grad, 1), codes.FailedPrecondition, ErrWrongStep.Error()) // sync: version is 0
	c.SetMembership(0, 0)                                                                // a stale generation: refused too
	wantCode(t, c.Push(ctx, 0, grad, 1), codes.FailedPrecondition, ErrStaleGeneration.Error())
	c.SetMembership(1, 0)
	if err := c.Push(ctx, 0, grad, 1); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 8)
	v, err := c.Pull(ctx, 1, got)
	if err != nil || v != 1 {
		t.Fatalf("pull: version %d, err %v", v, err)
	}
	for i, g := range grad {
		if want := -0.5 * g; got[i] != want {
			t.Fatalf("parameter %d = %v after one SGD step, want %v", i, got[i], want)
		}
	}
	if n := sessions.Load(); n != 1 {
		t.Errorf("%d session streams for 4 operations with 2 refusals, want 1", n)
	}
}

// noSessionServer is a server from before sessions: Session is unimplemented.
type noSessionServer struct{ *Server }

func (noSessionServer) Session(cohortv1.ParameterService_SessionServer) error {
	return status.Error(codes.Unimplemented, "method Session not implemented")
}

// TestSessionFallsBackWithoutServerSupport: against a server without Session, pushes
// and pulls go through the per-call RPCs, and sessions are not tried again.
func TestSessionFallsBackWithoutServerSupport(t *testing.T) {
	ctx := testCtx(t)
	srv := newQuietServer(0)
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	addr, sessions := countingServer(t, srv, noSessionServer{srv})
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: 4})
	if err := c.Init(ctx, make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 4)
	for step := range int64(3) {
		if err := c.Push(ctx, step, []float32{1, 1, 1, 1}, 1); err != nil {
			t.Fatalf("push %d: %v", step, err)
		}
		if v, err := c.Pull(ctx, step+1, got); err != nil || v != step+1 {
			t.Fatalf("pull %d: version %d, err %v", step+1, v, err)
		}
	}
	if got[0] != -3 {
		t.Errorf("parameter after 3 steps = %v, want -3", got[0])
	}
	if n := sessions.Load(); n != 1 {
		t.Errorf("%d session attempts, want 1 (then the per-call RPCs)", n)
	}
}

// TestSessionCancelledPullRecovers: a pull waiting at the sync barrier ends when its
// context does, and the next operations open a new stream and succeed.
func TestSessionCancelledPullRecovers(t *testing.T) {
	ctx := testCtx(t)
	srv := newQuietServer(0)
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 2, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	addr, sessions := countingServer(t, srv, nil)
	c0 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, Rank: 0, TotalParams: 4})
	c1 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, Rank: 1, TotalParams: 4})
	if err := c0.Init(ctx, make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	if err := c0.Push(ctx, 0, []float32{2, 2, 2, 2}, 1); err != nil {
		t.Fatal(err)
	}
	// Rank 1 has not pushed: the barrier holds the pull until the context ends.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c0.Pull(short, 1, make([]float32, 4)); !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("pull at the barrier: %v, want the context's deadline", err)
	}
	if err := c1.Push(ctx, 0, []float32{4, 4, 4, 4}, 1); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 4)
	if v, err := c0.Pull(ctx, 1, got); err != nil || v != 1 || got[0] != -3 {
		t.Fatalf("pull after the barrier: version %d, values %v, err %v; want 1 and -3 (mean gradient 3)", v, got, err)
	}
	if n := sessions.Load(); n < 3 {
		t.Errorf("%d session streams, want a new one after the cancelled pull (3 or more in all)", n)
	}
}

// TestSessionConcurrentCallsDoNotDeadlock: a pull blocked on a shard's session does not
// hold up a push on the same Client (the push goes through a per-call RPC), even when
// the pull waits for exactly that push.
func TestSessionConcurrentCallsDoNotDeadlock(t *testing.T) {
	ctx := testCtx(t)
	srv := newQuietServer(0)
	waiting := make(chan struct{})
	var once sync.Once
	srv.waitHook = func() { once.Do(func() { close(waiting) }) } // read by AddShard
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	addr, _ := countingServer(t, srv, nil)
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: 4})
	if err := c.Init(ctx, make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	pulled := make(chan error, 1)
	go func() {
		_, err := c.Pull(ctx, 1, make([]float32, 4))
		pulled <- err
	}()
	<-waiting // the pull holds the session and waits for version 1
	if err := c.Push(ctx, 0, []float32{1, 1, 1, 1}, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-pulled; err != nil {
		t.Fatal(err)
	}
}

// TestSessionRejectsMalformedSequence: messages out of the protocol's order end the
// session with InvalidArgument naming the protocol.
func TestSessionRejectsMalformedSequence(t *testing.T) {
	ctx := testCtx(t)
	srv := newQuietServer(0)
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	addr, _ := countingServer(t, srv, nil)
	ref := &cohortv1.ShardRef{JobId: "j", Generation: 1}
	for name, msgs := range map[string][]*cohortv1.SessionRequest{
		"chunk first": {{Part: &cohortv1.SessionRequest_Chunk{Chunk: &cohortv1.Chunk{Data: []byte{0, 0, 0, 0}}}}},
		"end first":   {{Part: &cohortv1.SessionRequest_End{End: &cohortv1.SessionEnd{}}}},
		"pull inside a push": {
			{Part: &cohortv1.SessionRequest_Push{Push: &cohortv1.PushHeader{Ref: ref}}},
			{Part: &cohortv1.SessionRequest_Pull{Pull: &cohortv1.PullRequest{Ref: ref}}},
		},
		"empty message": {{}},
	} {
		t.Run(name, func(t *testing.T) {
			stream, err := rawStub(t, addr).Session(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if err := stream.Send(m); err != nil {
					break
				}
			}
			_ = stream.CloseSend()
			for {
				_, err = stream.Recv()
				if err != nil {
					break
				}
			}
			wantCode(t, err, codes.InvalidArgument, "session")
		})
	}
}

// TestSessionLostReported: a worker whose session breaks after it pushed (its process
// died: the connection goes without the stream ending) is reported to OnSessionLost
// with its job, generation and rank; a worker that closes its client cleanly after
// pushing is not, nor is one that never pushed.
func TestSessionLostReported(t *testing.T) {
	ctx := testCtx(t)
	type lost struct {
		job  string
		gen  uint64
		rank int
	}
	reports := make(chan lost, 4)
	srv := NewServer(ServerConfig{Logger: quietLogger(), OnSessionLost: func(job string, gen uint64, rank int) {
		reports <- lost{job, gen, rank}
	}})
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 3, Workers: 3, Mode: "async", Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.5}}); err != nil {
		t.Fatal(err)
	}
	// ended receives how each Session stream ended on the server.
	ended := make(chan error, 8)
	g := grpc.NewServer(append(ServerOptions(), grpc.StreamInterceptor(
		func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(s, ss)
			if info.FullMethod == cohortv1.ParameterService_Session_FullMethodName {
				ended <- err
			}
			return err
		}))...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	addr := lis.Addr().String()
	client := func(rank int) *Client {
		return newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 3, Rank: rank, TotalParams: 4})
	}
	idle, clean, dying := client(0), client(1), client(2)
	if err := idle.Init(ctx, make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{clean, dying} {
		if err := c.Push(ctx, 0, []float32{1, 1, 1, 1}, 1); err != nil {
			t.Fatal(err)
		}
	}
	_ = idle.Close()
	_ = clean.Close()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("a cleanly closed client's session ended with %v on the server, want its end", err)
		}
	case <-ctx.Done():
		t.Fatal("the closed client's session did not end")
	}
	// Death: the streams and the connection go without the sessions being ended.
	dying.stop()
	for _, cc := range dying.conns {
		_ = cc.Close()
	}
	select {
	case got := <-reports:
		if got != (lost{"j", 3, 2}) {
			t.Fatalf("reported %+v, want job j generation 3 rank 2 (the dead one)", got)
		}
	case <-ctx.Done():
		t.Fatal("the broken session was not reported")
	}
	select {
	case got := <-reports:
		t.Fatalf("also reported %+v", got)
	default:
	}
}
