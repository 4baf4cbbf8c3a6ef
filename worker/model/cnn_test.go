package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// testCNNConfig is a tiny CNN for task: 6x6x2 images, 3 filters of 3x3 with padding 1,
// a 2x2 pool and one dense layer of 4.
func testCNNConfig(task, activation string, batch int, f64 bool) CNNConfig {
	k := 1
	if task == TaskMulticlass {
		k = 3
	}
	return CNNConfig{
		Height: 6, Width: 6, Channels: 2,
		Conv: []ConvLayer{{Filters: 3, Kernel: 3, Padding: 1}}, Pool: 2,
		Dense: []int{4}, Activation: activation, Outputs: k, Task: task,
		BatchSize: batch, Seed: 7, Float64: f64,
	}
}

// testCNNDeepConfig has two convolutions (the second strided, no pool) and no hidden
// dense layer, on a non-square image.
func testCNNDeepConfig(task, activation string, batch int, f64 bool) CNNConfig {
	cfg := testCNNConfig(task, activation, batch, f64)
	cfg.Height, cfg.Width, cfg.Channels = 7, 6, 1
	cfg.Conv = []ConvLayer{{Filters: 2, Kernel: 2}, {Filters: 3, Kernel: 3, Stride: 2, Padding: 1}}
	cfg.Pool = 0
	cfg.Dense = nil
	return cfg
}

func mustCNN(t testing.TB, cfg CNNConfig) Model {
	t.Helper()
	m, err := NewCNN(cfg)
	if err != nil {
		t.Fatalf("NewCNN(%+v): %v", cfg, err)
	}
	return m
}

func cnnInputs(cfg CNNConfig) int { return cfg.Channels * cfg.Height * cfg.Width }

