package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/cohort-dev/cohort/modeldef"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// maxImageDim bounds every size of a CNN configuration (image height, width and
// channels, filters, kernel, stride, padding, pool), so that products of a few of
// them cannot overflow before the MaxParams and MaxActivations checks.
const maxImageDim = 1 << 15

// ConvLayer configures one 2-D convolution of a CNN: Filters output channels from
// Kernel x Kernel windows moved by Stride, over the input zero-padded by Padding on
// every side. The activation follows it, then the max-pool (CNNConfig.Pool).
type ConvLayer struct {
	// Filters is the number of output channels (>= 1).
	Filters int
	// Kernel is the height and width of the square window (>= 1).
	Kernel int
	// Stride is the step between windows; 0 means 1.
	Stride int
	// Padding is the number of zero rows and columns added on each side, in
	// [0, Kernel-1].
	Padding int
}

// CNNConfig configures a convolutional network (see NewCNN): convolution layers, each
// followed by the activation and a max-pool, then dense layers as in an MLP.
type CNNConfig struct {
	// Height, Width and Channels give each input image's shape. A row of x holds one
	// image flattened channel-major (NCHW): Channels*Height*Width values.
	Height, Width, Channels int
	// Conv lists the convolution layers (at least one).
	Conv []ConvLayer
	// Pool is the size and stride of the max-pool after every convolution layer; 0 or 1
	// means no pooling. Windows that do not fit are dropped (floor), as in PyTorch.
	Pool int
	// Dense lists the widths of the hidden dense layers after the convolutions (each
	// >= 1); empty connects the last feature map straight to the output layer.
	Dense []int
	// Activation is the activation after every convolution and hidden dense layer:
	// relu (the default when empty), tanh, sigmoid or leaky_relu.
	Activation string
	// Outputs is 1 for binary classification and regression, the number of classes
	// (>= 2) for multiclass classification.
	Outputs int
	// Task is binary_classification, multiclass_classification or regression.
	Task string
	// BatchSize is the fixed number of rows of one Gradient call (>= 1).
	BatchSize int
	// Dropout is the inverted-dropout rate after each hidden dense layer in Gradient, in
	// [0, 1); convolutions are never dropped, and Predict never drops.
	Dropout float64
	// Seed seeds the dropout masks: the k-th Gradient call draws its masks from a PCG
	// seeded with (Seed, k).
	Seed int64
	// Float64 builds the graph in float64 (for gradient checks); parameters, inputs and
	// gradients stay float32 at the API.
	Float64 bool
}

// architecture returns the network the configuration describes (with its defaults,
// activation relu and stride 1, applied).
func (c CNNConfig) architecture() modeldef.Architecture {
	a := modeldef.Architecture{Kind: modeldef.KindCNN, Task: c.Task, Inputs: c.Channels * c.Height * c.Width,
		Outputs: c.Outputs, Activation: c.Activation, Dense: c.Dense,
		Channels: c.Channels, Height: c.Height, Width: c.Width, Pool: c.Pool}
	if a.Activation == "" {
		a.Activation = ActivationReLU
	}
	for _, l := range c.Conv {
		a.Conv = append(a.Conv, modeldef.Conv{Filters: l.Filters, Kernel: l.Kernel, Stride: max(l.Stride, 1), Padding: l.Padding})
	}
	return a
}

// convShape is the geometry of one convolution layer, as validated.
type convShape struct {
	inC, inH, inW    int // input feature map
	k, stride, pad   int
	outC, outH, outW int // after the convolution
	poolH, poolW     int // after the pool (equal to outH, outW without pooling)
}

// Validate reports the first problem of the configuration, naming the field and, for a
// layer that shrinks the image below 1x1, the layer and the size it gets.
func (c CNNConfig) Validate() error {
	_, err := c.shapes()
	return err
}

