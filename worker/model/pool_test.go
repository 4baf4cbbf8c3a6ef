package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/tensor"
)

// poolImpls lists the float32 2x2 pool implementations this CPU runs: the Go loops
// always, the AVX-512 kernels (pool_amd64.s) where the CPU has them. Each sets
// hasPoolAVX512 for the duration of the run.
func poolImpls() []bool {
	if hasPoolAVX512 {
		return []bool{false, true}
	}
	return []bool{false}
}

// TestPool2MatchesReference checks the recording 2x2 max-pool and its gradient, in Go
// and (where the CPU has it) in AVX-512, against a plain loop over each window in
// row-major order: the first maximum's value (relu: at least 0; NaN when the window
// holds a NaN, and then the index of
// the pairwise picks the kernels make) and index, and a gradient that puts each pooled gradient (0 through
// relu where the output is not above 0) at that index and 0 everywhere else, the rows
// and column that odd sizes drop included. Values are drawn from a few levels, so
// windows hold ties, and both signs of zero; widths give rows of 1 to 48 windows,
// whole groups of 16 and masked tails. Every comparison is bit for bit (any NaN
// matching any NaN).
func TestPool2MatchesReference(t *testing.T) {
	asm := hasPoolAVX512
	defer func() { hasPoolAVX512 = asm }()
	for _, sz := range []struct{ h, w int }{
		{2, 2}, {3, 3}, {5, 7}, {11, 11}, {26, 26}, {4, 33}, {7, 64}, {9, 65}, {2, 97}, {6, 35},
	} {
		for _, act := range []string{ActivationReLU, identity, ActivationTanh} {
			for _, nan := range []bool{false, true} {
				for _, on := range poolImpls() {
					name := fmt.Sprintf("%dx%d/%s/nan=%v/avx512=%v", sz.h, sz.w, act, nan, on)
					t.Run(name, func(t *testing.T) {
						hasPoolAVX512 = on
						testPool2MatchesReference(t, sz.h, sz.w, act, nan)
					})
				}
			}
		}
	}
}

func testPool2MatchesReference(t *testing.T, h, w int, act string, withNaN bool) {
	const batch, c = 2, 3
	g := convGeom{b: batch, c: c, h: h, w: w, k: 2, stride: 2, oh: h / 2, ow: w / 2}
	rng := rand.New(rand.NewPCG(uint64(h), uint64(w)))
	levels := []float32{-1.5, -0.5, float32(math.Copysign(0, -1)), 0, 0.5, 1.5}
	z := make([]float32, batch*c*h*w)
	for i := range z {
		z[i] = levels[rng.IntN(len(levels))]
		if withNaN && rng.IntN(17) == 0 {
			z[i] = float32(math.NaN())
		}
	}
	np := batch * c * g.oh * g.ow
	dy := make([]float32, np)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	relu := act == ActivationReLU

	// The reference.
	wantY := make([]float32, np)
	wantArg := make([]int32, np)
	for p := range batch * c {
		for py := range g.oh {
			for px := range g.ow {
				at := p*h*w + 2*py*w + 2*px
				best, isNaN := z[at], false
				for dy := range 2 {
					for dx := range 2 {
						i := p*h*w + (2*py+dy)*w + 2*px + dx
						if z[i] > best {
							best, at = z[i], i
						}
						isNaN = isNaN || z[i] != z[i]
					}
				}
				if relu {
					best = max(best, 0)
				}
				if isNaN {
					// Comparisons with NaN are false, so the first-maximum scan and
					// the kernels' pairwise picks part: the index is the pairwise one
					// (its gradient is NaN's anyway).
					i0 := p*h*w + 2*py*w + 2*px
					it, ib := i0, i0+w
					if z[i0+1] > z[i0] {
						it++
					}
					if z[i0+w+1] > z[i0+w] {
						ib++
					}
					at = it
					if z[ib] > z[it] {
						at = ib
					}
					best = float32(math.NaN())
				}
				o := (p*g.oh+py)*g.ow + px
				wantY[o], wantArg[o] = best, int32(at)
			}
		}
	}
	if act == ActivationTanh {
		tanhInto(wantY, wantY)
	}
	wantDZ := make([]float32, len(z))
	dp := dy
	if act == ActivationTanh {
		dp = make([]float32, np)
		activationGrad(dp, wantY, dy, act)
	}
	for o, a := range wantArg {
		if !relu || wantY[o] > 0 {
			wantDZ[a] = dp[o]
		}
	}

	op := &maxPoolOp[float32]{convBase: convBase[float32]{g: g, name: "maxpool"}, act: act, needArg: true}
	out, err := op.Do(tensor.New(tensor.WithShape(batch, c, h, w), tensor.WithBacking(z)))
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b) }
	for i, v := range out.Data().([]float32) {
		if !same(v, wantY[i]) || op.arg[i] != wantArg[i] {
			t.Fatalf("output %d: %v at %d, want %v at %d", i, v, op.arg[i], wantY[i], wantArg[i])
		}
	}
	grad := &maxPoolGradOp[float32]{convBase: convBase[float32]{g: g, name: "maxpool_dz"}, fwd: op}
	grad.out = make([]float32, len(z))
	for i := range grad.out {
		grad.out[i] = float32(math.NaN()) // every value must be written
	}
	dz, err := grad.Do(tensor.New(tensor.WithShape(batch, c, g.oh, g.ow), tensor.WithBacking(dy)))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range dz.Data().([]float32) {
		if !same(v, wantDZ[i]) {
			t.Fatalf("dz[%d] = %v, want %v", i, v, wantDZ[i])
		}
	}
}

