package gorgoniaops

import (
	"fmt"

	"github.com/chewxy/hm"
	"github.com/cohort-dev/cohort/internal/gpu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func tensor4() G.TensorType { return G.TensorType{Dims: 4, Of: hm.TypeVariable('a')} }

// Conv2D is y = w ⊛ x for x (N×C×H×W) and w (F×C×KH×KW), without bias, by im2col and
// cuBLAS (gpu.Device.Conv2D).
type Conv2D struct {
	base
	Stride, Pad int
}

// NewConv2D returns the op; apply it with gorgonia.ApplyOp(op, x, w).
func NewConv2D(d *gpu.Device, stride, pad int) Conv2D {
	return Conv2D{base{d, fmt.Sprintf("Conv2D(s%d,p%d)", stride, pad)}, stride, pad}
}

func (op Conv2D) shape(x, w tensor.Shape) (gpu.ConvShape, error) {
	if len(x) != 4 || len(w) != 4 || x[1] != w[1] {
		return gpu.ConvShape{}, fmt.Errorf("gorgoniaops: %s of %v and %v: want NCHW input and FCKK filters with equal C", op.name, x, w)
	}
	s := gpu.ConvShape{N: x[0], C: x[1], H: x[2], W: x[3], F: w[0], KH: w[2], KW: w[3], Stride: op.Stride, Pad: op.Pad}
	if op.Stride <= 0 || s.OutH() <= 0 || s.OutW() <= 0 {
		return s, fmt.Errorf("gorgoniaops: %s of %v and %v has no output", op.name, x, w)
	}
	return s, nil
}

// Arity is 2.
func (op Conv2D) Arity() int { return 2 }

// Type is Tensor4 a → Tensor4 a → Tensor4 a.
func (op Conv2D) Type() hm.Type { return hm.NewFnType(tensor4(), tensor4(), tensor4()) }

// InferShape is (N, F, OutH, OutW).
func (op Conv2D) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	w, err := shapeOf(ds[1])
	if err != nil {
		return nil, err
	}
	s, err := op.shape(x, w)
	return tensor.Shape{s.N, s.F, s.OutH(), s.OutW()}, err
}

// Do convolves on the device.
func (op Conv2D) Do(vals ...G.Value) (G.Value, error) {
	s, err := op.shape(vals[0].Shape(), vals[1].Shape())
	if err != nil {
		return nil, err
	}
	x, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	w, err := floats(op.name, vals[1])
	if err != nil {
		return nil, err
	}
	ss := &session{d: op.d}
	defer ss.close()
	xb, wb, yb, cols := ss.upload(x), ss.upload(w), ss.alloc(s.N*s.F*s.OutH()*s.OutW()), ss.alloc(s.ColsLen())
	if ss.err != nil {
		return nil, ss.err
	}
	if err := op.d.Conv2D(s, xb, wb, nil, yb, cols); err != nil {
		return nil, err
	}
	return download(yb, s.N, s.F, s.OutH(), s.OutW())
}

// DiffWRT: both inputs.
func (op Conv2D) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dx and dw from Conv2DGrad(x, w, dy).
func (op Conv2D) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(Conv2DGrad{Conv2D: op, WRT: 0}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(Conv2DGrad{Conv2D: op, WRT: 1}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw}, nil
}

// Conv2DGrad is Conv2D's backward with respect to x (WRT 0) or w (WRT 1).
type Conv2DGrad struct {
	Conv2D
	WRT int
}

// Arity is 3 (x, w, dy).
func (op Conv2DGrad) Arity() int { return 3 }

// Type is Tensor4 a → Tensor4 a → Tensor4 a → Tensor4 a.
func (op Conv2DGrad) Type() hm.Type { return hm.NewFnType(tensor4(), tensor4(), tensor4(), tensor4()) }

// InferShape is the shape of the input differentiated against.
func (op Conv2DGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[op.WRT])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

func (op Conv2DGrad) String() string { return fmt.Sprintf("%sGrad%d", op.name, op.WRT) }

// WriteHash tells the two gradients apart.
func (op Conv2DGrad) WriteHash(h hashWriter) { fmt.Fprintf(h, "gpu.%s", op.String()) }

// Hashcode hashes String.
func (op Conv2DGrad) Hashcode() uint32 { return hashString(op.String()) }

// Do computes one gradient on the device.
func (op Conv2DGrad) Do(vals ...G.Value) (G.Value, error) {
	s, err := op.shape(vals[0].Shape(), vals[1].Shape())
	if err != nil {
		return nil, err
	}
	var host [3][]float32
	for i := range host {
		if host[i], err = floats(op.String(), vals[i]); err != nil {
			return nil, err
		}
	}
	ss := &session{d: op.d}
	defer ss.close()
	xb, wb, dyb := ss.upload(host[0]), ss.upload(host[1]), ss.upload(host[2])
	cols, dcols := ss.alloc(s.ColsLen()), ss.alloc(s.ColsLen())
	var out *gpu.Buffer
	if op.WRT == 0 {
		out = ss.alloc(len(host[0]))
	} else {
		out = ss.alloc(len(host[1]))
	}
	if ss.err != nil {
		return nil, ss.err
	}
	if op.WRT == 0 {
		err = op.d.Conv2DGrad(s, xb, wb, dyb, out, nil, nil, cols, dcols)
	} else {
		err = op.d.Conv2DGrad(s, xb, wb, dyb, nil, out, nil, cols, dcols)
	}
	if err != nil {
		return nil, err
	}
	return download(out, vals[op.WRT].Shape()...)
}

