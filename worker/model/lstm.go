package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/cohort-dev/cohort/modeldef"
	G "gorgonia.org/gorgonia"
)

// LSTMConfig configures a stacked LSTM sequence model (see NewLSTM).
type LSTMConfig struct {
	// Steps is the lookback: the number of time steps per row (>= 1).
	Steps int
	// Features is the number of input features per time step (>= 1).
	Features int
	// Hidden lists the hidden sizes of the stacked LSTM layers, bottom first; at least one,
	// each >= 1.
	Hidden []int
	// Dense lists the widths of optional ReLU dense layers between the last step's top
	// hidden state and the output layer; empty means none.
	Dense []int
	// Outputs is 1 for binary classification and regression, the number of classes
	// (>= 2) for multiclass classification.
	Outputs int
	// Task is binary_classification, multiclass_classification or regression.
	Task string
	// BatchSize is the fixed number of rows of one Gradient call (>= 1).
	BatchSize int
	// Dropout is the inverted-dropout rate in [0, 1) on the outputs of every LSTM layer
	// (one mask per layer, shared by all time steps) and of every dense layer, applied in
	// Gradient only; the recurrent connections are never dropped.
	Dropout float64
	// Seed seeds the dropout masks: the k-th Gradient call draws its masks from a PCG
	// seeded with (Seed, k).
	Seed int64
	// Float64 builds the graph in float64 (for gradient checks); parameters, inputs and
	// gradients stay float32 at the API.
	Float64 bool
}

