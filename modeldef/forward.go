package modeldef

import (
	"fmt"
	"math"
)

// Predict runs the network in pure Go (float64 arithmetic) on n rows of x (n*Inputs
// values, row-major: NCHW images for a CNN, time-major windows for an LSTM) and writes
// Outputs values per row into out, exactly what worker/model's Predict computes: the
// positive-class probability (binary), the class probabilities (multiclass), or the
// standardized prediction (regression; see Unscale). w must come from CheckWeights.
func (a *Architecture) Predict(w Weights, x []float32, n int, out []float32) error {
	switch {
	case n < 0:
		return fmt.Errorf("predict: row count %d is negative", n)
	case len(x) < n*a.Inputs:
		return fmt.Errorf("predict: x has %d values, %d rows of %d inputs need %d", len(x), n, a.Inputs, n*a.Inputs)
	case len(out) < n*a.Outputs:
		return fmt.Errorf("predict: out has %d values, %d rows need %d", len(out), n, n*a.Outputs)
	}
	var gs []convGeom
	if a.Kind == KindCNN {
		var err error
		if gs, err = a.geometry(); err != nil {
			return fmt.Errorf("architecture: %w", err)
		}
	}
	row := make([]float64, a.Inputs)
	for r := range n {
		for i, v := range x[r*a.Inputs : (r+1)*a.Inputs] {
			row[i] = float64(v)
		}
		z := a.outputs(a.logits(gs, w, row, nil))
		for i, v := range z {
			out[r*a.Outputs+i] = float32(v)
		}
	}
	return nil
}

// Unscale maps a standardized regression prediction to target units.
func (a *Architecture) Unscale(z float64) float64 {
	std := a.LabelStd
	if std == 0 {
		std = 1
	}
	return z*std + a.LabelMean
}

// logits runs the network on one row and returns the output layer's values before
// the task's sigmoid or softmax. With tr non-nil it records what backward needs; this is
// the only forward pass, shared by Predict and OutputGradient.
func (a *Architecture) logits(gs []convGeom, w Weights, row []float64, tr *trace) []float64 {
	var h []float64
	switch a.Kind {
	case KindMLP:
		h = a.denseStack(row, w, a.Hidden, a.Activation, tr)
	case KindCNN:
		h = a.convForward(gs, w, row, tr)
		h = a.denseStack(h, w, a.Dense, a.Activation, tr)
	case KindLSTM:
		h = a.lstmForward(w, row, tr)
		h = a.denseStack(h, w, a.Dense, ActReLU, tr)
	}
	return dense(h, w["out.weight"], w["out.bias"], a.Outputs)
}

// outputs turns logits z into the task's outputs in place and returns z: the sigmoid
// (binary), the softmax (multiclass) or z itself (regression).
func (a *Architecture) outputs(z []float64) []float64 {
	switch a.Task {
	case TaskBinary:
		z[0] = sigmoid(z[0])
	case TaskMulticlass:
		softmax(z)
	}
	return z
}

// denseStack applies the hidden dense layers dense<i> of the given widths with the
// activation, recording each layer's activated output in tr.
func (a *Architecture) denseStack(h []float64, w Weights, widths []int, act string, tr *trace) []float64 {
	for i, width := range widths {
		h = dense(h, w[fmt.Sprintf("dense%d.weight", i)], w[fmt.Sprintf("dense%d.bias", i)], width)
		activate(h, act)
		if tr != nil {
			tr.dense = append(tr.dense, h)
		}
	}
	return h
}

// dense returns h·W + b for W [len(h), width] row-major.
func dense(h []float64, wt, b []float32, width int) []float64 {
	z := make([]float64, width)
	for j := range z {
		z[j] = float64(b[j])
	}
	for i, v := range h {
		if v == 0 {
			continue
		}
		wr := wt[i*width : (i+1)*width]
		for j := range z {
			z[j] += v * float64(wr[j])
		}
	}
	return z
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

func activate(h []float64, act string) {
	for i, v := range h {
		switch act {
		case ActReLU:
			h[i] = math.Max(v, 0)
		case ActTanh:
			h[i] = math.Tanh(v)
		case ActSigmoid:
			h[i] = sigmoid(v)
		case ActLeakyReLU:
			if v < 0 {
				h[i] = LeakyReLUSlope * v
			}
		}
	}
}

func softmax(z []float64) {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = math.Max(mx, v)
	}
	var s float64
	for i, v := range z {
		z[i] = math.Exp(v - mx)
		s += z[i]
	}
	for i := range z {
		z[i] /= s
	}
}

