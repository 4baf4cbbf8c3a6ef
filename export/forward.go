package export

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
			return err
		}
	}
	row := make([]float64, a.Inputs)
	logits := make([]float64, a.Outputs)
	for r := range n {
		for i, v := range x[r*a.Inputs : (r+1)*a.Inputs] {
			row[i] = float64(v)
		}
		var h []float64
		switch a.Kind {
		case KindMLP:
			h = row
			for i, width := range a.Hidden {
				h = dense(h, w[fmt.Sprintf("dense%d.weight", i)], w[fmt.Sprintf("dense%d.bias", i)], width)
				activate(h, a.Activation)
			}
		case KindCNN:
			h = a.convForward(gs, w, row)
			h = a.denseStack(h, w, a.Activation)
		case KindLSTM:
			h = a.lstmForward(w, row)
			h = a.denseStack(h, w, ActReLU)
		}
		z := dense(h, w["out.weight"], w["out.bias"], a.Outputs)
		copy(logits, z)
		dst := out[r*a.Outputs : (r+1)*a.Outputs]
		switch a.Task {
		case TaskBinary:
			dst[0] = float32(sigmoid(logits[0]))
		case TaskMulticlass:
			softmax(logits)
			for i, v := range logits {
				dst[i] = float32(v)
			}
		default:
			dst[0] = float32(logits[0])
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

// denseStack applies the hidden dense layers dense<i> with the activation.
func (a *Architecture) denseStack(h []float64, w Weights, act string) []float64 {
	for i, width := range a.Dense {
		h = dense(h, w[fmt.Sprintf("dense%d.weight", i)], w[fmt.Sprintf("dense%d.bias", i)], width)
		activate(h, act)
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
func (a *Architecture) convForward(gs []convGeom, w Weights, img []float64) []float64 {
	h := img
	for i, g := range gs {
		wt, b := w[fmt.Sprintf("conv%d.weight", i)], w[fmt.Sprintf("conv%d.bias", i)]
		out := make([]float64, g.outC*g.outH*g.outW)
		for oc := range g.outC {
			for oy := range g.outH {
				for ox := range g.outW {
					s := float64(b[oc])
					for ic := range g.inC {
						for ky := range g.k {
							iy := oy*g.stride - g.pad + ky
							if iy < 0 || iy >= g.inH {
								continue
							}
							for kx := range g.k {
								ix := ox*g.stride - g.pad + kx
								if ix < 0 || ix >= g.inW {
									continue
								}
								s += h[(ic*g.inH+iy)*g.inW+ix] * float64(wt[((oc*g.inC+ic)*g.k+ky)*g.k+kx])
							}
						}
					}
					out[(oc*g.outH+oy)*g.outW+ox] = s
				}
			}
		}
		activate(out, a.Activation)
		if a.Pool > 1 {
			p := a.Pool
			pooled := make([]float64, g.outC*g.poolH*g.poolW)
			for c := range g.outC {
				for py := range g.poolH {
					for px := range g.poolW {
						m := math.Inf(-1)
						for dy := range p {
							for dx := range p {
								m = math.Max(m, out[(c*g.outH+py*p+dy)*g.outW+px*p+dx])
							}
						}
						pooled[(c*g.poolH+py)*g.poolW+px] = m
					}
				}
			}
			out = pooled
		}
		h = out
	}
	return h
}

// lstmForward runs the stacked LSTM over one time-major window and returns the top
// layer's hidden state at the last step.
func (a *Architecture) lstmForward(w Weights, row []float64) []float64 {
	xs := make([][]float64, a.Steps)
	for t := range xs {
		xs[t] = row[t*a.Features : (t+1)*a.Features]
	}
	for l, hid := range a.Hidden {
		wt, b := w[fmt.Sprintf("lstm%d.weight", l)], w[fmt.Sprintf("lstm%d.bias", l)]
		h, c := make([]float64, hid), make([]float64, hid)
		hs := make([][]float64, len(xs))
		for t, x := range xs {
			xh := append(append(make([]float64, 0, len(x)+hid), x...), h...)
			z := dense(xh, wt, b, 4*hid)
			nh := make([]float64, hid)
			for j := range hid {
				ig, f := sigmoid(z[j]), sigmoid(z[hid+j])
				g, o := math.Tanh(z[2*hid+j]), sigmoid(z[3*hid+j])
				c[j] = f*c[j] + ig*g
				nh[j] = o * math.Tanh(c[j])
			}
			h = nh
			hs[t] = nh
		}
		xs = hs
	}
	return xs[len(xs)-1]
}
