package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/modeldef"
)

// defCases are architectures of every kind with the config constructor that builds the
// same network.
func defCases() []struct {
	name  string
	arch  modeldef.Architecture
	build func() (Model, error)
} {
	return []struct {
		name  string
		arch  modeldef.Architecture
		build func() (Model, error)
	}{
		{"mlp",
			modeldef.Architecture{Kind: modeldef.KindMLP, Task: TaskMulticlass, Inputs: 4, Outputs: 3, Activation: ActivationTanh, Hidden: []int{5, 3}},
			func() (Model, error) {
				return NewMLP(MLPConfig{Inputs: 4, Hidden: []int{5, 3}, Activation: ActivationTanh, Outputs: 3, Task: TaskMulticlass, BatchSize: 3})
			}},
		{"mlp-linear",
			modeldef.Architecture{Kind: modeldef.KindMLP, Task: TaskRegression, Inputs: 2, Outputs: 1, Activation: ActivationReLU, LabelMean: 4, LabelStd: 2},
			func() (Model, error) {
				return NewMLP(MLPConfig{Inputs: 2, Activation: ActivationReLU, Outputs: 1, Task: TaskRegression, BatchSize: 3})
			}},
		{"cnn",
			modeldef.Architecture{Kind: modeldef.KindCNN, Task: TaskMulticlass, Inputs: 2 * 9 * 8, Outputs: 3, Activation: ActivationLeakyReLU, Dense: []int{6},
				Channels: 2, Height: 9, Width: 8, Pool: 2,
				Conv: []modeldef.Conv{{Filters: 4, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 5, Kernel: 2, Stride: 2}}},
			func() (Model, error) {
				return NewCNN(CNNConfig{Height: 9, Width: 8, Channels: 2, Conv: []ConvLayer{{Filters: 4, Kernel: 3, Padding: 1}, {Filters: 5, Kernel: 2, Stride: 2}},
					Pool: 2, Dense: []int{6}, Activation: ActivationLeakyReLU, Outputs: 3, Task: TaskMulticlass, BatchSize: 3})
			}},
		{"cnn-no-pool",
			modeldef.Architecture{Kind: modeldef.KindCNN, Task: TaskBinary, Inputs: 36, Outputs: 1, Activation: ActivationReLU,
				Channels: 1, Height: 6, Width: 6, Conv: []modeldef.Conv{{Filters: 2, Kernel: 3, Stride: 2, Padding: 1}}},
			func() (Model, error) {
				return NewCNN(CNNConfig{Height: 6, Width: 6, Channels: 1, Conv: []ConvLayer{{Filters: 2, Kernel: 3, Stride: 2, Padding: 1}},
					Outputs: 1, Task: TaskBinary, BatchSize: 3})
			}},
		{"lstm",
			modeldef.Architecture{Kind: modeldef.KindLSTM, Task: TaskRegression, Inputs: 12, Outputs: 1, Hidden: []int{5, 3}, Dense: []int{4}, Steps: 4, Features: 3},
			func() (Model, error) {
				return NewLSTM(LSTMConfig{Steps: 4, Features: 3, Hidden: []int{5, 3}, Dense: []int{4}, Outputs: 1, Task: TaskRegression, BatchSize: 3})
			}},
	}
}

