// Package modeldef is the one definition of a network: its kind, sizes and layers
// (Architecture), the layout of its weights (Tensors, LayoutHash), the translation from
// a job spec (FromSpec) and its reference forward pass in pure Go (Predict, and the
// gradients behind explanations). worker/model builds its gorgonia graphs from an
// Architecture, export writes it next to the weights, serve evaluates it. It imports
// only jobs and the standard library.
package modeldef

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"

	"github.com/cohort-dev/cohort/jobs"
)

// Model kinds of an Architecture.
const (
	// KindMLP is a multilayer perceptron over a feature vector.
	KindMLP = "mlp"
	// KindCNN is a convolutional network over NCHW images.
	KindCNN = "cnn"
	// KindLSTM is a stacked LSTM over time-major windows.
	KindLSTM = "lstm"
)

// Tasks, as in the job spec (spec.task); jobs defines them.
const (
	// TaskBinary outputs the probability of the positive class.
	TaskBinary = jobs.TaskBinary
	// TaskMulticlass outputs one probability per class.
	TaskMulticlass = jobs.TaskMulticlass
	// TaskRegression outputs the prediction in target units.
	TaskRegression = jobs.TaskRegression
)

// Activations of hidden layers.
const (
	// ActReLU is max(x, 0).
	ActReLU = "relu"
	// ActTanh is the hyperbolic tangent.
	ActTanh = "tanh"
	// ActSigmoid is the logistic function.
	ActSigmoid = "sigmoid"
	// ActLeakyReLU is x for x >= 0 and LeakyReLUSlope*x below.
	ActLeakyReLU = "leaky_relu"
)

// LeakyReLUSlope is the negative-side slope of ActLeakyReLU, in training, export and
// serving alike.
const LeakyReLUSlope = 0.01

// maxDim bounds every size of an Architecture decoded from a file.
const maxDim = 1 << 27

// Conv is one convolution of a CNN: Filters output channels from Kernel x Kernel
// windows moved by Stride over the input zero-padded by Padding on each side.
type Conv struct {
	Filters int `json:"filters"`
	Kernel  int `json:"kernel"`
	Stride  int `json:"stride"`
	Padding int `json:"padding"`
}

// Architecture describes a network: worker/model builds its graphs from it (model.New),
// export writes it as ONNX and beside the weights, and its methods evaluate it in pure
// Go from its weights. It is JSON-serializable and saved with every export.
type Architecture struct {
	// Kind is mlp, cnn or lstm.
	Kind string `json:"kind"`
	// Task is binary_classification, multiclass_classification or regression.
	Task string `json:"task"`
	// Inputs is the number of feature values per row (for a CNN Channels*Height*Width,
	// for an LSTM Steps*Features).
	Inputs int `json:"inputs"`
	// Outputs is 1 (binary, regression) or the number of classes.
	Outputs int `json:"outputs"`
	// Activation is the hidden activation of an MLP or CNN (LSTM dense layers use relu).
	Activation string `json:"activation,omitempty"`
	// Hidden lists an MLP's hidden widths or an LSTM's layer sizes.
	Hidden []int `json:"hidden,omitempty"`
	// Dense lists the hidden dense widths after a CNN's convolutions or an LSTM.
	Dense []int `json:"dense,omitempty"`
	// Channels, Height and Width give a CNN's input image shape.
	Channels int `json:"channels,omitempty"`
	Height   int `json:"height,omitempty"`
	Width    int `json:"width,omitempty"`
	// Conv lists a CNN's convolutions; Pool is the max-pool size after each (<= 1: none).
	Conv []Conv `json:"conv,omitempty"`
	Pool int    `json:"pool,omitempty"`
	// Steps and Features give an LSTM's window: Steps time steps of Features values.
	Steps    int `json:"steps,omitempty"`
	Features int `json:"features,omitempty"`
	// LabelMean and LabelStd unscale a regression output: value = z*LabelStd + LabelMean
	// (LabelStd 0 means 1).
	LabelMean float64 `json:"label_mean,omitempty"`
	LabelStd  float64 `json:"label_std,omitempty"`
}

