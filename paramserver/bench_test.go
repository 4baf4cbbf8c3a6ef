package paramserver

import (
	"context"
	"fmt"
	"testing"
)

func benchApply(b *testing.B, cfg OptimizerConfig) {
	for _, n := range []int{1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("params=%dMi", n>>20), func(b *testing.B) { benchApplyN(b, cfg, n) })
	}
}

// benchApplyN measures one step over n parameters: 1 Mi (4 MiB per array) stays in this
// machine's caches, 16 Mi (64 MiB per array) goes to memory.
func benchApplyN(b *testing.B, cfg OptimizerConfig, n int) {
	opt, err := NewOptimizer(cfg, n)
	if err != nil {
		b.Fatal(err)
	}
	p, g := initialValues(n), make([]float32, n)
	workerGrad(0, p, g)
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		opt.Apply(p, g)
	}
}

// BenchmarkAdamApply measures one Adam step (bytes = gradient bytes).
func BenchmarkAdamApply(b *testing.B) {
	benchApply(b, OptimizerConfig{Name: "adam", LearningRate: 1e-3, WeightDecay: 1e-4})
}

// BenchmarkSGDMomentumApply measures one momentum step.
func BenchmarkSGDMomentumApply(b *testing.B) {
	benchApply(b, OptimizerConfig{Name: "momentum", LearningRate: 1e-3, WeightDecay: 1e-4})
}

// BenchmarkPushPull measures one sync step of one worker over real loopback gRPC: push a
// 4 MiB gradient to 2 shards, then pull the next version's 4 MiB of values (bytes =
// both directions).
func BenchmarkPushPull(b *testing.B) {
	benchPushPull(b, 1<<20, 0)
}

// benchPushPull runs sync steps of one worker against 2 shards over real loopback gRPC:
// push an n-value gradient, pull the next version's n values, with chunk bytes per
// message (0: the default).
func benchPushPull(b *testing.B, n int, chunk int) {
	ctx := context.Background()
	s0, a0 := startServer(b, 0)
	s1, a1 := startServer(b, 0)
	addShards(b, []*Server{s0, s1}, ShardConfig{JobID: "bench", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1e-6}})
	c := newTestClient(b, ClientConfig{Addresses: []string{a0, a1}, JobID: "bench", Generation: 1, TotalParams: uint64(n), ChunkBytes: chunk})
	p := initialValues(n)
	if err := c.Init(ctx, p); err != nil {
		b.Fatal(err)
	}
	g := make([]float32, n)
	workerGrad(0, p, g)
	var step int64
	b.SetBytes(int64(2 * 4 * n))
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
}