// shapes validates the configuration and returns the geometry of each convolution.
func (c CNNConfig) shapes() ([]convShape, error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"height", c.Height}, {"width", c.Width}, {"channels", c.Channels}} {
		if f.v < 1 || f.v > maxImageDim {
			return nil, fmt.Errorf("%s: must be in [1, %d], got %d", f.name, maxImageDim, f.v)
		}
	}
	if len(c.Conv) == 0 {
		return nil, fmt.Errorf("conv: at least one convolution layer is required (use an MLP without)")
	}
	if c.Pool < 0 || c.Pool > maxImageDim {
		return nil, fmt.Errorf("pool: must be in [0, %d], got %d", maxImageDim, c.Pool)
	}
	act := c.Activation
	if act == "" {
		act = ActivationReLU
	}
	// The fields shared with an MLP (activation, task and outputs, batch size, dropout)
	// are checked by MLPConfig.Validate, after the layers.
	scalars := MLPConfig{Inputs: 1, Activation: act, Outputs: c.Outputs, Task: c.Task, BatchSize: c.BatchSize, Dropout: c.Dropout}
	shapes := make([]convShape, len(c.Conv))
	ch, h, w := c.Channels, c.Height, c.Width
	params := 0
	widest := ch * h * w
	for i, l := range c.Conv {
		stride := l.Stride
		if stride == 0 {
			stride = 1
		}
		switch {
		case l.Filters < 1 || l.Filters > maxImageDim:
			return nil, fmt.Errorf("conv[%d].filters: must be in [1, %d], got %d", i, maxImageDim, l.Filters)
		case l.Kernel < 1 || l.Kernel > maxImageDim:
			return nil, fmt.Errorf("conv[%d].kernel: must be in [1, %d], got %d", i, maxImageDim, l.Kernel)
		case stride < 1 || stride > maxImageDim:
			return nil, fmt.Errorf("conv[%d].stride: must be in [1, %d] (0 means 1), got %d", i, maxImageDim, l.Stride)
		case l.Padding < 0 || l.Padding >= l.Kernel:
			return nil, fmt.Errorf("conv[%d].padding: must be in [0, kernel-1 = %d], got %d", i, l.Kernel-1, l.Padding)
		}
		s := convShape{inC: ch, inH: h, inW: w, k: l.Kernel, stride: stride, pad: l.Padding, outC: l.Filters}
		if h+2*l.Padding < l.Kernel || w+2*l.Padding < l.Kernel {
			return nil, fmt.Errorf("conv[%d]: kernel %d with padding %d shrinks its %dx%d input below 1x1", i, l.Kernel, l.Padding, h, w)
		}
		s.outH = (h+2*l.Padding-l.Kernel)/stride + 1
		s.outW = (w+2*l.Padding-l.Kernel)/stride + 1
		s.poolH, s.poolW = s.outH, s.outW
		if c.Pool > 1 {
			if s.outH < c.Pool || s.outW < c.Pool {
				return nil, fmt.Errorf("pool: size %d after conv[%d] shrinks its %dx%d output below 1x1", c.Pool, i, s.outH, s.outW)
			}
			s.poolH, s.poolW = s.outH/c.Pool, s.outW/c.Pool
		}
		params += l.Filters*ch*l.Kernel*l.Kernel + l.Filters
		if params > MaxParams {
			return nil, fmt.Errorf("conv[%d]: the model would have more than %d parameters", i, MaxParams)
		}
		// The im2col buffer holds k*k*inC values per output position.
		widest = max(widest, l.Filters*s.outH*s.outW, s.outH*s.outW*ch*l.Kernel*l.Kernel)
		if widest > MaxActivations {
			return nil, fmt.Errorf("conv[%d]: one image needs more than %d activations", i, MaxActivations)
		}
		shapes[i] = s
		ch, h, w = l.Filters, s.poolH, s.poolW
	}
	in := ch * h * w
	for i, d := range c.Dense {
		if d < 1 || d > MaxParams {
			return nil, fmt.Errorf("dense[%d]: must be in [1, %d], got %d", i, MaxParams, d)
		}
		widest = max(widest, d)
		params += in*d + d
		if params > MaxParams {
			return nil, fmt.Errorf("dense[%d]: the model would have more than %d parameters", i, MaxParams)
		}
		in = d
	}
	if params += in*max(c.Outputs, 1) + max(c.Outputs, 1); params > MaxParams {
		return nil, fmt.Errorf("outputs: the model would have more than %d parameters", MaxParams)
	}
	if err := scalars.Validate(); err != nil {
		return nil, err
	}
	if c.BatchSize > MaxActivations/widest {
		return nil, fmt.Errorf("batchSize: %d rows times %d activations per image exceeds %d", c.BatchSize, widest, MaxActivations)
	}
	return shapes, nil
}