// TestLayoutIsArchitectureTensors: a model's flat layout is its architecture's Tensors,
// in order and contiguous from 0, whether it is built by New or by its config's
// constructor, and its layout hash is the architecture's.
func TestLayoutIsArchitectureTensors(t *testing.T) {
	for _, tc := range defCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.arch, Options{BatchSize: 3, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.arch.Tensors()
			layout := m.Layout()
			if len(layout) != len(want) {
				t.Fatalf("layout has %d tensors, the architecture %d: %+v", len(layout), len(want), layout)
			}
			off := 0
			for i, ts := range want {
				size := 1
				for _, d := range ts.Shape {
					size *= d
				}
				if l := layout[i]; l.Name != ts.Name || !slices.Equal(l.Shape, ts.Shape) || l.Offset != off || l.Size != size {
					t.Errorf("layout[%d] = %+v, want %s %v at %d size %d", i, l, ts.Name, ts.Shape, off, size)
				}
				off += size
			}
			if m.NumParams() != off || m.NumParams() != tc.arch.NumParams() || m.LayoutHash() != tc.arch.LayoutHash() {
				t.Errorf("NumParams %d (architecture %d), LayoutHash %s (architecture %s)", m.NumParams(), tc.arch.NumParams(), m.LayoutHash(), tc.arch.LayoutHash())
			}
			if m.OutputSize() != tc.arch.Outputs || m.BatchSize() != 3 {
				t.Errorf("OutputSize %d, BatchSize %d", m.OutputSize(), m.BatchSize())
			}
			byConfig, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if byConfig.LayoutHash() != m.LayoutHash() {
				t.Errorf("the config constructor's layout hash %s differs from New's %s", byConfig.LayoutHash(), m.LayoutHash())
			}
		})
	}
}

// TestNewPredictsAsDefinition: the gorgonia model New builds computes what the
// definition's pure-Go reference forward pass computes.
func TestNewPredictsAsDefinition(t *testing.T) {
	for _, tc := range defCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.arch, Options{BatchSize: 3, Float64: true})
			if err != nil {
				t.Fatal(err)
			}
			p := m.InitParams(3)
			rng := rand.New(rand.NewPCG(3, 5))
			for i := range p {
				p[i] += float32(rng.NormFloat64() * 0.2)
			}
			var tensors []modeldef.Tensor
			for _, l := range m.Layout() {
				tensors = append(tensors, modeldef.Tensor{Name: l.Name, Shape: l.Shape, Data: p[l.Offset : l.Offset+l.Size]})
			}
			w, err := tc.arch.CheckWeights(tensors)
			if err != nil {
				t.Fatal(err)
			}
			const n = 5
			x := make([]float32, n*tc.arch.Inputs)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			got, want := make([]float32, n*tc.arch.Outputs), make([]float32, n*tc.arch.Outputs)
			if err := m.Predict(p, x, n, got); err != nil {
				t.Fatal(err)
			}
			if err := tc.arch.Predict(w, x, n, want); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-5*math.Max(1, math.Abs(float64(want[i]))) {
					t.Fatalf("output %d: model %v, definition %v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestNewErrors: New refuses an invalid architecture and invalid options, naming the
// field.
func TestNewErrors(t *testing.T) {
	good := modeldef.Architecture{Kind: modeldef.KindMLP, Task: TaskBinary, Inputs: 2, Outputs: 1, Activation: ActivationReLU, Hidden: []int{3}}
	for _, tc := range []struct {
		name string
		arch func(*modeldef.Architecture)
		opts Options
		want string
	}{
		{"kind", func(a *modeldef.Architecture) { a.Kind = "rnn" }, Options{BatchSize: 2}, `architecture: kind: "rnn"`},
		{"dense in an mlp", func(a *modeldef.Architecture) { a.Dense = []int{2} }, Options{BatchSize: 2}, "architecture: dense: an mlp lists its layers in hidden"},
		{"batch size", func(*modeldef.Architecture) {}, Options{}, "batchSize: must be >= 1, got 0"},
		{"dropout", func(*modeldef.Architecture) {}, Options{BatchSize: 2, Dropout: 1}, "dropout: must be in [0, 1), got 1"},
		{"too many parameters", func(a *modeldef.Architecture) { a.Hidden = []int{1 << 14, 1 << 14} }, Options{BatchSize: 2},
			"hidden: the model would have more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			a.Hidden = slices.Clone(good.Hidden)
			tc.arch(&a)
			if _, err := New(a, tc.opts); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want one starting %q", err, tc.want)
			}
		})
	}
}
