package paramserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// memBlob is an in-memory storage.Blob for tests.
type memBlob struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func newMemBlob() *memBlob { return &memBlob{objs: map[string][]byte{}} }

func (m *memBlob) Put(_ context.Context, key string, r io.Reader, _ int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = b
	return nil
}

func (m *memBlob) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	m.mu.Lock()
	_, ok := m.objs[key]
	m.mu.Unlock()
	if ok {
		return fmt.Errorf("%s: %w", key, storage.ErrExists)
	}
	return m.Put(ctx, key, r, size)
}

func (m *memBlob) Get(_ context.Context, key string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memBlob) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (m *memBlob) List(_ context.Context, prefix string) ([]storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.ObjectInfo
	for k, b := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, storage.ObjectInfo{Key: k, Size: int64(len(b))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memBlob) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memBlob) URI(key string) string { return "mem://" + key }

var _ storage.Blob = (*memBlob)(nil)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer runs a Server on a real loopback listener and returns it with its address.
func startServer(t testing.TB, chunkBytes int) (*Server, string) {
	t.Helper()
	srv := NewServer(ServerConfig{Logger: quietLogger(), Registry: prometheus.NewRegistry(), ChunkBytes: chunkBytes})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(ServerOptions()...)
	srv.Register(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return srv, lis.Addr().String()
}

func newTestClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func rawStub(t testing.TB, addr string) cohortv1.ParameterServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cohortv1.NewParameterServiceClient(cc)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func initialValues(n int) []float32 {
	p := make([]float32, n)
	for i := range p {
		p[i] = float32(math.Cos(float64(i))) * 0.5
	}
	return p
}

// workerGrad is a deterministic gradient of worker r that depends on the parameters, so
// that any divergence in pulled values shows in the trajectory.
func workerGrad(r int, p, g []float32) {
	c := 0.1 * float32(r+1)
	for i := range p {
		g[i] = c*p[i] + float32(math.Sin(float64(i+7*r)))
	}
}

func addShards(t testing.TB, srvs []*Server, cfg ShardConfig) {
	t.Helper()
	for i, s := range srvs {
		cfg.Shard = i
		if err := s.AddShard(cfg); err != nil {
			t.Fatal(err)
		}
	}
}

func assertClose(t *testing.T, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("len %d, want %d", len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > tol || math.IsNaN(d) {
			t.Fatalf("value %d = %v, want %v (diff %g > %g)", i, got[i], want[i], d, tol)
		}
	}
}

// TestSyncMatchesWeightedMean: 3 workers with different sample counts over 2 shards on
// two real loopback servers end exactly where one worker pushing the sample-weighted
// mean gradient ends.
func TestSyncMatchesWeightedMean(t *testing.T) {
	opts := []OptimizerConfig{
		{Name: "sgd", LearningRate: 0.05, WeightDecay: 0.01},
		{Name: "momentum", LearningRate: 0.02, Momentum: 0.9},
		{Name: "adam", LearningRate: 0.01, WeightDecay: 0.01},
	}
	const (
		n       = 1001 // odd: shards of 501 and 500 values
		steps   = 12
		workers = 3
	)
	samples := []int64{3, 5, 2}
	for _, opt := range opts {
		t.Run(opt.Name, func(t *testing.T) {
			ctx := testCtx(t)
			s0, a0 := startServer(t, 256) // 64 values a chunk: many chunks per shard
			s1, a1 := startServer(t, 1000)
			srvs, addrs := []*Server{s0, s1}, []string{a0, a1}
			addShards(t, srvs, ShardConfig{JobID: "multi", Generation: 1, Workers: workers, Optimizer: opt})
			addShards(t, srvs, ShardConfig{JobID: "single", Generation: 1, Workers: 1, Optimizer: opt})
			init := initialValues(n)

			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for r := range workers {
				wg.Go(func() {
					c := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "multi", Generation: 1, Rank: r,
						TotalParams: n, LayoutHash: "L", ChunkBytes: 100 + 4*r})
					if err := c.Init(ctx, init); err != nil {
						errs <- err
						return
					}
					p, g := make([]float32, n), make([]float32, n)
					for step := int64(0); step < steps; step++ {
						v, err := c.Pull(ctx, step, p)
						if err == nil && v != step {
							err = fmt.Errorf("rank %d pulled version %d at step %d", r, v, step)
						}
						if err == nil {
							workerGrad(r, p, g)
							err = c.Push(ctx, step, g, samples[r])
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}

			ref := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "single", TotalParams: n, LayoutHash: "L", Generation: 1})
			if err := ref.Init(ctx, init); err != nil {
				t.Fatal(err)
			}
			p, g, mean := make([]float32, n), make([]float32, n), make([]float32, n)
			for step := int64(0); step < steps; step++ {
				if _, err := ref.Pull(ctx, step, p); err != nil {
					t.Fatal(err)
				}
				sum := make([]float64, n)
				var total float64
				for r := range workers {
					workerGrad(r, p, g)
					for i := range g {
						sum[i] += float64(samples[r]) * float64(g[i])
					}
					total += float64(samples[r])
				}
				for i := range mean {
					mean[i] = float32(sum[i] / total)
				}
				if err := ref.Push(ctx, step, mean, 1); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			want := make([]float32, n)
			if v, err := ref.Pull(ctx, steps, want); err != nil || v != steps {
				t.Fatalf("reference final pull: version %d, %v", v, err)
			}
			got := make([]float32, n)
			c := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "multi", Generation: 1, TotalParams: n})
			if v, err := c.Pull(ctx, steps, got); err != nil || v != steps {
				t.Fatalf("final pull: version %d, %v", v, err)
			}
			assertClose(t, got, want, 1e-6)
			if string(float32Bytes(got, new([]byte))) == string(float32Bytes(init, new([]byte))) {
				t.Fatal("parameters never changed")
			}
		})
	}
}

