package model

import (
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// float is the element type a graph is built in.
type float interface{ float32 | float64 }

// graphEngine holds an MLP's two gorgonia graphs of one dtype: train (forward, loss and
// symbolic gradients at BatchSize rows) and pred (forward only).
type graphEngine[T float] struct {
	cfg   *MLPConfig
	train *net[T]
	pred  *net[T]

	// Dropout masks of the k-th Gradient call come from PCG(Seed, k).
	pcg   *rand.PCG
	rng   *rand.Rand
	calls uint64
}

// net is one compiled graph. Its input nodes are bound once to tensors backed by the
// slices below; a call fills the slices and runs the machine. Outputs are copied by
// G.Read nodes into preallocated tensors backed by outBuf and gradBuf.
type net[T float] struct {
	g  *G.ExprGraph
	vm G.VM

	x      []T   // BatchSize*Inputs features, zero-padded
	y      []T   // binary, regression: BatchSize targets; multiclass: BatchSize*K one-hot scaled by the row weight
	w      []T   // BatchSize row weights: 1/n for the n valid rows, 0 for padding (not multiclass)
	params []T   // the flat parameters, converted
	masks  [][]T // dropout masks per hidden layer, BatchSize*width each (train only, dropout > 0)

	cost    G.Value // the mean loss, read after each run (train only)
	outBuf  []T     // BatchSize*Outputs predictions (pred only)
	gradBuf []T     // flat gradient (train only)
}

func dtypeOf[T float]() tensor.Dtype {
	var zero T
	if _, ok := any(zero).(float64); ok {
		return tensor.Float64
	}
	return tensor.Float32
}

func newGraphEngine[T float](cfg *MLPConfig, layout []TensorInfo, numParams int) (*graphEngine[T], error) {
	e := &graphEngine[T]{cfg: cfg, pcg: rand.NewPCG(0, 0)}
	e.rng = rand.New(e.pcg)
	var err error
	if e.train, err = buildNet[T](cfg, layout, numParams, true); err != nil {
		return nil, fmt.Errorf("training graph: %w", err)
	}
	if e.pred, err = buildNet[T](cfg, layout, numParams, false); err != nil {
		return nil, fmt.Errorf("prediction graph: %w", err)
	}
	return e, nil
}

// boundMatrix creates an input node bound to a tensor backed by buf.
func boundNode[T float](g *G.ExprGraph, name string, buf []T, shape ...int) *G.Node {
	t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(buf))
	if len(shape) == 1 {
		return G.NewVector(g, dtypeOf[T](), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
	}
	return G.NewMatrix(g, dtypeOf[T](), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// buildNet builds and compiles one graph: the training graph (loss and gradients) when
// train is set, else the prediction graph.
func buildNet[T float](cfg *MLPConfig, layout []TensorInfo, numParams int, train bool) (*net[T], error) {
	b, k := cfg.BatchSize, cfg.Outputs
	n := &net[T]{g: G.NewGraph(), x: make([]T, b*cfg.Inputs), params: make([]T, numParams)}
	g := n.g
	x := boundNode(g, "x", n.x, b, cfg.Inputs)
	learnables := make(G.Nodes, len(layout))
	for i, t := range layout {
		learnables[i] = boundNode(g, t.Name, n.params[t.Offset:t.Offset+t.Size], t.Shape...)
	}

	h := x
	layers := len(layout) / 2
	for l := range layers {
		z, err := G.Mul(h, learnables[2*l])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", layout[2*l].Name, err)
		}
		if z, err = G.BroadcastAdd(z, learnables[2*l+1], nil, []byte{0}); err != nil {
			return nil, fmt.Errorf("%s: %w", layout[2*l+1].Name, err)
		}
		if l == layers-1 {
			h = z
			break
		}
		if h, err = activate(z, cfg.Activation); err != nil {
			return nil, fmt.Errorf("%s activation: %w", layout[2*l].Name, err)
		}
		if train && cfg.Dropout > 0 {
			width := layout[2*l].Shape[1]
			mask := make([]T, b*width)
			n.masks = append(n.masks, mask)
			if h, err = G.HadamardProd(h, boundNode(g, fmt.Sprintf("dropout%d.mask", l), mask, b, width)); err != nil {
				return nil, fmt.Errorf("dropout%d: %w", l, err)
			}
		}
	}
	logits := h

	if !train {
		out, err := predictionOf(logits, cfg.Task)
		if err != nil {
			return nil, fmt.Errorf("output: %w", err)
		}
		n.outBuf = make([]T, b*k)
		var into G.Value = tensor.New(tensor.WithShape(b, k), tensor.WithBacking(n.outBuf))
		G.Read(out, &into)
		n.vm = G.NewTapeMachine(g)
		return n, nil
	}

	cost, err := n.lossOf(logits, cfg)
	if err != nil {
		return nil, fmt.Errorf("loss: %w", err)
	}
	grads, err := G.Grad(cost, learnables...)
	if err != nil {
		return nil, fmt.Errorf("gradients: %w", err)
	}
	n.gradBuf = make([]T, numParams)
	for i, t := range layout {
		// Each Read copies into its own tensor over a slice of gradBuf; the pointer
		// must stay valid for the graph's life, so each gets its own variable.
		into := new(G.Value)
		*into = tensor.New(tensor.WithShape(grads[i].Shape()...), tensor.WithBacking(n.gradBuf[t.Offset:t.Offset+t.Size]))
		G.Read(grads[i], into)
	}
	G.Read(cost, &n.cost)
	n.vm = G.NewTapeMachine(g)
	return n, nil
}

// activate applies a hidden layer's activation.
func activate(z *G.Node, name string) (*G.Node, error) {
	switch name {
	case ActivationReLU:
		return G.Rectify(z)
	case ActivationTanh:
		return G.Tanh(z)
	case ActivationSigmoid:
		return G.Sigmoid(z)
	case ActivationLeakyReLU:
		return G.LeakyRelu(z, LeakyReLUSlope)
	}
	return nil, fmt.Errorf("unknown activation %q", name)
}

// logSoftmax computes z - logsumexp(z) along axis 1, shifting each row by its maximum
// for stability. (gorgonia's LogSoftMax shifts every row by the first row's first value,
// which underflows when rows differ widely.) The gradient through the maximum cancels
// exactly, as log-softmax does not depend on the shift.
func logSoftmax(z *G.Node) (*G.Node, error) {
	mx, err := G.Max(z, 1)
	if err != nil {
		return nil, err
	}
	shifted, err := G.BroadcastSub(z, mx, nil, []byte{1})
	if err != nil {
		return nil, err
	}
	ex, err := G.Exp(shifted)
	if err != nil {
		return nil, err
	}
	sum, err := G.Sum(ex, 1)
	if err != nil {
		return nil, err
	}
	lse, err := G.Log(sum)
	if err != nil {
		return nil, err
	}
	return G.BroadcastSub(shifted, lse, nil, []byte{1})
}

// predictionOf maps logits (BatchSize, K) to Predict's outputs.
func predictionOf(logits *G.Node, task string) (*G.Node, error) {
	switch task {
	case TaskBinary:
		return G.Sigmoid(logits)
	case TaskMulticlass:
		ls, err := logSoftmax(logits)
		if err != nil {
			return nil, err
		}
		return G.Exp(ls)
	default:
		return logits, nil
	}
}

// lossOf builds the scalar mean loss over the valid rows and the label inputs it needs.
func (n *net[T]) lossOf(logits *G.Node, cfg *MLPConfig) (*G.Node, error) {
	g, b, k := n.g, cfg.BatchSize, cfg.Outputs
	if cfg.Task == TaskMulticlass {
		// y holds one-hot rows scaled by the row weight, so the loss is -Σ y ⊙ log p.
		n.y = make([]T, b*k)
		y := boundNode(g, "y", n.y, b, k)
		ls, err := logSoftmax(logits)
		if err != nil {
			return nil, err
		}
		prod, err := G.HadamardProd(y, ls)
		if err != nil {
			return nil, err
		}
		s, err := G.Sum(prod)
		if err != nil {
			return nil, err
		}
		return G.Neg(s)
	}
	n.y, n.w = make([]T, b), make([]T, b)
	y := boundNode(g, "y", n.y, b, 1)
	w := boundNode(g, "row_weight", n.w, b, 1)
	var per *G.Node
	var err error
	switch cfg.Task {
	case TaskBinary:
		// softplus(z) - y·z is -[y log σ(z) + (1-y) log(1-σ(z))] without overflow.
		var sp, yz *G.Node
		if sp, err = G.Softplus(logits); err != nil {
			return nil, err
		}
		if yz, err = G.HadamardProd(y, logits); err != nil {
			return nil, err
		}
		if per, err = G.Sub(sp, yz); err != nil {
			return nil, err
		}
	default:
		var d *G.Node
		if d, err = G.Sub(logits, y); err != nil {
			return nil, err
		}
		if per, err = G.Square(d); err != nil {
			return nil, err
		}
	}
	weighted, err := G.HadamardProd(per, w)
	if err != nil {
		return nil, err
	}
	return G.Sum(weighted)
}

// gradient implements Model.Gradient on validated arguments.
func (e *graphEngine[T]) gradient(params, x, y []float32, rows int, grad []float32) (float64, error) {
	n, cfg := e.train, e.cfg
	b := cfg.BatchSize
	convert(n.params, params)
	convert(n.x[:rows*cfg.Inputs], x[:rows*cfg.Inputs])
	clear(n.x[rows*cfg.Inputs:])
	weight := T(1) / T(rows)
	if cfg.Task == TaskMulticlass {
		clear(n.y)
		for i, v := range y[:rows] {
			n.y[i*cfg.Outputs+int(v)] = weight
		}
	} else {
		convert(n.y[:rows], y[:rows])
		clear(n.y[rows:])
		for i := range b {
			if i < rows {
				n.w[i] = weight
			} else {
				n.w[i] = 0
			}
		}
	}
	if len(n.masks) > 0 {
		e.pcg.Seed(uint64(cfg.Seed), e.calls)
		keep := 1 - cfg.Dropout
		scale := T(1 / keep)
		for _, m := range n.masks {
			for i := range m {
				if e.rng.Float64() < keep {
					m[i] = scale
				} else {
					m[i] = 0
				}
			}
		}
	}
	e.calls++
	n.cost = nil
	n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return 0, err
	}
	for i, v := range n.gradBuf {
		grad[i] = float32(v)
	}
	switch c := n.cost.Data().(type) {
	case float32:
		return float64(c), nil
	case float64:
		return c, nil
	default:
		return 0, fmt.Errorf("loss has unexpected type %T", c)
	}
}

// predict implements Model.Predict for at most BatchSize validated rows.
func (e *graphEngine[T]) predict(params, x []float32, rows int, out []float32) error {
	n, cfg := e.pred, e.cfg
	convert(n.params, params)
	convert(n.x[:rows*cfg.Inputs], x[:rows*cfg.Inputs])
	clear(n.x[rows*cfg.Inputs:])
	n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return err
	}
	for i := range rows * cfg.Outputs {
		out[i] = float32(n.outBuf[i])
	}
	return nil
}

// convert copies src into dst (same length), converting to T.
func convert[T float](dst []T, src []float32) {
	if d, ok := any(dst).([]float32); ok {
		copy(d, src)
		return
	}
	for i, v := range src {
		dst[i] = T(v)
	}
}
