package model

import (
	"fmt"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file holds an LSTM cell as gorgonia ops over the gate pre-activations z
// (rows, 4*hidden; gates in order i, f, g, o, as the fused product of lstm.go yields
// them): one op for the cell state, one for the hidden state, and four gradient ops.
// Each replaces about ten composed ops (slices, sigmoids, products, sums) and their
// gradients, and reuses its buffers across runs.

// lstmCellKind selects what an lstmCellOp computes.
type lstmCellKind int

const (
	// cellState: c = σ(z_f) ⊙ c_prev + σ(z_i) ⊙ tanh(z_g); inputs z [, c_prev].
	cellState lstmCellKind = iota
	// cellHidden: h = σ(z_o) ⊙ tanh(c); inputs z, c.
	cellHidden
	// cellStateDZ: the gradient of z (blocks i, f, g; o is 0) from dc; inputs z
	// [, c_prev], dc.
	cellStateDZ
	// cellStateDPrev: dc_prev = dc ⊙ σ(z_f); inputs z, dc.
	cellStateDPrev
	// cellHiddenDZ: the gradient of z (block o; the rest 0) from dh; inputs z, c, dh.
	cellHiddenDZ
	// cellHiddenDC: dc = dh ⊙ σ(z_o) ⊙ (1 - tanh²(c)); inputs z, c, dh.
	cellHiddenDC
)

var cellKindNames = [...]string{"lstm_c", "lstm_h", "lstm_c.dz", "lstm_c.dprev", "lstm_h.dz", "lstm_h.dc"}

// lstmCellOp is one of the cell's ops; g.rows and g.out give (rows, hidden).
type lstmCellOp[T float] struct {
	denseBase[T]
	kind  lstmCellKind
	first bool      // the first step: no previous cell state
	zb    []float64 // one row's activations in float64 (5·hidden), reused
	zb32  []float32 // the same in float32 for a prediction graph's (predict32)
	// keep is set on a forward op when its gradient ops are built (SymDiff): it then
	// keeps every row's activations in acts (σ(z_i), σ(z_f), tanh(z_g) for the cell
	// state; σ(z_o), tanh(c) for the hidden state), which its gradient ops (fwd) read
	// instead of computing them again. A forward-only graph (Predict) keeps nothing.
	keep bool
	acts []float64
	fwd  *lstmCellOp[T]
}

func (o *lstmCellOp[T]) Arity() int {
	switch o.kind {
	case cellState:
		if o.first {
			return 1
		}
		return 2
	case cellStateDZ:
		if o.first {
			return 2
		}
		return 3
	case cellHidden, cellStateDPrev:
		return 2
	}
	return 3
}

func (o *lstmCellOp[T]) Type() hm.Type {
	ts := make([]hm.Type, o.Arity()+1)
	for i := range ts {
		ts[i] = denseType(2)
	}
	return hm.NewFnType(ts...)
}

func (o *lstmCellOp[T]) outShape() tensor.Shape {
	if o.kind == cellStateDZ || o.kind == cellHiddenDZ {
		return tensor.Shape{o.g.rows, 4 * o.g.out}
	}
	return tensor.Shape{o.g.rows, o.g.out}
}

func (o *lstmCellOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) { return o.outShape(), nil }

func (o *lstmCellOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, o.Arity(), inputs)
	if err != nil {
		return nil, err
	}
	rows, h := o.g.rows, o.g.out
	t, out := o.output(o.outShape())
	if o32, ok := any(out).([]float32); ok && !o.keep && (o.kind == cellState || o.kind == cellHidden) {
		o.predict32(o32, any(in).([][]float32))
		return t, nil
	}
	// Per row, σ and tanh of the gates needed, in float64: sigmoidFrom and tanhFrom
	// (fastmath.go), the fast forms in a float32 graph, math's in a float64 one.
	// A forward op that keeps them writes them into acts; a gradient op reads its
	// forward op's.
	fast := isFloat32[T]()
	if len(o.zb) != 5*h {
		o.zb = make([]float64, 5*h)
	}
	width := 3 * h // the cell state's activations per row
	if o.kind == cellHidden || o.kind == cellHiddenDZ || o.kind == cellHiddenDC {
		width = 2 * h
	}
	if o.keep && len(o.acts) != rows*width {
		o.acts = make([]float64, rows*width)
	}
	var kept []float64
	if f := o.fwd; f != nil {
		if kept = f.acts; len(kept) != rows*width {
			return nil, fmt.Errorf("%s: the forward cell op has not run", o.name)
		}
	}
	z := in[0]
	for r := range rows {
		zr := z[r*4*h : (r+1)*4*h]
		var a []float64 // this row's activations
		switch {
		case kept != nil:
			a = kept[r*width : (r+1)*width]
		case o.keep:
			a = o.acts[r*width : (r+1)*width]
		default:
			a = o.zb[:width]
		}
		if kept == nil {
			if width == 3*h {
				sigmoidFrom(a[:2*h], zr[:2*h], fast)
				tanhFrom(a[2*h:], zr[2*h:3*h], fast)
			} else {
				sigmoidFrom(a[:h], zr[3*h:], fast)
				tanhFrom(a[h:], in[1][r*h:(r+1)*h], fast)
			}
		}
		switch o.kind {
		case cellState:
			si, sf, tg := a[:h], a[h:2*h], a[2*h:]
			c := out[r*h : (r+1)*h]
			if o.first {
				for j := range c {
					c[j] = T(si[j] * tg[j])
				}
				break
			}
			prev := in[1][r*h : (r+1)*h]
			for j := range c {
				c[j] = T(si[j]*tg[j] + sf[j]*float64(prev[j]))
			}
		case cellHidden:
			so, tc := a[:h], a[h:]
			hr := out[r*h : (r+1)*h]
			for j := range hr {
				hr[j] = T(so[j] * tc[j])
			}
		case cellStateDZ:
			si, sf, tg := a[:h], a[h:2*h], a[2*h:]
			dc := in[len(in)-1][r*h : (r+1)*h]
			d := out[r*4*h : (r+1)*4*h]
			for j, g := range dc {
				i, gg := si[j], tg[j]
				d[j] = T(float64(g) * gg * i * (1 - i))
				d[2*h+j] = T(float64(g) * i * (1 - gg*gg))
				d[3*h+j] = 0
				if o.first {
					d[h+j] = 0
				} else {
					f := sf[j]
					d[h+j] = T(float64(g) * float64(in[1][r*h+j]) * f * (1 - f))
				}
			}
		case cellStateDPrev:
			sf := a[h : 2*h]
			dc, d := in[1][r*h:(r+1)*h], out[r*h:(r+1)*h]
			for j, g := range dc {
				d[j] = T(float64(g) * sf[j])
			}
		case cellHiddenDZ, cellHiddenDC:
			so, tc := a[:h], a[h:]
			dh := in[2][r*h : (r+1)*h]
			if o.kind == cellHiddenDC {
				d := out[r*h : (r+1)*h]
				for j, g := range dh {
					d[j] = T(float64(g) * so[j] * (1 - tc[j]*tc[j]))
				}
				break
			}
			d := out[r*4*h : (r+1)*4*h]
			clear(d[:3*h])
			for j, g := range dh {
				ov := so[j]
				d[3*h+j] = T(float64(g) * tc[j] * ov * (1 - ov))
			}
		}
	}
	return t, nil
}