func TestNewCNNValidation(t *testing.T) {
	good := CNNConfig{Height: 8, Width: 8, Channels: 1, Conv: []ConvLayer{{Filters: 2, Kernel: 3}}, Pool: 2, Dense: []int{4}, Outputs: 1, Task: TaskBinary, BatchSize: 4}
	tests := []struct {
		name   string
		change func(*CNNConfig)
		want   string
	}{
		{"ok", func(*CNNConfig) {}, ""},
		{"no dense, no pool, default activation", func(c *CNNConfig) { c.Dense, c.Pool, c.Activation = nil, 0, "" }, ""},
		{"pool 1 is none", func(c *CNNConfig) { c.Pool = 1 }, ""},
		{"exactly 1x1 after pool", func(c *CNNConfig) { c.Height, c.Width = 4, 4 }, ""},
		{"zero height", func(c *CNNConfig) { c.Height = 0 }, "height: must be in [1, 32768], got 0"},
		{"zero width", func(c *CNNConfig) { c.Width = 0 }, "width: must be in"},
		{"zero channels", func(c *CNNConfig) { c.Channels = 0 }, "channels: must be in"},
		{"huge height", func(c *CNNConfig) { c.Height = 1 << 20 }, "height: must be in"},
		{"no conv", func(c *CNNConfig) { c.Conv = nil }, "conv: at least one convolution layer"},
		{"zero filters", func(c *CNNConfig) { c.Conv = []ConvLayer{{Filters: 2, Kernel: 3}, {Kernel: 3}} }, "conv[1].filters: must be in"},
		{"zero kernel", func(c *CNNConfig) { c.Conv[0].Kernel = 0 }, "conv[0].kernel: must be in"},
		{"negative stride", func(c *CNNConfig) { c.Conv[0].Stride = -1 }, "conv[0].stride: must be in [1, 32768] (0 means 1), got -1"},
		{"negative padding", func(c *CNNConfig) { c.Conv[0].Padding = -1 }, "conv[0].padding: must be in [0, kernel-1 = 2], got -1"},
		{"padding as big as kernel", func(c *CNNConfig) { c.Conv[0].Padding = 3 }, "conv[0].padding"},
		{"kernel larger than image", func(c *CNNConfig) { c.Conv[0].Kernel = 9 }, "conv[0]: kernel 9 with padding 0 shrinks its 8x8 input below 1x1"},
		{"second conv too big", func(c *CNNConfig) {
			c.Conv = []ConvLayer{{Filters: 2, Kernel: 3}, {Filters: 2, Kernel: 4}}
		}, "conv[1]: kernel 4 with padding 0 shrinks its 3x3 input below 1x1"},
		{"pool too big", func(c *CNNConfig) { c.Pool = 7 }, "pool: size 7 after conv[0] shrinks its 6x6 output below 1x1"},
		{"pool after second conv", func(c *CNNConfig) {
			c.Conv = []ConvLayer{{Filters: 2, Kernel: 3}, {Filters: 2, Kernel: 3}}
		}, "pool: size 2 after conv[1] shrinks its 1x1 output below 1x1"},
		{"negative pool", func(c *CNNConfig) { c.Pool = -2 }, "pool: must be in"},
		{"zero dense width", func(c *CNNConfig) { c.Dense = []int{4, 0} }, "dense[1]: must be in"},
		{"unknown activation", func(c *CNNConfig) { c.Activation = "gelu" }, `activation: "gelu" is not one of`},
		{"unknown task", func(c *CNNConfig) { c.Task = "ranking" }, `task: "ranking"`},
		{"multiclass with 1 output", func(c *CNNConfig) { c.Task = TaskMulticlass }, "outputs: task multiclass_classification needs >= 2"},
		{"zero batch", func(c *CNNConfig) { c.BatchSize = 0 }, "batchSize: must be >= 1"},
		{"dropout 1", func(c *CNNConfig) { c.Dropout = 1 }, "dropout: must be in [0, 1)"},
		{"too many conv params", func(c *CNNConfig) {
			c.Channels = 1 << 12
			c.Height, c.Width = 3, 3
			c.Conv = []ConvLayer{{Filters: 1 << 12, Kernel: 3}}
			c.Pool = 0
		}, "conv[0]: the model would have more than"},
		{"too many dense params", func(c *CNNConfig) { c.Dense = []int{1 << 20, 1 << 20} }, "dense[1]: the model would have more than"},
		{"too many activations per image", func(c *CNNConfig) {
			c.Height, c.Width = 1<<13, 1<<13
		}, "conv[0]: one image needs more than"},
		{"too many activations per batch", func(c *CNNConfig) { c.BatchSize = 1 << 20 }, "batchSize: 1048576 rows times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.Conv = slices.Clone(good.Conv)
			tt.change(&cfg)
			m, err := NewCNN(cfg)
			if tt.want == "" {
				if err != nil || m == nil {
					t.Fatalf("NewCNN: %v", err)
				}
				if verr := cfg.Validate(); verr != nil {
					t.Fatalf("Validate: %v", verr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewCNN error = %v, want it to contain %q", err, tt.want)
			}
			if verr := cfg.Validate(); verr == nil || verr.Error() != err.Error() {
				t.Fatalf("Validate = %v, NewCNN = %v", verr, err)
			}
		})
	}
}

func TestCNNLayout(t *testing.T) {
	cfg := CNNConfig{Height: 9, Width: 8, Channels: 2, Conv: []ConvLayer{{Filters: 4, Kernel: 3, Padding: 1}, {Filters: 5, Kernel: 2, Stride: 2}}, Pool: 2, Dense: []int{6}, Outputs: 3, Task: TaskMulticlass, BatchSize: 2}
	m := mustCNN(t, cfg)
	// 9x8 -> conv0 (pad 1) 9x8 -> pool 4x4 -> conv1 (k2 s2) 2x2 -> pool 1x1: 5 features.
	want := []struct {
		name  string
		shape []int
	}{
		{"conv0.weight", []int{4, 2, 3, 3}}, {"conv0.bias", []int{4}},
		{"conv1.weight", []int{5, 4, 2, 2}}, {"conv1.bias", []int{5}},
		{"dense0.weight", []int{5, 6}}, {"dense0.bias", []int{6}},
		{"out.weight", []int{6, 3}}, {"out.bias", []int{3}},
	}
	layout := m.Layout()
	if len(layout) != len(want) {
		t.Fatalf("layout has %d tensors, want %d: %+v", len(layout), len(want), layout)
	}
	off := 0
	for i, w := range want {
		ti := layout[i]
		size := 1
		for _, d := range w.shape {
			size *= d
		}
		if ti.Name != w.name || !slices.Equal(ti.Shape, w.shape) || ti.Offset != off || ti.Size != size {
			t.Errorf("layout[%d] = %+v, want %s %v at %d size %d", i, ti, w.name, w.shape, off, size)
		}
		off += size
	}
	if m.NumParams() != off || m.OutputSize() != 3 || m.BatchSize() != 2 {
		t.Errorf("NumParams %d (want %d), OutputSize %d, BatchSize %d", m.NumParams(), off, m.OutputSize(), m.BatchSize())
	}
	if len(m.LayoutHash()) != 64 {
		t.Errorf("LayoutHash %q is not a hex SHA-256", m.LayoutHash())
	}
	if mustCNN(t, cfg).LayoutHash() != m.LayoutHash() {
		t.Error("the same config gives different layout hashes")
	}
	other := cfg
	other.Conv = []ConvLayer{{Filters: 4, Kernel: 3, Padding: 1}, {Filters: 6, Kernel: 2, Stride: 2}}
	if mustCNN(t, other).LayoutHash() == m.LayoutHash() {
		t.Error("different filter counts give the same layout hash")
	}
	// The caller's config is copied: changing it later changes nothing.
	conv := []ConvLayer{{Filters: 2, Kernel: 3}}
	c2 := testCNNConfig(TaskBinary, ActivationReLU, 2, false)
	c2.Conv = conv
	m2 := mustCNN(t, c2)
	conv[0].Filters = 9
	if got := m2.Layout()[0].Shape[0]; got != 2 {
		t.Errorf("conv0.weight has %d filters after the caller changed its config, want 2", got)
	}
}

func TestCNNInitParams(t *testing.T) {
	for _, act := range []string{ActivationReLU, ActivationTanh} {
		t.Run(act, func(t *testing.T) {
			cfg := CNNConfig{Height: 8, Width: 8, Channels: 2, Conv: []ConvLayer{{Filters: 8, Kernel: 3}, {Filters: 8, Kernel: 3}}, Dense: []int{16}, Activation: act, Outputs: 4, Task: TaskMulticlass, BatchSize: 1}
			m := mustCNN(t, cfg)
			p := m.InitParams(5)
			if !slices.Equal(p, m.InitParams(5)) {
				t.Fatal("InitParams is not deterministic per seed")
			}
			if slices.Equal(p, m.InitParams(6)) {
				t.Fatal("InitParams ignores the seed")
			}
			for _, ti := range m.Layout() {
				vals := p[ti.Offset : ti.Offset+ti.Size]
				if strings.HasSuffix(ti.Name, ".bias") {
					if slices.ContainsFunc(vals, func(v float32) bool { return v != 0 }) {
						t.Errorf("%s is not zero", ti.Name)
					}
					continue
				}
				var limit float64
				switch {
				case len(ti.Shape) == 4:
					limit = math.Sqrt(6 / float64(ti.Shape[1]*ti.Shape[2]*ti.Shape[3]))
				case act == ActivationReLU && ti.Name != "out.weight":
					limit = math.Sqrt(6 / float64(ti.Shape[0]))
				default:
					limit = math.Sqrt(6 / float64(ti.Shape[0]+ti.Shape[1]))
				}
				var maxAbs, sumSq float64
				for _, v := range vals {
					maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
					sumSq += float64(v) * float64(v)
				}
				if maxAbs > limit || maxAbs < limit/2 {
					t.Errorf("%s: max |w| = %v, want within (%v/2, %v]", ti.Name, maxAbs, limit, limit)
				}
				if v := sumSq / float64(len(vals)); v < limit*limit/3*0.5 || v > limit*limit/3*1.5 {
					t.Errorf("%s: variance %v, want about %v", ti.Name, v, limit*limit/3)
				}
			}
		})
	}
}

// TestCNNGradientFiniteDifferences checks every parameter's gradient against central
// differences of the loss in float64 mode, with padded rows in the batch.
func TestCNNGradientFiniteDifferences(t *testing.T) {
	tests := []struct {
		name string
		cfg  CNNConfig
	}{
		{"multiclass/relu", testCNNConfig(TaskMulticlass, ActivationReLU, 4, true)},
		{"binary/relu", testCNNConfig(TaskBinary, ActivationReLU, 4, true)},
		{"binary/tanh", testCNNConfig(TaskBinary, ActivationTanh, 4, true)},
		{"deep/regression/leaky_relu", testCNNDeepConfig(TaskRegression, ActivationLeakyReLU, 4, true)},
		{"deep/multiclass/sigmoid", testCNNDeepConfig(TaskMulticlass, ActivationSigmoid, 4, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCNN(t, tt.cfg)
			p := randomParams(m, 11)
			x, y := randomBatch(3, 3, cnnInputs(tt.cfg), m.OutputSize(), tt.cfg.Task)
			g, loss := gradient(t, m, p, x, y, 3)
			if loss <= 0 {
				t.Fatalf("loss = %v, want > 0", loss)
			}
			scratch := make([]float32, m.NumParams())
			lossAt := func(q []float32) float64 {
				l, err := m.Gradient(q, x, y, 3, scratch)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			q := slices.Clone(p)
			const eps = 1e-5
			for i := range p {
				q[i] = p[i] + eps
				hi, up := float64(q[i]), lossAt(q)
				q[i] = p[i] - eps
				lo, down := float64(q[i]), lossAt(q)
				q[i] = p[i]
				fd := (up - down) / (hi - lo)
				d := math.Abs(fd - float64(g[i]))
				if d > 1e-4*math.Max(math.Abs(fd), math.Abs(float64(g[i])))+1e-6 {
					t.Errorf("param %d (%s): gradient %v, finite difference %v", i, paramName(m, i), g[i], fd)
				}
			}
			// Every tensor must get some gradient, or the check above proves little.
			for _, ti := range m.Layout() {
				if !slices.ContainsFunc(g[ti.Offset:ti.Offset+ti.Size], func(v float32) bool { return v != 0 }) {
					t.Errorf("%s has an all-zero gradient", ti.Name)
				}
			}
		})
	}
}

func TestCNNFloat32AgreesWithFloat64(t *testing.T) {
	for _, task := range allTasks {
		for _, deep := range []bool{false, true} {
			t.Run(task+map[bool]string{false: "", true: "/deep"}[deep], func(t *testing.T) {
				cfgOf := testCNNConfig
				if deep {
					cfgOf = testCNNDeepConfig
				}
				m32 := mustCNN(t, cfgOf(task, ActivationTanh, 5, false))
				m64 := mustCNN(t, cfgOf(task, ActivationTanh, 5, true))
				p := randomParams(m32, 4)
				x, y := randomBatch(8, 4, cnnInputs(cfgOf(task, "", 1, false)), m32.OutputSize(), task)
				g32, l32 := gradient(t, m32, p, x, y, 4)
				g64, l64 := gradient(t, m64, p, x, y, 4)
				if math.Abs(l32-l64) > 1e-4*math.Abs(l64) {
					t.Errorf("loss float32 %v, float64 %v", l32, l64)
				}
				assertClose(t, "gradient", g32, g64, 1e-3, 1e-5)
				o32 := make([]float32, 4*m32.OutputSize())
				o64 := make([]float32, 4*m32.OutputSize())
				if err := m32.Predict(p, x, 4, o32); err != nil {
					t.Fatal(err)
				}
				if err := m64.Predict(p, x, 4, o64); err != nil {
					t.Fatal(err)
				}
				assertClose(t, "predict", o32, o64, 1e-4, 1e-6)
			})
		}
	}
}

// TestCNNMaskedRowsDoNotContribute fills the padding rows with other data: the gradient
// of n rows in a big batch equals the gradient of the same rows in a batch of exactly n.
func TestCNNMaskedRowsDoNotContribute(t *testing.T) {
	for _, task := range allTasks {
		for _, f64 := range []bool{false, true} {
			t.Run(task+map[bool]string{false: "/float32", true: "/float64"}[f64], func(t *testing.T) {
				cfg := testCNNConfig(task, ActivationReLU, 2, f64)
				exact := mustCNN(t, cfg)
				cfg.BatchSize = 6
				big := mustCNN(t, cfg)
				in := cnnInputs(cfg)
				p := randomParams(exact, 2)
				x, y := randomBatch(5, 6, in, exact.OutputSize(), task)
				for i := 2 * in; i < len(x); i++ {
					x[i] *= 100
				}
				gExact, lExact := gradient(t, exact, p, x[:2*in], y[:2], 2)
				gBig, lBig := gradient(t, big, p, x, y, 2)
				if math.Abs(lExact-lBig) > 1e-6*math.Abs(lExact) {
					t.Errorf("loss of 2 rows: batch 2 %v, batch 6 %v", lExact, lBig)
				}
				assertClose(t, "gradient", gBig, gExact, 1e-5, 1e-7)
			})
		}
	}
}

// TestCNNGradientIsMeanOfRows checks what the parameter servers rely on: batch
// gradients averaged with weights n_i equal the gradient of all rows.
func TestCNNGradientIsMeanOfRows(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			cfg := testCNNConfig(task, ActivationReLU, 5, true)
			m := mustCNN(t, cfg)
			in := cnnInputs(cfg)
			p := randomParams(m, 8)
			x, y := randomBatch(9, 5, in, m.OutputSize(), task)
			gAll, lAll := gradient(t, m, p, x, y, 5)

			gA, lA := gradient(t, m, p, x[:2*in], y[:2], 2)
			gB, lB := gradient(t, m, p, x[2*in:], y[2:], 3)
			weighted := make([]float64, m.NumParams())
			for i := range weighted {
				weighted[i] = (2*float64(gA[i]) + 3*float64(gB[i])) / 5
			}
			if l := (2*lA + 3*lB) / 5; math.Abs(l-lAll) > 1e-6*math.Abs(lAll) {
				t.Errorf("weighted mean of batch losses %v, loss of all rows %v", l, lAll)
			}
			assertClose(t, "n-weighted mean of batch gradients", toF32(weighted), gAll, 1e-5, 1e-7)
		})
	}
}

