package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// convCase is one convolution geometry for the op tests.
var convCases = []struct {
	name string
	s    convShape
}{
	{"3x3 pad1", convShape{inC: 2, inH: 5, inW: 6, k: 3, stride: 1, pad: 1, outC: 3}},
	{"2x2 stride2", convShape{inC: 3, inH: 7, inW: 5, k: 2, stride: 2, pad: 0, outC: 2}},
	{"3x3 stride2 pad2", convShape{inC: 1, inH: 6, inW: 6, k: 3, stride: 2, pad: 2, outC: 4}},
	{"2x2 one channel, more filters than ckk", convShape{inC: 1, inH: 6, inW: 7, k: 2, stride: 1, pad: 0, outC: 6}},
	{"3x3 one channel, 40 filters", convShape{inC: 1, inH: 8, inW: 9, k: 3, stride: 1, pad: 1, outC: 40}},
	// 3x3, stride 1, no padding (the fused col2im): output rows of 2, 5, 11 and 19 values
	// (each path of the short-row im2col copy).
	{"3x3 pad0 narrow", convShape{inC: 2, inH: 5, inW: 4, k: 3, stride: 1, pad: 0, outC: 3}},
	{"3x3 pad0", convShape{inC: 2, inH: 6, inW: 7, k: 3, stride: 1, pad: 0, outC: 5}},
	{"3x3 pad0 row 11", convShape{inC: 3, inH: 4, inW: 13, k: 3, stride: 1, pad: 0, outC: 13}},
	{"3x3 pad0 row 19", convShape{inC: 1, inH: 3, inW: 21, k: 3, stride: 1, pad: 0, outC: 2}},
}

func init() {
	for i := range convCases {
		s := &convCases[i].s
		s.outH = (s.inH+2*s.pad-s.k)/s.stride + 1
		s.outW = (s.inW+2*s.pad-s.k)/s.stride + 1
	}
}

// convLoss builds loss = Σ r ⊙ (conv2d(x, w) + b) over float64 inputs bound to xs, ws,
// bs, with the new op or gorgonia's Conv2d + BroadcastAdd, and returns a function that
// runs it and returns the loss, the output and the gradients wrt x, w and b.
func convLoss(t *testing.T, legacy bool, batch int, s convShape, xs, ws, bs, rs []float64) func() (float64, []float64, [3][]float64) {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	g := G.NewGraph()
	x := boundTensor(g, "x", xs, batch, s.inC, s.inH, s.inW)
	w := boundTensor(g, "w", ws, s.outC, s.inC, s.k, s.k)
	b := boundTensor(g, "b", bs, s.outC)
	r := boundTensor(g, "r", rs, batch, s.outC, s.outH, s.outW)
	var y *G.Node
	var err error
	if legacy {
		if y, err = G.Conv2d(x, w, tensor.Shape{s.k, s.k}, []int{s.pad, s.pad}, []int{s.stride, s.stride}, []int{1, 1}); err == nil {
			y, err = G.BroadcastAdd(y, b, nil, []byte{0, 2, 3})
		}
	} else {
		y, err = conv2d[float64](x, w, b, batch, s)
	}
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(y, r)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(cost, x, w, b)
	if err != nil {
		t.Fatal(err)
	}
	var costV, yV G.Value
	G.Read(cost, &costV)
	G.Read(y, &yV)
	gv := make([]G.Value, 3)
	for i := range grads {
		G.Read(grads[i], &gv[i])
	}
	vm := G.NewTapeMachine(g)
	t.Cleanup(func() { vm.Close() })
	return func() (float64, []float64, [3][]float64) {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		var out [3][]float64
		for i, v := range gv {
			out[i] = append([]float64(nil), v.Data().([]float64)...)
		}
		return costV.Data().(float64), append([]float64(nil), yV.Data().([]float64)...), out
	}
}

func randomFloats(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}