// TensorSpec is the name and shape of one weight tensor of an Architecture.
type TensorSpec struct {
	Name  string
	Shape []int
}

// convGeom is one convolution's geometry.
type convGeom struct {
	inC, inH, inW    int
	k, stride, pad   int
	outC, outH, outW int
	poolH, poolW     int
}

// geometry validates a CNN and returns its layers' shapes. Its errors name the field
// without the "architecture: " prefix Validate adds.
func (a *Architecture) geometry() ([]convGeom, error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"channels", a.Channels}, {"height", a.Height}, {"width", a.Width}} {
		if f.v < 1 || f.v > maxDim {
			return nil, fmt.Errorf("%s: must be in [1, %d], got %d", f.name, maxDim, f.v)
		}
	}
	if len(a.Conv) == 0 {
		return nil, errors.New("conv: a cnn needs at least one convolution")
	}
	if a.Pool < 0 || a.Pool > maxDim {
		return nil, fmt.Errorf("pool: must be in [0, %d], got %d", maxDim, a.Pool)
	}
	gs := make([]convGeom, len(a.Conv))
	c, h, w := a.Channels, a.Height, a.Width
	for i, l := range a.Conv {
		switch {
		case l.Filters < 1 || l.Filters > maxDim:
			return nil, fmt.Errorf("conv[%d].filters: must be in [1, %d], got %d", i, maxDim, l.Filters)
		case l.Kernel < 1 || l.Kernel > maxDim:
			return nil, fmt.Errorf("conv[%d].kernel: must be in [1, %d], got %d", i, maxDim, l.Kernel)
		case l.Stride < 1 || l.Stride > maxDim:
			return nil, fmt.Errorf("conv[%d].stride: must be in [1, %d], got %d", i, maxDim, l.Stride)
		case l.Padding < 0 || l.Padding >= l.Kernel:
			return nil, fmt.Errorf("conv[%d].padding: must be in [0, kernel-1 = %d], got %d", i, l.Kernel-1, l.Padding)
		case h+2*l.Padding < l.Kernel || w+2*l.Padding < l.Kernel:
			return nil, fmt.Errorf("conv[%d]: kernel %d with padding %d shrinks its %dx%d input below 1x1", i, l.Kernel, l.Padding, h, w)
		}
		g := convGeom{inC: c, inH: h, inW: w, k: l.Kernel, stride: l.Stride, pad: l.Padding, outC: l.Filters}
		g.outH = (h+2*l.Padding-l.Kernel)/l.Stride + 1
		g.outW = (w+2*l.Padding-l.Kernel)/l.Stride + 1
		g.poolH, g.poolW = g.outH, g.outW
		if a.Pool > 1 {
			if g.outH < a.Pool || g.outW < a.Pool {
				return nil, fmt.Errorf("pool: size %d after conv[%d] shrinks its %dx%d output below 1x1", a.Pool, i, g.outH, g.outW)
			}
			g.poolH, g.poolW = g.outH/a.Pool, g.outW/a.Pool
		}
		if g.outC*g.outH*g.outW > maxDim || g.inC*g.k*g.k > maxDim {
			return nil, fmt.Errorf("conv[%d]: too large", i)
		}
		gs[i] = g
		c, h, w = g.outC, g.poolH, g.poolW
	}
	return gs, nil
}

// Validate checks the architecture's consistency (for one decoded from a file); the
// error names the field.
func (a *Architecture) Validate() error {
	if err := a.check(); err != nil {
		return fmt.Errorf("architecture: %w", err)
	}
	return nil
}