// convForward runs the convolutions (each with bias, activation and max-pool) on one
// CHW image and returns the last feature map flattened channel-major.
func (a *Architecture) convForward(gs []convGeom, w Weights, img []float64, tr *trace) []float64 {
	h := img
	for i, g := range gs {
		wt, b := w[fmt.Sprintf("conv%d.weight", i)], w[fmt.Sprintf("conv%d.bias", i)]
		out := make([]float64, g.outC*g.outH*g.outW)
		// Each output's sum runs from the bias over ic, ky, kx in that order (the order
		// the results were first defined by); the loops over the output positions are
		// innermost so that they stream through rows.
		for oc := range g.outC {
			o := out[oc*g.outH*g.outW : (oc+1)*g.outH*g.outW]
			bias := float64(b[oc])
			for j := range o {
				o[j] = bias
			}
			for ic := range g.inC {
				for ky := range g.k {
					oy0, oy1 := g.span(ky, g.inH, g.outH)
					for kx := range g.k {
						ox0, ox1 := g.span(kx, g.inW, g.outW)
						if ox0 >= ox1 {
							continue
						}
						wv := float64(wt[((oc*g.inC+ic)*g.k+ky)*g.k+kx])
						for oy := oy0; oy < oy1; oy++ {
							hr := h[(ic*g.inH+oy*g.stride-g.pad+ky)*g.inW+ox0*g.stride-g.pad+kx:]
							or := o[oy*g.outW+ox0 : oy*g.outW+ox1]
							if g.stride == 1 {
								hr = hr[:len(or)]
								for j, v := range hr {
									or[j] += v * wv
								}
								continue
							}
							for j := range or {
								or[j] += hr[j*g.stride] * wv
							}
						}
					}
				}
			}
		}
		activate(out, a.Activation)
		var ct convTrace
		if tr != nil {
			ct.act = out
		}
		if a.Pool > 1 {
			p := a.Pool
			pooled := make([]float64, g.outC*g.poolH*g.poolW)
			if tr != nil {
				ct.argmax = make([]int32, len(pooled))
			}
			for c := range g.outC {
				for py := range g.poolH {
					for px := range g.poolW {
						m, arg := math.Inf(-1), -1
						for dy := range p {
							for dx := range p {
								j := (c*g.outH+py*p+dy)*g.outW + px*p + dx
								if arg < 0 || out[j] > m { // the first maximum wins a tie
									arg = j
								}
								m = math.Max(m, out[j])
							}
						}
						pooled[(c*g.poolH+py)*g.poolW+px] = m
						if tr != nil {
							ct.argmax[(c*g.poolH+py)*g.poolW+px] = int32(arg)
						}
					}
				}
			}
			out = pooled
		}
		if tr != nil {
			tr.conv = append(tr.conv, ct)
		}
		h = out
	}
	return h
}

// span returns the output positions [lo, hi) whose input position under kernel offset
// k, pos*stride - pad + k, lies inside an input of size in.
func (g convGeom) span(k, in, out int) (lo, hi int) {
	if d := g.pad - k; d > 0 {
		lo = (d + g.stride - 1) / g.stride
	}
	n := in - 1 + g.pad - k
	if n < 0 {
		return 0, 0
	}
	return lo, min(out, n/g.stride+1)
}

// lstmForward runs the stacked LSTM over one time-major window and returns the top
// layer's hidden state at the last step.
func (a *Architecture) lstmForward(w Weights, row []float64, tr *trace) []float64 {
	xs := make([][]float64, a.Steps)
	for t := range xs {
		xs[t] = row[t*a.Features : (t+1)*a.Features]
	}
	for l, hid := range a.Hidden {
		wt, b := w[fmt.Sprintf("lstm%d.weight", l)], w[fmt.Sprintf("lstm%d.bias", l)]
		h, c := make([]float64, hid), make([]float64, hid)
		hs := make([][]float64, len(xs))
		var steps []lstmStep
		if tr != nil {
			steps = make([]lstmStep, len(xs))
		}
		for t, x := range xs {
			xh := append(append(make([]float64, 0, len(x)+hid), x...), h...)
			z := dense(xh, wt, b, 4*hid)
			nh, nc := make([]float64, hid), make([]float64, hid)
			for j := range hid {
				ig, f := sigmoid(z[j]), sigmoid(z[hid+j])
				g, o := math.Tanh(z[2*hid+j]), sigmoid(z[3*hid+j])
				nc[j] = f*c[j] + ig*g
				nh[j] = o * math.Tanh(nc[j])
				if tr != nil {
					z[j], z[hid+j], z[2*hid+j], z[3*hid+j] = ig, f, g, o
				}
			}
			if tr != nil {
				steps[t] = lstmStep{gates: z, c: nc, prev: c}
			}
			h, c = nh, nc
			hs[t] = nh
		}
		if tr != nil {
			tr.lstm = append(tr.lstm, steps)
		}
		xs = hs
	}
	return xs[len(xs)-1]
}