// TestConvOpMatchesGorgonia checks the conv2d op's output and its three gradient ops
// against gorgonia's Conv2d + BroadcastAdd, within 1e-5, run twice (reused buffers).
func TestConvOpMatchesGorgonia(t *testing.T) {
	const batch = 3
	for _, tc := range convCases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			rng := rand.New(rand.NewPCG(1, 2))
			xs := randomFloats(rng, batch*s.inC*s.inH*s.inW)
			ws := randomFloats(rng, s.outC*s.inC*s.k*s.k)
			bs := randomFloats(rng, s.outC)
			rs := randomFloats(rng, batch*s.outC*s.outH*s.outW)
			runNew := convLoss(t, false, batch, s, xs, ws, bs, rs)
			runOld := convLoss(t, true, batch, s, xs, ws, bs, rs)
			for run := range 2 {
				lossN, yN, gN := runNew()
				lossO, yO, gO := runOld()
				if math.Abs(lossN-lossO) > 1e-5*math.Max(1, math.Abs(lossO)) {
					t.Fatalf("run %d: loss %v, gorgonia %v", run, lossN, lossO)
				}
				closeAll(t, "output", yN, yO)
				for i, name := range []string{"dx", "dw", "db"} {
					closeAll(t, name, gN[i], gO[i])
				}
				xs[0] += 0.5 // the second run sees new input values
			}
		})
	}
}

func closeAll(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-5*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %v, gorgonia %v", what, i, got[i], want[i])
		}
	}
}

// TestConvOpFiniteDifferences checks the conv2d op's gradients wrt x, w and b against
// central differences of the float64 loss.
func TestConvOpFiniteDifferences(t *testing.T) {
	const batch = 3
	for _, tc := range convCases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			rng := rand.New(rand.NewPCG(3, 4))
			in := [3][]float64{
				randomFloats(rng, batch*s.inC*s.inH*s.inW),
				randomFloats(rng, s.outC*s.inC*s.k*s.k),
				randomFloats(rng, s.outC),
			}
			rs := randomFloats(rng, batch*s.outC*s.outH*s.outW)
			run := convLoss(t, false, batch, s, in[0], in[1], in[2], rs)
			_, _, grads := run()
			const eps = 1e-6
			for k, name := range []string{"x", "w", "b"} {
				for i := range in[k] {
					v := in[k][i]
					in[k][i] = v + eps
					up, _, _ := run()
					in[k][i] = v - eps
					down, _, _ := run()
					in[k][i] = v
					fd := (up - down) / (2 * eps)
					if d := math.Abs(fd - grads[k][i]); d > 1e-6*math.Max(1, math.Abs(fd)) {
						t.Errorf("d%s[%d] = %v, finite difference %v", name, i, grads[k][i], fd)
					}
				}
			}
		})
	}
}