// Validate reports the first problem of the configuration, naming the field.
func (c LSTMConfig) Validate() error {
	if c.Steps < 1 {
		return fmt.Errorf("steps: must be >= 1, got %d", c.Steps)
	}
	if c.Features < 1 {
		return fmt.Errorf("features: must be >= 1, got %d", c.Features)
	}
	if len(c.Hidden) == 0 {
		return fmt.Errorf("hidden: at least one LSTM layer is required")
	}
	for i, h := range c.Hidden {
		if h < 1 {
			return fmt.Errorf("hidden[%d]: must be >= 1, got %d", i, h)
		}
	}
	for i, d := range c.Dense {
		if d < 1 {
			return fmt.Errorf("dense[%d]: must be >= 1, got %d", i, d)
		}
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
	if c.Steps > MaxParams || c.Features > MaxParams || c.Steps*c.Features > MaxParams {
		return fmt.Errorf("steps: %d steps of %d features exceed %d inputs", c.Steps, c.Features, MaxParams)
	}
	// Parameters, and the activations the unrolled graph keeps: per layer and step about
	// 4*hidden gate values plus the cell and hidden states, per row.
	params, acts := 0, 0
	in := c.Features
	for _, h := range c.Hidden {
		if h > MaxParams {
			return fmt.Errorf("hidden: the model would have more than %d parameters", MaxParams)
		}
		params += (in+h)*4*h + 4*h
		acts += 6 * h
		if params > MaxParams || acts > MaxActivations {
			return fmt.Errorf("hidden: the model would have more than %d parameters", MaxParams)
		}
		in = h
	}
	for _, out := range append(append([]int(nil), c.Dense...), c.Outputs) {
		if out > MaxParams {
			return fmt.Errorf("dense: the model would have more than %d parameters", MaxParams)
		}
		params += in*out + out
		if params > MaxParams {
			return fmt.Errorf("dense: the model would have more than %d parameters", MaxParams)
		}
		in = out
	}
	if c.BatchSize > MaxActivations/(acts*c.Steps+c.Steps*c.Features) {
		return fmt.Errorf("batchSize: %d rows of %d steps exceed %d activations in the unrolled graph", c.BatchSize, c.Steps, MaxActivations)
	}
	return nil
}

// architecture returns the network the configuration describes.
func (c LSTMConfig) architecture() modeldef.Architecture {
	return modeldef.Architecture{Kind: modeldef.KindLSTM, Task: c.Task, Inputs: c.Steps * c.Features, Outputs: c.Outputs,
		Hidden: c.Hidden, Dense: c.Dense, Steps: c.Steps, Features: c.Features}
}

// lstm is a stacked LSTM with a dense head. It shares the MLP's machinery: the Model
// methods, input checks, losses and the engine that runs the compiled graphs; only the
// graph and the initialisation differ.
type lstm struct {
	*mlp
	lcfg LSTMConfig
}

// NewLSTM builds a stacked LSTM with its gorgonia graphs (one for Gradient at BatchSize
// rows, one forward-only for Predict). gorgonia has no recurrent op, so the cell is
// composed from matrix products and element-wise ops and unrolled over Steps.
//
// A row of x holds Steps*Features values, time-major: step 0's features first. Layer l
// at step t computes one fused product
//
//	z = [x_t, h_{t-1}] · W + b              W: [in+hidden, 4*hidden], gates in order i, f, g, o
//	i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = tanh(z_g)
//	c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
//
// with h_{-1} = c_{-1} = 0, and x_t the layer below's h_t for l > 0. The head reads
// the top layer's h at the last step, passes it through the optional ReLU dense layers
// and the output layer; the losses are the MLP's (see NewMLP).
//
// Layout (modeldef.Architecture.Tensors): "lstm<l>.weight" [in+hidden, 4*hidden] (rows
// for the input first, then for the previous hidden state) and "lstm<l>.bias"
// [4*hidden] per LSTM layer, then "dense<i>.weight" [in, out] and "dense<i>.bias" [out]
// per dense layer, then "out.weight" and "out.bias".
//
// The model is not safe for concurrent use.
func NewLSTM(cfg LSTMConfig) (Model, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Hidden = append([]int(nil), cfg.Hidden...)
	cfg.Dense = append([]int(nil), cfg.Dense...)
	m := &lstm{lcfg: cfg, mlp: &mlp{cfg: MLPConfig{
		Inputs:     cfg.Steps * cfg.Features,
		Hidden:     cfg.Dense,
		Activation: ActivationReLU,
		Outputs:    cfg.Outputs,
		Task:       cfg.Task,
		BatchSize:  cfg.BatchSize,
		Dropout:    cfg.Dropout,
		Seed:       cfg.Seed,
		Float64:    cfg.Float64,
	}, par: new(intraOp)}}
	buildPar = m.par
	defer func() { buildPar = nil }()
	if err := m.setLayout(cfg.architecture()); err != nil {
		return nil, err
	}
	var err error
	if cfg.Float64 {
		m.eng, err = newLSTMEngine[float64](&m.lcfg, &m.mlp.cfg, m.layout, m.params)
	} else {
		m.eng, err = newLSTMEngine[float32](&m.lcfg, &m.mlp.cfg, m.layout, m.params)
	}
	if err != nil {
		return nil, fmt.Errorf("model: build lstm graph: %w", err)
	}
	return m, nil
}

// InitParams draws every weight uniformly from ±√(6/(fan_in+fan_out)) (Glorot uniform,
// with fan_in and fan_out the weight's two dimensions) with PCG(seed). Biases are 0,
// except the LSTM forget gates' biases, which are 1 so that the cells start out
// remembering.
func (m *lstm) InitParams(seed int64) []float32 {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x636f686f72742d32)) // "cohort-2"
	p := make([]float32, m.params)
	for _, t := range m.layout {
		switch {
		case strings.HasSuffix(t.Name, ".weight"):
			limit := math.Sqrt(6 / float64(t.Shape[0]+t.Shape[1]))
			for i := range t.Size {
				p[t.Offset+i] = float32((2*rng.Float64() - 1) * limit)
			}
		case strings.HasPrefix(t.Name, "lstm"):
			h := t.Size / 4
			for i := h; i < 2*h; i++ {
				p[t.Offset+i] = 1
			}
		}
	}
	return p
}

// newLSTMEngine builds the MLP engine around LSTM graphs; shim carries the fields the
// engine reads (Inputs, Outputs, Task, BatchSize, Dropout, Seed).
func newLSTMEngine[T float](cfg *LSTMConfig, shim *MLPConfig, layout []TensorInfo, numParams int) (*graphEngine[T], error) {
	e := &graphEngine[T]{cfg: shim, drops: NewDropoutStream()}
	var err error
	if e.train, err = buildLSTMNet[T](cfg, shim, layout, numParams, true); err != nil {
		return nil, fmt.Errorf("training graph: %w", err)
	}
	if e.pred, err = buildLSTMNet[T](cfg, shim, layout, numParams, false); err != nil {
		return nil, fmt.Errorf("prediction graph: %w", err)
	}
	return e, nil
}