func pushRaw(ctx context.Context, stub cohortv1.ParameterServiceClient, ref *cohortv1.ShardRef, step int64, rank int32, samples int64, grad []float32) (int64, error) {
	stream, err := stub.Push(ctx)
	if err != nil {
		return 0, err
	}
	err = stream.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{Ref: ref, Step: step, WorkerRank: rank, NumSamples: samples}}})
	if err == nil && len(grad) > 0 {
		err = stream.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: &cohortv1.Chunk{Data: float32Bytes(grad, new([]byte))}}})
	}
	resp, err := finish(stream, err)
	if err != nil {
		return 0, err
	}
	return resp.GetStep(), nil
}

func pullRaw(ctx context.Context, stub cohortv1.ParameterServiceClient, ref *cohortv1.ShardRef, minStep int64) ([]float32, int64, error) {
	stream, err := stub.Pull(ctx, &cohortv1.PullRequest{Ref: ref, MinStep: minStep})
	if err != nil {
		return nil, 0, err
	}
	var out []float32
	var step int64
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return out, step, nil
		}
		if err != nil {
			return nil, 0, err
		}
		step = m.GetStep()
		vals := make([]float32, len(m.GetChunk().GetData())/4)
		putFloat32s(vals, m.GetChunk().GetData())
		out = append(out, vals...)
	}
}

func initRaw(ctx context.Context, stub cohortv1.ParameterServiceClient, ref *cohortv1.ShardRef, rng Range, total uint64, layout string, vals []float32) (*cohortv1.InitResponse, error) {
	stream, err := stub.Init(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Header{Header: &cohortv1.InitHeader{
		Ref: ref, RangeOffset: rng.Offset, RangeLength: rng.Length, TotalParams: total, LayoutHash: layout}}})
	if err == nil && len(vals) > 0 {
		err = stream.Send(&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Chunk{Chunk: &cohortv1.Chunk{Data: float32Bytes(vals, new([]byte))}}})
	}
	return finish(stream, err)
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %v", err, code)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("err = %v, want message containing %q", err, msgPart)
	}
}