// TestCNNConvOpMatchesLegacy checks whole float64 CNN gradients and predictions built
// with the conv2d op against the same networks built with gorgonia's Conv2d.
func TestCNNConvOpMatchesLegacy(t *testing.T) {
	for _, cfg := range []CNNConfig{
		testCNNConfig(TaskMulticlass, ActivationReLU, 4, true),
		testCNNConfig(TaskBinary, ActivationTanh, 4, true),
		testCNNConfig(TaskRegression, ActivationSigmoid, 4, true),
		testCNNConfig(TaskMulticlass, ActivationLeakyReLU, 4, true),
		testCNNDeepConfig(TaskRegression, ActivationTanh, 4, true),
	} {
		m := mustCNN(t, cfg)
		legacyConv = true
		old := mustCNN(t, cfg)
		legacyConv = false
		p := randomParams(m, 5)
		x, y := randomBatch(6, 4, cnnInputs(cfg), m.OutputSize(), cfg.Task)
		for _, n := range []int{4, 3} {
			g, loss := gradient(t, m, p, x, y, n)
			gOld, lossOld := gradient(t, old, p, x, y, n)
			if math.Abs(loss-lossOld) > 1e-5*math.Max(1, math.Abs(lossOld)) {
				t.Fatalf("loss %v, legacy %v", loss, lossOld)
			}
			closeAll(t, "gradient", toF64(g), toF64(gOld))
		}
		out, outOld := make([]float32, 4*m.OutputSize()), make([]float32, 4*m.OutputSize())
		if err := m.Predict(p, x, 4, out); err != nil {
			t.Fatal(err)
		}
		if err := old.Predict(p, x, 4, outOld); err != nil {
			t.Fatal(err)
		}
		closeAll(t, "prediction", toF64(out), toF64(outOld))
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, f := range v {
		out[i] = float64(f)
	}
	return out
}

// TestMaxPoolOp checks the max-pool op with its fused activation and its gradient op in
// float64 against finite differences and gorgonia's MaxPool2D followed by the
// activation, on maps whose sizes do not divide by the pool.
func TestMaxPoolOp(t *testing.T) {
	for _, p := range []int{2, 3} {
		for _, act := range []string{identity, ActivationReLU, ActivationTanh, ActivationLeakyReLU} {
			t.Run(fmt.Sprintf("pool%d/%s", p, act), func(t *testing.T) { testMaxPoolOp(t, p, act) })
		}
	}
}

func testMaxPoolOp(t *testing.T, p int, act string) {
	const batch = 2
	s := convShape{outC: 3, outH: 5, outW: 7}
	s.poolH, s.poolW = s.outH/p, s.outW/p
	rng := rand.New(rand.NewPCG(7, uint64(8+p)))
	zs := randomFloats(rng, batch*s.outC*s.outH*s.outW)
	rs := randomFloats(rng, batch*s.outC*s.poolH*s.poolW)
	build := func(legacy bool) func() (float64, []float64, []float64) {
		buildMu.Lock()
		defer buildMu.Unlock()
		g := G.NewGraph()
		z := boundTensor(g, "z", zs, batch, s.outC, s.outH, s.outW)
		r := boundTensor(g, "r", rs, batch, s.outC, s.poolH, s.poolW)
		var y *G.Node
		var err error
		if legacy {
			if y, err = G.MaxPool2D(z, tensor.Shape{p, p}, []int{0, 0}, []int{p, p}); err == nil {
				y, err = activation[float64]("act", y, act)
			}
		} else {
			y, err = maxPool[float64](z, batch, p, s, act)
		}
		if err != nil {
			t.Fatal(err)
		}
		prod, err := G.HadamardProd(y, r)
		if err != nil {
			t.Fatal(err)
		}
		cost, err := G.Sum(prod)
		if err != nil {
			t.Fatal(err)
		}
		grads, err := G.Grad(cost, z)
		if err != nil {
			t.Fatal(err)
		}
		var costV, yV, gV G.Value
		G.Read(cost, &costV)
		G.Read(y, &yV)
		G.Read(grads[0], &gV)
		vm := G.NewTapeMachine(g)
		t.Cleanup(func() { vm.Close() })
		return func() (float64, []float64, []float64) {
			vm.Reset()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			return costV.Data().(float64), append([]float64(nil), yV.Data().([]float64)...), append([]float64(nil), gV.Data().([]float64)...)
		}
	}
	run, old := build(false), build(true)
	loss, y, g := run()
	lossOld, yOld, gOld := old()
	if math.Abs(loss-lossOld) > 1e-9 {
		t.Fatalf("loss %v, gorgonia %v", loss, lossOld)
	}
	closeAll(t, "output", y, yOld)
	closeAll(t, "gradient", g, gOld)
	const eps = 1e-6
	for i, v := range zs {
		zs[i] = v + eps
		up, _, _ := run()
		zs[i] = v - eps
		down, _, _ := run()
		zs[i] = v
		if fd := (up - down) / (2 * eps); math.Abs(fd-g[i]) > 1e-6*math.Max(1, math.Abs(fd)) {
			t.Errorf("dz[%d] = %v, finite difference %v", i, g[i], fd)
		}
	}
}

// TestConvIm2colMatchesNaive checks im2col (each of its paths: stride 1 without
// padding at output rows of 8 to 32 values, short copies, strided reads, padding;
// and, where the CPU has AVX-512, the assembly for stride 1 and rows of up to 32
// values, with and without padding, rows of 1, 16, 17 and 32 values, kernel columns
// and rows that read padding alone) against the definition, one value at a time.
func TestConvIm2colMatchesNaive(t *testing.T) {
	asm := hasIm2colAVX512
	defer func() { hasIm2colAVX512 = asm }()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []im2colCase{
		{1, 28, 28, 3, 1, 0}, {32, 13, 13, 3, 1, 0}, {2, 5, 10, 3, 1, 0}, {2, 4, 18, 3, 1, 0},
		{1, 4, 34, 3, 1, 0}, {1, 3, 35, 3, 1, 0}, {3, 6, 9, 2, 1, 0}, {2, 7, 20, 5, 1, 0},
		{2, 6, 7, 3, 1, 1}, {1, 9, 30, 3, 1, 2}, {3, 7, 5, 2, 2, 0}, {1, 6, 6, 3, 2, 2},
		{3, 32, 32, 3, 1, 1}, {2, 5, 16, 3, 1, 1}, {1, 3, 19, 3, 1, 0}, {2, 4, 17, 3, 1, 1},
		{1, 1, 1, 3, 1, 2}, {2, 2, 3, 3, 1, 2}, {1, 3, 3, 3, 1, 0}, {4, 4, 4, 3, 1, 1},
	} {
		for _, on := range []bool{false, asm} {
			hasIm2colAVX512 = on
			testConvIm2colMatchesNaive(t, rng, c)
		}
	}
}

// im2colCase is an image (channels, height, width) and a convolution's kernel size,
// stride and padding.
type im2colCase struct{ ch, h, w, k, stride, pad int }

func testConvIm2colMatchesNaive(t *testing.T, rng *rand.Rand, c im2colCase) {
	t.Run(fmt.Sprintf("%dx%dx%d k%d s%d p%d asm=%v", c.ch, c.h, c.w, c.k, c.stride, c.pad, hasIm2colAVX512), func(t *testing.T) {
		s := convShape{inC: c.ch, inH: c.h, inW: c.w, k: c.k, stride: c.stride, pad: c.pad, outC: 1}
		s.outH = (c.h+2*c.pad-c.k)/c.stride + 1
		s.outW = (c.w+2*c.pad-c.k)/c.stride + 1
		g := newConvGeom(1, s)
		img := make([]float32, c.ch*c.h*c.w)
		for i := range img {
			img[i] = float32(rng.NormFloat64())
		}
		// Rows of col 3 values apart, as when images lie side by side: the
		// gaps must stay as they are.
		ld := g.plane + 3
		col := make([]float32, g.ckk*ld)
		for i := range col {
			col[i] = float32(math.NaN()) // every value must be written
		}
		convIm2col(&g, img, col, ld)
		for ch := range c.ch {
			for ki := range c.k {
				for kj := range c.k {
					for oy := range g.oh {
						for ox := range g.ow {
							y, x := oy*c.stride-c.pad+ki, ox*c.stride-c.pad+kj
							var want float32
							if y >= 0 && y < c.h && x >= 0 && x < c.w {
								want = img[(ch*c.h+y)*c.w+x]
							}
							if got := col[((ch*c.k+ki)*c.k+kj)*ld+oy*g.ow+ox]; got != want {
								t.Fatalf("col[c%d k%d,%d][%d,%d] = %v, want %v", ch, ki, kj, oy, ox, got, want)
							}
						}
					}
				}
			}
		}
		for r := range g.ckk {
			for i, v := range col[r*ld+g.plane : (r+1)*ld] {
				if v == v {
					t.Fatalf("col row %d: %v written past the row's %d values (+%d)", r, v, g.plane, i)
				}
			}
		}
	})
}

// TestMaxPoolForwardOnly checks that a pool without a gradient op (Predict's graph:
// no argmax recorded, relu folded in) outputs what the recording pool does, for both
// dtypes, pool sizes 2 and 3 and each activation.
func TestMaxPoolForwardOnly(t *testing.T) {
	for _, p := range []int{2, 3} {
		for _, act := range []string{identity, ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU} {
			t.Run(fmt.Sprintf("pool%d/%s", p, act), func(t *testing.T) {
				testMaxPoolForwardOnly[float32](t, p, act)
				testMaxPoolForwardOnly[float64](t, p, act)
			})
		}
	}
}

func testMaxPoolForwardOnly[T float](t *testing.T, p int, act string) {
	// Output rows of 7, 16, 18 and 35 values: the assembly's masked tail alone, whole
	// groups of 16 alone, and both.
	for _, w := range []int{14, 32, 37, 70} {
		testMaxPoolForwardOnlyWidth[T](t, p, act, w)
	}
}

func testMaxPoolForwardOnlyWidth[T float](t *testing.T, p int, act string, w int) {
	const batch, c, h = 3, 4, 11
	g := convGeom{b: batch, c: c, h: h, w: w, k: p, stride: p, oh: h / p, ow: w / p}
	rng := rand.New(rand.NewPCG(9, uint64(p)))
	z := make([]T, batch*c*h*w)
	for i := range z {
		z[i] = T(rng.NormFloat64())
	}
	run := func(needArg bool) []T {
		op := &maxPoolOp[T]{convBase: convBase[T]{g: g, name: "maxpool"}, act: act, needArg: needArg}
		out, err := op.Do(tensor.New(tensor.WithShape(batch, c, h, w), tensor.WithBacking(z)))
		if err != nil {
			t.Fatal(err)
		}
		if needArg != (op.arg != nil) {
			t.Fatalf("needArg %v, argmax recorded: %v", needArg, op.arg != nil)
		}
		return out.Data().([]T)
	}
	want, got := run(true), run(false)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%T pool%d %s width %d: [%d] = %v forward-only, %v recording", got[i], p, act, w, i, got[i], want[i])
		}
	}
}

