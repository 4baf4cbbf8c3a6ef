package worker

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/paramserver"
)

// BenchmarkStepCommunication measures the communication of one sync training step of
// the example jobs without their computation: 2 workers each push a gradient of the
// model's size to 2 shards (real loopback gRPC, Adam on the shards) and pull the next
// version, concurrently, as the jobs' workers do. ns/op is the communication time per
// step; B/op is what the two workers and both shards allocate for it together.
func BenchmarkStepCommunication(b *testing.B) {
	for _, ex := range []struct{ name, file string }{
		{"mlp", "attrition-mlp.yaml"},
		{"cnn", "fashion-cnn.yaml"},
		{"lstm", "performance-lstm.yaml"},
	} {
		b.Run(ex.name, func(b *testing.B) {
			spec := exampleSpec(b, ex.file)
			bd, err := LoadBench(context.Background(), spec, nil)
			if errors.Is(err, fs.ErrNotExist) {
				b.Skipf("%s: data not installed (make data): %v", ex.file, err)
			}
			if err != nil {
				b.Fatal(err)
			}
			n := bd.Model.NumParams()
			b.Run("session", func(b *testing.B) { benchStepCommunication(b, n, false) })
			b.Run("per-call", func(b *testing.B) { benchStepCommunication(b, n, true) })
		})
	}
}

// benchStepCommunication runs the steps over the shards' Session streams, or with
// noSessions over one Push and one Pull RPC per shard and step.
func benchStepCommunication(b *testing.B, n int, noSessions bool) {
	const workers, shards = 2, 2
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	addrs := startBenchShards(b, quiet, shards, workers)
	clients := make([]*paramserver.Client, workers)
	params := make([][]float32, workers)
	grads := make([][]float32, workers)
	for r := range workers {
		c, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: addrs, JobID: "bench", Generation: 1, Rank: r, TotalParams: uint64(n), Logger: quiet, NoSessions: noSessions})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		clients[r], params[r], grads[r] = c, make([]float32, n), make([]float32, n)
		for i := range grads[r] {
			grads[r][i] = float32(i%7-3) * 1e-3
		}
		if err := c.Init(ctx, params[r]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var step int64
	errs := make([]error, workers)
	for b.Loop() {
		var wg sync.WaitGroup
		for r := range workers {
			wg.Go(func() {
				if errs[r] = clients[r].Push(ctx, step, grads[r], 64); errs[r] == nil {
					_, errs[r] = clients[r].Pull(ctx, step+1, params[r])
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		step++
	}
	b.ReportMetric(float64(2*4*n), "wire_bytes/worker_step")
}

// startBenchShards serves shards shards of the job "bench" (generation 1, workers
// workers, Adam 1e-3), each on its own loopback gRPC server, and returns their
// addresses.
func startBenchShards(b *testing.B, log *slog.Logger, shards, workers int) []string {
	var addrs []string
	for shard := range shards {
		cfg := paramserver.DefaultServerConfig()
		cfg.Logger = log
		srv := paramserver.NewServer(cfg)
		g := grpc.NewServer(paramserver.ServerOptions()...)
		srv.Register(g)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = g.Serve(lis) }()
		b.Cleanup(g.Stop)
		if err := srv.AddShard(paramserver.ShardConfig{JobID: "bench", Shard: shard, Generation: 1, Workers: workers,
			Optimizer: paramserver.OptimizerConfig{Name: "adam", LearningRate: 1e-3}}); err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, lis.Addr().String())
	}
	return addrs
}