// MaxPool2D is max pooling of x (N×C×H×W) with a K×K window, stride Stride, no padding.
type MaxPool2D struct {
	base
	K, Stride int
}

// NewMaxPool2D returns the op; apply it with gorgonia.ApplyOp(op, x).
func NewMaxPool2D(d *gpu.Device, k, stride int) MaxPool2D {
	return MaxPool2D{base{d, fmt.Sprintf("MaxPool2D(k%d,s%d)", k, stride)}, k, stride}
}

func (op MaxPool2D) shape(x tensor.Shape) (gpu.PoolShape, error) {
	if len(x) != 4 || op.K <= 0 || op.Stride <= 0 || x[2] < op.K || x[3] < op.K {
		return gpu.PoolShape{}, fmt.Errorf("gorgoniaops: %s of %v", op.name, x)
	}
	return gpu.PoolShape{Planes: x[0] * x[1], H: x[2], W: x[3], K: op.K, Stride: op.Stride}, nil
}

// Arity is 1.
func (op MaxPool2D) Arity() int { return 1 }

// Type is Tensor4 a → Tensor4 a.
func (op MaxPool2D) Type() hm.Type { return hm.NewFnType(tensor4(), tensor4()) }

// InferShape is (N, C, OutH, OutW).
func (op MaxPool2D) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	s, err := op.shape(x)
	return tensor.Shape{x[0], x[1], s.OutH(), s.OutW()}, err
}

// Do pools on the device.
func (op MaxPool2D) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	s, err := op.shape(sh)
	if err != nil {
		return nil, err
	}
	x, err := floats(op.name, vals[0])
	if err != nil {
		return nil, err
	}
	ss := &session{d: op.d}
	defer ss.close()
	xb, yb, idx := ss.upload(x), ss.alloc(s.OutLen()), ss.alloc(s.OutLen())
	if ss.err != nil {
		return nil, ss.err
	}
	if err := op.d.MaxPool(s, xb, yb, idx); err != nil {
		return nil, err
	}
	return download(yb, sh[0], sh[1], s.OutH(), s.OutW())
}

// DiffWRT: the input.
func (op MaxPool2D) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dx = MaxPool2DGrad(x, dy).
func (op MaxPool2D) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(MaxPool2DGrad{op}, in[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// MaxPool2DGrad is MaxPool2D's backward; it recomputes the argmax on the device.
type MaxPool2DGrad struct{ MaxPool2D }

// Arity is 2 (x, dy).
func (op MaxPool2DGrad) Arity() int { return 2 }

// Type is Tensor4 a → Tensor4 a → Tensor4 a.
func (op MaxPool2DGrad) Type() hm.Type { return hm.NewFnType(tensor4(), tensor4(), tensor4()) }

// InferShape is x's shape.
func (op MaxPool2DGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

func (op MaxPool2DGrad) String() string { return op.name + "Grad" }

// WriteHash tells the backward from the forward.
func (op MaxPool2DGrad) WriteHash(h hashWriter) { fmt.Fprintf(h, "gpu.%s", op.String()) }

// Hashcode hashes String.
func (op MaxPool2DGrad) Hashcode() uint32 { return hashString(op.String()) }

// Do routes dy back to each window's maximum.
func (op MaxPool2DGrad) Do(vals ...G.Value) (G.Value, error) {
	sh := vals[0].Shape()
	s, err := op.shape(sh)
	if err != nil {
		return nil, err
	}
	x, err := floats(op.String(), vals[0])
	if err != nil {
		return nil, err
	}
	dy, err := floats(op.String(), vals[1])
	if err != nil {
		return nil, err
	}
	ss := &session{d: op.d}
	defer ss.close()
	xb, yb, idx, dyb, dx := ss.upload(x), ss.alloc(s.OutLen()), ss.alloc(s.OutLen()), ss.upload(dy), ss.alloc(len(x))
	if ss.err != nil {
		return nil, ss.err
	}
	if err := op.d.MaxPool(s, xb, yb, idx); err != nil {
		return nil, err
	}
	if err := op.d.MaxPoolGrad(s, dx, dyb, idx); err != nil {
		return nil, err
	}
	return download(dx, sh...)
}

var (
	_ G.SDOp = Conv2D{}
	_ G.Op   = Conv2DGrad{}
	_ G.SDOp = MaxPool2D{}
	_ G.Op   = MaxPool2DGrad{}
)