// TestConvForwardOnly checks that a convolution without gradient ops (Predict's graph:
// one reused im2col buffer per worker) outputs what the one keeping every image's
// im2col does, bit for bit, on one and on three threads.
func TestConvForwardOnly(t *testing.T) {
	for _, c := range convCases {
		t.Run(c.name, func(t *testing.T) {
			const batch = 5
			g := newConvGeom(batch, c.s)
			rng := rand.New(rand.NewPCG(11, 12))
			x := make([]float32, batch*g.c*g.h*g.w)
			w := make([]float32, g.f*g.ckk)
			b := make([]float32, g.f)
			for _, v := range [][]float32{x, w, b} {
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
			}
			run := func(keep bool, threads int) []float32 {
				par := &intraOp{}
				par.threads.Store(int32(threads))
				op := &conv2dOp[float32]{convBase: convBase[float32]{par: par, g: g, name: "conv2d"}, keepCols: keep}
				out, err := op.Do(tensor.New(tensor.WithShape(batch, g.c, g.h, g.w), tensor.WithBacking(x)),
					tensor.New(tensor.WithShape(g.f, g.c, g.k, g.k), tensor.WithBacking(w)),
					tensor.New(tensor.WithShape(g.f), tensor.WithBacking(b)))
				if err != nil {
					t.Fatal(err)
				}
				if keep != (op.cols != nil) {
					t.Fatalf("keepCols %v, every im2col kept: %v", keep, op.cols != nil)
				}
				return out.Data().([]float32)
			}
			want := run(true, 1)
			for _, threads := range []int{1, 3} {
				got := run(false, threads)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%d threads: y[%d] = %v forward-only, %v keeping im2col", threads, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// TestConvCol2imMatchesNaive checks col2im (each of its paths: 3x3 stride 1 without
// padding, 3x3 "same", the general loop, and, where the CPU has AVX-512, the
// assembly for 3x3 stride 1 and rows of up to 32 values) against the definition, the
// adjoint of im2col: every col value adds into the input pixel it was read from, none
// where it read padding; with col rows longer than the plane (the layout of several
// images side by side). float64 to 1e-12, float32 (another order of additions) to
// 1e-5, relative.
func TestConvCol2imMatchesNaive(t *testing.T) {
	asm := hasCol2imAVX512
	defer func() { hasCol2imAVX512 = asm }()
	for _, c := range col2imCases {
		t.Run(fmt.Sprintf("%dx%dx%d k%d s%d p%d", c.ch, c.h, c.w, c.k, c.stride, c.pad), func(t *testing.T) {
			hasCol2imAVX512 = false
			testConvCol2imMatchesNaive[float64](t, c, 1e-12)
			testConvCol2imMatchesNaive[float32](t, c, 1e-5)
			if asm {
				hasCol2imAVX512 = true
				testConvCol2imMatchesNaive[float32](t, c, 1e-5)
			}
		})
	}
}

// col2imCases are the shapes of the col2im tests: the paths above, fashion-cnn's and
// cifar-cnn's layers, rows of 1, 16, 17 and more than 32 values, padding 2.
var col2imCases = []im2colCase{
	{2, 6, 7, 3, 1, 0}, {1, 5, 4, 3, 1, 0}, {2, 6, 6, 3, 1, 1}, {3, 4, 9, 3, 1, 1}, {1, 2, 2, 3, 1, 1},
	{2, 7, 5, 2, 2, 0}, {1, 6, 6, 3, 2, 2}, {2, 5, 6, 5, 1, 2},
	{2, 28, 28, 3, 1, 0}, {3, 13, 13, 3, 1, 0}, {2, 32, 32, 3, 1, 1}, {2, 16, 16, 3, 1, 1},
	{1, 4, 17, 3, 1, 1}, {1, 3, 3, 3, 1, 0}, {1, 1, 1, 3, 1, 1}, {2, 3, 34, 3, 1, 0}, {1, 5, 5, 3, 1, 2},
	{1, 4, 18, 3, 1, 0}, {2, 3, 33, 3, 1, 1},
}

func testConvCol2imMatchesNaive[T float](t *testing.T, c im2colCase, tol float64) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := convShape{inC: c.ch, inH: c.h, inW: c.w, k: c.k, stride: c.stride, pad: c.pad, outC: 1}
	s.outH = (c.h+2*c.pad-c.k)/c.stride + 1
	s.outW = (c.w+2*c.pad-c.k)/c.stride + 1
	g := newConvGeom(1, s)
	ld := g.plane + 3
	col := make([]T, g.ckk*ld)
	for i := range col {
		col[i] = T(rng.NormFloat64())
	}
	got := make([]T, c.ch*c.h*c.w)
	want := make([]float64, len(got))
	for i := range got {
		got[i] = T(i) // col2im adds to what is there
		want[i] = float64(i)
	}
	convCol2im(&g, col, got, ld)
	for ch := range c.ch {
		for ki := range c.k {
			for kj := range c.k {
				for oy := range g.oh {
					for ox := range g.ow {
						y, x := oy*c.stride-c.pad+ki, ox*c.stride-c.pad+kj
						if y >= 0 && y < c.h && x >= 0 && x < c.w {
							want[(ch*c.h+y)*c.w+x] += float64(col[((ch*c.k+ki)*c.k+kj)*ld+oy*g.ow+ox])
						}
					}
				}
			}
		}
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > tol*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%T asm=%v: img[%d] = %v, want %v", got[i], hasCol2imAVX512, i, got[i], want[i])
		}
	}
}

// TestCol2imAVX512MatchesGo checks that the AVX-512 col2im adds the same sums in the
// same order as the Go loops (convCol2im3, convCol2im3Same), so that its results are
// equal value for value (a zero's sign aside: a missing term is a 0 there).
func TestCol2imAVX512MatchesGo(t *testing.T) {
	asm := hasCol2imAVX512
	defer func() { hasCol2imAVX512 = asm }()
	for _, c := range col2imCases {
		if c.k != 3 || c.stride != 1 || c.pad > 1 {
			continue
		}
		s := convShape{inC: c.ch, inH: c.h, inW: c.w, k: c.k, stride: c.stride, pad: c.pad, outC: 1}
		s.outH, s.outW = c.h+2*c.pad-2, c.w+2*c.pad-2
		g := newConvGeom(1, s)
		rng := rand.New(rand.NewPCG(7, uint64(c.w)))
		ld := g.plane + 5
		col := make([]float32, g.ckk*ld)
		for i := range col {
			col[i] = float32(rng.NormFloat64())
		}
		run := func(on bool) []float32 {
			hasCol2imAVX512 = on
			img := make([]float32, c.ch*c.h*c.w)
			for i := range img {
				img[i] = float32(i%7) - 3
			}
			convCol2im(&g, col, img, ld)
			return img
		}
		want, got := run(false), run(asm)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%v: img[%d] = %v, Go %v", c, i, got[i], want[i])
			}
		}
	}
}