// TestDot3x8MatchesReference checks dot3x8 (the first layer's filter gradient in
// AVX-512, where the CPU has it) against float64 sums: block counts that are and are
// not multiples of 3 x 8 (the overlapping last blocks), rows of 1, 15, 16, 17 and 676
// values (masked tails alone, whole groups of 16, both), one and several images, row
// strides longer than the rows. Tolerance: 1e-5 of the sum of the products' magnitudes.
// Without AVX-512 it checks that dot3x8 declines, and the conv tests cover the GEMM.
func TestDot3x8MatchesReference(t *testing.T) {
	for _, c := range []struct{ m, f, n, images int }{
		{3, 8, 16, 1}, {9, 32, 676, 3}, {4, 9, 17, 2}, {10, 17, 15, 1}, {3, 8, 1, 4}, {5, 12, 33, 2},
	} {
		t.Run(fmt.Sprintf("%dx%d n%d i%d", c.m, c.f, c.n, c.images), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.m), uint64(c.n)))
			lda, ldb := c.n+5, c.n+2
			aimg, bimg := c.m*lda+3, c.f*ldb+1
			a := make([]float32, c.images*aimg)
			b := make([]float32, c.images*bimg)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
			}
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			ldc := c.f + 2
			got := make([]float32, c.m*ldc)
			for i := range got {
				got[i] = float32(math.NaN())
			}
			if !dot3x8(c.m, c.f, c.n, c.images, a, lda, aimg, b, ldb, bimg, got, ldc) {
				if hasDotAVX512 {
					t.Fatal("dot3x8 declined with AVX-512")
				}
				return
			}
			for r := range c.m {
				for j := range ldc {
					v := got[r*ldc+j]
					if j >= c.f {
						if v == v {
							t.Fatalf("c[%d][%d] = %v written past the block", r, j, v)
						}
						continue
					}
					var want, scale float64
					for i := range c.images {
						for p := range c.n {
							x := float64(a[i*aimg+r*lda+p]) * float64(b[i*bimg+j*ldb+p])
							want += x
							scale += math.Abs(x)
						}
					}
					if math.Abs(float64(v)-want) > 1e-5*scale {
						t.Fatalf("c[%d][%d] = %v, want %v", r, j, v, want)
					}
				}
			}
		})
	}
}

