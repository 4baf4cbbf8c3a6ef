package gorgoniaops

import (
	"fmt"

	"github.com/chewxy/hm"
	"github.com/cohort-dev/cohort/internal/gpu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LSTMGates is one LSTM step's fused gate math (gpu.Device.LSTMCell): from gates
// (B×4H pre-activations [i f g o], i.e. x·Wx + h·Wh + b) and cprev (B×H) to one B×2H
// matrix whose row r is [h_r | c_r]; slice it with gorgonia.Slice(out, nil, S(0, H))
// and S(H, 2H).
type LSTMGates struct{ base }

// NewLSTMGates returns the op; apply it with gorgonia.ApplyOp(op, gates, cprev).
func NewLSTMGates(d *gpu.Device) LSTMGates { return LSTMGates{base{d, "LSTMGates"}} }

func (op LSTMGates) dims(gates, cprev tensor.Shape) (b, h int, err error) {
	if len(gates) != 2 || len(cprev) != 2 || gates[0] != cprev[0] || gates[1] != 4*cprev[1] {
		return 0, 0, fmt.Errorf("gorgoniaops: %s of %v and %v: want B×4H gates and B×H state", op.name, gates, cprev)
	}
	return cprev[0], cprev[1], nil
}

// Arity is 2.
func (op LSTMGates) Arity() int { return 2 }

// Type is Matrix a → Matrix a → Matrix a.
func (op LSTMGates) Type() hm.Type { return hm.NewFnType(matrix(), matrix(), matrix()) }

// InferShape is (B, 2H).
func (op LSTMGates) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	g, err := shapeOf(ds[0])
	if err != nil {
		return nil, err
	}
	c, err := shapeOf(ds[1])
	if err != nil {
		return nil, err
	}
	b, h, err := op.dims(g, c)
	return tensor.Shape{b, 2 * h}, err
}

// forward runs the cell on the device and returns its buffers.
func (op LSTMGates) forward(ss *session, vals []G.Value) (b, h int, gates, cprev, hb, cb, acts *gpu.Buffer, err error) {
	if b, h, err = op.dims(vals[0].Shape(), vals[1].Shape()); err != nil {
		return
	}
	var gh, ch []float32
	if gh, err = floats(op.name, vals[0]); err != nil {
		return
	}
	if ch, err = floats(op.name, vals[1]); err != nil {
		return
	}
	gates, cprev = ss.upload(gh), ss.upload(ch)
	hb, cb, acts = ss.alloc(b*h), ss.alloc(b*h), ss.alloc(4*b*h)
	if err = ss.err; err != nil {
		return
	}
	err = op.d.LSTMCell(b, h, gates, cprev, hb, cb, acts)
	return
}

// Do runs the cell on the device.
func (op LSTMGates) Do(vals ...G.Value) (G.Value, error) {
	ss := &session{d: op.d}
	defer ss.close()
	b, h, _, _, hb, cb, _, err := op.forward(ss, vals)
	if err != nil {
		return nil, err
	}
	hv, err := hb.ReadAll()
	if err != nil {
		return nil, err
	}
	cv, err := cb.ReadAll()
	if err != nil {
		return nil, err
	}
	out := make([]float32, 2*b*h)
	for r := range b {
		copy(out[r*2*h:], hv[r*h:(r+1)*h])
		copy(out[r*2*h+h:], cv[r*h:(r+1)*h])
	}
	return tensor.New(tensor.WithShape(b, 2*h), tensor.WithBacking(out)), nil
}

// DiffWRT: both inputs.
func (op LSTMGates) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dgates and dcprev from LSTMGatesGrad(gates, cprev, dout).
func (op LSTMGates) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dg, err := G.ApplyOp(LSTMGatesGrad{LSTMGates: op, WRT: 0}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	dc, err := G.ApplyOp(LSTMGatesGrad{LSTMGates: op, WRT: 1}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dg, dc}, nil
}

// LSTMGatesGrad is LSTMGates' backward with respect to gates (WRT 0) or cprev (WRT 1);
// it recomputes the forward on the device.
type LSTMGatesGrad struct {
	LSTMGates
	WRT int
}

// Arity is 3 (gates, cprev, dout).
func (op LSTMGatesGrad) Arity() int { return 3 }

// Type is Matrix a → Matrix a → Matrix a → Matrix a.
func (op LSTMGatesGrad) Type() hm.Type { return hm.NewFnType(matrix(), matrix(), matrix(), matrix()) }

// InferShape is the shape of the input differentiated against.
func (op LSTMGatesGrad) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeOf(ds[op.WRT])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

func (op LSTMGatesGrad) String() string { return fmt.Sprintf("LSTMGatesGrad%d", op.WRT) }

// WriteHash tells the two gradients apart.
func (op LSTMGatesGrad) WriteHash(h hashWriter) { fmt.Fprintf(h, "gpu.%s", op.String()) }

// Hashcode hashes String.
func (op LSTMGatesGrad) Hashcode() uint32 { return hashString(op.String()) }

// Do computes one gradient on the device.
func (op LSTMGatesGrad) Do(vals ...G.Value) (G.Value, error) {
	ss := &session{d: op.d}
	defer ss.close()
	b, h, _, cprev, _, cb, acts, err := op.forward(ss, vals[:2])
	if err != nil {
		return nil, err
	}
	dout, err := floats(op.String(), vals[2])
	if err != nil {
		return nil, err
	}
	if len(dout) != 2*b*h {
		return nil, fmt.Errorf("gorgoniaops: %s: upstream gradient of %d values, want %d", op, len(dout), 2*b*h)
	}
	dh, dc := make([]float32, b*h), make([]float32, b*h)
	for r := range b {
		copy(dh[r*h:(r+1)*h], dout[r*2*h:])
		copy(dc[r*h:(r+1)*h], dout[r*2*h+h:])
	}
	dhb, dcb, dg, dcp := ss.upload(dh), ss.upload(dc), ss.alloc(4*b*h), ss.alloc(b*h)
	if ss.err != nil {
		return nil, ss.err
	}
	if err := op.d.LSTMCellGrad(b, h, dhb, dcb, acts, cb, cprev, dg, dcp); err != nil {
		return nil, err
	}
	if op.WRT == 0 {
		return download(dg, b, 4*h)
	}
	return download(dcp, b, h)
}

var (
	_ G.SDOp = LSTMGates{}
	_ G.Op   = LSTMGatesGrad{}
)