func TestCNNGradientDoesNotAccumulate(t *testing.T) {
	cfg := testCNNConfig(TaskMulticlass, ActivationTanh, 4, false)
	cfg.Dropout = 0.3
	m := mustCNN(t, cfg)
	again := mustCNN(t, cfg)
	p := randomParams(m, 1)
	x, y := randomBatch(1, 4, cnnInputs(cfg), m.OutputSize(), cfg.Task)
	pCopy, xCopy, yCopy := slices.Clone(p), slices.Clone(x), slices.Clone(y)
	g1, l1 := gradient(t, m, p, x, y, 4)
	// Dropout masks depend on the call count, so compare a fresh model's first call with
	// the first call here, and the second calls of both after different work in between.
	g1b, l1b := gradient(t, again, p, x, y, 4)
	if l1 != l1b || !slices.Equal(g1, g1b) {
		t.Fatalf("two models with the same seed differ on their first call: loss %v vs %v", l1, l1b)
	}
	gradient(t, m, randomParams(m, 2), x, y, 2)
	if err := m.Predict(randomParams(m, 3), x, 4, make([]float32, 4*m.OutputSize())); err != nil {
		t.Fatal(err)
	}
	g2, l2 := gradient(t, m, p, x, y, 4)
	gradient(t, again, p, x, y, 4)
	g2b, l2b := gradient(t, again, p, x, y, 4)
	if l2 != l2b || !slices.Equal(g2, g2b) {
		t.Fatalf("third calls differ after different work in between: loss %v vs %v", l2, l2b)
	}
	if slices.Equal(g1, g2) {
		t.Fatalf("dropout masks did not change between calls: loss %v, %v", l1, l2)
	}
	if !slices.Equal(p, pCopy) || !slices.Equal(x, xCopy) || !slices.Equal(y, yCopy) {
		t.Fatal("Gradient modified its inputs")
	}
}

