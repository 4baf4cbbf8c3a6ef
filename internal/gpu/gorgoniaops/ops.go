// Package gorgoniaops wraps the gpu package's ops as gorgonia custom ops (gorgonia.Op
// and gorgonia.SDOp), so a gorgonia graph keeps doing the graph and the symbolic
// differentiation while the arithmetic runs on a GPU.
//
// Each op's Do copies its inputs to the device and its output back: gorgonia values
// live in host memory. This is the integration path; the resident path, where
// parameters and activations stay on the device across steps, is gpu.MLP and the
// Device ops used directly. All ops take and return float32 tensors.
//
// Ops: MatMul (with transposes), BiasAdd, Act (ReLU, Sigmoid, Tanh),
// SoftmaxCrossEntropy, Conv2D, MaxPool2D and LSTMGates, each with its backward op.
package gorgoniaops

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	"github.com/cohort-dev/cohort/internal/gpu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// base holds what every op shares.
type base struct {
	d    *gpu.Device
	name string
}

func (b base) ReturnsPtr() bool     { return false }
func (b base) CallsExtern() bool    { return true }
func (b base) OverwritesInput() int { return -1 }
func (b base) String() string       { return b.name }
func (b base) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "gpu.%s", b.name)
}
func (b base) Hashcode() uint32 { return hashString(b.name) }

// hashWriter is what WriteHash writes to.
type hashWriter = hash.Hash

func hashString(s string) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "gpu.%s", s)
	return h.Sum32()
}

func matrix() G.TensorType { return G.TensorType{Dims: 2, Of: hm.TypeVariable('a')} }
func vector() G.TensorType { return G.TensorType{Dims: 1, Of: hm.TypeVariable('a')} }

// floats returns the float32 backing of a gorgonia value.
func floats(op string, v G.Value) ([]float32, error) {
	switch x := v.(type) {
	case *G.F32:
		return []float32{float32(*x)}, nil
	case tensor.Tensor:
		data, ok := x.Data().([]float32)
		if !ok {
			return nil, fmt.Errorf("gorgoniaops: %s: want float32 data, got %T", op, x.Data())
		}
		return data, nil
	}
	return nil, fmt.Errorf("gorgoniaops: %s: unsupported value %T", op, v)
}

// session uploads inputs and frees everything it allocated when done.
type session struct {
	d    *gpu.Device
	bufs []*gpu.Buffer
	err  error
}

func (s *session) upload(host []float32) *gpu.Buffer {
	if s.err != nil {
		return nil
	}
	b, err := s.d.Upload(host)
	if err != nil {
		s.err = err
		return nil
	}
	s.bufs = append(s.bufs, b)
	return b
}

func (s *session) alloc(n int) *gpu.Buffer {
	if s.err != nil {
		return nil
	}
	b, err := s.d.Alloc(n)
	if err != nil {
		s.err = err
		return nil
	}
	s.bufs = append(s.bufs, b)
	return b
}

func (s *session) close() {
	for _, b := range s.bufs {
		b.Free()
	}
}

// download copies b into a new float32 tensor of the given shape.
func download(b *gpu.Buffer, shape ...int) (G.Value, error) {
	out, err := b.ReadAll()
	if err != nil {
		return nil, err
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(out)), nil
}

func shapeOf(ds G.DimSizer) (tensor.Shape, error) {
	s, ok := ds.(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("gorgoniaops: want a tensor.Shape, got %T", ds)
	}
	return s, nil
}

// MatMul is C = op(A)·op(B) through cuBLAS (see gpu.Device.Gemm).
type MatMul struct {
	base
	TransA, TransB bool
}

// NewMatMul returns the op; apply it with gorgonia.ApplyOp(op, a, b).
func NewMatMul(d *gpu.Device, transA, transB bool) MatMul {
	return MatMul{base{d, fmt.Sprintf("MatMul(%t,%t)", transA, transB)}, transA, transB}
}

// Arity is 2.
func (op MatMul) Arity() int { return 2 }

// Type is Matrix a → Matrix a → Matrix a.
func (op MatMul) Type() hm.Type { return hm.NewFnType(matrix(), matrix(), matrix()) }

func (op MatMul) dims(a, b tensor.Shape) (m, n, k int, err error) {
	if len(a) != 2 || len(b) != 2 {
		return 0, 0, 0, fmt.Errorf("gorgoniaops: %s of shapes %v and %v: want matrices", op.name, a, b)
	}
	m, k = a[0], a[1]
	if op.TransA {
		m, k = k, m
	}
	k2, n := b[0], b[1]
	if op.TransB {
		k2, n = n, k2
	}
	if k != k2 {
		return 0, 0, 0, fmt.Errorf("gorgoniaops: %s of shapes %v and %v: inner sizes %d and %d differ", op.name, a, b, k, k2)
	}
	return m, n, k, nil
}