func TestRequestValidation(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	stub := rawStub(t, addr)
	if err := srv.AddShard(ShardConfig{JobID: "j", Shard: 0, Generation: 3, Workers: 2, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}); err != nil {
		t.Fatal(err)
	}
	ref := func(gen uint64) *cohortv1.ShardRef { return &cohortv1.ShardRef{JobId: "j", Shard: 0, Generation: gen} }
	rng := Range{0, 4}
	grad := []float32{1, 1, 1, 1}

	// Before Init.
	_, err := pushRaw(ctx, stub, ref(3), 0, 0, 1, grad)
	wantCode(t, err, codes.FailedPrecondition, "not initialised")
	_, _, err = pullRaw(ctx, stub, ref(3), 0)
	wantCode(t, err, codes.FailedPrecondition, "not initialised")

	if _, err := initRaw(ctx, stub, ref(3), rng, 4, "L", []float32{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		call  func() error
		code  codes.Code
		inMsg string
	}{
		{"unknown shard", func() error {
			_, err := pushRaw(ctx, stub, &cohortv1.ShardRef{JobId: "j", Shard: 5, Generation: 3}, 0, 0, 1, grad)
			return err
		}, codes.NotFound, "unknown shard"},
		{"stale generation push", func() error { _, err := pushRaw(ctx, stub, ref(2), 0, 0, 1, grad); return err }, codes.FailedPrecondition, "stale generation 2 (current 3)"},
		{"stale generation pull", func() error { _, _, err := pullRaw(ctx, stub, ref(4), 0); return err }, codes.FailedPrecondition, "stale generation 4 (current 3)"},
		{"stale generation init", func() error {
			_, err := initRaw(ctx, stub, ref(1), rng, 4, "L", nil)
			return err
		}, codes.FailedPrecondition, "stale generation"},
		{"wrong step ahead", func() error { _, err := pushRaw(ctx, stub, ref(3), 1, 0, 1, grad); return err }, codes.FailedPrecondition, "step 1, shard is at step 0"},
		{"rank out of range", func() error { _, err := pushRaw(ctx, stub, ref(3), 0, 2, 1, grad); return err }, codes.InvalidArgument, "rank 2"},
		{"negative samples", func() error { _, err := pushRaw(ctx, stub, ref(3), 0, 0, -1, grad); return err }, codes.InvalidArgument, "num_samples"},
		{"short gradient", func() error { _, err := pushRaw(ctx, stub, ref(3), 0, 0, 1, grad[:3]); return err }, codes.InvalidArgument, "received 3 of 4"},
		{"long gradient", func() error { _, err := pushRaw(ctx, stub, ref(3), 0, 0, 1, []float32{1, 2, 3, 4, 5}); return err }, codes.InvalidArgument, "exceeds"},
		{"bad init range", func() error { _, err := initRaw(ctx, stub, ref(3), Range{3, 4}, 4, "L", nil); return err }, codes.InvalidArgument, "outside total"},
		{"checkpoint without store", func() error {
			_, err := stub.Checkpoint(ctx, &cohortv1.CheckpointRequest{Ref: ref(3), Step: 0, KeyPrefix: storage.CheckpointPrefix("j", 0)})
			return err
		}, codes.FailedPrecondition, "no checkpoint store"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), tc.code, tc.inMsg) })
	}

	// A duplicate push is AlreadyExists and does not count twice.
	if _, err := pushRaw(ctx, stub, ref(3), 0, 0, 1, grad); err != nil {
		t.Fatal(err)
	}
	_, err = pushRaw(ctx, stub, ref(3), 0, 0, 1, grad)
	wantCode(t, err, codes.AlreadyExists, "already pushed")
	if v, err := pushRaw(ctx, stub, ref(3), 0, 1, 1, []float32{3, 3, 3, 3}); err != nil || v != 1 {
		t.Fatalf("second rank's push: version %d, %v", v, err)
	}
	vals, v, err := pullRaw(ctx, stub, ref(3), 1)
	if err != nil || v != 1 {
		t.Fatalf("pull: %v %v", v, err)
	}
	assertClose(t, vals, []float32{0.8, 1.8, 2.8, 3.8}, 1e-6) // mean gradient 2, lr 0.1
	// A push for a step already completed is refused naming both steps.
	_, err = pushRaw(ctx, stub, ref(3), 0, 0, 1, grad)
	wantCode(t, err, codes.FailedPrecondition, "push for step 0, shard is at step 1")
}