// TestCNNDropout checks that dropout acts on the dense layers only: without dense hidden
// layers it changes nothing.
func TestCNNDropout(t *testing.T) {
	for _, tt := range []struct {
		name    string
		dense   []int
		changes bool
	}{
		{"dense layers", []int{8}, true},
		{"no dense layers", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testCNNConfig(TaskBinary, ActivationReLU, 4, true)
			cfg.Dense = tt.dense
			plain := mustCNN(t, cfg)
			cfg.Dropout = 0.5
			drop := mustCNN(t, cfg)
			p := randomParams(plain, 3)
			x, y := randomBatch(2, 4, cnnInputs(cfg), 1, TaskBinary)
			gPlain, _ := gradient(t, plain, p, x, y, 4)
			gDrop, _ := gradient(t, drop, p, x, y, 4)
			if changed := !slices.Equal(gPlain, gDrop); changed != tt.changes {
				t.Fatalf("dropout changed the gradient: %v, want %v", changed, tt.changes)
			}
			oPlain, oDrop := make([]float32, 4), make([]float32, 4)
			if err := plain.Predict(p, x, 4, oPlain); err != nil {
				t.Fatal(err)
			}
			if err := drop.Predict(p, x, 4, oDrop); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(oPlain, oDrop) {
				t.Fatal("Predict drops units")
			}
		})
	}
}

