package model

import "testing"

// benchStep times float32 Gradient calls of m on one full batch and reports samples/s
// (run with -benchmem for the allocation per step; with -cpu 1 for per-core figures).
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
	for b.Loop() {
		if _, err := m.Gradient(p, x, y, batch, g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
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
