package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fusedFirstLayer reports whether m's training and prediction graphs hold the fused
// first layer (firstConvOp), one answer per graph.
func fusedFirstLayer(t *testing.T, m Model) (train, pred bool) {
	t.Helper()
	has := func(g *G.ExprGraph) bool {
		for _, n := range g.AllNodes() {
			if _, ok := n.Op().(*firstConvOp); ok {
				return true
			}
		}
		return false
	}
	switch e := m.(*cnn).eng.(type) {
	case *cnnEngine[float32]:
		return has(e.ge.train.g), has(e.ge.pred.g)
	case *cnnEngine[float64]:
		return has(e.ge.train.g), has(e.ge.pred.g)
	}
	t.Fatalf("engine %T", m.(*cnn).eng)
	return false, false
}

// fashionLike is a small network of fashion-cnn's kind: one channel, 3x3 unpadded
// convolutions, relu, 2x2 pools.
func fashionLike(h, w, filters, batch int) CNNConfig {
	return CNNConfig{Height: h, Width: w, Channels: 1, Conv: []ConvLayer{{Filters: filters, Kernel: 3}, {Filters: 8, Kernel: 3}},
		Pool: 2, Dense: []int{10}, Outputs: 4, Task: TaskMulticlass, BatchSize: batch, Activation: ActivationReLU}
}

// TestFirstConvFusedOnlyWhereEligible checks that the fused first layer is built
// exactly for a float32 first layer of one channel, 3x3, stride 1, no padding, relu
// and a 2x2 pool, in both graphs, and that any other first layer keeps the separate
// ops.
func TestFirstConvFusedOnlyWhereEligible(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*CNNConfig)
		want   bool
	}{
		{"eligible", func(*CNNConfig) {}, true},
		{"default activation", func(c *CNNConfig) { c.Activation = "" }, true},
		{"float64", func(c *CNNConfig) { c.Float64 = true }, false},
		{"tanh", func(c *CNNConfig) { c.Activation = ActivationTanh }, false},
		{"leaky relu", func(c *CNNConfig) { c.Activation = ActivationLeakyReLU }, false},
		{"two channels", func(c *CNNConfig) { c.Channels = 2 }, false},
		{"padding", func(c *CNNConfig) { c.Conv[0].Padding = 1 }, false},
		{"stride 2", func(c *CNNConfig) { c.Conv[0].Stride = 2; c.Height, c.Width = 29, 29 }, false},
		{"kernel 5", func(c *CNNConfig) { c.Conv[0].Kernel = 5 }, false},
		{"pool 3", func(c *CNNConfig) { c.Pool = 3; c.Height, c.Width = 20, 20 }, false},
		{"no pool", func(c *CNNConfig) { c.Pool = 0 }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := fashionLike(14, 14, 8, 3)
			cfg.Conv = append([]ConvLayer(nil), cfg.Conv...)
			c.change(&cfg)
			train, pred := fusedFirstLayer(t, mustCNN(t, cfg))
			if train != c.want || pred != c.want {
				t.Fatalf("fused in training graph %v, prediction graph %v; want %v", train, pred, c.want)
			}
		})
	}
}