// referenceForward computes a CNN's outputs for one image in plain Go, straight from
// the documented layout: weights [filters, inC, k, k], NCHW images, floor max-pooling,
// channel-major flattening, dense weights [in, out].
func referenceForward(cfg CNNConfig, m Model, p, img []float32) []float64 {
	act := func(v float64) float64 {
		switch cfg.Activation {
		case ActivationTanh:
			return math.Tanh(v)
		case ActivationSigmoid:
			return 1 / (1 + math.Exp(-v))
		case ActivationLeakyReLU:
			if v < 0 {
				return LeakyReLUSlope * v
			}
			return v
		}
		return math.Max(v, 0)
	}
	tensorOf := func(name string) []float32 {
		for _, ti := range m.Layout() {
			if ti.Name == name {
				return p[ti.Offset : ti.Offset+ti.Size]
			}
		}
		panic("no tensor " + name)
	}
	h := make([]float64, len(img))
	for i, v := range img {
		h[i] = float64(v)
	}
	c, hh, ww := cfg.Channels, cfg.Height, cfg.Width
	for li, l := range cfg.Conv {
		s := max(l.Stride, 1)
		w, b := tensorOf("conv"+string(rune('0'+li))+".weight"), tensorOf("conv"+string(rune('0'+li))+".bias")
		oh, ow := (hh+2*l.Padding-l.Kernel)/s+1, (ww+2*l.Padding-l.Kernel)/s+1
		out := make([]float64, l.Filters*oh*ow)
		for f := range l.Filters {
			for y := range oh {
				for x := range ow {
					sum := float64(b[f])
					for ci := range c {
						for ky := range l.Kernel {
							for kx := range l.Kernel {
								iy, ix := y*s+ky-l.Padding, x*s+kx-l.Padding
								if iy < 0 || ix < 0 || iy >= hh || ix >= ww {
									continue
								}
								sum += float64(w[((f*c+ci)*l.Kernel+ky)*l.Kernel+kx]) * h[(ci*hh+iy)*ww+ix]
							}
						}
					}
					out[(f*oh+y)*ow+x] = act(sum)
				}
			}
		}
		c, hh, ww, h = l.Filters, oh, ow, out
		if cfg.Pool > 1 {
			ph, pw := hh/cfg.Pool, ww/cfg.Pool
			pooled := make([]float64, c*ph*pw)
			for ci := range c {
				for y := range ph {
					for x := range pw {
						best := math.Inf(-1)
						for dy := range cfg.Pool {
							for dx := range cfg.Pool {
								best = math.Max(best, h[(ci*hh+y*cfg.Pool+dy)*ww+x*cfg.Pool+dx])
							}
						}
						pooled[(ci*ph+y)*pw+x] = best
					}
				}
			}
			hh, ww, h = ph, pw, pooled
		}
	}
	names := []string{}
	for i := range cfg.Dense {
		names = append(names, "dense"+string(rune('0'+i)))
	}
	names = append(names, "out")
	for li, name := range names {
		w, b := tensorOf(name+".weight"), tensorOf(name+".bias")
		out := make([]float64, len(b))
		for j := range out {
			sum := float64(b[j])
			for i, v := range h {
				sum += v * float64(w[i*len(b)+j])
			}
			if li < len(names)-1 {
				sum = act(sum)
			}
			out[j] = sum
		}
		h = out
	}
	switch cfg.Task {
	case TaskBinary:
		h[0] = 1 / (1 + math.Exp(-h[0]))
	case TaskMulticlass:
		mx, sum := slices.Max(h), 0.0
		for i := range h {
			h[i] = math.Exp(h[i] - mx)
			sum += h[i]
		}
		for i := range h {
			h[i] /= sum
		}
	}
	return h
}

