package model

import (
	"fmt"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// stepColumnsOp cuts one time step out of the LSTM's input rows: columns
// [lo, lo+width) of x (rows, steps·width), as a (rows, width) matrix. gorgonia's Slice
// drops a dimension one wide, so a univariate series (features: [y]) or a batch of one
// row would give it a vector or a scalar; this op keeps both dimensions. The input is
// data, never differentiated.
type stepColumnsOp[T float] struct {
	denseBase[T]
	lo, width int
}

func stepColumns[T float](name string, x *G.Node, lo, width int) (*G.Node, error) {
	s := x.Shape()
	if len(s) != 2 || lo < 0 || width < 1 || lo+width > s[1] {
		return nil, fmt.Errorf("%s: columns %d..%d of input of shape %v", name, lo, lo+width, s)
	}
	g := denseGeom{rows: s[0], out: width, wRows: s[1]}
	return G.ApplyOp(&stepColumnsOp[T]{denseBase: denseBase[T]{g: g, name: name}, lo: lo, width: width}, x)
}

func (o *stepColumnsOp[T]) Arity() int { return 1 }

func (o *stepColumnsOp[T]) Type() hm.Type { return hm.NewFnType(denseType(2), denseType(2)) }

func (o *stepColumnsOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.rows, o.width}, nil
}

func (o *stepColumnsOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, 1, inputs)
	if err != nil {
		return nil, err
	}
	x, cols := in[0], o.g.wRows
	if len(x) != o.g.rows*cols {
		return nil, fmt.Errorf("%s: input of %d values, want %d×%d", o.name, len(x), o.g.rows, cols)
	}
	t, y := o.output(tensor.Shape{o.g.rows, o.width})
	for r := range o.g.rows {
		copy(y[r*o.width:(r+1)*o.width], x[r*cols+o.lo:r*cols+o.lo+o.width])
	}
	return t, nil
}

func (o *stepColumnsOp[T]) String() string {
	return fmt.Sprintf("%s<cols %d..%d>", o.name, o.lo, o.lo+o.width)
}

// DiffWRT: the input is data.
func (o *stepColumnsOp[T]) DiffWRT(n int) []bool { return make([]bool, n) }

func (o *stepColumnsOp[T]) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, fmt.Errorf("%s: the model's input has no gradient", o.name)
}