// TestFirstConvMatchesSeparateOps compares the fused first layer with the separate
// convolution and pool ops (fuseFirstConv off), with the AVX-512 kernels on (where
// the CPU has them) and off, on sizes with whole and partial 16-lane rows, an odd
// convolution output (a row and a column the pool drops), filter counts that are and
// are not multiples of 8, and batches that the fixed parts split unevenly. The loss,
// the predictions and every gradient value but the first layer's are bit-identical
// (the forward pass computes the same values); the first layer's filter and bias
// gradients, sums of up to thousands of terms taken in another order, agree to 1e-4
// relative or 1e-5 absolute (cancellation leaves some values near 1e-3).
func TestFirstConvMatchesSeparateOps(t *testing.T) {
	defer func(f bool) { fuseFirstConv = f }(fuseFirstConv)
	for _, cfg := range []CNNConfig{
		fashionLike(14, 14, 16, 6),
		fashionLike(13, 15, 12, 5),
		fashionLike(28, 28, 32, 7),
		fashionLike(10, 11, 8, 2),
		fashionLike(20, 19, 8, 3),
		fashionLike(34, 30, 5, 2),
	} {
		for _, on := range []bool{true, false} {
			t.Run(fmt.Sprintf("%dx%dx%d/b%d/avx512=%v", cfg.Height, cfg.Width, cfg.Conv[0].Filters, cfg.BatchSize, on), func(t *testing.T) {
				defer setAVX512Kernels(on)()
				fuseFirstConv = true
				fused := mustCNN(t, cfg)
				fuseFirstConv = false
				sep := mustCNN(t, cfg)
				fuseFirstConv = true
				if tr, pr := fusedFirstLayer(t, fused); !tr || !pr {
					t.Fatal("the fused model has no fused first layer")
				}
				if tr, pr := fusedFirstLayer(t, sep); tr || pr {
					t.Fatal("the separate model has a fused first layer")
				}
				p := randomParams(fused, 7)
				x, y := randomBatch(3, cfg.BatchSize, cnnInputs(cfg), fused.OutputSize(), cfg.Task)
				for _, n := range []int{cfg.BatchSize, cfg.BatchSize - 1} {
					gF, lF := gradient(t, fused, p, x, y, n)
					gS, lS := gradient(t, sep, p, x, y, n)
					if lF != lS {
						t.Fatalf("rows %d: loss %v fused, %v separate", n, lF, lS)
					}
					first := cfg.Conv[0].Filters * 10 // 3x3 weights and a bias per filter
					assertClose(t, "first layer gradient", gF[:first], gS[:first], 1e-4, 1e-5)
					for i := first; i < len(gF); i++ {
						if math.Float32bits(gF[i]) != math.Float32bits(gS[i]) {
							t.Fatalf("rows %d: grad[%d] = %v fused, %v separate", n, i, gF[i], gS[i])
						}
					}
				}
				oF := make([]float32, cfg.BatchSize*fused.OutputSize())
				oS := make([]float32, len(oF))
				if err := fused.Predict(p, x, cfg.BatchSize, oF); err != nil {
					t.Fatal(err)
				}
				if err := sep.Predict(p, x, cfg.BatchSize, oS); err != nil {
					t.Fatal(err)
				}
				for i := range oF {
					if math.Float32bits(oF[i]) != math.Float32bits(oS[i]) {
						t.Fatalf("predict[%d] = %v fused, %v separate", i, oF[i], oS[i])
					}
				}
			})
		}
	}
}

// TestFirstConvAgreesWithFloat64 compares the fused float32 network's loss, gradient
// and predictions with the float64 graph (which never fuses), within float32 rounding.
func TestFirstConvAgreesWithFloat64(t *testing.T) {
	cfg := fashionLike(13, 15, 12, 5)
	m32 := mustCNN(t, cfg)
	cfg.Float64 = true
	m64 := mustCNN(t, cfg)
	p := randomParams(m32, 11)
	x, y := randomBatch(5, cfg.BatchSize, cnnInputs(cfg), m32.OutputSize(), cfg.Task)
	g32, l32 := gradient(t, m32, p, x, y, cfg.BatchSize)
	g64, l64 := gradient(t, m64, p, x, y, cfg.BatchSize)
	if math.Abs(l32-l64) > 1e-4*math.Abs(l64) {
		t.Errorf("loss float32 %v, float64 %v", l32, l64)
	}
	assertClose(t, "gradient", g32, g64, 1e-3, 1e-5)
	o32 := make([]float32, cfg.BatchSize*m32.OutputSize())
	o64 := make([]float32, len(o32))
	if err := m32.Predict(p, x, cfg.BatchSize, o32); err != nil {
		t.Fatal(err)
	}
	if err := m64.Predict(p, x, cfg.BatchSize, o64); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "predict", o32, o64, 1e-4, 1e-6)
}

// TestFirstConvSameGradientAnyThreads checks that the fused network's gradient is
// bit-identical at 1, 2 and 3 threads (the filter and bias gradients sum fixed parts
// of the batch, in order), on a batch the parts split unevenly.
func TestFirstConvSameGradientAnyThreads(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 3 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	}
	cfg := fashionLike(14, 14, 16, 7)
	m := mustCNN(t, cfg)
	defer SetThreads(m, 0)
	p := randomParams(m, 2)
	x, y := randomBatch(8, cfg.BatchSize, cnnInputs(cfg), m.OutputSize(), cfg.Task)
	var want []float32
	for _, threads := range []int{1, 2, 3} {
		SetThreads(m, threads)
		g, _ := gradient(t, m, p, x, y, cfg.BatchSize)
		if want == nil {
			want = g
			continue
		}
		for i := range g {
			if math.Float32bits(g[i]) != math.Float32bits(want[i]) {
				t.Fatalf("grad[%d] = %v at %d threads, %v at 1", i, g[i], threads, want[i])
			}
		}
	}
}

