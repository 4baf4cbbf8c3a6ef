package model

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file holds the dense layer as gorgonia ops: y = act(x·W + b) in one op (one
// GEMM through parallelGemm, the bias and the activation fused into its output pass),
// and its gradient as four ops: dz = dy ⊙ act'(y) (from the output, so nothing else is
// kept), dx = dz·Wᵀ, dW = xᵀ·dz and db = Σ_rows dz. Packing inside the GEMM handles the
// transposes. Every op owns its output buffer and reuses it on every run of the graph,
// so a step allocates only tensor headers.

// identity is the activation name of a dense layer without one (an output layer, the
// LSTM gates).
const identity = ""

// denseGeom is a dense layer's shape: inputs of rows x width (each may be a feature map
// of any rank whose first dimension is the rows), each multiplied by its own block of
// rows of the weights (wRows x out); for the activation ops, xShape is the shape.
type denseGeom struct {
	rows, out, wRows int
	xs               []denseInput
	xShape           tensor.Shape // activation ops: the shape
	act              string       // activation, or identity
}

// denseInput is one input of a dense layer: its shape, its width per row and the first
// row of the weights it multiplies.
type denseInput struct {
	shape      tensor.Shape
	width, off int
}

// denseBase holds what the dense ops share.
type denseBase[T float] struct {
	par  *intraOp // the model's intra-op split
	g    denseGeom
	name string
	buf  []T // reused output backing
}

// output returns a new tensor header over the op's reused buffer: a fresh header per
// run, so that an op reshaping its input in place cannot affect the next run.
func (o *denseBase[T]) output(shape tensor.Shape) (*tensor.Dense, []T) {
	if n := shape.TotalSize(); len(o.buf) != n {
		o.buf = make([]T, n)
	}
	return tensor.New(tensor.WithShape(shape.Clone()...), tensor.WithBacking(o.buf)), o.buf
}

// writeOutputTo makes buf (float32) the op's output backing (outputTarget).
func (o *denseBase[T]) writeOutputTo(buf []float32) bool {
	b, ok := any(buf).([]T)
	if ok {
		o.buf = b
	}
	return ok
}

func (o *denseBase[T]) ReturnsPtr() bool     { return false }
func (o *denseBase[T]) CallsExtern() bool    { return false }
func (o *denseBase[T]) OverwritesInput() int { return -1 }
func (o *denseBase[T]) String() string {
	return fmt.Sprintf("%s<%dx%d->%d %s>", o.name, o.g.rows, o.g.wRows, o.g.out, o.g.act)
}

// WriteHash includes the op's address: each op owns its buffer, so gorgonia must never
// merge two of them as common subexpressions.
func (o *denseBase[T]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s%p", o.name, o) }
func (o *denseBase[T]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

// denseInputs returns the row-major values of the op's inputs.
func denseInputs[T float](name string, want int, inputs []G.Value) ([][]T, error) {
	if len(inputs) != want {
		return nil, fmt.Errorf("%s: %d inputs, want %d", name, len(inputs), want)
	}
	out := make([][]T, len(inputs))
	for i, v := range inputs {
		d, err := opData[T](name, i, v)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// maxOpInputs bounds the inputs opInputs decodes.
const maxOpInputs = 4

// opInputs checks that an op got n inputs (at most maxOpInputs) and returns their
// row-major values, in an array so that the ops that run every step allocate nothing.
func opInputs[T float](name string, inputs []G.Value, n int) (vals [maxOpInputs][]T, err error) {
	if len(inputs) != n || n > maxOpInputs {
		return vals, fmt.Errorf("%s: %d inputs, want %d", name, len(inputs), n)
	}
	for i, v := range inputs {
		if vals[i], err = opData[T](name, i, v); err != nil {
			return vals, err
		}
	}
	return vals, nil
}

// opData returns the row-major values of an op's input i, of the op's dtype; a strided
// view is materialised first.
func opData[T float](name string, i int, v G.Value) ([]T, error) {
	if t, ok := v.(tensor.Tensor); ok && t.RequiresIterator() {
		d, ok := t.(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("%s: input %d is a %T view, which cannot be read", name, i, v)
		}
		v = d.Materialize().(*tensor.Dense)
	}
	d, ok := v.Data().([]T)
	if !ok {
		return nil, fmt.Errorf("%s: input %d holds %T, want %T", name, i, v.Data(), d)
	}
	return d, nil
}

func denseType(dims int) G.TensorType { return G.TensorType{Dims: dims, Of: hm.TypeVariable('a')} }

// denseOp computes act(Σ_i x_i·W[off_i : off_i+width_i] + b): inputs x_1..x_n (rows,
// ...width_i), W (wRows, out), b (out); output (rows, out). One input with W of its
// width is the plain dense layer.
type denseOp[T float] struct {
	denseBase[T]
	// needDX tells, per input, whether its gradient is built (not for data).
	needDX []bool
}

func (o *denseOp[T]) Arity() int { return len(o.g.xs) + 2 }
func (o *denseOp[T]) Type() hm.Type {
	var ts []hm.Type
	for _, x := range o.g.xs {
		ts = append(ts, denseType(len(x.shape)))
	}
	return hm.NewFnType(append(ts, denseType(2), denseType(1), denseType(2))...)
}
func (o *denseOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.rows, o.g.out}, nil
}

func (o *denseOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, o.Arity(), inputs)
	if err != nil {
		return nil, err
	}
	g := &o.g
	n := len(g.xs)
	w, b := in[n], in[n+1]
	t, y := o.output(tensor.Shape{g.rows, g.out})
	for r := range g.rows {
		copy(y[r*g.out:(r+1)*g.out], b)
	}
	for i, x := range g.xs {
		parallelGemm(o.par, false, false, g.rows, g.out, x.width, in[i], x.width, w[x.off*g.out:], g.out, 1, y, g.out)
	}
	activateInPlace(y, g.act)
	return t, nil
}

func (o *denseOp[T]) DiffWRT(int) []bool { return append(append([]bool(nil), o.needDX...), true, true) }

func (o *denseOp[T]) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != o.Arity() {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.name, len(inputs), o.Arity())
	}
	g := o.g
	n := len(g.xs)
	dz := grad
	var err error
	if g.act != identity {
		ag := denseGeom{xShape: tensor.Shape{g.rows, g.out}, act: g.act}
		if dz, err = G.ApplyOp(&activationGradOp[T]{denseBase[T]{par: buildPar, g: ag, name: o.name + ".dz"}}, output, grad); err != nil {
			return nil, err
		}
	}
	grads := make(G.Nodes, n+2)
	for i := range g.xs {
		if !o.needDX[i] {
			continue
		}
		op := &denseDXOp[T]{denseBase: denseBase[T]{par: buildPar, g: g, name: fmt.Sprintf("%s.dx%d", o.name, i)}, input: i}
		if grads[i], err = G.ApplyOp(op, dz, inputs[n]); err != nil {
			return nil, err
		}
	}
	if grads[n], err = G.ApplyOp(&denseDWOp[T]{denseBase[T]{par: buildPar, g: g, name: o.name + ".dw"}}, append(append(G.Nodes(nil), inputs[:n]...), dz)...); err != nil {
		return nil, err
	}
	if grads[n+1], err = G.ApplyOp(&denseDBOp[T]{denseBase[T]{par: buildPar, g: g, name: o.name + ".db"}}, dz); err != nil {
		return nil, err
	}
	return grads, nil
}

// activationOp applies an activation to a tensor of any shape.
type activationOp[T float] struct{ denseBase[T] }

func (o *activationOp[T]) Arity() int { return 1 }
func (o *activationOp[T]) Type() hm.Type {
	return hm.NewFnType(denseType(len(o.g.xShape)), denseType(len(o.g.xShape)))
}
func (o *activationOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return o.g.xShape.Clone(), nil
}

func (o *activationOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, 1, inputs)
	if err != nil {
		return nil, err
	}
	t, y := o.output(o.g.xShape)
	copy(y, in[0])
	activateInPlace(y, o.g.act)
	return t, nil
}