// cnn is a convolutional network. It reuses the MLP's argument checks, Predict
// chunking and graph engine (whose inputs, losses, dropout and outputs are the same);
// mlp.cfg describes the network as the engine sees it (Inputs = Channels*Height*Width,
// Hidden empty), while conv holds the full configuration.
type cnn struct {
	mlp
	conv   CNNConfig
	shapes []convShape
}

// NewCNN builds a convolutional network with its gorgonia graphs (one for Gradient at
// BatchSize rows, one forward-only for Predict).
//
// Each convolution layer i computes conv2d(h, W) + b followed by the activation and,
// when Pool > 1, a Pool x Pool max-pool with stride Pool. The last feature map is
// flattened per row in channel-major (NCHW) order, as PyTorch's flatten does, and fed to
// dense layers exactly like an MLP's (see NewMLP, including its losses and Predict
// outputs).
//
// Layout (modeldef.Architecture.Tensors): for each convolution i, "conv<i>.weight" with
// shape [filters, inChannels, kernel, kernel] (PyTorch's Conv2d layout) and
// "conv<i>.bias" [filters]; for each dense layer i, "dense<i>.weight" [in, out] and
// "dense<i>.bias" [out]; then "out.weight" and "out.bias".
//
// The model is not safe for concurrent use.
func NewCNN(cfg CNNConfig) (Model, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	shapes, err := cfg.shapes()
	if err != nil {
		return nil, err
	}
	if cfg.Activation == "" {
		cfg.Activation = ActivationReLU
	}
	cfg.Conv = append([]ConvLayer(nil), cfg.Conv...)
	for i := range cfg.Conv {
		if cfg.Conv[i].Stride == 0 {
			cfg.Conv[i].Stride = 1
		}
	}
	cfg.Dense = append([]int(nil), cfg.Dense...)
	m := &cnn{conv: cfg, shapes: shapes}
	m.par = new(intraOp)
	buildPar = m.par
	defer func() { buildPar = nil }()
	m.cfg = MLPConfig{
		Inputs: cfg.Channels * cfg.Height * cfg.Width, Activation: cfg.Activation,
		Outputs: cfg.Outputs, Task: cfg.Task, BatchSize: cfg.BatchSize,
		Dropout: cfg.Dropout, Seed: cfg.Seed, Float64: cfg.Float64,
	}
	if err := m.setLayout(cfg.architecture()); err != nil {
		return nil, err
	}
	if cfg.Float64 {
		m.eng, err = newCNNEngine[float64](m)
	} else {
		m.eng, err = newCNNEngine[float32](m)
	}
	if err != nil {
		return nil, fmt.Errorf("model: build cnn graph: %w", err)
	}
	return m, nil
}

// InitParams draws weights uniformly from ±limit with PCG(seed): He uniform (limit
// √(6/fan_in), fan_in = inChannels*kernel²) for the convolutions; the dense layers as
// in an MLP (He uniform for the hidden layers of relu and leaky_relu networks, Glorot
// uniform otherwise and for the output layer). Biases are 0.
func (m *cnn) InitParams(seed int64) []float32 {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x636f686f72742d32)) // "cohort-2"
	p := make([]float32, m.params)
	he := m.cfg.Activation == ActivationReLU || m.cfg.Activation == ActivationLeakyReLU
	for _, t := range m.layout {
		var limit float64
		switch {
		case len(t.Shape) == 4:
			limit = math.Sqrt(6 / float64(t.Shape[1]*t.Shape[2]*t.Shape[3]))
		case len(t.Shape) == 2:
			fanIn, fanOut := float64(t.Shape[0]), float64(t.Shape[1])
			limit = math.Sqrt(6 / (fanIn + fanOut))
			if he && t.Name != "out.weight" {
				limit = math.Sqrt(6 / fanIn)
			}
		default:
			continue // biases
		}
		for i := range p[t.Offset : t.Offset+t.Size] {
			p[t.Offset+i] = float32((2*rng.Float64() - 1) * limit)
		}
	}
	return p
}

