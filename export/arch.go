package export

import "github.com/cohort-dev/cohort/modeldef"

// The network an export describes is modeldef's Architecture, the one definition that
// training, export and serving share; its methods (Validate, Tensors, CheckWeights,
// Predict, OutputGradient, IntegratedGradients...) live there. These aliases keep
// export's names.
type (
	// Architecture is modeldef.Architecture.
	Architecture = modeldef.Architecture
	// Conv is modeldef.Conv, one convolution of a CNN.
	Conv = modeldef.Conv
	// TensorSpec is modeldef.TensorSpec, the name and shape of one weight tensor.
	TensorSpec = modeldef.TensorSpec
	// Weights is modeldef.Weights, a checked set of weight tensors by name.
	Weights = modeldef.Weights
	// Attribution is modeldef.Attribution, an integrated-gradients explanation.
	Attribution = modeldef.Attribution
)

// Model kinds of an Architecture.
const (
	// KindMLP is a multilayer perceptron over a feature vector.
	KindMLP = modeldef.KindMLP
	// KindCNN is a convolutional network over NCHW images.
	KindCNN = modeldef.KindCNN
	// KindLSTM is a stacked LSTM over time-major windows.
	KindLSTM = modeldef.KindLSTM
)

// Tasks, as in the job spec (spec.task).
const (
	// TaskBinary outputs the probability of the positive class.
	TaskBinary = modeldef.TaskBinary
	// TaskMulticlass outputs one probability per class.
	TaskMulticlass = modeldef.TaskMulticlass
	// TaskRegression outputs the prediction in target units.
	TaskRegression = modeldef.TaskRegression
)

// Activations of hidden layers.
const (
	// ActReLU is max(x, 0).
	ActReLU = modeldef.ActReLU
	// ActTanh is the hyperbolic tangent.
	ActTanh = modeldef.ActTanh
	// ActSigmoid is the logistic function.
	ActSigmoid = modeldef.ActSigmoid
	// ActLeakyReLU is x for x >= 0 and LeakyReLUSlope*x below.
	ActLeakyReLU = modeldef.ActLeakyReLU
)

// LeakyReLUSlope is the negative-side slope of ActLeakyReLU.
const LeakyReLUSlope = modeldef.LeakyReLUSlope

// Integrated-gradients limits (see modeldef).
const (
	// MaxIntegratedGradientsSteps bounds the quadrature nodes of IntegratedGradients.
	MaxIntegratedGradientsSteps = modeldef.MaxIntegratedGradientsSteps
	// CompletenessTolerance is the relative completeness gap IntegratedGradients accepts.
	CompletenessTolerance = modeldef.CompletenessTolerance
)
