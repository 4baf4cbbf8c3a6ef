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

// This file holds a model's loss as one gorgonia op over the logits z (rows, K) and the
// bound label tensors, with one gradient op, in place of a dozen composed ops:
//
//	multiclass  -Σ_r Σ_j y_rj · log softmax(z_r)_j   y: one-hot rows scaled by the row weight
//	binary      Σ_r w_r · (softplus(z_r) - y_r z_r)  (binary cross-entropy on the logit)
//	regression  Σ_r w_r · (z_r - y_r)²
//
// Sums run in float64 whatever the graph's dtype; log-softmax shifts each row by its
// maximum. Labels and weights are not differentiable.

// lossGeom is a loss's task and logits shape.
type lossGeom struct {
	task    string
	rows, k int
}

// lossBase holds what the two loss ops share.
type lossBase[T float] struct {
	g    lossGeom
	name string
}

func (o *lossBase[T]) ReturnsPtr() bool     { return false }
func (o *lossBase[T]) CallsExtern() bool    { return false }
func (o *lossBase[T]) OverwritesInput() int { return -1 }
func (o *lossBase[T]) String() string {
	return fmt.Sprintf("%s<%s %dx%d>", o.name, o.g.task, o.g.rows, o.g.k)
}

// WriteHash includes the op's address, as the gradient op owns its buffer.
func (o *lossBase[T]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s%p", o.name, o) }
func (o *lossBase[T]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

// labels is the number of label inputs: y for multiclass, y and the row weights w
// otherwise.
func (o *lossBase[T]) labels() int {
	if o.g.task == TaskMulticlass {
		return 1
	}
	return 2
}

// lossOp computes the scalar loss from z and the labels.
type lossOp[T float] struct{ lossBase[T] }

func (o *lossOp[T]) Arity() int { return 1 + o.labels() }
func (o *lossOp[T]) Type() hm.Type {
	ts := []hm.Type{denseType(2), denseType(2)}
	if o.labels() == 2 {
		ts = append(ts, denseType(2))
	}
	return hm.NewFnType(append(ts, hm.TypeVariable('a'))...)
}
func (o *lossOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }

func (o *lossOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := denseInputs[T](o.name, o.Arity(), inputs)
	if err != nil {
		return nil, err
	}
	z, y := in[0], in[1]
	g := &o.g
	var loss float64
	switch g.task {
	case TaskMulticlass:
		for r := range g.rows {
			zr, yr := z[r*g.k:(r+1)*g.k], y[r*g.k:(r+1)*g.k]
			lse := logSumExp(zr)
			for j, v := range yr {
				if v != 0 {
					loss -= float64(v) * (float64(zr[j]) - lse)
				}
			}
		}
	case TaskBinary:
		w := in[2]
		for r, v := range z[:g.rows] {
			zv := float64(v)
			loss += float64(w[r]) * (softplus(zv) - float64(y[r])*zv)
		}
	default:
		w := in[2]
		for r, v := range z[:g.rows] {
			d := float64(v) - float64(y[r])
			loss += float64(w[r]) * d * d
		}
	}
	var out G.Value
	if dtypeOf[T]() == tensor.Float64 {
		out = G.NewF64(loss)
	} else {
		out = G.NewF32(float32(loss))
	}
	return out, nil
}

func (o *lossOp[T]) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[0] = true
	return d
}

func (o *lossOp[T]) SymDiff(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != o.Arity() {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.name, len(inputs), o.Arity())
	}
	args := append(append(G.Nodes(nil), inputs...), grad)
	dz, err := G.ApplyOp(&lossGradOp[T]{lossBase: lossBase[T]{g: o.g, name: o.name + ".dz"}}, args...)
	if err != nil {
		return nil, err
	}
	grads := make(G.Nodes, len(inputs))
	grads[0] = dz
	return grads, nil
}

// lossGradOp computes dz (rows, K) from z, the labels and the loss's upstream gradient.
type lossGradOp[T float] struct {
	lossBase[T]
	buf []T // reused output backing
}

func (o *lossGradOp[T]) Arity() int { return 2 + o.labels() }
func (o *lossGradOp[T]) Type() hm.Type {
	ts := []hm.Type{denseType(2), denseType(2)}
	if o.labels() == 2 {
		ts = append(ts, denseType(2))
	}
	return hm.NewFnType(append(ts, hm.TypeVariable('a'), denseType(2))...)
}
func (o *lossGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.rows, o.g.k}, nil
}

func (o *lossGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	n := o.Arity()
	if len(inputs) != n {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.name, len(inputs), n)
	}
	scale, ok := inputs[n-1].Data().(T)
	if !ok {
		return nil, fmt.Errorf("%s: upstream gradient holds %T", o.name, inputs[n-1].Data())
	}
	in, err := denseInputs[T](o.name, n-1, inputs[:n-1])
	if err != nil {
		return nil, err
	}
	z, y := in[0], in[1]
	g := &o.g
	if len(o.buf) != g.rows*g.k {
		o.buf = make([]T, g.rows*g.k)
	}
	dz := o.buf
	s := float64(scale)
	switch g.task {
	case TaskMulticlass:
		// d/dz_j of -Σ_i y_i log p_i is (Σ_i y_i) p_j - y_j.
		for r := range g.rows {
			zr, yr, dr := z[r*g.k:(r+1)*g.k], y[r*g.k:(r+1)*g.k], dz[r*g.k:(r+1)*g.k]
			var wsum float64
			for _, v := range yr {
				wsum += float64(v)
			}
			if wsum == 0 {
				clear(dr)
				continue
			}
			lse := logSumExp(zr)
			for j, v := range zr {
				dr[j] = T(s * (wsum*math.Exp(float64(v)-lse) - float64(yr[j])))
			}
		}
	case TaskBinary:
		w := in[2]
		for r, v := range z[:g.rows] {
			dz[r] = T(s * float64(w[r]) * (sigmoid(float64(v)) - float64(y[r])))
		}
	default:
		w := in[2]
		for r, v := range z[:g.rows] {
			dz[r] = T(s * 2 * float64(w[r]) * (float64(v) - float64(y[r])))
		}
	}
	return tensor.New(tensor.WithShape(g.rows, g.k), tensor.WithBacking(dz)), nil
}

// logSumExp is log Σ exp(z), shifted by the maximum.
func logSumExp[T float](z []T) float64 {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s)
}

// softplus is log(1 + e^x) without overflow.
func softplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

// lossNode builds the fused loss over logits and the label nodes (y for multiclass;
// y and the row weights otherwise).
func lossNode[T float](task string, logits *G.Node, labels ...*G.Node) (*G.Node, error) {
	s := logits.Shape()
	if len(s) != 2 {
		return nil, fmt.Errorf("loss: logits of shape %v, want (rows, outputs)", s)
	}
	op := &lossOp[T]{lossBase[T]{g: lossGeom{task: task, rows: s[0], k: s[1]}, name: "loss"}}
	if len(labels) != op.labels() {
		return nil, fmt.Errorf("loss: %d label inputs for task %s, want %d", len(labels), task, op.labels())
	}
	return G.ApplyOp(op, append(G.Nodes{logits}, labels...)...)
}
