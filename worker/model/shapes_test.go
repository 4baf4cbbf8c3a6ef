package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// shapeCase is one point of the shape space: a model built for it, and the number of
// rows of its data set, chosen so that the last batch holds one row.
type shapeCase struct {
	name  string
	build func() (Model, error)
	// inputs per row, outputs per row, rows of the data set
	inputs, k, rows int
	task            string
}

// shapeSpace generates the shape space of the three models: 1..3 features (steps or
// channels), hidden layers of 1..3 units (a single unit included), batch sizes 1..4 with
// a data set that leaves a last batch of one row, every task.
func shapeSpace() []shapeCase {
	var out []shapeCase
	tasks := []struct {
		task string
		k    int
	}{{TaskBinary, 1}, {TaskMulticlass, 3}, {TaskRegression, 1}}
	for _, tk := range tasks {
		for features := 1; features <= 3; features++ {
			for hidden := 1; hidden <= 3; hidden++ {
				for _, batch := range []int{1, 2, 4} {
					rows := 2*batch + 1 // a last batch of one row
					mlp := MLPConfig{Inputs: features, Hidden: []int{hidden}, Activation: ActivationTanh, Outputs: tk.k, Task: tk.task, BatchSize: batch, Seed: 3}
					out = append(out, shapeCase{
						name:   fmt.Sprintf("mlp/%s/in%d/h%d/b%d", tk.task, features, hidden, batch),
						build:  func() (Model, error) { return NewMLP(mlp) },
						inputs: features, k: tk.k, rows: rows, task: tk.task,
					})
					for _, steps := range []int{1, 3} {
						lstm := LSTMConfig{Steps: steps, Features: features, Hidden: []int{hidden}, Outputs: tk.k, Task: tk.task, BatchSize: batch, Seed: 5}
						out = append(out, shapeCase{
							name:   fmt.Sprintf("lstm/%s/steps%d/f%d/h%d/b%d", tk.task, steps, features, hidden, batch),
							build:  func() (Model, error) { return NewLSTM(lstm) },
							inputs: steps * features, k: tk.k, rows: rows, task: tk.task,
						})
					}
					// Stacked layers whose first has a single unit.
					stacked := LSTMConfig{Steps: 2, Features: features, Hidden: []int{1, hidden}, Dense: []int{hidden}, Outputs: tk.k, Task: tk.task, BatchSize: batch, Seed: 5}
					out = append(out, shapeCase{
						name:   fmt.Sprintf("lstm/%s/stacked/f%d/h1-%d/b%d", tk.task, features, hidden, batch),
						build:  func() (Model, error) { return NewLSTM(stacked) },
						inputs: 2 * features, k: tk.k, rows: rows, task: tk.task,
					})
					// channels × 4 × 4 images, one filter up to three, a dense layer of
					// `hidden` units.
					cnn := CNNConfig{Height: 4, Width: 4, Channels: features, Conv: []ConvLayer{{Filters: hidden, Kernel: 3, Padding: 1}},
						Pool: 2, Dense: []int{hidden}, Outputs: tk.k, Task: tk.task, BatchSize: batch, Seed: 9}
					out = append(out, shapeCase{
						name:   fmt.Sprintf("cnn/%s/c%d/f%d/b%d", tk.task, features, hidden, batch),
						build:  func() (Model, error) { return NewCNN(cnn) },
						inputs: 16 * features, k: tk.k, rows: rows, task: tk.task,
					})
				}
			}
		}
	}
	return out
}

// TestShapeSpace builds every model of the shape space and runs real training steps
// over a data set whose last batch is one row: every loss, gradient and prediction is
// finite, the gradients of an epoch are not all zero, and a few epochs of gradient
// descent lower the loss.
func TestShapeSpace(t *testing.T) {
	cases := shapeSpace()
	if len(cases) < 200 {
		t.Fatalf("shape space has %d cases", len(cases))
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			m, err := sc.build()
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if m.OutputSize() != sc.k {
				t.Fatalf("OutputSize %d, want %d", m.OutputSize(), sc.k)
			}
			rng := rand.New(rand.NewPCG(11, uint64(len(sc.name))))
			x := make([]float32, sc.rows*sc.inputs)
			y := make([]float32, sc.rows)
			for i := range sc.rows {
				var s float64
				for j := range sc.inputs {
					v := rng.NormFloat64()
					x[i*sc.inputs+j] = float32(v)
					s += v
				}
				// Unbalanced classes, so that even a model whose hidden units are dead
				// (a constant output) lowers its loss by learning the class priors.
				switch sc.task {
				case TaskBinary:
					if i%3 == 0 {
						y[i] = 1
					}
				case TaskMulticlass:
					y[i] = float32(max(i%4-1, 0))
				default:
					y[i] = float32(2 + s/float64(sc.inputs)) // off zero, as the priors above
				}
			}
			b := m.BatchSize()
			p := m.InitParams(1)
			g := make([]float32, m.NumParams())
			epochLoss := func(train bool) float64 {
				var sum float64
				moved := false
				for lo := 0; lo < sc.rows; lo += b {
					n := min(b, sc.rows-lo)
					l, err := m.Gradient(p, x[lo*sc.inputs:], y[lo:], n, g)
					if err != nil {
						t.Fatalf("Gradient(rows %d..%d): %v", lo, lo+n, err)
					}
					if math.IsNaN(l) || math.IsInf(l, 0) {
						t.Fatalf("loss %v on rows %d..%d", l, lo, lo+n)
					}
					var norm float64
					for _, v := range g {
						if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
							t.Fatalf("gradient value %v on rows %d..%d", v, lo, lo+n)
						}
						norm += float64(v) * float64(v)
					}
					moved = moved || norm > 0
					sum += l * float64(n)
					if train {
						for i := range p {
							p[i] -= 0.05 * g[i]
						}
					}
				}
				if !moved {
					t.Fatalf("every batch's gradient is zero")
				}
				return sum / float64(sc.rows)
			}
			first := epochLoss(false)
			for range 30 {
				epochLoss(true)
			}
			last := epochLoss(false)
			if !(last < first) {
				t.Fatalf("loss did not fall over 30 epochs: %.5f -> %.5f", first, last)
			}
			for _, n := range []int{1, sc.rows} {
				out := make([]float32, n*sc.k)
				if err := m.Predict(p, x, n, out); err != nil {
					t.Fatalf("Predict(%d rows): %v", n, err)
				}
				for i, v := range out {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Fatalf("Predict(%d rows)[%d] = %v", n, i, v)
					}
				}
			}
		})
	}
}
