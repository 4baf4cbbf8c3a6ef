package model

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

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

	// Dropout masks of the k-th Gradient call (see DropoutStream).
	drops *DropoutStream
	calls uint64
}

// net is one compiled graph. Its input nodes are bound to tensors backed by the slices
// below; a call fills the slices and runs the machine. Outputs are copied by G.Read
// nodes into preallocated tensors backed by outBuf and gradBuf. A float32 training
// graph is bound to the caller's slices instead where it can (the fields at the end).
type net[T float] struct {
	g    *G.ExprGraph
	vm   G.VM
	tape tapeRunner // runs vm on the calling goroutine (see newTapeRunner)

	x      []T   // BatchSize*Inputs features, zero-padded
	y      []T   // binary, regression: BatchSize targets; multiclass: BatchSize*K one-hot scaled by the row weight
	w      []T   // BatchSize row weights: 1/n for the n valid rows, 0 for padding (not multiclass)
	params []T   // the flat parameters, converted
	masks  [][]T // dropout masks per hidden layer, BatchSize*width each (train only, dropout > 0)

	cost    G.Value // the mean loss, read after each run (train only)
	outBuf  []T     // BatchSize*Outputs predictions (pred only)
	gradBuf []T     // flat gradient (train only)

	// A float32 training graph reads the caller's parameters and writes the caller's
	// gradient in place (see bindCallerParams, bindGrad) instead of copying both through
	// params and gradBuf: learnables are the parameter nodes, and each gradient is
	// written by its op straight into the caller's slice (gradOps) or, when its op
	// cannot, read into it (gradInto), in layout order; boundParams and boundGrad are
	// the caller's slices they are bound to now (nil: params and gradBuf).
	layout      []TensorInfo
	learnables  G.Nodes
	gradInto    []*G.Value     // per layout tensor, its gradient's Read target (nil: gradOps')
	gradOps     []outputTarget // per layout tensor, the op that writes its gradient (nil: a Read)
	boundParams []float32
	boundGrad   []float32
	// xNode is the input node over x; a full batch binds it to the caller's rows
	// (bindInput), boundX.
	xNode  *G.Node
	boundX []float32
}

func dtypeOf[T float]() tensor.Dtype {
	var zero T
	if _, ok := any(zero).(float64); ok {
		return tensor.Float64
	}
	return tensor.Float32
}

func newGraphEngine[T float](cfg *MLPConfig, layout []TensorInfo, numParams int) (*graphEngine[T], error) {
	e := &graphEngine[T]{cfg: cfg, drops: NewDropoutStream()}
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
	n := &net[T]{g: G.NewGraph(), x: make([]T, cfg.BatchSize*cfg.Inputs), params: make([]T, numParams)}
	x := boundNode(n.g, "x", n.x, cfg.BatchSize, cfg.Inputs)
	n.xNode = x
	learnables := n.bindParams(layout, boundNode[T])
	logits, err := n.denseLayers(x, learnables, layout, cfg.Activation, cfg.Dropout, train, false)
	if err != nil {
		return nil, err
	}
	if err := n.compile(logits, learnables, layout, cfg, train); err != nil {
		return nil, err
	}
	return n, nil
}

// bindParams creates one input node per layout tensor, bound to its slice of n.params.
func (n *net[T]) bindParams(layout []TensorInfo, bind func(*G.ExprGraph, string, []T, ...int) *G.Node) G.Nodes {
	learnables := make(G.Nodes, len(layout))
	for i, t := range layout {
		learnables[i] = bind(n.g, t.Name, n.params[t.Offset:t.Offset+t.Size], t.Shape...)
	}
	return learnables
}

