package model

import (
	"math"
	"slices"
	"testing"
)

// TestGradientReadsAndWritesCallerSlices: a float32 training graph reads the caller's
// parameters (and a full batch's inputs) and writes the caller's gradient in place
// (net.bindCaller, net.bindInput). For an MLP, a CNN and an LSTM, on full and partial
// batches: the parameters are left bit for bit as they were; the gradient is the same,
// bit for bit, whichever slices the call gets (the ones bound, new ones, the first ones
// again); it follows changes of the parameters and inputs made between calls in the
// bound slices (no stale copy); and it equals a float64 model's within float32
// rounding.
func TestGradientReadsAndWritesCallerSlices(t *testing.T) {
	cnnCfg := CNNConfig{Height: 9, Width: 9, Channels: 2, Conv: []ConvLayer{{Filters: 4, Kernel: 3}}, Pool: 2,
		Dense: []int{6}, Outputs: 3, Task: TaskMulticlass, BatchSize: 5}
	lstmCfg := LSTMConfig{Steps: 4, Features: 3, Hidden: []int{5}, Outputs: 1, Task: TaskRegression, BatchSize: 5}
	mlpCfg := MLPConfig{Inputs: 7, Hidden: []int{6}, Activation: ActivationTanh, Outputs: 1, Task: TaskBinary, BatchSize: 5}
	cases := []struct {
		name            string
		build           func(float64 bool) Model
		inputs, outputs int
		task            string
	}{
		{"mlp", func(f64 bool) Model {
			c := mlpCfg
			if f64 {
				c.Float64 = true
			}
			return mustMLP(t, c)
		}, mlpCfg.Inputs, 1, TaskBinary},
		{"cnn", func(f64 bool) Model {
			c := cnnCfg
			if f64 {
				c.Float64 = true
			}
			return mustCNN(t, c)
		}, cnnInputs(cnnCfg), 3, TaskMulticlass},
		{"lstm", func(f64 bool) Model {
			c := lstmCfg
			if f64 {
				c.Float64 = true
			}
			return mustLSTM(t, c)
		}, lstmCfg.Steps * lstmCfg.Features, 1, TaskRegression},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, ref := tc.build(false), tc.build(true)
			p := m.InitParams(3)
			p0 := slices.Clone(p)
			x, y := randomBatch(4, 5, tc.inputs, tc.outputs, tc.task)
			grad := func(m Model, p, x []float32, rows int, g []float32) []float32 {
				t.Helper()
				if _, err := m.Gradient(p, x, y, rows, g); err != nil {
					t.Fatal(err)
				}
				return g
			}
			// A full batch (x bound in place too), a partial one (x copied), a full
			// one again.
			for _, rows := range []int{5, 4, 5} {
				g1 := grad(m, p, x, rows, make([]float32, len(p)))
				if !slices.Equal(p, p0) {
					t.Fatalf("%d rows: Gradient changed the parameters", rows)
				}
				g2 := grad(m, slices.Clone(p), slices.Clone(x), rows, make([]float32, len(p)))
				g3 := grad(m, p, x, rows, g1) // the first slices again, g1 overwritten
				if !slices.Equal(g2, g3) {
					t.Fatalf("%d rows: the gradient depends on which slices the call gets", rows)
				}
				want := grad(ref, p, x, rows, make([]float32, len(p)))
				for i := range want {
					if d := math.Abs(float64(g2[i] - want[i])); d > 1e-4+1e-3*math.Abs(float64(want[i])) {
						t.Fatalf("%d rows: grad[%d] = %v, the float64 model's %v", rows, i, g2[i], want[i])
					}
				}
			}
			// Changes made in the bound slices between calls are seen.
			g2 := grad(m, p, x, 5, make([]float32, len(p)))
			for i := range p {
				p[i] *= 1.5
			}
			for i := range x {
				x[i] = -x[i]
			}
			got := grad(m, p, x, 5, make([]float32, len(p)))
			fresh := grad(tc.build(false), slices.Clone(p), slices.Clone(x), 5, make([]float32, len(p)))
			if !slices.Equal(got, fresh) {
				t.Fatal("after the parameters and inputs changed in place, the gradient is not a fresh model's")
			}
			if slices.Equal(got, g2) {
				t.Fatal("the gradient did not change with the parameters and inputs")
			}
		})
	}
}
