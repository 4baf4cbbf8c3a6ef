package paramserver

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkPushPullChunk sweeps the data-plane chunk size over 256 KiB-4 MiB for one
// sync step (push a 16 MiB gradient to 2 shards, pull 16 MiB of values) over real
// loopback gRPC. BENCHMARKS.md records the sweep and the DefaultChunkBytes it picked.
func BenchmarkPushPullChunk(b *testing.B) {
	const n = 4 << 20 // 16 MiB of float32
	for _, kib := range []int{256, 512, 1024, 2048, 4096 - 64} {
		b.Run(fmt.Sprintf("chunk=%dKiB", kib), func(b *testing.B) {
			ctx := context.Background()
			s0, a0 := startServer(b, 0)
			s1, a1 := startServer(b, 0)
			addShards(b, []*Server{s0, s1}, ShardConfig{JobID: "bench", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1e-6}})
			c := newTestClient(b, ClientConfig{Addresses: []string{a0, a1}, JobID: "bench", Generation: 1, TotalParams: n, ChunkBytes: kib << 10})
			p := initialValues(n)
			if err := c.Init(ctx, p); err != nil {
				b.Fatal(err)
			}
			g := make([]float32, n)
			workerGrad(0, p, g)
			var step int64
			b.SetBytes(2 * 4 * n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := c.Push(ctx, step, g, 1); err != nil {
					b.Fatal(err)
				}
				step++
				if _, err := c.Pull(ctx, step, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