// cnnEngine runs a CNN's graphs through the MLP's graphEngine. Before each run it
// refuses inputs that could crash gorgonia: its max-pool backward indexes out of range
// (a panic in the machine's own goroutine, which no recover here can catch) when a
// pooling window holds only NaN or values at or below -MaxFloat. Finite inputs and
// parameters with a bound on the convolutions' activations below the float range rule
// that out.
type cnnEngine[T float] struct {
	ge     *graphEngine[T]
	m      *cnn
	pooled bool    // whether any max-pool runs (else nothing to guard)
	limit  float64 // the largest activation bound accepted
}

func newCNNEngine[T float](m *cnn) (*cnnEngine[T], error) {
	e := &graphEngine[T]{cfg: &m.cfg, drops: NewDropoutStream()}
	var err error
	if e.train, err = buildCNNNet[T](m, true); err != nil {
		return nil, fmt.Errorf("training graph: %w", err)
	}
	if e.pred, err = buildCNNNet[T](m, false); err != nil {
		return nil, fmt.Errorf("prediction graph: %w", err)
	}
	limit := math.MaxFloat32 / 4
	if dtypeOf[T]() == tensor.Float64 {
		limit = math.MaxFloat64 / 4
	}
	return &cnnEngine[T]{ge: e, m: m, pooled: m.conv.Pool > 1, limit: limit}, nil
}

// check refuses a non-finite parameter, naming its index and tensor, and parameters so
// large that a convolution's activations could overflow. x has been checked finite.
func (e *cnnEngine[T]) check(params, x []float32) error {
	maxAbs := func(v []float32) float64 { return float64(math.Float32frombits(maxAbsBits(v))) }
	if !allFinite(params) {
		for i, v := range params {
			if v-v != 0 { // NaN or ±Inf
				return fmt.Errorf("params[%d] (%s): %w (%v)", i, paramTensor(e.m.layout, i), errNotFinite, v)
			}
		}
	}
	if !e.pooled {
		return nil
	}
	// |b + Σ w·h| <= max|b| + fanIn·max|w|·max|h|; tanh and sigmoid bound h by 1.
	bound := maxAbs(x)
	bounded := e.m.cfg.Activation == ActivationTanh || e.m.cfg.Activation == ActivationSigmoid
	for i, s := range e.m.shapes {
		w, b := e.m.layout[2*i], e.m.layout[2*i+1]
		fanIn := float64(s.inC * s.k * s.k)
		bound = maxAbs(params[b.Offset:b.Offset+b.Size]) + fanIn*maxAbs(params[w.Offset:w.Offset+w.Size])*bound
		if !(bound <= e.limit) {
			return fmt.Errorf("%s: parameters too large: activations could reach %.3g, beyond the %s range (training diverged?)", w.Name, bound, dtypeOf[T]())
		}
		if bounded {
			bound = 1
		}
	}
	return nil
}

// paramTensor names the layout tensor holding flat index i.
func paramTensor(layout []TensorInfo, i int) string {
	for _, t := range layout {
		if i >= t.Offset && i < t.Offset+t.Size {
			return t.Name
		}
	}
	return "?"
}

func (e *cnnEngine[T]) gradient(params, x, y []float32, n int, grad []float32) (float64, error) {
	if err := e.check(params, x[:n*e.m.cfg.Inputs]); err != nil {
		return 0, err
	}
	return e.ge.gradient(params, x, y, n, grad)
}

func (e *cnnEngine[T]) setCalls(k uint64) { e.ge.setCalls(k) }