// predict32 is Do for a forward op of a float32 graph that keeps nothing for a gradient
// (Predict): the activations in float32 (fastmath32.go, a few ulp), each row's gates
// and its state update in one pass.
func (o *lstmCellOp[T]) predict32(out []float32, in [][]float32) {
	rows, h := o.g.rows, o.g.out
	if len(o.zb32) != 3*h {
		o.zb32 = make([]float32, 3*h)
	}
	z := in[0]
	for r := range rows {
		zr := z[r*4*h : (r+1)*4*h]
		dst := out[r*h : (r+1)*h]
		if o.kind == cellHidden {
			a := o.zb32[:2*h]
			sigmoid32Into(a[:h], zr[3*h:])
			tanh32Into(a[h:], in[1][r*h:(r+1)*h])
			so, tc := a[:h], a[h:2*h]
			for j := range dst {
				dst[j] = so[j] * tc[j]
			}
			continue
		}
		a := o.zb32
		sigmoid32Into(a[:2*h], zr[:2*h])
		tanh32Into(a[2*h:], zr[2*h:3*h])
		si, sf, tg := a[:h], a[h:2*h], a[2*h:3*h]
		if o.first {
			for j := range dst {
				dst[j] = si[j] * tg[j]
			}
			continue
		}
		prev := in[1][r*h : (r+1)*h]
		for j := range dst {
			dst[j] = float32(si[j]*tg[j]) + float32(sf[j]*prev[j])
		}
	}
}

func (o *lstmCellOp[T]) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = o.kind == cellState || o.kind == cellHidden
	}
	return d
}

func (o *lstmCellOp[T]) SymDiff(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != o.Arity() {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.name, len(inputs), o.Arity())
	}
	o.keep = true
	op := func(kind lstmCellKind, args ...*G.Node) (*G.Node, error) {
		return G.ApplyOp(&lstmCellOp[T]{denseBase: denseBase[T]{par: buildPar, g: o.g, name: o.name + "." + cellKindNames[kind]}, kind: kind, first: o.first, fwd: o}, args...)
	}
	switch o.kind {
	case cellState:
		dz, err := op(cellStateDZ, append(append(G.Nodes(nil), inputs...), grad)...)
		if err != nil || o.first {
			return G.Nodes{dz}, err
		}
		dprev, err := op(cellStateDPrev, inputs[0], grad)
		return G.Nodes{dz, dprev}, err
	case cellHidden:
		dz, err := op(cellHiddenDZ, inputs[0], inputs[1], grad)
		if err != nil {
			return nil, err
		}
		dc, err := op(cellHiddenDC, inputs[0], inputs[1], grad)
		return G.Nodes{dz, dc}, err
	}
	return nil, fmt.Errorf("%s: gradient ops have no gradient", o.name)
}

// lstmCellNodes applies one LSTM step to the gate pre-activations z (rows, 4*hidden)
// and the previous cell state prev (nil at the first step), returning the new cell and
// hidden states.
func lstmCellNodes[T float](name string, z, prev *G.Node, hidden int) (c, h *G.Node, err error) {
	s := z.Shape()
	if len(s) != 2 || s[1] != 4*hidden {
		return nil, nil, fmt.Errorf("%s: gates of shape %v, want (rows, %d)", name, s, 4*hidden)
	}
	g := denseGeom{rows: s[0], out: hidden}
	args := G.Nodes{z}
	if prev != nil {
		args = append(args, prev)
	}
	cop := &lstmCellOp[T]{denseBase: denseBase[T]{par: buildPar, g: g, name: name + ".c"}, kind: cellState, first: prev == nil}
	if c, err = G.ApplyOp(cop, args...); err != nil {
		return nil, nil, err
	}
	hop := &lstmCellOp[T]{denseBase: denseBase[T]{par: buildPar, g: g, name: name + ".h"}, kind: cellHidden}
	if h, err = G.ApplyOp(hop, z, c); err != nil {
		return nil, nil, err
	}
	return c, h, nil
}
