// Package model holds the worker's gorgonia models. A model's parameters live on the
// parameter servers as one flat []float32; the worker hands that vector to the model each
// step and gets back a flat gradient in the same layout (see Model.Layout).
package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/cohort-dev/cohort/jobs"
)

// Task names, as in the job spec (spec.task); jobs defines them.
const (
	// TaskBinary is binary classification: one logit per row, sigmoid + binary cross-entropy.
	TaskBinary = jobs.TaskBinary
	// TaskMulticlass is multiclass classification: K logits per row, log-softmax + NLL.
	TaskMulticlass = jobs.TaskMulticlass
	// TaskRegression is regression of one standardized target: mean squared error.
	TaskRegression = jobs.TaskRegression
)

// Activation names, as in the job spec (spec.model.mlp.activation).
const (
	// ActivationReLU is max(x, 0).
	ActivationReLU = "relu"
	// ActivationTanh is the hyperbolic tangent.
	ActivationTanh = "tanh"
	// ActivationSigmoid is the logistic function.
	ActivationSigmoid = "sigmoid"
	// ActivationLeakyReLU is x for x >= 0 and LeakyReLUSlope*x below.
	ActivationLeakyReLU = "leaky_relu"
)

// LeakyReLUSlope is the negative-side slope of ActivationLeakyReLU.
const LeakyReLUSlope = 0.01

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
	// with weights n_i equal the gradient of their union.
	Gradient(params, x, y []float32, n int, grad []float32) (loss float64, err error)
	// Predict writes OutputSize values per row for n rows (n >= 0) of x into out:
	// the probability of the positive class (binary), the class probabilities
	// (multiclass), or the prediction (regression).
	Predict(params, x []float32, n int, out []float32) error
	// OutputSize returns the number of values Predict writes per row.
	OutputSize() int
}

// layoutHash is the hex SHA-256 over the layout's names and shapes, in order.
func layoutHash(layout []TensorInfo) string {
	h := sha256.New()
	for _, t := range layout {
		fmt.Fprintf(h, "%s%v;", t.Name, t.Shape)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// buildMu serialises graph construction: gorgonia v0.9.18 keeps package-level state
// (encoding groups) that it mutates while nodes are created, so two models built at the
// same time in one process (two workers of a dev cluster) race. Running built graphs
// concurrently is safe; only construction is serialised.
var buildMu sync.Mutex