// TestSumRowsFillRowsMatchReference checks the bias gradient's row sum (sumRows) against
// a float64 sum (tolerance 1e-5 of the sum of magnitudes) and the bias broadcast
// (fillRows) against the rows it must write, exactly, leaving the values after the
// last row alone: rows of 1, 15, 16, 17, 33, 121 and 676 values (masked tails, whole
// groups of 16 and 32), rows strided apart. Without AVX-512 it checks that both
// decline (the conv tests cover the Go loops).
func TestSumRowsFillRowsMatchReference(t *testing.T) {
	for _, n := range []int{1, 15, 16, 17, 33, 121, 676} {
		for _, rows := range []int{1, 3, 64} {
			rng := rand.New(rand.NewPCG(uint64(n), uint64(rows)))
			stride := 3*n + 1
			p := make([]float32, (rows-1)*stride+n)
			for i := range p {
				p[i] = float32(rng.NormFloat64())
			}
			var want, scale float64
			for r := range rows {
				for _, v := range p[r*stride : r*stride+n] {
					want += float64(v)
					scale += math.Abs(float64(v))
				}
			}
			got, ok := sumRows(p, n, rows, stride)
			if ok != hasRowsAVX512 {
				t.Fatalf("sumRows ran: %v, AVX-512: %v", ok, hasRowsAVX512)
			}
			if ok && math.Abs(float64(got)-want) > 1e-5*scale {
				t.Fatalf("n %d rows %d: sum %v, want %v", n, rows, got, want)
			}

			v := make([]float32, rows)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			y := make([]float32, rows*n+20)
			for i := range y {
				y[i] = float32(math.NaN())
			}
			if !fillRows(y[:rows*n], v, n) {
				if hasRowsAVX512 {
					t.Fatal("fillRows declined with AVX-512")
				}
				continue
			}
			for i, x := range y {
				if i >= rows*n {
					if x == x {
						t.Fatalf("n %d rows %d: y[%d] = %v written past the rows", n, rows, i, x)
					}
					continue
				}
				if x != v[i/n] {
					t.Fatalf("n %d rows %d: y[%d] = %v, want %v", n, rows, i, x, v[i/n])
				}
			}
		}
	}
}

// setAVX512Kernels switches every AVX-512 kernel of this package's convolution path on
// (where the CPU has it) or off, and returns a function restoring the switches.
func setAVX512Kernels(on bool) (restore func()) {
	saved := []bool{hasPoolAVX512, hasIm2colAVX512, hasCol2imAVX512, hasDotAVX512, hasRowsAVX512, hasMaxAbsAVX512, hasFirstConvAVX512}
	flags := []*bool{&hasPoolAVX512, &hasIm2colAVX512, &hasCol2imAVX512, &hasDotAVX512, &hasRowsAVX512, &hasMaxAbsAVX512, &hasFirstConvAVX512}
	for i, f := range flags {
		*f = on && saved[i]
	}
	return func() {
		for i, f := range flags {
			*f = saved[i]
		}
	}
}

// TestCNNAVX512KernelsMatchGo trains nothing but compares one float32 gradient and
// prediction of two small CNNs (one like fashion-cnn: no padding, a first layer of
// few values per filter; one like cifar-cnn: padding 1, three channels, odd sizes
// left by the pools) with every AVX-512 kernel on against every one off (the Go
// fallbacks a CPU without AVX-512 runs): 1e-4 relative (the kernels' sums run in
// another order) or 1e-6 absolute.
func TestCNNAVX512KernelsMatchGo(t *testing.T) {
	cfgs := map[string]CNNConfig{
		"fashion-like": {Height: 14, Width: 14, Channels: 1, Conv: []ConvLayer{{Filters: 16, Kernel: 3}, {Filters: 24, Kernel: 3}},
			Pool: 2, Dense: []int{16}, Outputs: 4, Task: TaskMulticlass, BatchSize: 6, Activation: ActivationReLU},
		"cifar-like": {Height: 13, Width: 15, Channels: 3, Conv: []ConvLayer{{Filters: 16, Kernel: 3, Padding: 1}, {Filters: 20, Kernel: 3, Padding: 1}},
			Pool: 2, Dense: []int{12}, Outputs: 3, Task: TaskMulticlass, BatchSize: 5, Activation: ActivationReLU},
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			m := mustCNN(t, cfg)
			p := randomParams(m, 5)
			x, y := randomBatch(9, cfg.BatchSize, cnnInputs(cfg), m.OutputSize(), cfg.Task)
			run := func(on bool) ([]float32, float64, []float32) {
				defer setAVX512Kernels(on)()
				g, loss := gradient(t, m, p, x, y, cfg.BatchSize)
				out := make([]float32, cfg.BatchSize*m.OutputSize())
				if err := m.Predict(p, x, cfg.BatchSize, out); err != nil {
					t.Fatal(err)
				}
				return g, loss, out
			}
			gAsm, lAsm, oAsm := run(true)
			gGo, lGo, oGo := run(false)
			if math.Abs(lAsm-lGo) > 1e-5*math.Abs(lGo) {
				t.Errorf("loss %v with AVX-512, %v without", lAsm, lGo)
			}
			assertClose(t, "gradient", gAsm, gGo, 1e-4, 1e-6)
			assertClose(t, "predict", oAsm, oGo, 1e-5, 1e-7)
		})
	}
}