// TestCNNPredictMatchesReference pins the documented semantics (layout, NCHW input,
// flatten order) against a plain-Go forward pass, and checks Predict for any n: more
// rows than the batch (chunked), fewer, and none.
func TestCNNPredictMatchesReference(t *testing.T) {
	tests := []struct {
		name string
		cfg  CNNConfig
	}{
		{"multiclass", testCNNConfig(TaskMulticlass, ActivationReLU, 3, false)},
		{"binary/sigmoid", testCNNConfig(TaskBinary, ActivationSigmoid, 3, false)},
		{"deep/regression", testCNNDeepConfig(TaskRegression, ActivationLeakyReLU, 3, false)},
		{"odd size and pool", CNNConfig{Height: 7, Width: 5, Channels: 2, Conv: []ConvLayer{{Filters: 2, Kernel: 2}}, Pool: 2, Dense: []int{3}, Outputs: 4, Task: TaskMulticlass, BatchSize: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCNN(t, tt.cfg)
			in, k := cnnInputs(tt.cfg), m.OutputSize()
			p := randomParams(m, 6)
			x, _ := randomBatch(4, 7, in, k, tt.cfg.Task)
			for _, n := range []int{7, 2, 0} {
				out := make([]float32, 7*k+1)
				out[n*k] = 42 // just past the rows: must stay untouched
				if err := m.Predict(p, x, n, out); err != nil {
					t.Fatalf("Predict(%d rows): %v", n, err)
				}
				for r := range n {
					want := referenceForward(tt.cfg, m, p, x[r*in:(r+1)*in])
					assertClose(t, "row", out[r*k:(r+1)*k], toF32(want), 1e-4, 1e-5)
				}
				if out[n*k] != 42 {
					t.Fatalf("Predict(%d rows) wrote past its rows", n)
				}
			}
		})
	}
}