// TestFirstConvDotMatchesReference checks the fused layer's inner products, in AVX-512
// (where the CPU has it) and in Go, against float64 sums, on row lengths with whole
// and partial 16-lane blocks and filter counts that are and are not multiples of 8.
func TestFirstConvDotMatchesReference(t *testing.T) {
	defer func(on bool) { hasDotAVX512 = on }(hasDotAVX512)
	impls := []bool{false}
	if hasDotAVX512 {
		impls = append(impls, true)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, on := range impls {
		for _, sz := range []struct{ m, f, n int }{{10, 32, 676}, {10, 8, 143}, {10, 12, 5}, {4, 9, 33}} {
			hasDotAVX512 = on
			a := make([]float32, sz.m*sz.n)
			b := make([]float32, sz.f*sz.n)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
			}
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			prod := make([]float32, sz.m*sz.f)
			firstConvDot(sz.m, sz.f, sz.n, a, b, prod)
			for r := range sz.m {
				for j := range sz.f {
					var want, mag float64
					for p := range sz.n {
						v := float64(a[r*sz.n+p]) * float64(b[j*sz.n+p])
						want += v
						mag += math.Abs(v)
					}
					if got := float64(prod[r*sz.f+j]); math.Abs(got-want) > 1e-6*mag {
						t.Fatalf("avx512=%v %+v: prod[%d][%d] = %v, want %v", on, sz, r, j, got, want)
					}
				}
			}
		}
	}
}

// TestFirstConvDWMatchesReference checks one image's filter and bias gradients of the
// fused first layer, from the windows in AVX-512 (firstConvDWAsm, where the CPU has
// it) and from the dense planes in Go (firstConvRoute, firstConvDot), against float64
// sums over the windows: each pooled gradient, where the pooled value is above 0,
// times the 3x3 patch under its window's maximum (for the bias, the gradient alone).
// Maxima fall in every corner of their windows, pooled values include 0, negatives and
// NaN (which pass nothing), and the sizes give odd window counts, odd planes and
// counts not multiples of 16.
func TestFirstConvDWMatchesReference(t *testing.T) {
	for _, sz := range []struct{ h, w, f int }{{28, 28, 32}, {13, 15, 12}, {10, 11, 8}, {5, 5, 3}, {36, 36, 4}, {35, 33, 5}, {4, 4, 2}} {
		s := convShape{inC: 1, inH: sz.h, inW: sz.w, k: 3, stride: 1, outC: sz.f, outH: sz.h - 2, outW: sz.w - 2}
		g := newConvGeom(1, s)
		ph, pw := g.oh/2, g.ow/2
		pp := ph * pw
		rng := rand.New(rand.NewPCG(uint64(sz.h), uint64(sz.f)))
		x := make([]float32, sz.h*sz.w)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		dy, y := make([]float32, g.f*pp), make([]float32, g.f*pp)
		arg := make([]int32, g.f*pp)
		for f := range g.f {
			for py := range ph {
				for px := range pw {
					j := f*pp + py*pw + px
					dy[j] = float32(rng.NormFloat64())
					switch rng.IntN(8) {
					case 0:
						y[j] = 0
					case 1:
						y[j] = -1
					case 2:
						y[j] = float32(math.NaN())
					default:
						y[j] = 1 + rng.Float32()
					}
					dr, dc := rng.IntN(2), rng.IntN(2)
					arg[j] = int32(f*g.plane + (2*py+dr)*g.ow + 2*px + dc)
				}
			}
		}
		want := make([]float64, g.f*10)
		mag := make([]float64, g.f*10)
		for j, v := range dy {
			if !(y[j] > 0) {
				continue
			}
			f := j / pp
			p := int(arg[j]) - f*g.plane
			oy, ox := p/g.ow, p%g.ow
			for r := range 9 {
				d := float64(v) * float64(x[(oy+r/3)*sz.w+ox+r%3])
				want[f*10+r] += d
				mag[f*10+r] += math.Abs(d)
			}
			want[f*10+9] += float64(v)
			mag[f*10+9] += math.Abs(float64(v))
		}
		check := func(name string, got func(f, r int) float32) {
			for f := range g.f {
				for r := range 10 {
					if d := math.Abs(float64(got(f, r)) - want[f*10+r]); d > 1e-6*mag[f*10+r] || math.IsNaN(d) {
						t.Fatalf("%dx%dx%d %s: filter %d value %d = %v, want %v", sz.h, sz.w, sz.f, name, f, r, got(f, r), want[f*10+r])
					}
				}
			}
		}
		off := make([]int32, g.plane)
		for p := range off {
			off[p] = int32(p/g.ow*g.w + p%g.ow)
		}
		// Both AVX-512 kernels: the windows side by side (rows of up to 16 windows,
		// with room for the image's window columns: the F planes Do passes) and one
		// by one (otherwise).
		for _, win := range []bool{false, true} {
			func() {
				defer func(on bool) { hasFirstConvWinAVX512 = on }(hasFirstConvWinAVX512)
				hasFirstConvWinAVX512 = win
				out := make([]float32, 16*g.f)
				if firstConvDWAsm(&g, x, dy, y, arg, off, make([]float32, g.f*g.plane), out) {
					check(fmt.Sprintf("avx512/win=%v", win), func(f, r int) float32 {
						if r == 9 {
							return out[f*16+3]
						}
						return out[f*16+r/3*4+r%3]
					})
				} else if hasFirstConvAVX512 {
					t.Fatal("firstConvDWAsm declined with AVX-512")
				}
			}()
		}
		col := make([]float32, 10*g.plane)
		convIm2col(&g, x, col, g.plane)
		fill(col[9*g.plane:], 1)
		dz := make([]float32, g.f*g.plane)
		for i := range dz {
			dz[i] = float32(math.NaN()) // every value must be written
		}
		for _, on := range []bool{false, hasPoolAVX512} {
			func() {
				defer func(a bool) { hasPoolAVX512 = a }(hasPoolAVX512)
				hasPoolAVX512 = on
				firstConvRoute(&g, dz, dy, y, arg)
			}()
			prod := make([]float32, 10*g.f)
			firstConvDot(10, g.f, g.plane, col, dz, prod)
			check(fmt.Sprintf("dense/pool-avx512=%v", on), func(f, r int) float32 { return prod[r*g.f+f] })
		}
	}
}