func TestInitHandshake(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 2, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}); err != nil {
		t.Fatal(err)
	}
	stub := rawStub(t, addr)
	ref := &cohortv1.ShardRef{JobId: "j", Generation: 1}
	first := []float32{1, 2, 3}
	resp, err := initRaw(ctx, stub, ref, Range{0, 3}, 3, "L", first)
	if err != nil || !resp.GetAcceptedValues() || resp.GetStep() != 0 {
		t.Fatalf("first init: %v, %v", resp, err)
	}
	resp, err = initRaw(ctx, stub, ref, Range{0, 3}, 3, "L", []float32{9, 9, 9})
	if err != nil || resp.GetAcceptedValues() {
		t.Fatalf("second init: %v, %v (want accepted=false)", resp, err)
	}
	for _, tc := range []struct {
		name   string
		rng    Range
		total  uint64
		layout string
	}{
		{"layout", Range{0, 3}, 3, "other"},
		{"total", Range{0, 3}, 4, "L"},
		{"range", Range{1, 2}, 3, "L"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := initRaw(ctx, stub, ref, tc.rng, tc.total, tc.layout, nil)
			wantCode(t, err, codes.FailedPrecondition, "layout mismatch")
		})
	}
	vals, _, err := pullRaw(ctx, stub, ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, vals, first, 0)

	// Through the Client: Init retries NotFound until the shard is created.
	notFound := make(chan struct{}, 1)
	observe := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		return &observedStream{ClientStream: cs, notFound: notFound}, err
	}
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "late", Generation: 1, TotalParams: 5, LayoutHash: "L",
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStreamInterceptor(observe)}})
	done := make(chan error, 1)
	go func() { done <- c.Init(ctx, []float32{1, 2, 3, 4, 5}) }()
	<-notFound // the first attempt failed: the shard does not exist yet
	if err := srv.AddShard(ShardConfig{JobID: "late", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("late init: %v", err)
	}
	if err := c.Init(ctx, make([]float32, 4)); err == nil {
		t.Fatal("Init with the wrong length succeeded")
	}
}

func TestCheckpointRoundTripAndRestore(t *testing.T) {
	ctx := testCtx(t)
	const n, k1, k2 = 301, 4, 5
	opt := OptimizerConfig{Name: "adam", LearningRate: 0.01}
	store := newMemBlob()
	s0, a0 := startServer(t, 128)
	s1, a1 := startServer(t, 0)
	addrs := []string{a0, a1}
	addShards(t, []*Server{s0, s1}, ShardConfig{JobID: "ck", Generation: 1, Workers: 1, Optimizer: opt, Store: store})
	c := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "ck", Generation: 1, TotalParams: n, LayoutHash: "L"})
	if err := c.Init(ctx, initialValues(n)); err != nil {
		t.Fatal(err)
	}
	p, g := make([]float32, n), make([]float32, n)
	run := func(c *Client, from, to int64) {
		t.Helper()
		for step := from; step < to; step++ {
			if v, err := c.Pull(ctx, step, p); err != nil || v != step {
				t.Fatalf("pull %d: version %d, %v", step, v, err)
			}
			workerGrad(0, p, g)
			if err := c.Push(ctx, step, g, 8); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(c, 0, k1)
	objs, err := c.Checkpoint(ctx, k1, "jobs/ck/checkpoints/step-4/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Checkpoint(ctx, k1-1, "jobs/ck/checkpoints/old"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("checkpoint of a past step: %v, want FailedPrecondition", err)
	}
	run(c, k1, k1+k2)
	want := make([]float32, n)
	if _, err := c.Pull(ctx, k1+k2, want); err != nil {
		t.Fatal(err)
	}

	// Restore both shards on fresh servers at a new generation and continue.
	r0, b0 := startServer(t, 0)
	r1, b1 := startServer(t, 0)
	for i, o := range objs {
		if o.Key != fmt.Sprintf("jobs/ck/checkpoints/step-4/shard-%03d.ckpt", i) || o.Shard != i || o.Length != Partition(n, 2)[i].Length {
			t.Fatalf("object %d = %+v", i, o)
		}
		rc, err := store.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(rc)
		sum := sha256.Sum256(raw)
		if int64(len(raw)) != o.Size || hex.EncodeToString(sum[:]) != o.SHA256 {
			t.Fatalf("object %d: size %d sha %s, reported %d %s", i, len(raw), hex.EncodeToString(sum[:]), o.Size, o.SHA256)
		}
		ck, err := ReadShardCheckpoint(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if ck.Step != k1 || ck.OptimizerStep != k1 || ck.Range.Offset != o.Offset || ck.TotalParams != n || ck.LayoutHash != "L" {
			t.Fatalf("checkpoint header %+v", ck)
		}
		srv := []*Server{r0, r1}[i]
		if err := srv.RestoreShard(ctx, ShardConfig{JobID: "ck", Shard: i, Generation: 2, Workers: 1, Optimizer: opt}, ck); err != nil {
			t.Fatal(err)
		}
	}
	rc := newTestClient(t, ClientConfig{Addresses: []string{b0, b1}, JobID: "ck", Generation: 2, TotalParams: n, LayoutHash: "L"})
	if err := rc.Init(ctx, make([]float32, n)); err != nil { // accepted without changing values
		t.Fatal(err)
	}
	bad := newTestClient(t, ClientConfig{Addresses: []string{b0, b1}, JobID: "ck", Generation: 2, TotalParams: n, LayoutHash: "other"})
	if err := bad.Init(ctx, make([]float32, n)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("init with another layout after restore: %v", err)
	}
	run(rc, k1, k1+k2)
	got := make([]float32, n)
	if _, err := rc.Pull(ctx, k1+k2, got); err != nil {
		t.Fatal(err)
	}
	assertClose(t, got, want, 0) // bit-identical continuation
}

func TestRemoveShardUnblocksPull(t *testing.T) {
	for _, removeJob := range []bool{false, true} {
		t.Run(fmt.Sprintf("job=%v", removeJob), func(t *testing.T) {
			ctx := testCtx(t)
			srv, addr := startServer(t, 0)
			waiting := make(chan struct{}, 1)
			srv.waitHook = func() { waiting <- struct{}{} }
			if err := srv.AddShard(ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
				t.Fatal(err)
			}
			c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: 2})
			if err := c.Init(ctx, []float32{1, 2}); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := c.Pull(ctx, 5, make([]float32, 2))
				done <- err
			}()
			<-waiting
			if removeJob {
				srv.RemoveJob("j")
			} else {
				srv.RemoveShard("j", 0)
			}
			wantCode(t, <-done, codes.Aborted, "shard removed")
		})
	}
}