func TestCNNErrors(t *testing.T) {
	cfg := testCNNConfig(TaskMulticlass, ActivationLeakyReLU, 4, false)
	m := mustCNN(t, cfg)
	in := cnnInputs(cfg)
	p := randomParams(m, 1)
	x, y := randomBatch(1, 4, in, 3, TaskMulticlass)
	nanParam := slices.Clone(p)
	nanParam[5] = float32(math.NaN())
	infParam := slices.Clone(p)
	infParam[m.NumParams()-1] = float32(math.Inf(1))
	huge := slices.Clone(p)
	for i := range m.Layout()[0].Size {
		huge[i] = 3e38 // overflows the convolution to ±Inf and NaN
	}
	nanX := slices.Clone(x)
	nanX[in+3] = float32(math.NaN())
	tests := []struct {
		name    string
		p, x, y []float32
		n       int
		grad    int
		want    string
	}{
		{"short params", p[:10], x, y, 4, m.NumParams(), "params has 10 values"},
		{"short grad", p, x, y, 4, 3, "grad has 3 values"},
		{"zero rows", p, x, y, 0, m.NumParams(), "row count 0 outside [1, 4]"},
		{"too many rows", p, x, y, 5, m.NumParams(), "row count 5 outside"},
		{"short x", p, x[:in*2-1], y, 2, m.NumParams(), "x has 143 values, 2 rows of 72 inputs need 144"},
		{"short y", p, x, y[:1], 2, m.NumParams(), "y has 1 values"},
		{"NaN pixel", p, nanX, y, 4, m.NumParams(), "x row 1 input 3: value is not finite"},
		{"bad class", p, x, []float32{0, 3, 1, 1}, 4, m.NumParams(), "y[1]: class index 3"},
		{"NaN param", nanParam, x, y, 4, m.NumParams(), "params[5] (conv0.weight): value is not finite"},
		{"Inf param", infParam, x, y, 4, m.NumParams(), "(out.bias): value is not finite"},
		{"overflow", huge, x, y, 4, m.NumParams(), "model: gradient: conv0.weight: parameters too large: activations could reach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Gradient(tt.p, tt.x, tt.y, tt.n, make([]float32, tt.grad))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Gradient error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	// The model still works after the errors.
	if _, err := m.Gradient(p, x, y, 4, make([]float32, m.NumParams())); err != nil {
		t.Fatalf("Gradient after errors: %v", err)
	}
	for _, tt := range []struct {
		name string
		p    []float32
		n    int
		out  int
		want string
	}{
		{"negative n", p, -1, 12, "row count -1 is negative"},
		{"short out", p, 4, 11, "out has 11 values"},
		{"NaN param", nanParam, 4, 12, "params[5] (conv0.weight): value is not finite"},
	} {
		if err := m.Predict(tt.p, x, tt.n, make([]float32, tt.out)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Predict %s: error = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	if err := m.Predict(huge, x, 4, make([]float32, 12)); err == nil || !strings.Contains(err.Error(), "parameters too large") {
		t.Errorf("Predict with huge parameters: error = %v", err)
	}
}

// quadrantImages draws n 8x8 single-channel images of noise with one bright 3x3 blob in
// a random quadrant; the label is the quadrant (0..3).
func quadrantImages(seed uint64, n int) (x, y []float32) {
	const side = 8
	rng := rand.New(rand.NewPCG(seed, 17))
	x = make([]float32, n*side*side)
	y = make([]float32, n)
	for i := range n {
		img := x[i*side*side : (i+1)*side*side]
		for j := range img {
			img[j] = float32(rng.Float64() * 0.3)
		}
		q := rng.IntN(4)
		y[i] = float32(q)
		top, left := (q/2)*4+rng.IntN(2), (q%2)*4+rng.IntN(2)
		for dy := range 3 {
			for dx := range 3 {
				img[(top+dy)*side+left+dx] += 0.7
			}
		}
	}
	return x, y
}

// TestCNNTrainingLoop trains with plain SGD in the test: which quadrant is bright.
func TestCNNTrainingLoop(t *testing.T) {
	const n, batch, side = 256, 32, 8
	x, y := quadrantImages(1, n)
	m := mustCNN(t, CNNConfig{Height: side, Width: side, Channels: 1, Conv: []ConvLayer{{Filters: 4, Kernel: 3, Padding: 1}}, Pool: 2, Dense: []int{16}, Outputs: 4, Task: TaskMulticlass, BatchSize: batch, Seed: 1})
	p := m.InitParams(3)
	g := make([]float32, m.NumParams())
	var first, last float64
	for epoch := range 15 {
		var sum float64
		for lo := 0; lo < n; lo += batch {
			rows := min(batch, n-lo)
			l, err := m.Gradient(p, x[lo*side*side:], y[lo:], rows, g)
			if err != nil {
				t.Fatal(err)
			}
			sum += l * float64(rows)
			for i := range p {
				p[i] -= 0.1 * g[i]
			}
		}
		if epoch == 0 {
			first = sum / n
		}
		last = sum / n
	}
	// Held-out images from another seed.
	xt, yt := quadrantImages(2, 200)
	out := make([]float32, 200*4)
	if err := m.Predict(p, xt, 200, out); err != nil {
		t.Fatal(err)
	}
	correct := 0
	for i := range 200 {
		row := out[i*4 : i*4+4]
		if float32(slices.Index(row, slices.Max(row))) == yt[i] {
			correct++
		}
	}
	acc := float64(correct) / 200
	t.Logf("held-out accuracy %.3f, loss %.4f -> %.4f", acc, first, last)
	if acc <= 0.9 || last >= first {
		t.Fatalf("held-out accuracy %.3f (want > 0.9), loss %.4f -> %.4f", acc, first, last)
	}
}

// BenchmarkCNNGradient is the reference Fashion-MNIST network: 28x28x1, conv 32-3,
// pool 2, conv 64-3, pool 2, dense 128, 10 classes, batch 64.
func BenchmarkCNNGradient(b *testing.B) {
	for _, f64 := range []bool{false, true} {
		b.Run(map[bool]string{false: "float32", true: "float64"}[f64], func(b *testing.B) {
			cfg := CNNConfig{
				Height: 28, Width: 28, Channels: 1,
				Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 64, Kernel: 3}}, Pool: 2,
				Dense: []int{128}, Outputs: 10, Task: TaskMulticlass, BatchSize: 64, Float64: f64,
			}
			m := mustCNN(b, cfg)
			p := m.InitParams(1)
			x, y := randomBatch(1, 64, cnnInputs(cfg), 10, TaskMulticlass)
			g := make([]float32, m.NumParams())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.Gradient(p, x, y, 64, g); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/image")
		})
	}
}
