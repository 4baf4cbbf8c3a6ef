package gpu

import "math"

// The CPU references: plain Go with the same semantics as the Device ops, used by the
// tests as ground truth and usable as a fallback. They are written for clarity, not
// speed; CPUConv2D and its grad loop directly instead of going through im2col, so the
// GPU's im2col+GEMM path is checked against an independent formulation.

// CPUGemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices (see Gemm).
func CPUGemm(transA, transB bool, m, n, k int, alpha float32, a, b []float32, beta float32, c []float32) {
	for i := range m {
		for j := range n {
			var s float64
			for l := range k {
				av := a[i*k+l]
				if transA {
					av = a[l*m+i]
				}
				bv := b[l*n+j]
				if transB {
					bv = b[j*k+l]
				}
				s += float64(av) * float64(bv)
			}
			c[i*n+j] = alpha*float32(s) + beta*c[i*n+j]
		}
	}
}

// CPUAddBiasRows adds b to every row of y.
func CPUAddBiasRows(y, b []float32, rows, cols int) {
	for r := range rows {
		for c := range cols {
			y[r*cols+c] += b[c]
		}
	}
}

// CPUBiasRowsGrad writes db[c] = Σ_r dy[r][c].
func CPUBiasRowsGrad(db, dy []float32, rows, cols int) {
	for c := range cols {
		var s float32
		for r := range rows {
			s += dy[r*cols+c]
		}
		db[c] = s
	}
}

// CPUAddBiasChannels adds b[c] to channel c of y (n×ch×hw).
func CPUAddBiasChannels(y, b []float32, n, ch, hw int) {
	for i := range y[:n*ch*hw] {
		y[i] += b[(i/hw)%ch]
	}
}

// CPUBiasChannelsGrad writes db[c] = Σ dy[·][c][·].
func CPUBiasChannelsGrad(db, dy []float32, n, ch, hw int) {
	for c := range ch {
		var s float32
		for k := range n {
			for j := range hw {
				s += dy[(k*ch+c)*hw+j]
			}
		}
		db[c] = s
	}
}

// CPUActivate writes y = act(x).
func CPUActivate(act Activation, y, x []float32) {
	for i, v := range x {
		switch act {
		case ReLU:
			y[i] = max(v, 0)
		case Sigmoid:
			y[i] = sigmoid32(v)
		case Tanh:
			y[i] = float32(math.Tanh(float64(v)))
		case LeakyReLU:
			if v > 0 {
				y[i] = v
			} else {
				y[i] = LeakyReLUSlope * v
			}
		}
	}
}

// CPUActivateGrad writes dx = dy · act'(x) from the forward output y.
func CPUActivateGrad(act Activation, dx, dy, y []float32) {
	for i := range dx {
		switch act {
		case ReLU:
			if y[i] > 0 {
				dx[i] = dy[i]
			} else {
				dx[i] = 0
			}
		case Sigmoid:
			dx[i] = dy[i] * y[i] * (1 - y[i])
		case Tanh:
			dx[i] = dy[i] * (1 - y[i]*y[i])
		case LeakyReLU:
			if y[i] > 0 {
				dx[i] = dy[i]
			} else {
				dx[i] = LeakyReLUSlope * dy[i]
			}
		}
	}
}

func sigmoid32(v float32) float32 { return float32(1 / (1 + math.Exp(-float64(v)))) }

// CPUSoftmaxCrossEntropy writes row-wise softmax probs and per-row cross-entropy loss.
func CPUSoftmaxCrossEntropy(probs, loss, logits, targets []float32, rows, cols int) {
	for r := range rows {
		z := logits[r*cols : (r+1)*cols]
		m := z[0]
		for _, v := range z[1:] {
			m = max(m, v)
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v - m))
		}
		lse := float64(m) + math.Log(sum)
		var l float64
		for c, v := range z {
			lp := float64(v) - lse
			probs[r*cols+c] = float32(math.Exp(lp))
			l -= float64(targets[r*cols+c]) * lp
		}
		loss[r] = float32(l)
	}
}

// CPUSoftmaxCrossEntropyGrad writes scale·(p·Σt − t), the gradient of scale·Σ loss.
func CPUSoftmaxCrossEntropyGrad(dlogits, probs, targets []float32, rows, cols int, scale float32) {
	for r := range rows {
		var st float32
		for c := range cols {
			st += targets[r*cols+c]
		}
		for c := range cols {
			i := r*cols + c
			dlogits[i] = scale * (probs[i]*st - targets[i])
		}
	}
}

// CPUIm2col lays out one image as columns (see Im2col).
func CPUIm2col(cols, x []float32, s ConvShape) {
	oh, ow := s.OutH(), s.OutW()
	for c := range s.C {
		for ki := range s.KH {
			for kj := range s.KW {
				row := (c*s.KH+ki)*s.KW + kj
				for oy := range oh {
					for ox := range ow {
						y, xx := oy*s.Stride-s.Pad+ki, ox*s.Stride-s.Pad+kj
						var v float32
						if y >= 0 && y < s.H && xx >= 0 && xx < s.W {
							v = x[(c*s.H+y)*s.W+xx]
						}
						cols[(row*oh+oy)*ow+ox] = v
					}
				}
			}
		}
	}
}