func TestAsyncAppliesPerPush(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	if err := srv.AddShard(ShardConfig{JobID: "a", Generation: 1, Workers: 2, Mode: ModeAsync, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.5}}); err != nil {
		t.Fatal(err)
	}
	w0 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "a", Generation: 1, Rank: 0, TotalParams: 2, Mode: ModeAsync})
	w1 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "a", Generation: 1, Rank: 1, TotalParams: 2, Mode: ModeAsync})
	if err := w0.Init(ctx, []float32{10, 20}); err != nil {
		t.Fatal(err)
	}
	p := make([]float32, 2)
	steps := []struct {
		c       *Client
		step    int64
		grad    []float32
		samples int64
		want    []float32
		version int64
	}{
		{w0, 0, []float32{2, 4}, 10, []float32{9, 18}, 1},    // applied at once, not weighted
		{w1, 0, []float32{2, 2}, 1, []float32{8, 17}, 2},     // stale by one: still applied
		{w1, 2, []float32{100, 100}, 0, []float32{8, 17}, 3}, // empty batch: version only
		{w0, 3, []float32{-2, -2}, 5, []float32{9, 18}, 4},
	}
	for i, s := range steps {
		if err := s.c.Push(ctx, s.step, s.grad, s.samples); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		v, err := w0.Pull(ctx, s.version, p)
		if err != nil || v != s.version {
			t.Fatalf("pull after push %d: version %d, %v", i, v, err)
		}
		assertClose(t, p, s.want, 1e-6)
	}
	if err := w0.Push(ctx, 9, []float32{1, 1}, 1); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("push from the future: %v", err)
	}
}