// check is Validate without the "architecture: " prefix (FromSpec names the spec
// field instead).
func (a *Architecture) check() error {
	switch a.Task {
	case TaskBinary, TaskRegression:
		if a.Outputs != 1 {
			return fmt.Errorf("outputs: task %s needs exactly 1 output, got %d", a.Task, a.Outputs)
		}
	case TaskMulticlass:
		if a.Outputs < 2 || a.Outputs > maxDim {
			return fmt.Errorf("outputs: task %s needs >= 2 outputs (one per class), got %d", a.Task, a.Outputs)
		}
	default:
		return fmt.Errorf("task: %q is not one of %s, %s, %s", a.Task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	if a.Inputs < 1 || a.Inputs > maxDim {
		return fmt.Errorf("inputs: must be in [1, %d], got %d", maxDim, a.Inputs)
	}
	for i, h := range a.Hidden {
		if h < 1 || h > maxDim {
			return fmt.Errorf("hidden[%d]: must be in [1, %d], got %d", i, maxDim, h)
		}
	}
	for i, d := range a.Dense {
		if d < 1 || d > maxDim {
			return fmt.Errorf("dense[%d]: must be in [1, %d], got %d", i, maxDim, d)
		}
	}
	if math.IsNaN(a.LabelMean) || math.IsInf(a.LabelMean, 0) || math.IsNaN(a.LabelStd) || math.IsInf(a.LabelStd, 0) || a.LabelStd < 0 {
		return fmt.Errorf("label_mean %v, label_std %v: want finite values, std >= 0", a.LabelMean, a.LabelStd)
	}
	switch a.Kind {
	case KindMLP, KindCNN:
		switch a.Activation {
		case ActReLU, ActTanh, ActSigmoid, ActLeakyReLU:
		default:
			return fmt.Errorf("activation: %q is not one of relu, tanh, sigmoid, leaky_relu", a.Activation)
		}
		if a.Kind == KindMLP {
			if len(a.Dense) > 0 {
				return errors.New("dense: an mlp lists its layers in hidden")
			}
			return nil
		}
		if len(a.Hidden) > 0 {
			return errors.New("hidden: a cnn lists its dense layers in dense")
		}
		if _, err := a.geometry(); err != nil {
			return err
		}
		if a.Inputs != a.Channels*a.Height*a.Width {
			return fmt.Errorf("inputs %d != channels*height*width %d", a.Inputs, a.Channels*a.Height*a.Width)
		}
	case KindLSTM:
		if len(a.Hidden) == 0 {
			return errors.New("hidden: an lstm needs at least one layer")
		}
		if a.Steps < 1 || a.Features < 1 || a.Steps > maxDim || a.Features > maxDim || a.Steps*a.Features != a.Inputs {
			return fmt.Errorf("steps %d x features %d must be >= 1 and make inputs %d", a.Steps, a.Features, a.Inputs)
		}
	default:
		return fmt.Errorf("kind: %q is not one of mlp, cnn, lstm", a.Kind)
	}
	return nil
}

// Tensors returns the weight tensors in layout order with their shapes: the one
// definition of the layout, which worker/model's flat parameter vector follows. The
// architecture must be valid.
//
// For each hidden dense layer i of an MLP "dense<i>.weight" [in, out] (row-major, so a
// layer computes x·W + b) and "dense<i>.bias" [out]; a CNN first has "conv<i>.weight"
// [filters, inChannels, kernel, kernel] and "conv<i>.bias" [filters] per convolution,
// an LSTM "lstm<l>.weight" [in+hidden, 4*hidden] (input rows first, gates i, f, g, o)
// and "lstm<l>.bias" [4*hidden] per layer, before their dense layers; then
// "out.weight" and "out.bias".
func (a *Architecture) Tensors() []TensorSpec {
	var ts []TensorSpec
	add := func(name string, shape ...int) { ts = append(ts, TensorSpec{Name: name, Shape: shape}) }
	in := a.Inputs
	switch a.Kind {
	case KindMLP:
		for i, h := range a.Hidden {
			add(fmt.Sprintf("dense%d.weight", i), in, h)
			add(fmt.Sprintf("dense%d.bias", i), h)
			in = h
		}
	case KindCNN:
		gs, _ := a.geometry()
		for i, g := range gs {
			add(fmt.Sprintf("conv%d.weight", i), g.outC, g.inC, g.k, g.k)
			add(fmt.Sprintf("conv%d.bias", i), g.outC)
		}
		last := gs[len(gs)-1]
		in = last.outC * last.poolH * last.poolW
	case KindLSTM:
		in = a.Features
		for l, h := range a.Hidden {
			add(fmt.Sprintf("lstm%d.weight", l), in+h, 4*h)
			add(fmt.Sprintf("lstm%d.bias", l), 4*h)
			in = h
		}
	}
	if a.Kind != KindMLP {
		for i, d := range a.Dense {
			add(fmt.Sprintf("dense%d.weight", i), in, d)
			add(fmt.Sprintf("dense%d.bias", i), d)
			in = d
		}
	}
	add("out.weight", in, a.Outputs)
	add("out.bias", a.Outputs)
	return ts
}

// Weights is a checked set of weight tensors for an Architecture, by name.
type Weights map[string][]float32

// Tensor is a named float32 tensor in row-major order.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// CheckWeights validates a and matches tensors against its layout: every tensor
// present once with the expected shape, no others. The error names the tensor.
func (a *Architecture) CheckWeights(tensors []Tensor) (Weights, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	byName := make(map[string]Tensor, len(tensors))
	for _, t := range tensors {
		if _, dup := byName[t.Name]; dup {
			return nil, fmt.Errorf("weights: tensor %q appears twice", t.Name)
		}
		byName[t.Name] = t
	}
	w := Weights{}
	for _, ts := range a.Tensors() {
		t, ok := byName[ts.Name]
		if !ok {
			return nil, fmt.Errorf("weights: tensor %q (shape %v) is missing", ts.Name, ts.Shape)
		}
		if !sameShape(t.Shape, ts.Shape) {
			return nil, fmt.Errorf("weights: tensor %q has shape %v, the architecture needs %v", ts.Name, t.Shape, ts.Shape)
		}
		if elements(ts.Shape) != len(t.Data) {
			return nil, fmt.Errorf("weights: tensor %q has %d values for shape %v", ts.Name, len(t.Data), ts.Shape)
		}
		for i, v := range t.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("weights: tensor %q value %d is not finite (%v)", ts.Name, i, v)
			}
		}
		w[ts.Name] = t.Data
		delete(byName, ts.Name)
	}
	for name := range byName {
		return nil, fmt.Errorf("weights: tensor %q is not part of the %s architecture", name, a.Kind)
	}
	return w, nil
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// LayoutHash returns the hex SHA-256 over the layout's names and shapes (worker/model's
// Model.LayoutHash is this hash), so that a checkpoint's manifest can be matched against
// an architecture.
func (a *Architecture) LayoutHash() string {
	h := sha256.New()
	for _, t := range a.Tensors() {
		fmt.Fprintf(h, "%s%v;", t.Name, t.Shape)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// NumParams returns the number of weights of the layout.
func (a *Architecture) NumParams() int {
	n := 0
	for _, t := range a.Tensors() {
		n += elements(t.Shape)
	}
	return n
}

// elements returns the product of a layout shape (whose sizes Validate bounds).
func elements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// InputShape returns a row's shape: [Inputs] for an MLP, [Channels, Height, Width] for
// a CNN, [Steps, Features] for an LSTM (the ONNX graph's input without the batch).
func (a *Architecture) InputShape() []int {
	switch a.Kind {
	case KindCNN:
		return []int{a.Channels, a.Height, a.Width}
	case KindLSTM:
		return []int{a.Steps, a.Features}
	}
	return []int{a.Inputs}
}
