package model

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestIntraOpRun checks that run calls every part once, also when called from several
// goroutines at once and from inside a part (busy helpers: the caller does the work).
func TestIntraOpRun(t *testing.T) {
	var p intraOp
	for _, parts := range []int{0, 1, 2, 3, 8} {
		hits := make([]atomic.Int32, parts)
		p.run(parts, func(i int) { hits[i].Add(1) })
		for i := range hits {
			if n := hits[i].Load(); n != 1 {
				t.Fatalf("%d parts: part %d ran %d times", parts, i, n)
			}
		}
	}
	var wg sync.WaitGroup
	var total atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				p.run(3, func(int) {
					p.run(2, func(int) { total.Add(1) })
				})
			}
		}()
	}
	wg.Wait()
	if got := total.Load(); got != 4*100*3*2 {
		t.Fatalf("nested runs made %d calls, want %d", got, 4*100*3*2)
	}
}

// TestSetThreadsSameGradient checks that CNNs' and an MLP's gradients are bit-identical
// at 1, 2 and 3 threads (each worker computes whole rows or tiles of every product, summed
// in the same order; filter gradients sum fixed parts); with OpenBLAS,
// equal to rounding. The second CNN has a one-channel first layer with more filters
// than values per filter (the filter gradient's fixed parts) and small planes (several
// images per product).
func TestSetThreadsSameGradient(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 3 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	}
	cfg := CNNConfig{
		Height: 12, Width: 12, Channels: 2,
		Conv: []ConvLayer{{Filters: 8, Kernel: 3}, {Filters: 16, Kernel: 3}}, Pool: 2,
		Dense: []int{40}, Outputs: 5, Task: TaskMulticlass, BatchSize: 16,
	}
	cnn := mustCNN(t, cfg)
	cfg2 := CNNConfig{
		Height: 10, Width: 10, Channels: 1,
		Conv: []ConvLayer{{Filters: 16, Kernel: 3, Padding: 1}, {Filters: 24, Kernel: 3, Padding: 1}}, Pool: 2,
		Dense: []int{20}, Outputs: 4, Task: TaskMulticlass, BatchSize: 12,
	}
	cnn2 := mustCNN(t, cfg2)
	mlp := mustMLP(t, MLPConfig{Inputs: 300, Hidden: []int{200, 96}, Activation: ActivationReLU, Outputs: 1, Task: TaskBinary, BatchSize: 64})
	for _, c := range []struct {
		m       Model
		in, out int
		task    string
	}{{cnn, cnnInputs(cfg), 5, TaskMulticlass}, {cnn2, cnnInputs(cfg2), 4, TaskMulticlass}, {mlp, 300, 1, TaskBinary}} {
		p := c.m.InitParams(3)
		x, y := randomBatch(4, c.m.BatchSize(), c.in, c.out, c.task)
		grads := make([][]float32, 3)
		for i, threads := range []int{1, 2, 3} {
			SetThreads(c.m, threads)
			grads[i] = make([]float32, c.m.NumParams())
			if _, err := c.m.Gradient(p, x, y, c.m.BatchSize(), grads[i]); err != nil {
				t.Fatal(err)
			}
		}
		for k := 1; k < len(grads); k++ {
			for j := range grads[0] {
				a, b := float64(grads[0][j]), float64(grads[k][j])
				// OpenBLAS blocks a product by its shape, so only the Go kernels are exact.
				if a != b && (gemmBackend == "go" || math.Abs(a-b) > 1e-5*math.Max(1e-3, math.Abs(a))) {
					t.Fatalf("%T: grad[%d] = %v at 1 thread, %v at %d", c.m, j, a, b, k+1)
				}
			}
		}
	}
}