func TestBoundedStaleness(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	if err := srv.AddShard(ShardConfig{JobID: "b", Generation: 1, Workers: 2, Mode: ModeBounded, Staleness: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	w0 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "b", Generation: 1, Rank: 0, TotalParams: 1, Mode: ModeBounded})
	w1 := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "b", Generation: 1, Rank: 1, TotalParams: 1, Mode: ModeBounded})
	if err := w0.Init(ctx, []float32{0}); err != nil {
		t.Fatal(err)
	}
	for step := int64(0); step < 3; step++ { // w0 races ahead: version 3
		if err := w0.Push(ctx, step, []float32{1}, 1); err != nil {
			t.Fatal(err)
		}
	}
	// w1's gradient of step 0 is 3 updates old; the limit is Staleness*Workers = 2.
	err := w1.Push(ctx, 0, []float32{1}, 1)
	wantCode(t, err, codes.FailedPrecondition, "too stale")
	if err := w1.Push(ctx, 1, []float32{1}, 1); err != nil {
		t.Fatalf("push within the bound: %v", err)
	}
	p := make([]float32, 1)
	if v, err := w1.Pull(ctx, 0, p); err != nil || v != 4 || p[0] != -4 {
		t.Fatalf("pull: version %d value %v, %v", v, p, err)
	}
}

// TestBoundedPullsKeepWorkersWithinStaleness: in bounded mode a worker's pull for its
// step c returns only once every other worker has pulled for at least c-s, so under
// random delays no worker ever runs more than s steps ahead of the slowest.
func TestBoundedPullsKeepWorkersWithinStaleness(t *testing.T) {
	const workers, steps, staleness = 3, 40, 2
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	if err := srv.AddShard(ShardConfig{JobID: "ssp", Generation: 1, Workers: workers, Mode: ModeBounded, Staleness: staleness, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.01}}); err != nil {
		t.Fatal(err)
	}
	clients := make([]*Client, workers)
	for r := range clients {
		clients[r] = newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "ssp", Generation: 1, Rank: r, TotalParams: 4, Mode: ModeBounded})
	}
	if err := clients[0].Init(ctx, make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	var pulledFor [workers]atomic.Int64 // set before each pull is sent
	var maxLead atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for r := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			p, g := make([]float32, 4), []float32{1, 1, 1, 1}
			for c := int64(0); c < steps; c++ {
				pulledFor[r].Store(c)
				v, err := clients[r].Pull(ctx, c, p)
				if err != nil {
					errs <- err
					return
				}
				for o := range workers {
					if lead := c - pulledFor[o].Load(); o != r && lead > maxLead.Load() {
						maxLead.Store(lead)
					}
				}
				// Worker 0 runs flat out; the others take random time per step.
				if r > 0 {
					time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond) // simulated compute time, not synchronisation
				}
				if err := clients[r].Push(ctx, v, g, 1); err != nil && !IsTooStale(err) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := maxLead.Load(); got > staleness {
		t.Fatalf("a worker ran %d steps ahead of another, bound %d", got, staleness)
	}
	t.Logf("largest lead observed: %d steps (bound %d)", maxLead.Load(), staleness)
}

// TestSetGenerationShrinksBarrier: a membership change discards the gradients pushed
// for the step in progress (ranks are renumbered), the new membership's barrier applies
// at once, and old-generation calls fail.
func TestSetGenerationShrinksBarrier(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	waiting := make(chan struct{}, 1)
	srv.waitHook = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	if err := srv.AddShard(ShardConfig{JobID: "g", Generation: 1, Workers: 3, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
		t.Fatal(err)
	}
	cl := func(rank int) *Client {
		return newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "g", Generation: 1, Rank: rank, TotalParams: 1})
	}
	w0, w1 := cl(0), cl(1)
	if err := w0.Init(ctx, []float32{0}); err != nil {
		t.Fatal(err)
	}
	if err := w0.Push(ctx, 0, []float32{1}, 1); err != nil {
		t.Fatal(err)
	}
	if err := w1.Push(ctx, 0, []float32{4}, 3); err != nil {
		t.Fatal(err)
	}
	stale := make(chan error, 1)
	go func() { _, err := w1.Pull(ctx, 1, make([]float32, 1)); stale <- err }()
	<-waiting
	if err := srv.SetGeneration("g", 0, 2, 2); err != nil {
		t.Fatal(err)
	}
	wantCode(t, <-stale, codes.FailedPrecondition, "stale generation 1 (current 2)")
	w0.SetMembership(2, 0)
	w1.SetMembership(2, 1)
	// Step 0 is pushed again by the two ranks of generation 2.
	if err := w0.Push(ctx, 0, []float32{1}, 1); err != nil {
		t.Fatal(err)
	}
	if err := w1.Push(ctx, 0, []float32{4}, 3); err != nil {
		t.Fatal(err)
	}
	p := make([]float32, 1)
	if v, err := w0.Pull(ctx, 1, p); err != nil || v != 1 || p[0] != -3.25 { // mean (1*1+3*4)/4
		t.Fatalf("after shrink: version %d value %v, %v", v, p, err)
	}
	// The step the generation completed is a duplicate, not an error.
	if err := w0.Push(ctx, 0, []float32{9}, 1); err != nil {
		t.Fatalf("push of a completed step: %v", err)
	}
	for _, tc := range []struct {
		gen     uint64
		workers int
	}{{1, 2}, {2, 3}} {
		if err := srv.SetGeneration("g", 0, tc.gen, tc.workers); err == nil {
			t.Errorf("SetGeneration(%d,%d) succeeded", tc.gen, tc.workers)
		}
	}
	if err := srv.SetGeneration("nope", 0, 5, 1); err == nil {
		t.Error("SetGeneration of an unknown shard succeeded")
	}
	// All-empty step: version advances without an optimizer step.
	if err := w0.Push(ctx, 1, []float32{7}, 0); err != nil {
		t.Fatal(err)
	}
	if err := w1.Push(ctx, 1, []float32{7}, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := w0.Pull(ctx, 2, p); err != nil || v != 2 || p[0] != -3.25 {
		t.Fatalf("after empty step: version %d value %v, %v", v, p, err)
	}
}

