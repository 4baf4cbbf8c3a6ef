package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/cohort-dev/cohort/modeldef"
)

// Limits on an MLP's size, so that a bad spec fails with an error instead of exhausting
// memory.
const (
	// MaxParams is the largest number of parameters an MLP may have.
	MaxParams = 1 << 27
	// MaxActivations is the largest BatchSize times the widest layer.
	MaxActivations = 1 << 26
)

// MLPConfig configures a multilayer perceptron (see NewMLP).
type MLPConfig struct {
	// Inputs is the number of input features per row (>= 1).
	Inputs int
	// Hidden lists the widths of the hidden layers (each >= 1); empty is a linear model.
	Hidden []int
	// Activation is the hidden layers' activation: relu, tanh, sigmoid or leaky_relu.
	Activation string
	// Outputs is 1 for binary classification and regression, the number of classes
	// (>= 2) for multiclass classification.
	Outputs int
	// Task is binary_classification, multiclass_classification or regression.
	Task string
	// BatchSize is the fixed number of rows of one Gradient call (>= 1).
	BatchSize int
	// Dropout is the inverted-dropout rate after each hidden layer in Gradient, in [0, 1);
	// Predict never drops.
	Dropout float64
	// Seed seeds the dropout masks: the k-th Gradient call of a model draws its masks
	// from a PCG seeded with (Seed, k), so runs are reproducible.
	Seed int64
	// Float64 builds the graph in float64 (for gradient checks); parameters, inputs and
	// gradients stay float32 at the API.
	Float64 bool
}

// Validate reports the first problem of the configuration, naming the field.
func (c MLPConfig) Validate() error {
	if c.Inputs < 1 {
		return fmt.Errorf("inputs: must be >= 1, got %d", c.Inputs)
	}
	for i, h := range c.Hidden {
		if h < 1 {
			return fmt.Errorf("hidden[%d]: must be >= 1, got %d", i, h)
		}
	}
	switch c.Activation {
	case ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU:
	default:
		return fmt.Errorf("activation: %q is not one of relu, tanh, sigmoid, leaky_relu", c.Activation)
	}
	switch c.Task {
	case TaskBinary, TaskRegression:
		if c.Outputs != 1 {
			return fmt.Errorf("outputs: task %s needs exactly 1 output, got %d", c.Task, c.Outputs)
		}
	case TaskMulticlass:
		if c.Outputs < 2 {
			return fmt.Errorf("outputs: task %s needs >= 2 outputs (one per class), got %d", c.Task, c.Outputs)
		}
	default:
		return fmt.Errorf("task: %q is not one of %s, %s, %s", c.Task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("batchSize: must be >= 1, got %d", c.BatchSize)
	}
	if math.IsNaN(c.Dropout) || c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("dropout: must be in [0, 1), got %v", c.Dropout)
	}
	widest := max(c.Inputs, c.Outputs)
	params := 0
	in := c.Inputs
	for _, out := range append(append([]int(nil), c.Hidden...), c.Outputs) {
		widest = max(widest, out)
		params += in*out + out
		if params > MaxParams || in > MaxParams || out > MaxParams {
			return fmt.Errorf("hidden: the model would have more than %d parameters", MaxParams)
		}
		in = out
	}
	if c.BatchSize > MaxActivations/widest {
		return fmt.Errorf("batchSize: %d rows times the widest layer (%d) exceeds %d activations", c.BatchSize, widest, MaxActivations)
	}
	return nil
}

// architecture returns the network the configuration describes.
func (c MLPConfig) architecture() modeldef.Architecture {
	return modeldef.Architecture{Kind: modeldef.KindMLP, Task: c.Task, Inputs: c.Inputs, Outputs: c.Outputs,
		Activation: c.Activation, Hidden: c.Hidden}
}

// mlp is a multilayer perceptron: dense layers y = x·W + b with the configured
// activation between them, and a task-specific loss on the last layer's logits.
type mlp struct {
	cfg    MLPConfig
	layout []TensorInfo
	params int
	hash   string
	eng    engine
	par    *intraOp // the intra-op split of every op of its graphs (see SetThreads)
}

func (m *mlp) intra() *intraOp { return m.par }