// InferShape is (m, n).
func (op MatMul) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	a, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	b, err := shapeOf(ds[1])
	if err != nil {
		return nil, err
	}
	m, n, _, err := op.dims(a, b)
	return tensor.Shape{m, n}, err
}

// Do runs the GEMM on the device.
func (op MatMul) Do(vals ...G.Value) (G.Value, error) {
	m, n, k, err := op.dims(vals[0].Shape(), vals[1].Shape())
	if err != nil {
		return nil, err
	}
	a, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	b, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	ab, bb, cb := s.upload(a), s.upload(b), s.alloc(m*n)
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.Gemm(op.TransA, op.TransB, m, n, k, 1, ab, bb, 0, cb); err != nil {
		return nil, err
	}
	return download(cb, m, n)
}

// DiffWRT: both inputs.
func (op MatMul) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff expresses both gradients as MatMuls: for C = op(A)·op(B) with upstream G,
// dA = G·op(B)ᵀ (or op(B)·Gᵀ when A is transposed) and dB = op(A)ᵀ·G (or Gᵀ·op(A)).
func (op MatMul) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	a, b := in[0], in[1]
	var da, db *G.Node
	var err error
	if !op.TransA {
		da, err = G.ApplyOp(NewMatMul(op.d, false, !op.TransB), grad, b)
	} else {
		da, err = G.ApplyOp(NewMatMul(op.d, op.TransB, true), b, grad)
	}
	if err != nil {
		return nil, err
	}
	if !op.TransB {
		db, err = G.ApplyOp(NewMatMul(op.d, !op.TransA, false), a, grad)
	} else {
		db, err = G.ApplyOp(NewMatMul(op.d, true, op.TransA), grad, a)
	}
	if err != nil {
		return nil, err
	}
	return G.Nodes{da, db}, nil
}

// BiasAdd is y = x + b with b (n) added to every row of x (m×n).
type BiasAdd struct{ base }

// NewBiasAdd returns the op; apply it with gorgonia.ApplyOp(op, x, b).
func NewBiasAdd(d *gpu.Device) BiasAdd { return BiasAdd{base{d, "BiasAdd"}} }

// Arity is 2.
func (op BiasAdd) Arity() int { return 2 }

// Type is Matrix a → Vector a → Matrix a.
func (op BiasAdd) Type() hm.Type { return hm.NewFnType(matrix(), vector(), matrix()) }

// InferShape is x's shape.
func (op BiasAdd) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

// Do adds the bias on the device.
func (op BiasAdd) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	if len(sh) != 2 || vals[1].Shape().TotalSize() != sh[1] {
		return nil, fmt.Errorf("gorgoniaops: BiasAdd of %v and %v", sh, vals[1].Shape())
	}
	x, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	b, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	xb, bb := s.upload(x), s.upload(b)
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.AddBiasRows(xb, bb, sh[0], sh[1]); err != nil {
		return nil, err
	}
	return download(xb, sh[0], sh[1])
}

// DiffWRT: both inputs.
func (op BiasAdd) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dx is the upstream gradient, db its column sums.
func (op BiasAdd) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	db, err := G.ApplyOp(BiasGrad{base{op.d, "BiasGrad"}}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{grad, db}, nil
}

// BiasGrad is db = column sums of dy; BiasAdd's backward.
type BiasGrad struct{ base }

// Arity is 1.
func (op BiasGrad) Arity() int { return 1 }

// Type is Matrix a → Vector a.
func (op BiasGrad) Type() hm.Type { return hm.NewFnType(matrix(), vector()) }

// InferShape is (n).
func (op BiasGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return tensor.Shape{s[1]}, nil
}

// Do sums on the device.
func (op BiasGrad) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	dy, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	dyb, db := s.upload(dy), s.alloc(sh[1])
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.BiasRowsGrad(db, dyb, sh[0], sh[1]); err != nil {
		return nil, err
	}
	return download(db, sh[1])
}

// Act is an elementwise activation (ReLU, Sigmoid or Tanh) of a matrix.
type Act struct {
	base
	Fn gpu.Activation
}

// NewAct returns the op; apply it with gorgonia.ApplyOp(op, x).
func NewAct(d *gpu.Device, fn gpu.Activation) Act { return Act{base{d, "Act." + fn.String()}, fn} }

// Arity is 1.
func (op Act) Arity() int { return 1 }

// Type is Matrix a → Matrix a.
func (op Act) Type() hm.Type { return hm.NewFnType(matrix(), matrix()) }

// InferShape is x's shape.
func (op Act) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

// Do applies the activation on the device.
func (op Act) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	x, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	xb := s.upload(x)
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.Activate(op.Fn, xb, xb, len(x)); err != nil {
		return nil, err
	}
	return download(xb, sh...)
}