func TestAddShard(t *testing.T) {
	srv := NewServer(ServerConfig{Logger: quietLogger()})
	base := ShardConfig{JobID: "j", Shard: 0, Generation: 2, Workers: 2, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}
	if err := srv.AddShard(base); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*ShardConfig)) ShardConfig { c := base; f(&c); return c }
	tests := []struct {
		name    string
		cfg     ShardConfig
		wantErr bool
	}{
		{"identical", base, false},
		{"explicit sync mode is identical", mod(func(c *ShardConfig) { c.Mode = "sync" }), false},
		{"newer generation", mod(func(c *ShardConfig) { c.Generation = 3; c.Workers = 4 }), false},
		{"older generation", mod(func(c *ShardConfig) { c.Generation = 1 }), true},
		{"other optimizer", mod(func(c *ShardConfig) { c.Generation = 5; c.Optimizer.Name = "adam" }), true},
		{"other mode", mod(func(c *ShardConfig) { c.Generation = 5; c.Mode = "async" }), true},
		{"no job", mod(func(c *ShardConfig) { c.JobID = "" }), true},
		{"negative shard", mod(func(c *ShardConfig) { c.Shard = -1 }), true},
		{"no workers", mod(func(c *ShardConfig) { c.JobID = "k"; c.Workers = 0 }), true},
		{"bad mode", mod(func(c *ShardConfig) { c.JobID = "k"; c.Mode = "eventual" }), true},
		{"bad optimizer", mod(func(c *ShardConfig) { c.JobID = "k"; c.Optimizer.LearningRate = 0 }), true},
		{"negative staleness", mod(func(c *ShardConfig) { c.JobID = "k"; c.Mode = "bounded"; c.Staleness = -1 }), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := srv.AddShard(tc.cfg); (err != nil) != tc.wantErr {
				t.Fatalf("AddShard = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewServer(ServerConfig{Logger: quietLogger(), Registry: reg})
	NewServer(ServerConfig{Logger: quietLogger(), Registry: reg}) // second server shares the series
	NewServer(ServerConfig{Logger: quietLogger()})                // nil registry: nothing registered
	srv := NewServer(ServerConfig{Logger: quietLogger(), Registry: reg})
	srv.m.bytesSent.Add(1)
	srv.m.applySeconds.WithLabelValues("sgd").Observe(0.1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"cohort_ps_apply_seconds", "cohort_ps_bytes_sent_total", "cohort_ps_shards"} {
		if !names[n] {
			t.Errorf("metric %s not registered (have %v)", n, names)
		}
	}
}

// observedStream reports NotFound statuses received on a client stream.
type observedStream struct {
	grpc.ClientStream
	notFound chan struct{}
}

func (s *observedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if status.Code(err) == codes.NotFound {
		select {
		case s.notFound <- struct{}{}:
		default:
		}
	}
	return err
}