// lstmBuilder builds one unrolled graph into n.
type lstmBuilder[T float] struct {
	n     *net[T]
	cfg   *LSTMConfig
	train bool
}

// layer unrolls LSTM layer l over the inputs xs (one (BatchSize, in) node per step) and
// returns its hidden states, one per step.
func (lb *lstmBuilder[T]) layer(l int, xs []*G.Node, w, bias *G.Node, hidden int) ([]*G.Node, error) {
	fail := func(t int, what string, err error) ([]*G.Node, error) {
		return nil, fmt.Errorf("lstm%d step %d %s: %w", l, t, what, err)
	}
	hs := make([]*G.Node, len(xs))
	var h, c *G.Node
	name := fmt.Sprintf("lstm%d", l)
	for t, x := range xs {
		// z = [x_t, h_{t-1}]·W + b as one fused op over both inputs; at step 0 the
		// previous state is zero, so only the input rows of W take part.
		var z *G.Node
		var err error
		if t == 0 {
			z, err = denseMulti[T](name, []*G.Node{x}, w, bias, identity, []bool{l > 0})
		} else {
			z, err = denseMulti[T](name, []*G.Node{x, h}, w, bias, identity, []bool{l > 0, true})
		}
		if err != nil {
			return fail(t, "gates", err)
		}
		if c, h, err = lstmCellNodes[T](name, z, c, hidden); err != nil {
			return fail(t, "cell", err)
		}
		hs[t] = h
	}
	return hs, nil
}

// buildLSTMNet builds and compiles one unrolled graph: the training graph (loss and
// gradients) when train is set, else the prediction graph.
func buildLSTMNet[T float](cfg *LSTMConfig, shim *MLPConfig, layout []TensorInfo, numParams int, train bool) (*net[T], error) {
	b, feat := cfg.BatchSize, cfg.Features
	n := &net[T]{g: G.NewGraph(), x: make([]T, b*shim.Inputs), params: make([]T, numParams)}
	g := n.g
	lb := &lstmBuilder[T]{n: n, cfg: cfg, train: train}
	x := boundNode(g, "x", n.x, b, shim.Inputs)
	n.xNode = x
	learnables := n.bindParams(layout, boundNode[T])

	xs := make([]*G.Node, cfg.Steps)
	for t := range xs {
		var err error
		if xs[t], err = stepColumns[T](fmt.Sprintf("x.step%d", t), x, t*feat, feat); err != nil {
			return nil, fmt.Errorf("x step %d: %w", t, err)
		}
	}
	for l, hidden := range cfg.Hidden {
		hs, err := lb.layer(l, xs, learnables[2*l], learnables[2*l+1], hidden)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("lstm%d", l)
		if l == len(cfg.Hidden)-1 {
			// Only the last step feeds the head.
			hs = hs[len(hs)-1:]
		}
		if lb.train && cfg.Dropout > 0 {
			// One mask per layer, shared by its steps (variational dropout).
			mask := make([]T, b*hidden)
			n.masks = append(n.masks, mask)
			mnode := boundNode(g, name+".dropout", mask, b, hidden)
			for t := range hs {
				if hs[t], err = G.HadamardProd(hs[t], mnode); err != nil {
					return nil, fmt.Errorf("%s dropout: %w", name, err)
				}
			}
		}
		xs = hs
	}
	// The head: the optional ReLU dense layers and the output layer, as in an MLP.
	base := 2 * len(cfg.Hidden)
	logits, err := n.denseLayers(xs[0], learnables[base:], layout[base:], ActivationReLU, cfg.Dropout, train, true)
	if err != nil {
		return nil, err
	}
	if err := n.compile(logits, learnables, layout, shim, train); err != nil {
		return nil, err
	}
	return n, nil
}