// DiffWRT: the input.
func (op Act) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dx = ActGrad(y, dy), from the op's own output y.
func (op Act) SymDiff(_ G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(ActGrad{base{op.d, "ActGrad." + op.Fn.String()}, op.Fn}, output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// ActGrad is dx = dy·act'(x) computed from the forward output y; Act's backward.
type ActGrad struct {
	base
	Fn gpu.Activation
}

// Arity is 2 (y, dy).
func (op ActGrad) Arity() int { return 2 }

// Type is Matrix a → Matrix a → Matrix a.
func (op ActGrad) Type() hm.Type { return hm.NewFnType(matrix(), matrix(), matrix()) }

// InferShape is y's shape.
func (op ActGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

// Do computes the gradient on the device.
func (op ActGrad) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	y, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	dy, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	yb, dyb := s.upload(y), s.upload(dy)
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.ActivateGrad(op.Fn, dyb, dyb, yb, len(y)); err != nil {
		return nil, err
	}
	return download(dyb, sh...)
}

// SoftmaxCrossEntropy is the mean over rows of the cross-entropy between softmax(logits)
// and targets (both m×n); it returns a scalar.
type SoftmaxCrossEntropy struct{ base }

// NewSoftmaxCrossEntropy returns the op; apply it with gorgonia.ApplyOp(op, logits, targets).
func NewSoftmaxCrossEntropy(d *gpu.Device) SoftmaxCrossEntropy {
	return SoftmaxCrossEntropy{base{d, "SoftmaxCrossEntropy"}}
}

// Arity is 2.
func (op SoftmaxCrossEntropy) Arity() int { return 2 }

// Type is Matrix a → Matrix a → a.
func (op SoftmaxCrossEntropy) Type() hm.Type {
	return hm.NewFnType(matrix(), matrix(), hm.TypeVariable('a'))
}

// InferShape is a scalar.
func (op SoftmaxCrossEntropy) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

// Do computes the loss on the device.
func (op SoftmaxCrossEntropy) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	if len(sh) != 2 || !sh.Eq(vals[1].Shape()) {
		return nil, fmt.Errorf("gorgoniaops: SoftmaxCrossEntropy of %v and %v", sh, vals[1].Shape())
	}
	z, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	t, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	zb, tb, pb, lb := s.upload(z), s.upload(t), s.alloc(len(z)), s.alloc(sh[0])
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.SoftmaxCrossEntropy(pb, lb, zb, tb, sh[0], sh[1]); err != nil {
		return nil, err
	}
	losses, err := lb.ReadAll()
	if err != nil {
		return nil, err
	}
	var sum float64
	for _, v := range losses {
		sum += float64(v)
	}
	return G.NewF32(float32(sum / float64(sh[0]))), nil
}

// DiffWRT: the logits, not the targets.
func (op SoftmaxCrossEntropy) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff: dlogits = SoftmaxCrossEntropyGrad(logits, targets, upstream scalar).
func (op SoftmaxCrossEntropy) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dz, err := G.ApplyOp(SoftmaxCrossEntropyGrad{base{op.d, "SoftmaxCrossEntropyGrad"}}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dz, nil}, nil
}

// SoftmaxCrossEntropyGrad is SoftmaxCrossEntropy's backward.
type SoftmaxCrossEntropyGrad struct{ base }

// Arity is 3 (logits, targets, upstream scalar).
func (op SoftmaxCrossEntropyGrad) Arity() int { return 3 }

// Type is Matrix a → Matrix a → a → Matrix a.
func (op SoftmaxCrossEntropyGrad) Type() hm.Type {
	return hm.NewFnType(matrix(), matrix(), hm.TypeVariable('a'), matrix())
}

// InferShape is the logits' shape.
func (op SoftmaxCrossEntropyGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

// Do recomputes the softmax and its gradient on the device.
func (op SoftmaxCrossEntropyGrad) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	z, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	t, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	g, err := floats(op.name, vals[2])
	if err != nil {
		return nil, err
	}
	s := &session{d: op.d}
	defer s.close()
	zb, tb, pb, lb := s.upload(z), s.upload(t), s.alloc(len(z)), s.alloc(sh[0])
	if s.err != nil {
		return nil, s.err
	}
	if err := op.d.SoftmaxCrossEntropy(pb, lb, zb, tb, sh[0], sh[1]); err != nil {
		return nil, err
	}
	if err := op.d.SoftmaxCrossEntropyGrad(zb, pb, tb, sh[0], sh[1], g[0]/float32(sh[0])); err != nil {
		return nil, err
	}
	return download(zb, sh...)
}

// Interface checks.
var (
	_ G.SDOp = MatMul{}
	_ G.SDOp = BiasAdd{}
	_ G.Op   = BiasGrad{}
	_ G.SDOp = Act{}
	_ G.Op   = ActGrad{}
	_ G.SDOp = SoftmaxCrossEntropy{}
	_ G.Op   = SoftmaxCrossEntropyGrad{}
)