// BenchmarkFirstConv times fashion-cnn's fused first layer (batch 64 of 28x28, 32
// filters): the forward op with the direct 3x3 kernel (AVX-512, where the CPU has
// it) and with im2col and the product, and its filter and bias gradients from the
// windows (AVX-512) and from the routed planes (the fallback's data flow, with the
// AVX-512 route and inner products), in one binary so that each pair can be
// interleaved.
func BenchmarkFirstConv(b *testing.B) {
	s := convShape{inC: 1, inH: 28, inW: 28, k: 3, stride: 1, outC: 32, outH: 26, outW: 26}
	g := newConvGeom(64, s)
	rng := rand.New(rand.NewPCG(1, 1))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	val := func(v []float32, shape ...int) G.Value {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	x, w, bias := val(randn(64*28*28), 64, 1, 28, 28), val(randn(32*9), 32, 1, 3, 3), val(randn(32), 32)
	dy := val(randn(64*32*13*13), 64, 32, 13, 13)
	fwd := &firstConvOp{convBase: convBase[float32]{g: g, name: "fwd"}, needArg: true}
	grad := &firstConvGradOp{convBase: convBase[float32]{g: g, name: "dw"}, fwd: fwd}
	if _, err := fwd.Do(x, w, bias); err != nil {
		b.Fatal(err)
	}
	for _, direct := range []bool{true, false} {
		if direct && !hasFirstConvAVX512 {
			continue
		}
		b.Run(map[bool]string{true: "forward/direct", false: "forward/product"}[direct], func(b *testing.B) {
			defer func(on bool) { hasFirstConvAVX512 = on }(hasFirstConvAVX512)
			hasFirstConvAVX512 = direct
			for b.Loop() {
				if _, err := fwd.Do(x, w, bias); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, windows := range []bool{true, false} {
		if windows && !hasFirstConvAVX512 {
			continue
		}
		b.Run(map[bool]string{true: "backward/windows", false: "backward/planes"}[windows], func(b *testing.B) {
			defer func(on bool) { hasFirstConvAVX512 = on }(hasFirstConvAVX512)
			hasFirstConvAVX512 = windows
			for b.Loop() {
				if _, err := grad.Do(x, dy); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