// CPUCol2im is the adjoint of CPUIm2col (scatter-add form).
func CPUCol2im(dx, cols []float32, s ConvShape) {
	clear(dx[:s.C*s.H*s.W])
	oh, ow := s.OutH(), s.OutW()
	for c := range s.C {
		for ki := range s.KH {
			for kj := range s.KW {
				row := (c*s.KH+ki)*s.KW + kj
				for oy := range oh {
					for ox := range ow {
						y, xx := oy*s.Stride-s.Pad+ki, ox*s.Stride-s.Pad+kj
						if y >= 0 && y < s.H && xx >= 0 && xx < s.W {
							dx[(c*s.H+y)*s.W+xx] += cols[(row*oh+oy)*ow+ox]
						}
					}
				}
			}
		}
	}
}

// CPUConv2D is direct convolution: y = w ⊛ x + b (b may be nil).
func CPUConv2D(s ConvShape, x, w, b, y []float32) {
	oh, ow := s.OutH(), s.OutW()
	for n := range s.N {
		for f := range s.F {
			for oy := range oh {
				for ox := range ow {
					var acc float64
					for c := range s.C {
						for ki := range s.KH {
							for kj := range s.KW {
								iy, ix := oy*s.Stride-s.Pad+ki, ox*s.Stride-s.Pad+kj
								if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
									continue
								}
								acc += float64(w[((f*s.C+c)*s.KH+ki)*s.KW+kj]) * float64(x[((n*s.C+c)*s.H+iy)*s.W+ix])
							}
						}
					}
					if b != nil {
						acc += float64(b[f])
					}
					y[((n*s.F+f)*oh+oy)*ow+ox] = float32(acc)
				}
			}
		}
	}
}

// CPUConv2DGrad is the direct backward of CPUConv2D; nil outputs are skipped.
func CPUConv2DGrad(s ConvShape, x, w, dy, dx, dw, db []float32) {
	oh, ow := s.OutH(), s.OutW()
	if dx != nil {
		clear(dx[:s.N*s.C*s.H*s.W])
	}
	if dw != nil {
		clear(dw[:s.F*s.C*s.KH*s.KW])
	}
	if db != nil {
		clear(db[:s.F])
	}
	for n := range s.N {
		for f := range s.F {
			for oy := range oh {
				for ox := range ow {
					g := dy[((n*s.F+f)*oh+oy)*ow+ox]
					if db != nil {
						db[f] += g
					}
					for c := range s.C {
						for ki := range s.KH {
							for kj := range s.KW {
								iy, ix := oy*s.Stride-s.Pad+ki, ox*s.Stride-s.Pad+kj
								if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
									continue
								}
								wi, xi := ((f*s.C+c)*s.KH+ki)*s.KW+kj, ((n*s.C+c)*s.H+iy)*s.W+ix
								if dw != nil {
									dw[wi] += g * x[xi]
								}
								if dx != nil {
									dx[xi] += g * w[wi]
								}
							}
						}
					}
				}
			}
		}
	}
}

// CPUMaxPool writes y and idx (the flat input index of each maximum, first on ties).
func CPUMaxPool(s PoolShape, x, y []float32, idx []int32) {
	oh, ow := s.OutH(), s.OutW()
	for p := range s.Planes {
		for oy := range oh {
			for ox := range ow {
				best := (p*s.H+oy*s.Stride)*s.W + ox*s.Stride
				m := x[best]
				for ki := range s.K {
					for kj := range s.K {
						j := (p*s.H+oy*s.Stride+ki)*s.W + ox*s.Stride + kj
						if x[j] > m {
							m, best = x[j], j
						}
					}
				}
				o := (p*oh+oy)*ow + ox
				y[o], idx[o] = m, int32(best)
			}
		}
	}
}

// CPUMaxPoolGrad routes each dy to the input its maximum came from.
func CPUMaxPoolGrad(s PoolShape, dx, dy []float32, idx []int32) {
	clear(dx[:s.Planes*s.H*s.W])
	for i, j := range idx[:s.OutLen()] {
		dx[j] += dy[i]
	}
}

// CPULSTMCell is LSTMCell on the CPU.
func CPULSTMCell(b, h int, gates, cprev, hout, c, acts []float32) {
	for r := range b {
		g, a := gates[r*4*h:(r+1)*4*h], acts[r*4*h:(r+1)*4*h]
		for j := range h {
			k := r*h + j
			ig, fg := sigmoid32(g[j]), sigmoid32(g[h+j])
			gg, og := float32(math.Tanh(float64(g[2*h+j]))), sigmoid32(g[3*h+j])
			cn := fg*cprev[k] + ig*gg
			a[j], a[h+j], a[2*h+j], a[3*h+j] = ig, fg, gg, og
			c[k] = cn
			hout[k] = og * float32(math.Tanh(float64(cn)))
		}
	}
}

// CPULSTMCellGrad is LSTMCellGrad on the CPU.
func CPULSTMCellGrad(b, h int, dh, dc, acts, c, cprev, dgates, dcprev []float32) {
	for r := range b {
		a, dg := acts[r*4*h:(r+1)*4*h], dgates[r*4*h:(r+1)*4*h]
		for j := range h {
			k := r*h + j
			ig, fg, gg, og := a[j], a[h+j], a[2*h+j], a[3*h+j]
			tc := float32(math.Tanh(float64(c[k])))
			dct := dc[k] + dh[k]*og*(1-tc*tc)
			dg[j] = dct * gg * ig * (1 - ig)
			dg[h+j] = dct * cprev[k] * fg * (1 - fg)
			dg[2*h+j] = dct * ig * (1 - gg*gg)
			dg[3*h+j] = dh[k] * tc * og * (1 - og)
			dcprev[k] = dct * fg
		}
	}
}