func (o *activationOp[T]) DiffWRT(int) []bool { return []bool{true} }

func (o *activationOp[T]) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, err := G.ApplyOp(&activationGradOp[T]{denseBase[T]{par: buildPar, g: o.g, name: o.name + ".dz"}}, output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dz}, nil
}

// activationGradOp computes dz = dy ⊙ act'(z) from y = act(z) and dy, both of the
// activation's shape.
type activationGradOp[T float] struct{ denseBase[T] }

func (o *activationGradOp[T]) Arity() int { return 2 }
func (o *activationGradOp[T]) Type() hm.Type {
	r := denseType(len(o.g.xShape))
	return hm.NewFnType(r, r, r)
}
func (o *activationGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return o.g.xShape.Clone(), nil
}

func (o *activationGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, 2, inputs)
	if err != nil {
		return nil, err
	}
	t, dz := o.output(o.g.xShape)
	activationGrad(dz, in[0], in[1], o.g.act)
	return t, nil
}

// denseDXOp computes dx_i = dz·W[off_i : off_i+width_i]ᵀ, shaped like x_i, from dz
// (rows, out) and W.
type denseDXOp[T float] struct {
	denseBase[T]
	input int
}

func (o *denseDXOp[T]) Arity() int { return 2 }
func (o *denseDXOp[T]) Type() hm.Type {
	return hm.NewFnType(denseType(2), denseType(2), denseType(len(o.g.xs[o.input].shape)))
}
func (o *denseDXOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return o.g.xs[o.input].shape.Clone(), nil
}

