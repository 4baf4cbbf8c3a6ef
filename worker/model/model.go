// Package model holds the worker's gorgonia models. A model's parameters live on the
// parameter servers as one flat []float32; the worker hands that vector to the model each
// step and gets back a flat gradient in the same layout (see Model.Layout).
package model

import (
	"fmt"
	"sync"

	"github.com/cohort-dev/cohort/modeldef"
)

// Task names, as in the job spec (spec.task): modeldef's.
const (
	// TaskBinary is binary classification: one logit per row, sigmoid + binary cross-entropy.
	TaskBinary = modeldef.TaskBinary
	// TaskMulticlass is multiclass classification: K logits per row, log-softmax + NLL.
	TaskMulticlass = modeldef.TaskMulticlass
	// TaskRegression is regression of one standardized target: mean squared error.
	TaskRegression = modeldef.TaskRegression
)

// Activation names, as in the job spec (spec.model.mlp.activation): modeldef's.
const (
	// ActivationReLU is max(x, 0).
	ActivationReLU = modeldef.ActReLU
	// ActivationTanh is the hyperbolic tangent.
	ActivationTanh = modeldef.ActTanh
	// ActivationSigmoid is the logistic function.
	ActivationSigmoid = modeldef.ActSigmoid
	// ActivationLeakyReLU is x for x >= 0 and LeakyReLUSlope*x below.
	ActivationLeakyReLU = modeldef.ActLeakyReLU
)

// LeakyReLUSlope is the negative-side slope of ActivationLeakyReLU: modeldef's.
const LeakyReLUSlope = modeldef.LeakyReLUSlope

// TensorInfo describes one named tensor inside the flat parameter vector: its values
// are params[Offset : Offset+Size], row-major with the given Shape.
type TensorInfo struct {
	// Name is the tensor's stable name, such as "dense0.weight" or "out.bias".
	Name string
	// Shape is the tensor's shape; the product of its dimensions is Size.
	Shape []int
	// Offset is the index of the tensor's first value in the flat vector.
	Offset int
	// Size is the number of values.
	Size int
}

// Model is a differentiable model with a flat float32 parameter vector. Implementations
// are not safe for concurrent use: use one Model per goroutine.
type Model interface {
	// Layout returns the flat parameter layout, in order; offsets are contiguous from 0.
	// The caller must not modify the returned slice.
	Layout() []TensorInfo
	// NumParams returns the length of the flat parameter vector.
	NumParams() int
	// LayoutHash returns the hex SHA-256 over the layout's names and shapes; two models
	// with the same hash can exchange parameter vectors.
	LayoutHash() string
	// InitParams returns freshly initialized parameters, deterministic per seed.
	InitParams(seed int64) []float32
	// BatchSize returns the fixed batch size the model was built for.
	BatchSize() int
	// Gradient runs forward and backward on the first n rows (1 <= n <= BatchSize) of x
	// (n*Inputs values, row-major) and y (n values: 0/1 for binary classification, the
	// class index for multiclass classification, the target for regression), writes the
	// mean gradient over those n rows into grad (len NumParams, overwritten) and returns
	// the mean loss. Because it is a mean, gradients of batches of sizes n_i averaged
	// with weights n_i equal the gradient of their union. params and x are read, and
	// grad written, in place while the call runs (none may change meanwhile); params
	// and x are never written.
	Gradient(params, x, y []float32, n int, grad []float32) (loss float64, err error)
	// Predict writes OutputSize values per row for n rows (n >= 0) of x into out:
	// the probability of the positive class (binary), the class probabilities
	// (multiclass), or the prediction (regression).
	Predict(params, x []float32, n int, out []float32) error
	// OutputSize returns the number of values Predict writes per row.
	OutputSize() int
}

// Options are a model's training settings, which its architecture does not fix.
type Options struct {
	// BatchSize is the fixed number of rows of one Gradient call (>= 1).
	BatchSize int
	// Dropout is the inverted-dropout rate in [0, 1) of Gradient (where each kind
	// applies it: see MLPConfig, CNNConfig, LSTMConfig); Predict never drops.
	Dropout float64
	// Seed seeds the dropout masks: the k-th Gradient call draws its masks from a PCG
	// seeded with (Seed, k).
	Seed int64
	// Float64 builds the graph in float64 (for gradient checks); parameters, inputs and
	// gradients stay float32 at the API.
	Float64 bool
}

// New builds the network a describes (see NewMLP, NewCNN, NewLSTM), whose Layout is
// a.Tensors() and LayoutHash a.LayoutHash(). Errors name the field, as the configs'
// Validate methods do.
func New(a modeldef.Architecture, o Options) (Model, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var m Model
	var err error
	switch a.Kind {
	case modeldef.KindMLP:
		m, err = NewMLP(MLPConfig{
			Inputs: a.Inputs, Hidden: a.Hidden, Activation: a.Activation, Outputs: a.Outputs, Task: a.Task,
			BatchSize: o.BatchSize, Dropout: o.Dropout, Seed: o.Seed, Float64: o.Float64,
		})
	case modeldef.KindCNN:
		conv := make([]ConvLayer, len(a.Conv))
		for i, l := range a.Conv {
			conv[i] = ConvLayer{Filters: l.Filters, Kernel: l.Kernel, Stride: l.Stride, Padding: l.Padding}
		}
		m, err = NewCNN(CNNConfig{
			Height: a.Height, Width: a.Width, Channels: a.Channels, Conv: conv, Pool: a.Pool, Dense: a.Dense,
			Activation: a.Activation, Outputs: a.Outputs, Task: a.Task,
			BatchSize: o.BatchSize, Dropout: o.Dropout, Seed: o.Seed, Float64: o.Float64,
		})
	case modeldef.KindLSTM:
		m, err = NewLSTM(LSTMConfig{
			Steps: a.Steps, Features: a.Features, Hidden: a.Hidden, Dense: a.Dense, Outputs: a.Outputs, Task: a.Task,
			BatchSize: o.BatchSize, Dropout: o.Dropout, Seed: o.Seed, Float64: o.Float64,
		})
	}
	if err != nil {
		return nil, err
	}
	if got, want := m.LayoutHash(), a.LayoutHash(); got != want {
		return nil, fmt.Errorf("model: the %s model's layout hash %s differs from its architecture's %s", a.Kind, got, want)
	}
	return m, nil
}

// setLayout makes the architecture's tensors (modeldef's layout, the one definition)
// the model's flat parameter layout, one after the other from offset 0.
func (m *mlp) setLayout(a modeldef.Architecture) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	m.layout, m.params = nil, 0
	for _, t := range a.Tensors() {
		size := 1
		for _, d := range t.Shape {
			size *= d
		}
		m.layout = append(m.layout, TensorInfo{Name: t.Name, Shape: t.Shape, Offset: m.params, Size: size})
		m.params += size
	}
	m.hash = a.LayoutHash()
	return nil
}

// buildMu serialises graph construction: gorgonia v0.9.18 keeps package-level state
// (encoding groups) that it mutates while nodes are created, so two models built at the
// same time in one process (two workers of a dev cluster) race. Running built graphs
// concurrently is safe; only construction is serialised.
var buildMu sync.Mutex
