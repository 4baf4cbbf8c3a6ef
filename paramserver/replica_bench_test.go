package paramserver

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkReplicatedSyncStep measures one sync step of 2 workers against one Adam
// shard over real loopback gRPC, without a backup (replicas=1) and with one
// (replicas=2, every step's mean gradient forwarded to and applied by the backup before
// the step is acknowledged): both workers push, then pull the next version. Sizes: the
// attrition-mlp.yaml (5,249 values) and fashion-cnn.yaml (225,034) examples.
func BenchmarkReplicatedSyncStep(b *testing.B) {
	for _, n := range []int{5249, 225034} {
		for _, replicas := range []int{1, 2} {
			b.Run(fmt.Sprintf("params=%d/replicas=%d", n, replicas), func(b *testing.B) { benchReplicatedStep(b, n, replicas) })
		}
	}
}

func benchReplicatedStep(b *testing.B, n, replicas int) {
	ctx := context.Background()
	cfg := ShardConfig{JobID: "bench", Generation: 1, Workers: 2, Optimizer: OptimizerConfig{Name: OptimizerAdam, LearningRate: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8}}
	p, addr := startServer(b, 0)
	if err := p.AddShard(cfg); err != nil {
		b.Fatal(err)
	}
	if replicas == 2 {
		bk, baddr := startServer(b, 0)
		if err := bk.AddBackupShard(cfg, ""); err != nil {
			b.Fatal(err)
		}
		if err := p.SetBackup("bench", 0, baddr); err != nil {
			b.Fatal(err)
		}
	}
	var cs [2]*Client
	for r := range cs {
		cs[r] = newTestClient(b, ClientConfig{Addresses: []string{addr}, JobID: "bench", Generation: 1, Rank: r, TotalParams: uint64(n)})
	}
	vals := initialValues(n)
	if err := cs[0].Init(ctx, vals); err != nil {
		b.Fatal(err)
	}
	grads := [2][]float32{make([]float32, n), make([]float32, n)}
	pulled := [2][]float32{make([]float32, n), make([]float32, n)}
	for r := range grads {
		workerGrad(r, vals, grads[r])
	}
	var step int64
	errs := make(chan error, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for r := range cs {
			go func() {
				err := cs[r].Push(ctx, step, grads[r], 4)
				if err == nil {
					_, err = cs[r].Pull(ctx, step+1, pulled[r])
				}
				errs <- err
			}()
		}
		for range cs {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		step++
	}
	b.StopTimer()
	if replicas == 2 && !p.HasBackup("bench", 0) {
		b.Fatal("the backup was detached during the benchmark")
	}
}

// BenchmarkPromoteAndResume measures the data plane's part of a primary's loss: from
// the primary's gRPC server stopping (its connections drop, as when the process dies)
// to a worker's next completed sync step on the promoted backup: PromoteShard at a new
// generation, the worker's SetMembership and SetAddress, its push refused as stale and
// retried, and the pull of the next version. Detection (the worker's report and the
// leader's confirmation, or the heartbeat TTL) comes on top; the real-process test
// TestReplicatedPrimaryKilledJobContinues logs the whole figure. One worker, the
// attrition MLP's 5,249 values.
func BenchmarkPromoteAndResume(b *testing.B) {
	const n = 5249
	ctx := context.Background()
	cfg := ShardConfig{JobID: "bench", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: OptimizerAdam, LearningRate: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8}}
	vals := initialValues(n)
	grad := make([]float32, n)
	workerGrad(0, vals, grad)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p, bk := startNode(b, ServerConfig{}), startNode(b, ServerConfig{})
		if err := p.srv.AddShard(cfg); err != nil {
			b.Fatal(err)
		}
		if err := bk.srv.AddBackupShard(cfg, ""); err != nil {
			b.Fatal(err)
		}
		if err := p.srv.SetBackup("bench", 0, bk.addr); err != nil {
			b.Fatal(err)
		}
		c, err := NewClient(ClientConfig{Addresses: []string{p.addr}, JobID: "bench", Generation: 1, TotalParams: n, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Init(ctx, vals); err != nil {
			b.Fatal(err)
		}
		pulled := make([]float32, n)
		for k := range int64(5) {
			if err := c.Push(ctx, k, grad, 4); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		p.kill()
		if err := bk.srv.PromoteShard("bench", 0, 2, 1); err != nil {
			b.Fatal(err)
		}
		c.SetMembership(2, 0)
		if err := c.SetAddress(0, bk.addr); err != nil {
			b.Fatal(err)
		}
		if err := c.Push(ctx, 5, grad, 4); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Pull(ctx, 6, pulled); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = c.Close()
		bk.kill()
	}
}