func (o *denseDXOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, 2, inputs)
	if err != nil {
		return nil, err
	}
	g := &o.g
	x := g.xs[o.input]
	t, dx := o.output(x.shape)
	parallelGemm(o.par, false, true, g.rows, x.width, g.out, in[0], g.out, in[1][x.off*g.out:], g.out, 0, dx, x.width)
	return t, nil
}

// denseDWOp computes dW (wRows, out), x_iᵀ·dz in each input's block of rows and 0 in
// rows no input uses, from x_1..x_n and dz (rows, out).
type denseDWOp[T float] struct{ denseBase[T] }

func (o *denseDWOp[T]) Arity() int { return len(o.g.xs) + 1 }
func (o *denseDWOp[T]) Type() hm.Type {
	var ts []hm.Type
	for _, x := range o.g.xs {
		ts = append(ts, denseType(len(x.shape)))
	}
	return hm.NewFnType(append(ts, denseType(2), denseType(2))...)
}
func (o *denseDWOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.wRows, o.g.out}, nil
}

func (o *denseDWOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, o.Arity(), inputs)
	if err != nil {
		return nil, err
	}
	g := &o.g
	dz := in[len(g.xs)]
	t, dw := o.output(tensor.Shape{g.wRows, g.out})
	covered := 0
	for i, x := range g.xs {
		parallelGemm(o.par, true, false, x.width, g.out, g.rows, in[i], x.width, dz, g.out, 0, dw[x.off*g.out:], g.out)
		covered += x.width
	}
	if covered < g.wRows {
		// Only the LSTM's first step leaves rows out, and they are the last ones.
		clear(dw[covered*g.out:])
	}
	return t, nil
}

// denseDBOp computes db = Σ_rows dz (out) from dz (rows, out).
type denseDBOp[T float] struct{ denseBase[T] }

func (o *denseDBOp[T]) Arity() int    { return 1 }
func (o *denseDBOp[T]) Type() hm.Type { return hm.NewFnType(denseType(2), denseType(1)) }
func (o *denseDBOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.out}, nil
}

func (o *denseDBOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, 1, inputs)
	if err != nil {
		return nil, err
	}
	g := &o.g
	t, db := o.output(tensor.Shape{g.out})
	clear(db)
	dz := in[0]
	for r := range g.rows {
		for j, v := range dz[r*g.out : (r+1)*g.out] {
			db[j] += v
		}
	}
	return t, nil
}

// dense applies a fused dense layer to h (rows first; further dimensions are flattened
// per row, as PyTorch's flatten does). needDX is false when h is the model's input.
func dense[T float](name string, h, w, b *G.Node, act string, needDX bool) (*G.Node, error) {
	xs, ws := h.Shape(), w.Shape()
	if len(xs) < 2 || len(ws) != 2 || xs.TotalSize() != xs[0]*ws[0] {
		return nil, fmt.Errorf("%s: input of shape %v does not match weights of shape %v", name, xs, ws)
	}
	return denseMulti[T](name, []*G.Node{h}, w, b, act, []bool{needDX})
}

