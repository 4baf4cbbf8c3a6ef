//go:build unix

package paramserver

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cohort-dev/cohort/internal/pki"
)

// BenchmarkPushPullTLS measures one sync step (push a 16 MiB gradient to 2 shards, pull
// 16 MiB of values, 1 MiB chunks) over real loopback gRPC, plaintext against what a
// cluster runs: mutual TLS 1.3 with agent certificates from the cluster CA and the
// shards' check that the caller is one of the job's workers. BENCHMARKS.md records the
// ratio (target: TLS at most 15% slower).
func BenchmarkPushPullTLS(b *testing.B) {
	const n = 4 << 20
	b.Run("plaintext", func(b *testing.B) { benchPushPullWith(b, n, 1<<20, nil) })
	b.Run("mtls", func(b *testing.B) { benchPushPullWith(b, n, 1<<20, newBenchTLS(b)) })
}

// benchTLS is the material of a mutual-TLS benchmark: a CA, and the shard's and
// worker's agent certificates.
type benchTLS struct {
	ca            *pki.CA
	shard, worker *pki.Reloader
	// untuned serves and dials with plain gRPC TLS credentials and buffers instead of
	// TLSServerOptions and TLSDialOptions (what the node did before them).
	untuned bool
}

func newBenchTLS(b *testing.B) *benchTLS {
	ca, err := pki.NewCA("bench", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	issue := func(name string) *pki.Reloader {
		certPEM, keyPEM, err := ca.IssueFor(pki.Identity{Name: name, Role: pki.RoleAgent}, []string{"127.0.0.1"}, time.Hour, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		r, err := pki.NewReloader(certPEM, keyPEM, nil)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	return &benchTLS{ca: ca, shard: issue("ps-node"), worker: issue("worker-node")}
}

// peerName is the shards' CallerFunc as a TLS node sets it (node.tlsCaller).
func peerName(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", pki.ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", pki.ErrNoIdentity
	}
	id, err := pki.IdentityFromTLS(info.State)
	return id.Name, err
}

func startBenchServer(b *testing.B, t *benchTLS) (*Server, string) {
	if t == nil {
		return startServer(b, 0)
	}
	srv := NewServer(ServerConfig{Logger: quietLogger(), Registry: prometheus.NewRegistry()})
	srv.SetCaller(peerName)
	cfg := pki.ServerTLSConfig(t.ca.Pool(), t.shard, true)
	cfg.VerifyConnection = pki.RequireRole(pki.RoleAgent)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	opts := append(ServerOptions(), TLSServerOptions(credentials.NewTLS(cfg))...)
	if t.untuned {
		opts = append(ServerOptions(), grpc.Creds(credentials.NewTLS(cfg)))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	b.Cleanup(g.Stop)
	return srv, lis.Addr().String()
}

func benchPushPullWith(b *testing.B, n, chunk int, t *benchTLS) {
	step := newBenchStep(b, n, chunk, t)
	b.SetBytes(int64(2 * 4 * n))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
}

// newBenchStep starts two shards (over TLS when t is set) and a client, initialises
// them with n values and returns one sync step: push a gradient, pull the values.
func newBenchStep(b *testing.B, n, chunk int, t *benchTLS) func() {
	ctx := context.Background()
	s0, a0 := startBenchServer(b, t)
	s1, a1 := startBenchServer(b, t)
	addShards(b, []*Server{s0, s1}, ShardConfig{JobID: "bench", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1e-6}})
	cc := ClientConfig{Addresses: []string{a0, a1}, JobID: "bench", Generation: 1, TotalParams: uint64(n), ChunkBytes: chunk}
	if t != nil {
		for i, s := range []*Server{s0, s1} {
			s.SetAllowedWorkers("bench", i, 1, []string{"worker-node"})
		}
		creds := credentials.NewTLS(pki.RoleClientTLSConfig(t.ca.Pool(), t.worker, pki.RoleAgent))
		cc.DialOptions = TLSDialOptions(creds)
		if t.untuned {
			cc.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(creds)}
		}
	}
	c := newTestClient(b, cc)
	p := initialValues(n)
	if err := c.Init(ctx, p); err != nil {
		b.Fatal(err)
	}
	g := make([]float32, n)
	workerGrad(0, p, g)
	var step int64
	return func() {
		if err := c.Push(ctx, step, g, 1); err != nil {
			b.Fatal(err)
		}
		step++
		if _, err := c.Pull(ctx, step, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushPullTLSInterleaved runs the steps of BenchmarkPushPullTLS's two modes
// alternately in one run, so that a machine loaded by others slows both alike, and
// reports the ratios plaintext/TLS of wall time (tls-wall-ratio: 1 is no cost, the
// target is at least 0.85) and of the process's CPU time per step (tls-cpu-ratio, which
// load disturbs much less). A third mode, TLS with gRPC's plain TLS credentials and
// buffers (untuned-...), shows what TLSServerOptions and TLSDialOptions gain. Each op is
// one step of each mode.
func BenchmarkPushPullTLSInterleaved(b *testing.B) {
	const n = 4 << 20
	untuned := newBenchTLS(b)
	untuned.untuned = true
	steps := [3]func(){newBenchStep(b, n, 1<<20, nil), newBenchStep(b, n, 1<<20, newBenchTLS(b)),
		newBenchStep(b, n, 1<<20, untuned)}
	for _, step := range steps {
		step() // connect and warm up
	}
	var wall, cpu [3]time.Duration
	b.SetBytes(int64(len(steps) * 2 * 4 * n))
	b.ResetTimer()
	for b.Loop() {
		for i, step := range steps {
			w, c := time.Now(), processCPU(b)
			step()
			wall[i] += time.Since(w)
			cpu[i] += processCPU(b) - c
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(per(wall[0]), "plain-ms/step")
	b.ReportMetric(per(wall[1]), "tls-ms/step")
	b.ReportMetric(per(cpu[0]), "plain-cpu-ms/step")
	b.ReportMetric(per(cpu[1]), "tls-cpu-ms/step")
	b.ReportMetric(float64(wall[0])/float64(wall[1]), "tls-wall-ratio")
	b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "tls-cpu-ratio")
	b.ReportMetric(per(cpu[2]), "untuned-tls-cpu-ms/step")
	b.ReportMetric(float64(wall[0])/float64(wall[2]), "untuned-tls-wall-ratio")
	b.ReportMetric(float64(cpu[0])/float64(cpu[2]), "untuned-tls-cpu-ratio")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