// engine runs the gorgonia graphs of one dtype.
type engine interface {
	gradient(params, x, y []float32, n int, grad []float32) (float64, error)
	predict(params, x []float32, n int, out []float32) error
	// setCalls makes the next gradient call the k-th (see SetGradientCalls).
	setCalls(k uint64)
}

// NewMLP builds a multilayer perceptron with its gorgonia graphs (one for Gradient at
// BatchSize rows, one forward-only for Predict).
//
// Layout (modeldef.Architecture.Tensors): for each hidden layer i, "dense<i>.weight"
// with shape [in, out] (row-major, so a layer computes x·W + b — the transpose of
// PyTorch's nn.Linear weight) and "dense<i>.bias" [out]; then "out.weight" and
// "out.bias".
//
// Losses, each a mean over the valid rows: binary classification is binary
// cross-entropy on the logit z in its stable softplus form, softplus(z) - y·z;
// multiclass is the negative log-likelihood of log-softmax; regression is the mean
// squared error (y - z)², without the factor 1/2.
//
// The model is not safe for concurrent use.
func NewMLP(cfg MLPConfig) (Model, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Hidden = append([]int(nil), cfg.Hidden...)
	m := &mlp{cfg: cfg, par: new(intraOp)}
	buildPar = m.par
	defer func() { buildPar = nil }()
	if err := m.setLayout(cfg.architecture()); err != nil {
		return nil, err
	}
	var err error
	if cfg.Float64 {
		m.eng, err = newGraphEngine[float64](&m.cfg, m.layout, m.params)
	} else {
		m.eng, err = newGraphEngine[float32](&m.cfg, m.layout, m.params)
	}
	if err != nil {
		return nil, fmt.Errorf("model: build mlp graph: %w", err)
	}
	return m, nil
}

func (m *mlp) Layout() []TensorInfo { return m.layout }
func (m *mlp) NumParams() int       { return m.params }
func (m *mlp) LayoutHash() string   { return m.hash }
func (m *mlp) BatchSize() int       { return m.cfg.BatchSize }
func (m *mlp) OutputSize() int      { return m.cfg.Outputs }

// InitParams draws weights uniformly from ±limit with PCG(seed): He uniform
// (limit √(6/fan_in)) for the hidden layers of relu and leaky_relu networks, Glorot
// uniform (limit √(6/(fan_in+fan_out))) otherwise and for the output layer. Biases are 0.
func (m *mlp) InitParams(seed int64) []float32 {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x636f686f72742d31)) // "cohort-1"
	p := make([]float32, m.params)
	he := m.cfg.Activation == ActivationReLU || m.cfg.Activation == ActivationLeakyReLU
	for _, t := range m.layout {
		if !strings.HasSuffix(t.Name, ".weight") {
			continue
		}
		fanIn, fanOut := float64(t.Shape[0]), float64(t.Shape[1])
		limit := math.Sqrt(6 / (fanIn + fanOut))
		if he && t.Name != "out.weight" {
			limit = math.Sqrt(6 / fanIn)
		}
		for i := range p[t.Offset : t.Offset+t.Size] {
			p[t.Offset+i] = float32((2*rng.Float64() - 1) * limit)
		}
	}
	return p
}

// SetGradientCalls makes the next Gradient call the k-th (counting from 0), so that it
// draws its dropout masks from PCG(Seed, k) exactly as the k-th call of a fresh model
// would. A worker resuming from a checkpoint calls it with the number of gradient calls
// made before, so masks continue the uninterrupted run's stream. CNN and LSTM models
// get it through the embedded MLP.
func (m *mlp) SetGradientCalls(k uint64) { m.eng.setCalls(k) }

func (m *mlp) Gradient(params, x, y []float32, n int, grad []float32) (float64, error) {
	b := m.cfg.BatchSize
	switch {
	case len(params) != m.params:
		return 0, fmt.Errorf("model: params has %d values, the layout needs %d", len(params), m.params)
	case len(grad) != m.params:
		return 0, fmt.Errorf("model: grad has %d values, the layout needs %d", len(grad), m.params)
	case n < 1 || n > b:
		return 0, fmt.Errorf("model: gradient row count %d outside [1, %d] (the batch size)", n, b)
	case len(x) < n*m.cfg.Inputs:
		return 0, fmt.Errorf("model: x has %d values, %d rows of %d inputs need %d", len(x), n, m.cfg.Inputs, n*m.cfg.Inputs)
	case len(y) < n:
		return 0, fmt.Errorf("model: y has %d values for %d rows", len(y), n)
	}
	if err := m.checkInputs(x[:n*m.cfg.Inputs], 0); err != nil {
		return 0, err
	}
	for i, v := range y[:n] {
		if err := m.checkLabel(v); err != nil {
			return 0, fmt.Errorf("model: y[%d]: %w", i, err)
		}
	}
	loss, err := m.eng.gradient(params, x, y, n, grad)
	if err != nil {
		return 0, fmt.Errorf("model: gradient: %w", err)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, fmt.Errorf("model: loss is %v (training diverged, or parameters are not finite)", loss)
	}
	return loss, nil
}