// denseMulti applies a fused dense layer to several inputs side by side: input i
// multiplies the rows of w that follow those of the inputs before it (w may have more
// rows; the rest are unused). needDX tells, per input, whether it needs a gradient.
func denseMulti[T float](name string, xs []*G.Node, w, b *G.Node, act string, needDX []bool) (*G.Node, error) {
	ws := w.Shape()
	if len(ws) != 2 || len(xs) == 0 || len(needDX) != len(xs) {
		return nil, fmt.Errorf("%s: weights of shape %v for %d inputs", name, ws, len(xs))
	}
	switch act {
	case identity, ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU:
	default:
		return nil, fmt.Errorf("%s: unknown activation %q", name, act)
	}
	g := denseGeom{rows: xs[0].Shape()[0], out: ws[1], wRows: ws[0], act: act}
	off := 0
	for i, x := range xs {
		s := x.Shape()
		if len(s) < 2 || s[0] != g.rows {
			return nil, fmt.Errorf("%s: input %d of shape %v, want %d rows", name, i, s, g.rows)
		}
		width := s.TotalSize() / g.rows
		g.xs = append(g.xs, denseInput{shape: s.Clone(), width: width, off: off})
		off += width
	}
	if off > g.wRows {
		return nil, fmt.Errorf("%s: inputs of %d values per row do not match weights of shape %v", name, off, ws)
	}
	args := append(append(G.Nodes(nil), xs...), w, b)
	return G.ApplyOp(&denseOp[T]{denseBase: denseBase[T]{par: buildPar, g: g, name: name}, needDX: needDX}, args...)
}

// activation applies a fused activation op (act(z) with its gradient computed from the
// output) to h of any shape; identity returns h.
func activation[T float](name string, h *G.Node, act string) (*G.Node, error) {
	switch act {
	case identity:
		return h, nil
	case ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU:
	default:
		return nil, fmt.Errorf("%s: unknown activation %q", name, act)
	}
	g := denseGeom{xShape: h.Shape().Clone(), act: act}
	return G.ApplyOp(&activationOp[T]{denseBase[T]{par: buildPar, g: g, name: name}}, h)
}

// activateInPlace applies the activation to every value of z.
func activateInPlace[T float](z []T, act string) {
	switch act {
	case ActivationReLU:
		// max compiles without a branch, which random signs would mispredict half
		// the time (relu of NaN stays NaN; inputs and parameters are checked finite).
		for i, v := range z {
			z[i] = max(v, 0)
		}
	case ActivationLeakyReLU:
		for i, v := range z {
			if v < 0 {
				z[i] = v * LeakyReLUSlope
			}
		}
	case ActivationTanh:
		tanhInto(z, z) // fastmath.go: the fast form in float32, math's in float64
	case ActivationSigmoid:
		sigmoidInto(z, z)
	}
}

// sigmoid is 1/(1+e^-x), computed without overflow for either sign.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// activationGrad sets dz = dy ⊙ act'(z) from y = act(z): relu' is 1 where y > 0,
// leaky_relu' 1 where y >= 0 and LeakyReLUSlope below, tanh' 1 - y², sigmoid' y(1 - y).
func activationGrad[T float](dz, y, dy []T, act string) {
	y, dy = y[:len(dz)], dy[:len(dz)]
	switch act {
	case ActivationReLU:
		for i, v := range y {
			if v > 0 {
				dz[i] = dy[i]
			} else {
				dz[i] = 0
			}
		}
	case ActivationLeakyReLU:
		for i, v := range y {
			if v >= 0 {
				dz[i] = dy[i]
			} else {
				dz[i] = dy[i] * LeakyReLUSlope
			}
		}
	case ActivationTanh:
		for i, v := range y {
			dz[i] = dy[i] * (1 - v*v)
		}
	case ActivationSigmoid:
		for i, v := range y {
			dz[i] = dy[i] * v * (1 - v)
		}
	default:
		copy(dz, dy)
	}
}