// TestAllFinite compares allFinite with math.IsNaN/IsInf on special values at every
// position of slices of odd lengths.
func TestAllFinite(t *testing.T) {
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	fine := []float32{0, float32(math.Copysign(0, -1)), 1, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 1e-40}
	for n := range 11 {
		x := make([]float32, n)
		for i := range x {
			x[i] = fine[i%len(fine)]
		}
		if !allFinite(x) {
			t.Fatalf("len %d: finite values reported not finite", n)
		}
		for i := range x {
			for _, s := range specials {
				old := x[i]
				x[i] = s
				if allFinite(x) {
					t.Fatalf("len %d: %v at %d not found", n, s, i)
				}
				x[i] = old
			}
		}
	}
}

// TestIntraOpRunReclaimsPostedParts: a part posted for a spinning helper that stops
// spinning before it takes it (here: a helper counted as spinning that never looks)
// runs on the caller, once, and leaves the queue empty.
func TestIntraOpRunReclaimsPostedParts(t *testing.T) {
	var p intraOp
	ensureHelpers(2) // what run(3) below would start
	// Keep the real helpers off the queue: each receives, once parked, a part that
	// holds it until the check is done.
	release := make(chan struct{})
	var busy split
	pool.mu.Lock()
	helpers := pool.helpers
	pool.mu.Unlock()
	for range helpers {
		busy.add()
		pool.tasks <- poolTask{fn: func(int) { <-release }, done: &busy}
	}
	defer func() {
		close(release)
		busy.wait()
	}()
	pool.spinning.Add(1) // a phantom spinning helper
	defer pool.spinning.Add(-1)
	var hits [3]atomic.Int32
	p.run(3, func(i int) { hits[i].Add(1) })
	for i := range hits {
		if n := hits[i].Load(); n != 1 {
			t.Fatalf("part %d ran %d times", i, n)
		}
	}
	if n := pool.pending.Load(); n != 0 {
		t.Fatalf("%d parts left in the queue", n)
	}
}

// benchStepWall is benchStepTurns over the named settings by wall time, the first
// step of each turn left out (it wakes the turn's threads and warms their caches),
// reporting each setting's NAME-ms/op and, when the first two are named "1t" and
// "2t", their ratio (scaling: goal 1 of issue #19 asks 1.8 for the fashion CNN).
func benchStepWall(b *testing.B, m Model, inputs, outputs int, task string, names []string, set func(i int)) {
	start := time.Now()
	ms := benchStepTurns(b, m, inputs, outputs, task, len(names), set, func() time.Duration { return time.Since(start) }, 1)
	if ms == nil {
		return
	}
	for k, name := range names {
		b.ReportMetric(ms[k], name+"-ms/op")
	}
	if len(names) >= 2 && names[0] == "1t" && names[1] == "2t" {
		b.ReportMetric(ms[0]/ms[1], "scaling")
	}
}

// BenchmarkCNNStepThreads is fashion-cnn's step (BenchmarkCNNStep) at 1 and 2 threads
// (SetThreads), interleaved in one process: wall time per step and the scaling (run
// with -cpu 2). spin compares, at 2 threads, the caller of a split spinning for its
// last part (split.wait) against parking at once.
func BenchmarkCNNStepThreads(b *testing.B) {
	cfg := CNNConfig{
		Height: 28, Width: 28, Channels: 1,
		Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 64, Kernel: 3}}, Pool: 2,
		Dense: []int{128}, Outputs: 10, Task: TaskMulticlass, BatchSize: 64,
	}
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs GOMAXPROCS >= 2 (-cpu 2)")
	}
	m := mustCNN(b, cfg)
	b.Run("scaling", func(b *testing.B) {
		benchStepWall(b, m, cnnInputs(cfg), 10, TaskMulticlass, []string{"1t", "2t"}, func(i int) { SetThreads(m, i+1) })
	})
	b.Run("spin", func(b *testing.B) {
		SetThreads(m, 2)
		defer func() { callerSpins = true }()
		benchStepWall(b, m, cnnInputs(cfg), 10, TaskMulticlass, []string{"on", "off"}, func(i int) { callerSpins = i == 0 })
	})
}
