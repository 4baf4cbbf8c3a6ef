package model

import (
	"testing"
	"time"
)

// benchStep times float32 Gradient calls of m on one full batch and reports samples/s
// and the process's CPU time per step, cpu-ms/op, steadier than wall time on a shared
// machine (run with -benchmem for the allocation per step; with -cpu 1 for per-core
// figures).
func benchStep(b *testing.B, m Model, inputs, outputs int, task string) {
	batch := m.BatchSize()
	p := m.InitParams(1)
	x, y := randomBatch(1, batch, inputs, outputs, task)
	g := make([]float32, m.NumParams())
	if _, err := m.Gradient(p, x, y, batch, g); err != nil { // first run sizes the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for b.Loop() {
		if _, err := m.Gradient(p, x, y, batch, g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/op")
	}
}

// benchStepTurns times Gradient calls of m on one full batch in turns of 8 steps under
// each of settings settings (set(i) before each turn: 0, 1, ..., 0, ...), interleaved
// so that the load of a shared machine falls on each alike, and returns each
// setting's time per step in ms by clock (a running total: wall or CPU time), the
// first skip steps of each turn left out; nil when a setting got no timed step.
func benchStepTurns(b *testing.B, m Model, inputs, outputs int, task string, settings int, set func(i int), clock func() time.Duration, skip int) []float64 {
	defer set(0)
	batch := m.BatchSize()
	p := m.InitParams(1)
	x, y := randomBatch(1, batch, inputs, outputs, task)
	g := make([]float32, m.NumParams())
	for i := range settings { // first runs size the buffers
		set(i)
		if _, err := m.Gradient(p, x, y, batch, g); err != nil {
			b.Fatal(err)
		}
	}
	spent := make([]time.Duration, settings)
	steps := make([]int, settings)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := i / 8 % settings
		if i%8 == 0 {
			set(k)
		}
		t0 := clock()
		if _, err := m.Gradient(p, x, y, batch, g); err != nil {
			b.Fatal(err)
		}
		if i%8 >= skip {
			spent[k] += clock() - t0
			steps[k]++
		}
	}
	ms := make([]float64, settings)
	for k := range ms {
		if steps[k] == 0 {
			return nil
		}
		ms[k] = float64(spent[k].Microseconds()) / 1e3 / float64(steps[k])
	}
	return ms
}

// BenchmarkCNNStep is one training step (forward and backward) of fashion-cnn.yaml's
// network: 28x28x1, conv 32-3, pool 2, conv 64-3, pool 2, dense 128, 10 classes,
// batch 64.
func BenchmarkCNNStep(b *testing.B) {
	cfg := CNNConfig{
		Height: 28, Width: 28, Channels: 1,
		Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 64, Kernel: 3}}, Pool: 2,
		Dense: []int{128}, Outputs: 10, Task: TaskMulticlass, BatchSize: 64,
	}
	benchStep(b, mustCNN(b, cfg), cnnInputs(cfg), 10, TaskMulticlass)
}

// BenchmarkMLPStep is one training step of attrition-mlp.yaml's network: 48 inputs
// (the example data after one-hot encoding), hidden 64-32 relu, one logit, batch 32.
func BenchmarkMLPStep(b *testing.B) {
	cfg := MLPConfig{Inputs: 48, Hidden: []int{64, 32}, Activation: ActivationReLU, Outputs: 1, Task: TaskBinary, BatchSize: 32}
	benchStep(b, mustMLP(b, cfg), cfg.Inputs, 1, TaskBinary)
}

// BenchmarkLSTMStep is one training step of a stacked LSTM: lookback 12, 6 features,
// hidden 64-32, regression, batch 64.
func BenchmarkLSTMStep(b *testing.B) {
	cfg := LSTMConfig{Steps: 12, Features: 6, Hidden: []int{64, 32}, Outputs: 1, Task: TaskRegression, BatchSize: 64}
	benchStep(b, mustLSTM(b, cfg), cfg.Steps*cfg.Features, 1, TaskRegression)
}

// benchPredict times float32 Predict calls of m on rows rows (in BatchSize chunks, as
// cohort serve runs a 1,024-row request) and reports rows/s.
func benchPredict(b *testing.B, m Model, inputs, outputs, rows int) {
	p := m.InitParams(1)
	x, _ := randomBatch(1, rows, inputs, outputs, TaskRegression)
	out := make([]float32, rows*outputs)
	if err := m.Predict(p, x, rows, out); err != nil { // first run sizes the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := m.Predict(p, x, rows, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkCNNPredict is cohort serve's fashion-cnn example on a 1,024-row request:
// the network of BenchmarkCNNStep built for serve's largest bucket (256 rows).
func BenchmarkCNNPredict(b *testing.B) {
	cfg := CNNConfig{
		Height: 28, Width: 28, Channels: 1,
		Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 64, Kernel: 3}}, Pool: 2,
		Dense: []int{128}, Outputs: 10, Task: TaskMulticlass, BatchSize: 256,
	}
	benchPredict(b, mustCNN(b, cfg), cnnInputs(cfg), 10, 1024)
}

// BenchmarkLSTMPredict is cohort serve's performance-lstm example on a 1,024-row
// request: lookback 12, 7 features, hidden 32, regression, built for 256 rows.
func BenchmarkLSTMPredict(b *testing.B) {
	cfg := LSTMConfig{Steps: 12, Features: 7, Hidden: []int{32}, Outputs: 1, Task: TaskRegression, BatchSize: 256}
	benchPredict(b, mustLSTM(b, cfg), cfg.Steps*cfg.Features, 1, 1024)
}

// cifarConfig is bench/cifar-cnn.yaml's network: 32x32x3, four 3x3 convolutions of 64,
// 64, 128 and 128 filters with padding 1, each followed by relu and a 2x2 max-pool,
// dense 256, 10 classes, batch 64.
func cifarConfig(batch int) CNNConfig {
	return CNNConfig{
		Height: 32, Width: 32, Channels: 3,
		Conv: []ConvLayer{{Filters: 64, Kernel: 3, Padding: 1}, {Filters: 64, Kernel: 3, Padding: 1},
			{Filters: 128, Kernel: 3, Padding: 1}, {Filters: 128, Kernel: 3, Padding: 1}},
		Pool: 2, Dense: []int{256}, Outputs: 10, Task: TaskMulticlass, BatchSize: batch,
	}
}

// BenchmarkCIFARStep is one training step of the CIFAR-shaped network of
// bench/cifar-cnn.yaml (issue #19, goal 3).
func BenchmarkCIFARStep(b *testing.B) {
	cfg := cifarConfig(64)
	benchStep(b, mustCNN(b, cfg), cnnInputs(cfg), 10, TaskMulticlass)
}
