package worker

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/paramserver"
	"github.com/cohort-dev/cohort/worker/model"
)

// linkMbit is the benchmark link's capacity, each way.
const linkMbit = 100

// BenchmarkCompressionLink trains fashion-cnn.yaml's network (225,034 parameters) for
// whole sync steps, 2 workers and 2 shards, with each shard behind a userspace
// token-bucket proxy that caps the bytes through it at 100 Mbit/s each way, summed
// over both workers' connections (the shard's link). A step is what a worker does: pull
// the parameters (for the step), compute the gradient of its 64 Fashion-MNIST rows,
// push it; both workers run concurrently, on real gRPC. Sub-benchmarks: no compression,
// fp16, top-k 1% with error feedback; each as whole steps ("step") and without the
// gradient computation ("comm": the first step's gradient is pushed every step, so the
// link and the encoding are all that is timed, and samples/s is the bound the link
// sets). It reports samples/s of the two workers together
// and each worker's bytes per step, sent (push) and received (pull), on the wire and
// as float32. Needs the data set (make data); run it with -benchtime 20x.
func BenchmarkCompressionLink(b *testing.B) {
	spec := exampleSpec(b, "fashion-cnn.yaml")
	ds, err := dataSource{ctx: context.Background(), roots: []string{string(filepath.Separator)}}.loadData(&spec.Spec)
	if errors.Is(err, fs.ErrNotExist) {
		b.Skipf("fashion-cnn.yaml: data not installed (make data): %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	const workers, shards = 2, 2
	models := make([]model.Model, workers)
	for r := range models {
		if models[r], err = buildModel(&spec.Spec, ds, r); err != nil {
			b.Fatal(err)
		}
		model.SetThreads(models[r], 1)
	}
	for _, tc := range []struct {
		name string
		comp paramserver.Compression
	}{
		{"none", paramserver.Compression{}},
		{"fp16", paramserver.Compression{FP16: true}},
		{"topk1pct", paramserver.Compression{TopK: 0.01, ErrorFeedback: true}},
	} {
		b.Run(tc.name+"/step", func(b *testing.B) {
			benchCompressionLink(b, models, ds, tc.comp, shards, true)
		})
		b.Run(tc.name+"/comm", func(b *testing.B) {
			benchCompressionLink(b, models, ds, tc.comp, shards, false)
		})
	}
}

func benchCompressionLink(b *testing.B, models []model.Model, ds *datasets, comp paramserver.Compression, shards int, compute bool) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	workers := len(models)
	n := models[0].NumParams()
	var addrs []string
	for _, addr := range startBenchShards(b, quiet, shards, workers) {
		addrs = append(addrs, startLinkProxy(b, addr, linkMbit*1e6/8))
	}
	batch := models[0].BatchSize()
	inputs := ds.inputs
	clients := make([]*paramserver.Client, workers)
	params, grads := make([][]float32, workers), make([][]float32, workers)
	for r := range workers {
		c, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: addrs, JobID: "bench", Generation: 1, Rank: r,
			TotalParams: uint64(n), Logger: quiet, Compression: comp})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		clients[r], params[r], grads[r] = c, make([]float32, n), make([]float32, n)
		if err := c.Init(ctx, models[0].InitParams(42)); err != nil {
			b.Fatal(err)
		}
	}
	train := ds.train
	if !compute { // a real gradient, pushed at every step
		for r := range workers {
			x := train.X[r*batch*inputs : (r+1)*batch*inputs]
			if _, err := models[r].Gradient(models[0].InitParams(42), x, train.Y[r*batch:(r+1)*batch], batch, grads[r]); err != nil {
				b.Fatal(err)
			}
		}
	}
	before := clients[0].Traffic()
	errs := make([]error, workers)
	var step int64
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for r := range workers {
			wg.Go(func() {
				if _, errs[r] = clients[r].Pull(ctx, step, params[r]); errs[r] != nil {
					return
				}
				lo := int((step*int64(workers) + int64(r)) * int64(batch) % int64(train.N-batch))
				x := train.X[lo*inputs : (lo+batch)*inputs]
				if compute {
					if _, errs[r] = models[r].Gradient(params[r], x, train.Y[lo:lo+batch], batch, grads[r]); errs[r] != nil {
						return
					}
				}
				errs[r] = clients[r].Push(ctx, step, grads[r], int64(batch))
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		step++
	}
	b.StopTimer()
	tr := clients[0].Traffic().Sub(before)
	steps := float64(step)
	b.ReportMetric(float64(step)*float64(workers*batch)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(tr.PushBytes)/steps, "sent_B/step")
	b.ReportMetric(float64(tr.PushDenseBytes)/steps, "sent_f32_B/step")
	b.ReportMetric(float64(tr.PullBytes)/steps, "recv_B/step")
	b.ReportMetric(float64(tr.PullDenseBytes)/steps, "recv_f32_B/step")
}

// startLinkProxy starts an in-process TCP proxy to target whose bytes, each way and
// summed over its connections, pass a token bucket of rate bytes per second (10 ms of
// it deep, at least 16 KiB, as internal/netns's Shape): a capped link between the
// workers and one shard. It returns the address to
// dial and stops with the benchmark.
func startLinkProxy(b *testing.B, target string, rate float64) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	depth := max(16<<10, int(rate/100)) // 10 ms of the rate, as internal/netns's proxy
	fwd, back := newTokenBucket(rate, depth), newTokenBucket(rate, depth)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go shapedCopy(u, c, fwd)
			go shapedCopy(c, u, back)
		}
	}()
	b.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// shapedCopy copies src to dst, at most a bucket's depth (and 64 KiB) per read, each
// read waiting for its bytes' tokens before it is written on.
func shapedCopy(dst, src net.Conn, tb *tokenBucket) {
	defer dst.Close()
	buf := make([]byte, min(tb.depth, 64<<10))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(tb.take(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// tokenBucket is a byte-rate limiter: take reserves n bytes and says how long to wait
// until they are covered.
type tokenBucket struct {
	mu    sync.Mutex
	rate  float64 // bytes per second
	depth int
	level float64
	at    time.Time
}

func newTokenBucket(rate float64, depth int) *tokenBucket {
	return &tokenBucket{rate: rate, depth: depth, level: float64(depth), at: time.Now()}
}

func (t *tokenBucket) take(n int) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.level = min(float64(t.depth), t.level+now.Sub(t.at).Seconds()*t.rate)
	t.at = now
	t.level -= float64(n)
	if t.level >= 0 {
		return 0
	}
	return time.Duration(-t.level / t.rate * float64(time.Second))
}
