package gpu

import (
	"math/rand/v2"
	"testing"
)

// The CPU references' backward functions are checked against central finite
// differences of their forward functions, so the GPU tests compare against gradients
// that are known to be right.

const (
	fdEps = 1e-3
	fdAbs = 2e-3
	fdRel = 1e-2
)

// checkGrad compares analytic with the numerical gradient of loss with respect to x.
func checkGrad(t *testing.T, what string, x []float32, analytic []float32, loss func() float64) {
	t.Helper()
	num := make([]float32, len(x))
	for i := range x {
		old := x[i]
		x[i] = old + fdEps
		up := loss()
		x[i] = old - fdEps
		down := loss()
		x[i] = old
		num[i] = float32((up - down) / (2 * fdEps))
	}
	assertClose(t, what+" vs finite differences", analytic, num, fdAbs, fdRel)
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func TestCPUGradientsMatchFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	t.Run("matmul", func(t *testing.T) {
		m, n, k := 3, 4, 5
		a, b, dc := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
		c := make([]float32, m*n)
		loss := func() float64 { CPUGemm(false, false, m, n, k, 1, a, b, 0, c); return dot(dc, c) }
		da, db := make([]float32, m*k), make([]float32, k*n)
		CPUGemm(false, true, m, k, n, 1, dc, b, 0, da)
		CPUGemm(true, false, k, n, m, 1, a, dc, 0, db)
		checkGrad(t, "dA", a, da, loss)
		checkGrad(t, "dB", b, db, loss)
	})
	t.Run("activations", func(t *testing.T) {
		n := 50
		x, dy := randSlice(r, n), randSlice(r, n)
		for i := range x {
			if x[i] > -0.01 && x[i] < 0.01 {
				x[i] = 0.5 // keep ReLU's kink out of the finite differences
			}
		}
		for _, act := range []Activation{ReLU, Sigmoid, Tanh, LeakyReLU} {
			y, dx := make([]float32, n), make([]float32, n)
			CPUActivate(act, y, x)
			CPUActivateGrad(act, dx, dy, y)
			checkGrad(t, act.String(), x, dx, func() float64 { CPUActivate(act, y, x); return dot(dy, y) })
		}
	})
	t.Run("softmax cross-entropy", func(t *testing.T) {
		rows, cols := 4, 6
		z, tg := randSlice(r, rows*cols), oneHot(r, rows, cols)
		tg[1], tg[2] = 0.3, 0.2 // a soft target row
		p, l, dz := make([]float32, rows*cols), make([]float32, rows), make([]float32, rows*cols)
		loss := func() float64 {
			CPUSoftmaxCrossEntropy(p, l, z, tg, rows, cols)
			var s float64
			for _, v := range l {
				s += float64(v)
			}
			return s / float64(rows)
		}
		loss()
		CPUSoftmaxCrossEntropyGrad(dz, p, tg, rows, cols, 1/float32(rows))
		checkGrad(t, "dlogits", z, dz, loss)
	})
	t.Run("conv", func(t *testing.T) {
		s := ConvShape{N: 2, C: 2, H: 5, W: 6, F: 3, KH: 3, KW: 2, Stride: 2, Pad: 1}
		x, w, b := randSlice(r, s.N*s.C*s.H*s.W), randSlice(r, s.F*s.C*s.KH*s.KW), randSlice(r, s.F)
		dy := randSlice(r, s.N*s.F*s.OutH()*s.OutW())
		y := make([]float32, len(dy))
		loss := func() float64 { CPUConv2D(s, x, w, b, y); return dot(dy, y) }
		dx, dw, db := make([]float32, len(x)), make([]float32, len(w)), make([]float32, len(b))
		CPUConv2DGrad(s, x, w, dy, dx, dw, db)
		checkGrad(t, "dx", x, dx, loss)
		checkGrad(t, "dw", w, dw, loss)
		checkGrad(t, "db", b, db, loss)
		// im2col's adjoint is col2im: <im2col(x), c> == <x, col2im(c)>.
		s1 := s
		s1.N = 1
		cols, c := make([]float32, s1.ColsLen()), randSlice(r, s1.ColsLen())
		CPUIm2col(cols, x, s1)
		back := make([]float32, s1.C*s1.H*s1.W)
		CPUCol2im(back, c, s1)
		if lhs, rhs := dot(cols, c), dot(x[:len(back)], back); lhs-rhs > 1e-4 || rhs-lhs > 1e-4 {
			t.Fatalf("<im2col x, c> = %g, <x, col2im c> = %g", lhs, rhs)
		}
	})
	t.Run("maxpool", func(t *testing.T) {
		s := PoolShape{Planes: 2, H: 6, W: 6, K: 2, Stride: 2}
		x := make([]float32, s.Planes*s.H*s.W)
		for i, p := range r.Perm(len(x)) {
			x[i] = float32(p) * 0.1 // distinct values, so the argmax is stable under ±eps
		}
		dy := randSlice(r, s.OutLen())
		y, idx, dx := make([]float32, s.OutLen()), make([]int32, s.OutLen()), make([]float32, len(x))
		CPUMaxPool(s, x, y, idx)
		CPUMaxPoolGrad(s, dx, dy, idx)
		checkGrad(t, "dx", x, dx, func() float64 { CPUMaxPool(s, x, y, idx); return dot(dy, y) })
	})
	t.Run("lstm", func(t *testing.T) {
		b, h := 3, 4
		gates, cprev, dh, dc := randSlice(r, 4*b*h), randSlice(r, b*h), randSlice(r, b*h), randSlice(r, b*h)
		hout, c, acts := make([]float32, b*h), make([]float32, b*h), make([]float32, 4*b*h)
		loss := func() float64 { CPULSTMCell(b, h, gates, cprev, hout, c, acts); return dot(dh, hout) + dot(dc, c) }
		loss()
		dg, dcp := make([]float32, 4*b*h), make([]float32, b*h)
		CPULSTMCellGrad(b, h, dh, dc, acts, c, cprev, dg, dcp)
		checkGrad(t, "dgates", gates, dg, loss)
		checkGrad(t, "dcprev", cprev, dcp, loss)
	})
}