func (e *cnnEngine[T]) predict(params, x []float32, n int, out []float32) error {
	if err := e.check(params, x[:n*e.m.cfg.Inputs]); err != nil {
		return err
	}
	return e.ge.predict(params, x, n, out)
}

// legacyConv builds convolutions with gorgonia's Conv2d and BroadcastAdd instead of
// conv2dOp; tests set it (under no concurrency) to compare the two.
var legacyConv = false

// boundTensor creates an input node of any rank bound to a tensor backed by buf.
func boundTensor[T float](g *G.ExprGraph, name string, buf []T, shape ...int) *G.Node {
	t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(buf))
	return G.NewTensor(g, dtypeOf[T](), len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// buildCNNNet builds and compiles one CNN graph, filling the same net fields as
// buildNet so that graphEngine's gradient and predict drive it unchanged.
func buildCNNNet[T float](m *cnn, train bool) (*net[T], error) {
	cfg := &m.cfg
	b := cfg.BatchSize
	n := &net[T]{g: G.NewGraph(), x: make([]T, b*cfg.Inputs), params: make([]T, m.params)}
	g := n.g
	learnables := n.bindParams(m.layout, boundTensor[T])

	h := boundTensor(g, "x", n.x, b, m.conv.Channels, m.conv.Height, m.conv.Width)
	n.xNode = h
	var err error
	for i, s := range m.shapes {
		wt, bias := learnables[2*i], learnables[2*i+1]
		if legacyConv {
			if h, err = G.Conv2d(h, wt, tensor.Shape{s.k, s.k}, []int{s.pad, s.pad}, []int{s.stride, s.stride}, []int{1, 1}); err != nil {
				return nil, fmt.Errorf("%s: %w", m.layout[2*i].Name, err)
			}
			if h, err = G.BroadcastAdd(h, bias, nil, []byte{0, 2, 3}); err != nil {
				return nil, fmt.Errorf("%s: %w", m.layout[2*i+1].Name, err)
			}
			if h, err = activate(h, cfg.Activation); err != nil {
				return nil, fmt.Errorf("conv%d activation: %w", i, err)
			}
			if p := m.conv.Pool; p > 1 {
				if h, err = G.MaxPool2D(h, tensor.Shape{p, p}, []int{0, 0}, []int{p, p}); err != nil {
					return nil, fmt.Errorf("conv%d pool: %w", i, err)
				}
			}
			continue
		}
		if i == 0 && firstConvFusable(s, m.conv.Pool, cfg.Activation, dtypeOf[T]()) {
			// One channel, 3x3, relu, 2x2 pool: one op per image (firstconv.go).
			if h, err = firstConvPool(h, wt, bias, b, s); err != nil {
				return nil, fmt.Errorf("%s: %w", m.layout[0].Name, err)
			}
			continue
		}
		// Every activation is non-decreasing, so pooling before it computes the same
		// values as pooling after, on a quarter of the elements.
		if h, err = conv2dLayer[T](h, wt, bias, b, s, i > 0); err != nil {
			return nil, fmt.Errorf("%s: %w", m.layout[2*i].Name, err)
		}
		if p := m.conv.Pool; p > 1 {
			// The pool applies the activation to its outputs (and its gradient op the
			// activation's derivative), saving a pass over the pooled maps.
			if h, err = maxPool[T](h, b, p, s, cfg.Activation); err != nil {
				return nil, fmt.Errorf("conv%d pool: %w", i, err)
			}
		} else if h, err = activate(h, cfg.Activation); err != nil {
			return nil, fmt.Errorf("conv%d activation: %w", i, err)
		}
	}
	// The dense layers flatten the last feature map per row, in NCHW order as PyTorch's
	// flatten does, and end in the logits.
	convs := 2 * len(m.shapes)
	logits, err := n.denseLayers(h, learnables[convs:], m.layout[convs:], cfg.Activation, cfg.Dropout, train, true)
	if err != nil {
		return nil, err
	}
	if err := n.compile(logits, learnables, m.layout, cfg, train); err != nil {
		return nil, err
	}
	return n, nil
}