// denseLayers applies the dense layers whose (weight, bias) pairs are params (with
// their layout entries) to h: each hidden layer is one fused op with the activation,
// followed in training graphs by inverted dropout (a mask per layer in n.masks, which
// the engine refills before every run); the last pair is the output layer, without
// activation, and its result the logits. A dense layer flattens a feature map per
// row. needDX tells whether h needs a gradient (false when h is the model's input).
func (n *net[T]) denseLayers(h *G.Node, params G.Nodes, layout []TensorInfo, act string, dropout float64, train, needDX bool) (*G.Node, error) {
	layers := len(params) / 2
	for l := range layers {
		w := layout[2*l]
		a := act
		if l == layers-1 {
			a = identity
		}
		var err error
		if h, err = dense[T](w.Name, h, params[2*l], params[2*l+1], a, needDX || l > 0); err != nil {
			return nil, err
		}
		if l == layers-1 || !train || dropout == 0 {
			continue
		}
		b, width := h.Shape()[0], w.Shape[1]
		mask := make([]T, b*width)
		n.masks = append(n.masks, mask)
		name := strings.TrimSuffix(w.Name, ".weight") + ".dropout"
		if h, err = G.HadamardProd(h, boundNode(n.g, name, mask, b, width)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return h, nil
}

// compile finishes a graph from its logits (BatchSize, Outputs): in a training graph
// the loss, its gradients with respect to learnables (read into gradBuf in layout
// order) and the loss value (read into cost); in a prediction graph Predict's outputs
// (read into outBuf). Then it builds the tape machine.
func (n *net[T]) compile(logits *G.Node, learnables G.Nodes, layout []TensorInfo, cfg *MLPConfig, train bool) error {
	if !train {
		out, err := predictionOf(logits, cfg.Task)
		if err != nil {
			return fmt.Errorf("output: %w", err)
		}
		n.outBuf = make([]T, cfg.BatchSize*cfg.Outputs)
		var into G.Value = tensor.New(tensor.WithShape(cfg.BatchSize, cfg.Outputs), tensor.WithBacking(n.outBuf))
		G.Read(out, &into)
		n.vm = G.NewTapeMachine(n.g)
		n.tape = newTapeRunner(n.vm)
		return nil
	}
	cost, err := n.lossOf(logits, cfg)
	if err != nil {
		return fmt.Errorf("loss: %w", err)
	}
	grads, err := G.Grad(cost, learnables...)
	if err != nil {
		return fmt.Errorf("gradients: %w", err)
	}
	n.gradBuf = make([]T, len(n.params))
	n.layout, n.learnables = layout, learnables
	n.gradInto, n.gradOps = make([]*G.Value, len(layout)), make([]outputTarget, len(layout))
	_, f32 := any(n.params).([]float32)
	for i, t := range layout {
		// In float32 the op of a gradient that can write its output into the
		// caller's slice does (bindGrad), with no copy by a Read.
		if op, ok := grads[i].Op().(outputTarget); ok && f32 && op.writeOutputTo(nil) {
			n.gradOps[i] = op
			continue
		}
		// Each Read copies into its own tensor over a slice of gradBuf; the pointer
		// must stay valid for the graph's life, so each gets its own variable.
		into := new(G.Value)
		*into = tensor.New(tensor.WithShape(grads[i].Shape()...), tensor.WithBacking(n.gradBuf[t.Offset:t.Offset+t.Size]))
		G.Read(grads[i], into)
		n.gradInto[i] = into
	}
	G.Read(cost, &n.cost)
	n.vm = G.NewTapeMachine(n.g)
	n.tape = newTapeRunner(n.vm)
	return nil
}

// activate applies a hidden layer's activation as one fused op (see activation).
func activate(z *G.Node, name string) (*G.Node, error) {
	if z.Dtype() == tensor.Float64 {
		return activation[float64]("act", z, name)
	}
	return activation[float32]("act", z, name)
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

// lossOf builds the scalar mean loss over the valid rows (the fused loss op, see
// lossop.go) and binds the label inputs it needs.
func (n *net[T]) lossOf(logits *G.Node, cfg *MLPConfig) (*G.Node, error) {
	g, b, k := n.g, cfg.BatchSize, cfg.Outputs
	if cfg.Task == TaskMulticlass {
		// y holds one-hot rows scaled by the row weight, so the loss is -Σ y ⊙ log p.
		n.y = make([]T, b*k)
		return lossNode[T](cfg.Task, logits, boundNode(g, "y", n.y, b, k))
	}
	n.y, n.w = make([]T, b), make([]T, b)
	return lossNode[T](cfg.Task, logits, boundNode(g, "y", n.y, b, 1), boundNode(g, "row_weight", n.w, b, 1))
}

// setCalls makes the next gradient call the k-th.
func (e *graphEngine[T]) setCalls(k uint64) { e.calls = k }

// gradient implements Model.Gradient on validated arguments.
func (e *graphEngine[T]) gradient(params, x, y []float32, rows int, grad []float32) (float64, error) {
	n, cfg := e.train, e.cfg
	b := cfg.BatchSize
	direct := n.bindGrad(grad)
	if !direct || !n.bindCallerParams(params) {
		convert(n.params, params)
	}
	if !direct || !n.bindInput(x, rows, cfg.Inputs) {
		convert(n.x[:rows*cfg.Inputs], x[:rows*cfg.Inputs])
		clear(n.x[rows*cfg.Inputs:])
	}
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
		fillMasks(e.drops, n.masks, cfg.Seed, e.calls, cfg.Dropout)
	}
	e.calls++
	n.cost = nil
	if err := n.run(); err != nil {
		return 0, err
	}
	if !direct {
		for i, v := range n.gradBuf {
			grad[i] = float32(v)
		}
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
	if err := n.run(); err != nil {
		return err
	}
	for i := range rows * cfg.Outputs {
		out[i] = float32(n.outBuf[i])
	}
	return nil
}

// outputTarget is an op that can write its output into a slice of the caller's: a
// parameter's gradient into Gradient's grad (conv.go's and dense.go's ops).
type outputTarget interface {
	// writeOutputTo makes buf the op's output backing from the next run on (nil: its
	// own, allocated then); false, doing nothing, when the op's dtype is not float32.
	writeOutputTo(buf []float32) bool
}

// bindGrad makes a float32 training graph's run write its gradient into grad, the
// caller's slice: each parameter's gradient op writes its output there, or its Read
// copies into it. A step then copies no gradient out (900 KB for the example CNN, work
// that does not split over threads). The bindings are redone only when the caller
// passes another slice (a worker passes the same one every step). It reports whether
// the graph is bound so (false for float64 graphs, which read into gradBuf).
func (n *net[T]) bindGrad(grad []float32) bool {
	if _, ok := any(n.params).([]float32); !ok || len(n.gradOps) != len(n.layout) {
		return false
	}
	if sameSlice(n.boundGrad, grad) {
		return true
	}
	for i, t := range n.layout {
		dst := grad[t.Offset : t.Offset+t.Size]
		if op := n.gradOps[i]; op != nil {
			op.writeOutputTo(dst) // float32, as compile found
			continue
		}
		*n.gradInto[i] = tensor.New(tensor.WithShape((*n.gradInto[i]).Shape()...), tensor.WithBacking(dst))
	}
	n.boundGrad = grad
	return true
}

// bindCallerParams binds a float32 training graph's parameter nodes to params, the caller's
// slice, so that a run reads it in place (the graph's ops never write their inputs).
// The bindings are redone only when the caller passes another slice. It reports
// whether the graph is bound so; otherwise the nodes are bound to n.params, which the
// caller fills.
func (n *net[T]) bindCallerParams(params []float32) bool {
	if sameSlice(n.boundParams, params) {
		return true
	}
	for i, t := range n.layout {
		v := tensor.New(tensor.WithShape(n.learnables[i].Shape()...), tensor.WithBacking(params[t.Offset:t.Offset+t.Size]))
		if err := G.Let(n.learnables[i], v); err != nil {
			for i, t := range n.layout {
				_ = G.Let(n.learnables[i], tensor.New(tensor.WithShape(n.learnables[i].Shape()...), tensor.WithBacking(n.params[t.Offset:t.Offset+t.Size])))
			}
			n.boundParams = nil
			return false
		}
	}
	n.boundParams = params
	return true
}

// sameSlice tells whether a and b are the same non-empty slice.
func sameSlice(a, b []float32) bool { return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0] }

// bindInput binds a float32 training graph's input node to the caller's x when it is
// a full batch (rows = BatchSize), so that its rows are not copied, and reports
// whether it did; otherwise it binds the node back to n.x, which the caller fills.
func (n *net[T]) bindInput(x []float32, rows, inputs int) bool {
	if n.xNode == nil {
		return false
	}
	size := len(n.x)
	full := rows*inputs == size && len(x) >= size
	want := any(n.x).([]float32)
	if full {
		want = x[:size]
	}
	if !sameSlice(n.boundX, want) {
		if err := G.Let(n.xNode, tensor.New(tensor.WithShape(n.xNode.Shape()...), tensor.WithBacking(want))); err != nil {
			_ = G.Let(n.xNode, tensor.New(tensor.WithShape(n.xNode.Shape()...), tensor.WithBacking(any(n.x).([]float32))))
			n.boundX = nil
			return false
		}
		n.boundX = want
	}
	return full
}

// run executes the compiled graph once.
func (n *net[T]) run() error {
	n.vm.Reset()
	if n.tape.run.IsValid() && n.tape.vm == n.vm {
		return n.tape.runAll()
	}
	return n.vm.RunAll()
}

// tapeRunner executes a tape machine's program on the calling goroutine.
//
// gorgonia's TapeMachine.RunAll locks the calling goroutine to its OS thread and runs
// the program on a second goroutine, which costs two thread hand-offs per run: about
// 10 µs on an idle machine and 100 µs or more when other processes compete for the
// cores, more than a whole MLP step. TapeMachine.Run executes a fragment of the program
// on the caller instead, but its parameter type is unexported, so the runner takes the
// program's instruction list by reflection, once. If that fails (another gorgonia
// version), run is left invalid and net.run falls back to RunAll.
type tapeRunner struct {
	vm   G.VM
	run  reflect.Value   // vm.Run
	args []reflect.Value // the whole program, as Run's fragment argument
}

func newTapeRunner(vm G.VM) (r tapeRunner) {
	defer func() {
		if recover() != nil {
			r = tapeRunner{}
		}
	}()
	v := reflect.ValueOf(vm)
	instrs := v.Elem().FieldByName("p").Elem().FieldByName("instructions")
	frag := reflect.NewAt(instrs.Type(), unsafe.Pointer(instrs.UnsafeAddr())).Elem()
	run := v.MethodByName("Run")
	if !run.IsValid() || run.Type().NumIn() != 1 || run.Type().In(0) != frag.Type() {
		return tapeRunner{}
	}
	return tapeRunner{vm: vm, run: run, args: []reflect.Value{frag}}
}

// runAll runs the whole program once (after the machine's Reset).
func (r *tapeRunner) runAll() error {
	if err, _ := r.run.Call(r.args)[0].Interface().(error); err != nil {
		return err
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