func (m *mlp) Predict(params, x []float32, n int, out []float32) error {
	switch {
	case len(params) != m.params:
		return fmt.Errorf("model: params has %d values, the layout needs %d", len(params), m.params)
	case n < 0:
		return fmt.Errorf("model: predict row count %d is negative", n)
	case len(x) < n*m.cfg.Inputs:
		return fmt.Errorf("model: x has %d values, %d rows of %d inputs need %d", len(x), n, m.cfg.Inputs, n*m.cfg.Inputs)
	case len(out) < n*m.cfg.Outputs:
		return fmt.Errorf("model: out has %d values, %d rows of %d outputs need %d", len(out), n, m.cfg.Outputs, n*m.cfg.Outputs)
	}
	if err := m.checkInputs(x[:n*m.cfg.Inputs], 0); err != nil {
		return err
	}
	b, in, k := m.cfg.BatchSize, m.cfg.Inputs, m.cfg.Outputs
	for lo := 0; lo < n; lo += b {
		rows := min(b, n-lo)
		if err := m.eng.predict(params, x[lo*in:(lo+rows)*in], rows, out[lo*k:(lo+rows)*k]); err != nil {
			return fmt.Errorf("model: predict rows %d..%d: %w", lo, lo+rows-1, err)
		}
	}
	return nil
}

// errNotFinite is wrapped by input checks.
var errNotFinite = errors.New("value is not finite")

// checkInputs refuses NaN and infinite features, naming the first one's row and column.
func (m *mlp) checkInputs(x []float32, firstRow int) error {
	if allFinite(x) {
		return nil
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("model: x row %d input %d: %w (%v)", firstRow+i/m.cfg.Inputs, i%m.cfg.Inputs, errNotFinite, v)
		}
	}
	return nil
}

// allFinite tells whether no value of x is NaN or ±Inf: whether its largest
// magnitude (maxAbsBits) is below +Inf's bits.
func allFinite(x []float32) bool { return maxAbsBits(x) < 0x7f800000 }

// maxAbsBits returns the largest of x's values' bits with the sign cleared (0 for no
// values): as unsigned integers these order finite values by magnitude, with +Inf
// (0x7f800000) above them and NaNs above that, so math.Float32frombits of the result
// is max |x| when x is finite, +Inf or a NaN otherwise. In AVX-512 where the CPU has
// it (a parameter vector's check each step), otherwise four running maxima in Go.
func maxAbsBits(x []float32) uint32 {
	if bits, ok := maxAbsBitsAsm(x); ok {
		return bits
	}
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		m0 = max(m0, math.Float32bits(v[0])&0x7fffffff)
		m1 = max(m1, math.Float32bits(v[1])&0x7fffffff)
		m2 = max(m2, math.Float32bits(v[2])&0x7fffffff)
		m3 = max(m3, math.Float32bits(v[3])&0x7fffffff)
	}
	for _, v := range x[i:] {
		m0 = max(m0, math.Float32bits(v)&0x7fffffff)
	}
	return max(m0, m1, m2, m3)
}

// checkLabel refuses a label the task cannot use.
func (m *mlp) checkLabel(v float32) error {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%w (%v)", errNotFinite, v)
	}
	switch m.cfg.Task {
	case TaskBinary:
		if f < 0 || f > 1 {
			return fmt.Errorf("binary label %v outside [0, 1]", v)
		}
	case TaskMulticlass:
		if f != math.Trunc(f) || f < 0 || int(f) >= m.cfg.Outputs {
			return fmt.Errorf("class index %v is not an integer in [0, %d)", v, m.cfg.Outputs)
		}
	}
	return nil
}
