package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var (
	allTasks       = []string{TaskBinary, TaskMulticlass, TaskRegression}
	allActivations = []string{ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU}
)

// testConfig is a small two-hidden-layer MLP for task.
func testConfig(task, activation string, batch int, f64 bool) MLPConfig {
	k := 1
	if task == TaskMulticlass {
		k = 3
	}
	return MLPConfig{Inputs: 4, Hidden: []int{5, 3}, Activation: activation, Outputs: k, Task: task, BatchSize: batch, Float64: f64, Seed: 7}
}

func mustMLP(t testing.TB, cfg MLPConfig) Model {
	t.Helper()
	m, err := NewMLP(cfg)
	if err != nil {
		t.Fatalf("NewMLP(%+v): %v", cfg, err)
	}
	return m
}

// randomBatch returns n rows of normal features and labels valid for the task.
func randomBatch(seed uint64, n, inputs, outputs int, task string) (x, y []float32) {
	rng := rand.New(rand.NewPCG(seed, 99))
	x = make([]float32, n*inputs)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y = make([]float32, n)
	for i := range y {
		switch task {
		case TaskBinary:
			y[i] = float32(rng.IntN(2))
		case TaskMulticlass:
			y[i] = float32(rng.IntN(outputs))
		default:
			y[i] = float32(rng.NormFloat64())
		}
	}
	return x, y
}

// randomParams spreads parameters (biases included) so no unit sits at an activation kink.
func randomParams(m Model, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 5))
	p := make([]float32, m.NumParams())
	for i := range p {
		p[i] = float32(rng.NormFloat64() * 0.7)
	}
	return p
}

func gradient(t testing.TB, m Model, p, x, y []float32, n int) ([]float32, float64) {
	t.Helper()
	g := make([]float32, m.NumParams())
	for i := range g {
		g[i] = 12345 // must be overwritten
	}
	loss, err := m.Gradient(p, x, y, n, g)
	if err != nil {
		t.Fatalf("Gradient: %v", err)
	}
	return g, loss
}

func assertClose(t *testing.T, what string, got, want []float32, rel, abs float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if d := math.Abs(g - w); d > abs+rel*math.Max(math.Abs(g), math.Abs(w)) || math.IsNaN(d) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, g, w, d)
		}
	}
}

func TestNewMLPValidation(t *testing.T) {
	good := MLPConfig{Inputs: 3, Hidden: []int{4}, Activation: ActivationReLU, Outputs: 1, Task: TaskBinary, BatchSize: 8}
	tests := []struct {
		name   string
		change func(*MLPConfig)
		want   string
	}{
		{"ok", func(*MLPConfig) {}, ""},
		{"linear model", func(c *MLPConfig) { c.Hidden = nil }, ""},
		{"zero inputs", func(c *MLPConfig) { c.Inputs = 0 }, "inputs: must be >= 1"},
		{"zero hidden width", func(c *MLPConfig) { c.Hidden = []int{4, 0} }, "hidden[1]: must be >= 1"},
		{"unknown activation", func(c *MLPConfig) { c.Activation = "gelu" }, `activation: "gelu" is not one of`},
		{"empty activation", func(c *MLPConfig) { c.Activation = "" }, `activation: ""`},
		{"unknown task", func(c *MLPConfig) { c.Task = "ranking" }, `task: "ranking"`},
		{"binary with 2 outputs", func(c *MLPConfig) { c.Outputs = 2 }, "outputs: task binary_classification needs exactly 1"},
		{"multiclass with 1 output", func(c *MLPConfig) { c.Task = TaskMulticlass }, "outputs: task multiclass_classification needs >= 2"},
		{"zero batch", func(c *MLPConfig) { c.BatchSize = 0 }, "batchSize: must be >= 1"},
		{"dropout 1", func(c *MLPConfig) { c.Dropout = 1 }, "dropout: must be in [0, 1)"},
		{"dropout negative", func(c *MLPConfig) { c.Dropout = -0.1 }, "dropout: must be in [0, 1)"},
		{"dropout NaN", func(c *MLPConfig) { c.Dropout = math.NaN() }, "dropout: must be in [0, 1)"},
		{"too many params", func(c *MLPConfig) { c.Hidden = []int{1 << 20, 1 << 20} }, "hidden: the model would have more than"},
		{"too many activations", func(c *MLPConfig) { c.BatchSize = 1 << 25 }, "batchSize: 33554432 rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			m, err := NewMLP(cfg)
			if tt.want == "" {
				if err != nil || m == nil {
					t.Fatalf("NewMLP: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewMLP error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	m := mustMLP(t, MLPConfig{Inputs: 4, Hidden: []int{5, 3}, Activation: ActivationTanh, Outputs: 3, Task: TaskMulticlass, BatchSize: 2})
	want := []TensorInfo{
		{"dense0.weight", []int{4, 5}, 0, 20},
		{"dense0.bias", []int{5}, 20, 5},
		{"dense1.weight", []int{5, 3}, 25, 15},
		{"dense1.bias", []int{3}, 40, 3},
		{"out.weight", []int{3, 3}, 43, 9},
		{"out.bias", []int{3}, 52, 3},
	}
	got := m.Layout()
	if len(got) != len(want) {
		t.Fatalf("layout has %d tensors, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || !slices.Equal(got[i].Shape, want[i].Shape) || got[i].Offset != want[i].Offset || got[i].Size != want[i].Size {
			t.Errorf("layout[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if m.NumParams() != 55 || m.OutputSize() != 3 || m.BatchSize() != 2 {
		t.Errorf("NumParams, OutputSize, BatchSize = %d, %d, %d; want 55, 3, 2", m.NumParams(), m.OutputSize(), m.BatchSize())
	}

	hashes := map[string]string{}
	for name, cfg := range map[string]MLPConfig{
		"base":             {Inputs: 4, Hidden: []int{5, 3}, Activation: ActivationTanh, Outputs: 3, Task: TaskMulticlass, BatchSize: 2},
		"other batch+act":  {Inputs: 4, Hidden: []int{5, 3}, Activation: ActivationReLU, Outputs: 3, Task: TaskMulticlass, BatchSize: 9, Float64: true},
		"other width":      {Inputs: 4, Hidden: []int{3, 5}, Activation: ActivationTanh, Outputs: 3, Task: TaskMulticlass, BatchSize: 2},
		"other input size": {Inputs: 5, Hidden: []int{5, 3}, Activation: ActivationTanh, Outputs: 3, Task: TaskMulticlass, BatchSize: 2},
	} {
		h := mustMLP(t, cfg).LayoutHash()
		if len(h) != 64 {
			t.Fatalf("%s: hash %q is not hex sha256", name, h)
		}
		hashes[name] = h
	}
	if hashes["base"] != m.LayoutHash() || hashes["base"] != hashes["other batch+act"] {
		t.Errorf("same layout, different hashes: %v", hashes)
	}
	if hashes["base"] == hashes["other width"] || hashes["base"] == hashes["other input size"] {
		t.Errorf("different layouts, same hash: %v", hashes)
	}
}

func TestInitParams(t *testing.T) {
	for _, act := range allActivations {
		t.Run(act, func(t *testing.T) {
			m := mustMLP(t, MLPConfig{Inputs: 50, Hidden: []int{64, 32}, Activation: act, Outputs: 1, Task: TaskBinary, BatchSize: 4})
			a, b, c := m.InitParams(1), m.InitParams(1), m.InitParams(2)
			if !slices.Equal(a, b) {
				t.Fatal("InitParams(1) differs between calls")
			}
			if slices.Equal(a, c) {
				t.Fatal("InitParams(1) equals InitParams(2)")
			}
			he := act == ActivationReLU || act == ActivationLeakyReLU
			for _, ti := range m.Layout() {
				vals := a[ti.Offset : ti.Offset+ti.Size]
				if strings.HasSuffix(ti.Name, ".bias") {
					if slices.ContainsFunc(vals, func(v float32) bool { return v != 0 }) {
						t.Errorf("%s is not zero", ti.Name)
					}
					continue
				}
				fanIn, fanOut := float64(ti.Shape[0]), float64(ti.Shape[1])
				limit := math.Sqrt(6 / (fanIn + fanOut))
				if he && ti.Name != "out.weight" {
					limit = math.Sqrt(6 / fanIn)
				}
				var maxAbs, sumSq float64
				for _, v := range vals {
					maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
					sumSq += float64(v) * float64(v)
				}
				// Uniform(-l, l) has variance l²/3; with >= 32 values the sample is close.
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

// TestGradientFiniteDifferences checks every parameter's gradient against central
// differences of the loss, in float64 mode, with padded rows in the batch.
func TestGradientFiniteDifferences(t *testing.T) {
	for _, task := range allTasks {
		for _, act := range allActivations {
			t.Run(task+"/"+act, func(t *testing.T) {
				m := mustMLP(t, testConfig(task, act, 6, true))
				k := m.OutputSize()
				p := randomParams(m, 11)
				x, y := randomBatch(3, 4, 4, k, task)
				g, loss := gradient(t, m, p, x, y, 4)
				if loss <= 0 {
					t.Fatalf("loss = %v, want > 0", loss)
				}
				scratch := make([]float32, m.NumParams())
				lossAt := func(q []float32) float64 {
					l, err := m.Gradient(q, x, y, 4, scratch)
					if err != nil {
						t.Fatal(err)
					}
					return l
				}
				q := slices.Clone(p)
				// A small step keeps relu units on one side of their kink (with these
				// seeds one pre-activation sits at -0.0017); the loss is float64, and
				// the denominator is the float32 step actually taken.
				const eps = 1e-5
				for i := range p {
					q[i] = p[i] + eps
					hi, up := float64(q[i]), lossAt(q)
					q[i] = p[i] - eps
					lo, down := float64(q[i]), lossAt(q)
					q[i] = p[i]
					fd := (up - down) / (hi - lo)
					if d := math.Abs(fd - float64(g[i])); d > 1e-4*math.Max(math.Abs(fd), math.Abs(float64(g[i])))+1e-6 {
						t.Errorf("param %d (%s): gradient %v, finite difference %v", i, paramName(m, i), g[i], fd)
					}
				}
			})
		}
	}
}

func paramName(m Model, i int) string {
	for _, ti := range m.Layout() {
		if i >= ti.Offset && i < ti.Offset+ti.Size {
			return ti.Name
		}
	}
	return "?"
}

func TestFloat32AgreesWithFloat64(t *testing.T) {
	for _, task := range allTasks {
		for _, act := range allActivations {
			t.Run(task+"/"+act, func(t *testing.T) {
				m32 := mustMLP(t, testConfig(task, act, 8, false))
				m64 := mustMLP(t, testConfig(task, act, 8, true))
				p := randomParams(m32, 4)
				x, y := randomBatch(8, 7, 4, m32.OutputSize(), task)
				g32, l32 := gradient(t, m32, p, x, y, 7)
				g64, l64 := gradient(t, m64, p, x, y, 7)
				if math.Abs(l32-l64) > 1e-3*math.Abs(l64) {
					t.Errorf("loss float32 %v, float64 %v", l32, l64)
				}
				assertClose(t, "gradient", g32, g64, 1e-3, 1e-5)
				o32 := make([]float32, 7*m32.OutputSize())
				o64 := make([]float32, 7*m32.OutputSize())
				if err := m32.Predict(p, x, 7, o32); err != nil {
					t.Fatal(err)
				}
				if err := m64.Predict(p, x, 7, o64); err != nil {
					t.Fatal(err)
				}
				assertClose(t, "predict", o32, o64, 1e-3, 1e-6)
			})
		}
	}
}

// TestMaskedRowsDoNotContribute fills the padding rows with other data: the gradient of
// n rows in a big batch equals the gradient of the same rows in a batch of exactly n.
func TestMaskedRowsDoNotContribute(t *testing.T) {
	for _, task := range allTasks {
		for _, f64 := range []bool{false, true} {
			t.Run(task+map[bool]string{false: "/float32", true: "/float64"}[f64], func(t *testing.T) {
				exact := mustMLP(t, testConfig(task, ActivationTanh, 3, f64))
				big := mustMLP(t, testConfig(task, ActivationTanh, 10, f64))
				p := randomParams(exact, 2)
				x, y := randomBatch(5, 10, 4, exact.OutputSize(), task)
				for i := 3 * 4; i < len(x); i++ {
					x[i] *= 100
				}
				gExact, lExact := gradient(t, exact, p, x[:12], y[:3], 3)
				gBig, lBig := gradient(t, big, p, x, y, 3)
				if math.Abs(lExact-lBig) > 1e-6*math.Abs(lExact) {
					t.Errorf("loss of 3 rows: batch 3 %v, batch 10 %v", lExact, lBig)
				}
				assertClose(t, "gradient", gBig, gExact, 1e-5, 1e-7)
			})
		}
	}
}

// TestGradientIsMeanOfRows checks what the parameter servers rely on: the gradient of
// a batch is the mean of its rows' gradients, so batch gradients averaged with weights
// n_i equal the gradient of all rows.
func TestGradientIsMeanOfRows(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			m := mustMLP(t, testConfig(task, ActivationReLU, 5, true))
			p := randomParams(m, 8)
			x, y := randomBatch(9, 5, 4, m.OutputSize(), task)
			gAll, lAll := gradient(t, m, p, x, y, 5)

			mean := make([]float64, m.NumParams())
			var meanLoss float64
			for r := range 5 {
				g, l := gradient(t, m, p, x[r*4:], y[r:], 1)
				for i, v := range g {
					mean[i] += float64(v) / 5
				}
				meanLoss += l / 5
			}
			if math.Abs(meanLoss-lAll) > 1e-6*math.Abs(lAll) {
				t.Errorf("mean of row losses %v, batch loss %v", meanLoss, lAll)
			}
			assertClose(t, "mean of row gradients", toF32(mean), gAll, 1e-5, 1e-7)

			gA, _ := gradient(t, m, p, x[:2*4], y[:2], 2)
			gB, _ := gradient(t, m, p, x[2*4:], y[2:], 3)
			weighted := make([]float64, m.NumParams())
			for i := range weighted {
				weighted[i] = (2*float64(gA[i]) + 3*float64(gB[i])) / 5
			}
			assertClose(t, "n-weighted mean of batch gradients", toF32(weighted), gAll, 1e-5, 1e-7)
		})
	}
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = float32(f)
	}
	return out
}

func TestGradientDoesNotAccumulate(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			m := mustMLP(t, testConfig(task, ActivationReLU, 4, false))
			p := randomParams(m, 1)
			x, y := randomBatch(1, 4, 4, m.OutputSize(), task)
			pCopy, xCopy, yCopy := slices.Clone(p), slices.Clone(x), slices.Clone(y)
			g1, l1 := gradient(t, m, p, x, y, 4)
			// A different call in between must not leak into the next one either.
			other := randomParams(m, 2)
			gradient(t, m, other, x, y, 2)
			if err := m.Predict(other, x, 4, make([]float32, 4*m.OutputSize())); err != nil {
				t.Fatal(err)
			}
			g2, l2 := gradient(t, m, p, x, y, 4)
			if l1 != l2 || !slices.Equal(g1, g2) {
				t.Fatalf("identical calls differ: loss %v vs %v", l1, l2)
			}
			if !slices.Equal(p, pCopy) || !slices.Equal(x, xCopy) || !slices.Equal(y, yCopy) {
				t.Fatal("Gradient modified its inputs")
			}
		})
	}
}

func TestDropout(t *testing.T) {
	cfg := testConfig(TaskBinary, ActivationReLU, 16, true)
	cfg.Hidden = []int{32, 32}
	cfg.Dropout = 0.5
	a, b := mustMLP(t, cfg), mustMLP(t, cfg)
	noDrop := cfg
	noDrop.Dropout = 0
	plain := mustMLP(t, noDrop)
	p := randomParams(a, 3)
	x, y := randomBatch(2, 16, 4, 1, TaskBinary)

	t.Run("reproducible per seed and call", func(t *testing.T) {
		a1, la1 := gradient(t, a, p, x, y, 16)
		a2, la2 := gradient(t, a, p, x, y, 16)
		b1, lb1 := gradient(t, b, p, x, y, 16)
		b2, lb2 := gradient(t, b, p, x, y, 16)
		if la1 != lb1 || la2 != lb2 || !slices.Equal(a1, b1) || !slices.Equal(a2, b2) {
			t.Fatal("two models with the same seed drew different dropout masks")
		}
		if la1 == la2 || slices.Equal(a1, a2) {
			t.Fatal("consecutive calls drew the same dropout masks")
		}
		gp, lp := gradient(t, plain, p, x, y, 16)
		if lp == la1 || slices.Equal(gp, a1) {
			t.Fatal("dropout 0.5 changed nothing")
		}
	})
	t.Run("seed changes masks", func(t *testing.T) {
		other := cfg
		other.Seed++
		c := mustMLP(t, other)
		fresh := mustMLP(t, cfg)
		g1, _ := gradient(t, fresh, p, x, y, 16)
		g2, _ := gradient(t, c, p, x, y, 16)
		if slices.Equal(g1, g2) {
			t.Fatal("different seeds drew the same masks")
		}
	})
	t.Run("predict does not drop", func(t *testing.T) {
		o1, o2 := make([]float32, 16), make([]float32, 16)
		if err := a.Predict(p, x, 16, o1); err != nil {
			t.Fatal(err)
		}
		if err := plain.Predict(p, x, 16, o2); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o1, o2) {
			t.Fatal("Predict with dropout differs from Predict without")
		}
	})
	t.Run("inverted scaling keeps the mean", func(t *testing.T) {
		// With dropout only before the (linear) output layer, the expected logit equals
		// the plain logit, so for regression the out.bias gradient 2·mean(z - y)
		// averages to the plain one.
		cfg := MLPConfig{Inputs: 4, Hidden: []int{32}, Activation: ActivationTanh, Outputs: 1, Task: TaskRegression, BatchSize: 16, Dropout: 0.3, Float64: true}
		drop := mustMLP(t, cfg)
		cfg.Dropout = 0
		plain := mustMLP(t, cfg)
		p := randomParams(drop, 3)
		bias := drop.Layout()[3].Offset
		gp, _ := gradient(t, plain, p, x, y, 16)
		const calls = 400
		var sum, sumSq float64
		for range calls {
			g, _ := gradient(t, drop, p, x, y, 16)
			v := float64(g[bias])
			sum += v
			sumSq += v * v
		}
		mean := sum / calls
		stderr := math.Sqrt((sumSq/calls - mean*mean) / calls)
		if d := math.Abs(mean - float64(gp[bias])); d > 5*stderr || stderr == 0 {
			t.Fatalf("mean out.bias gradient with dropout %v ± %v, without %v", mean, stderr, gp[bias])
		}
	})
}

// TestPredictConsistentWithLoss recomputes Gradient's loss from Predict's outputs, and
// checks that chunking (n larger than the batch, n = 0) does not change a row's output.
func TestPredictConsistentWithLoss(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			m := mustMLP(t, testConfig(task, ActivationSigmoid, 4, false))
			k := m.OutputSize()
			p := randomParams(m, 6)
			x, y := randomBatch(4, 11, 4, k, task)
			out := make([]float32, 11*k)
			if err := m.Predict(p, x, 11, out); err != nil {
				t.Fatal(err)
			}
			_, loss := gradient(t, m, p, x, y, 4)
			var want float64
			for i := range 4 {
				switch task {
				case TaskBinary:
					pr := float64(out[i])
					want -= float64(y[i])*math.Log(pr) + (1-float64(y[i]))*math.Log(1-pr)
				case TaskMulticlass:
					var sum float64
					for c := range k {
						sum += float64(out[i*k+c])
					}
					if math.Abs(sum-1) > 1e-5 {
						t.Errorf("row %d probabilities sum to %v", i, sum)
					}
					want -= math.Log(float64(out[i*k+int(y[i])]))
				default:
					d := float64(out[i] - y[i])
					want += d * d
				}
			}
			want /= 4
			if math.Abs(want-loss) > 1e-5*math.Abs(want) {
				t.Errorf("loss %v, recomputed from Predict %v", loss, want)
			}
			// Row 9 alone, and rows 8..10 as a short chunk, give the same outputs.
			one := make([]float32, k)
			if err := m.Predict(p, x[9*4:10*4], 1, one); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "row 9 alone", one, out[9*k:10*k], 1e-6, 0)
			if err := m.Predict(p, nil, 0, nil); err != nil {
				t.Fatalf("Predict of 0 rows: %v", err)
			}
		})
	}
}

func TestGradientErrors(t *testing.T) {
	m := mustMLP(t, testConfig(TaskMulticlass, ActivationReLU, 4, false))
	np := m.NumParams()
	p := randomParams(m, 1)
	x, y := randomBatch(1, 4, 4, 3, TaskMulticlass)
	nan := slices.Clone(x)
	nan[6] = float32(math.NaN())
	tests := []struct {
		name    string
		p, x, y []float32
		n       int
		g       []float32
		want    string
	}{
		{"short params", p[:np-1], x, y, 4, make([]float32, np), "params has"},
		{"short grad", p, x, y, 4, make([]float32, 1), "grad has 1 values"},
		{"zero rows", p, x, y, 0, make([]float32, np), "row count 0 outside [1, 4]"},
		{"too many rows", p, x, y, 5, make([]float32, np), "row count 5 outside [1, 4]"},
		{"short x", p, x[:7], y, 2, make([]float32, np), "x has 7 values"},
		{"short y", p, x, y[:1], 2, make([]float32, np), "y has 1 values"},
		{"NaN feature", p, nan, y, 4, make([]float32, np), "x row 1 input 2: value is not finite"},
		{"class out of range", p, x, []float32{0, 3, 1, 1}, 4, make([]float32, np), "y[1]: class index 3"},
		{"fractional class", p, x, []float32{0.5, 1, 1, 1}, 4, make([]float32, np), "y[0]: class index 0.5"},
		{"NaN params", slices.Repeat([]float32{float32(math.NaN())}, np), x, y, 4, make([]float32, np), "loss is NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Gradient(tt.p, tt.x, tt.y, tt.n, tt.g)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("binary label outside [0,1]", func(t *testing.T) {
		b := mustMLP(t, testConfig(TaskBinary, ActivationReLU, 4, false))
		_, err := b.Gradient(randomParams(b, 1), x, []float32{0, 2}, 2, make([]float32, b.NumParams()))
		if err == nil || !strings.Contains(err.Error(), "y[1]: binary label 2 outside [0, 1]") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("predict", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			n    int
			x    []float32
			out  []float32
			want string
		}{
			{"negative n", -1, x, make([]float32, 12), "row count -1 is negative"},
			{"short x", 3, x[:11], make([]float32, 9), "x has 11 values"},
			{"short out", 3, x, make([]float32, 8), "out has 8 values"},
			{"NaN", 4, nan, make([]float32, 12), "not finite"},
		} {
			if err := m.Predict(p, tc.x, tc.n, tc.out); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error = %v, want it to contain %q", tc.name, err, tc.want)
			}
		}
	})
}

// TestTrainingLoop trains with plain SGD in the test on separable synthetic data.
func TestTrainingLoop(t *testing.T) {
	tests := []struct {
		task string
		act  string
		k    int
	}{
		{TaskBinary, ActivationReLU, 1},
		{TaskBinary, ActivationTanh, 1},
		{TaskMulticlass, ActivationLeakyReLU, 3},
		{TaskMulticlass, ActivationSigmoid, 3},
	}
	for _, tt := range tests {
		t.Run(tt.task+"/"+tt.act, func(t *testing.T) {
			const n, inputs, batch = 600, 4, 32
			rng := rand.New(rand.NewPCG(1, 2))
			x := make([]float32, n*inputs)
			y := make([]float32, n)
			for i := range n {
				for j := range inputs {
					x[i*inputs+j] = float32(rng.NormFloat64())
				}
				a, b := x[i*inputs], x[i*inputs+1]
				switch {
				case tt.k == 1 && a+b > 0:
					y[i] = 1
				case tt.k == 3 && a > 0.5:
					y[i] = 2
				case tt.k == 3 && b > 0:
					y[i] = 1
				}
			}
			m := mustMLP(t, MLPConfig{Inputs: inputs, Hidden: []int{16}, Activation: tt.act, Outputs: tt.k, Task: tt.task, BatchSize: batch, Seed: 1})
			p := m.InitParams(3)
			g := make([]float32, m.NumParams())
			lr := float32(0.5)
			var first, last float64
			for epoch := range 40 {
				var sum float64
				for lo := 0; lo < n; lo += batch {
					rows := min(batch, n-lo)
					l, err := m.Gradient(p, x[lo*inputs:], y[lo:], rows, g)
					if err != nil {
						t.Fatal(err)
					}
					sum += l * float64(rows)
					for i := range p {
						p[i] -= lr * g[i]
					}
				}
				if epoch == 0 {
					first = sum / n
				}
				last = sum / n
			}
			out := make([]float32, n*tt.k)
			if err := m.Predict(p, x, n, out); err != nil {
				t.Fatal(err)
			}
			correct := 0
			for i := range n {
				pred := 0
				if tt.k == 1 {
					if out[i] >= 0.5 {
						pred = 1
					}
				} else {
					for c := 1; c < tt.k; c++ {
						if out[i*tt.k+c] > out[i*tt.k+pred] {
							pred = c
						}
					}
				}
				if float32(pred) == y[i] {
					correct++
				}
			}
			acc := float64(correct) / n
			if acc <= 0.95 || last >= first {
				t.Fatalf("accuracy %.3f (want > 0.95), loss %.4f -> %.4f", acc, first, last)
			}
		})
	}
}

func TestTrainingLoopRegression(t *testing.T) {
	const n, inputs, batch = 400, 3, 16
	rng := rand.New(rand.NewPCG(4, 2))
	x := make([]float32, n*inputs)
	y := make([]float32, n)
	for i := range n {
		for j := range inputs {
			x[i*inputs+j] = float32(rng.NormFloat64())
		}
		y[i] = 0.5*x[i*inputs] - 0.3*x[i*inputs+1] + 0.2
	}
	m := mustMLP(t, MLPConfig{Inputs: inputs, Hidden: []int{8}, Activation: ActivationTanh, Outputs: 1, Task: TaskRegression, BatchSize: batch})
	p := m.InitParams(1)
	g := make([]float32, m.NumParams())
	for range 60 {
		for lo := 0; lo < n; lo += batch {
			if _, err := m.Gradient(p, x[lo*inputs:], y[lo:], min(batch, n-lo), g); err != nil {
				t.Fatal(err)
			}
			for i := range p {
				p[i] -= 0.05 * g[i]
			}
		}
	}
	out := make([]float32, n)
	if err := m.Predict(p, x, n, out); err != nil {
		t.Fatal(err)
	}
	var mse float64
	for i := range n {
		d := float64(out[i] - y[i])
		mse += d * d / n
	}
	if mse > 0.01 {
		t.Fatalf("mse %v after training, want < 0.01 (target variance is 0.34)", mse)
	}
}

func BenchmarkMLPGradient(b *testing.B) {
	for _, f64 := range []bool{false, true} {
		name := map[bool]string{false: "float32", true: "float64"}[f64]
		b.Run(name, func(b *testing.B) {
			m := mustMLP(b, MLPConfig{Inputs: 50, Hidden: []int{64, 32}, Activation: ActivationReLU, Outputs: 1, Task: TaskBinary, BatchSize: 32, Float64: f64})
			p := m.InitParams(1)
			x, y := randomBatch(1, 32, 50, 1, TaskBinary)
			g := make([]float32, m.NumParams())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.Gradient(p, x, y, 32, g); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/32, "ns/row")
		})
	}
}

func BenchmarkMLPPredict(b *testing.B) {
	m := mustMLP(b, MLPConfig{Inputs: 50, Hidden: []int{64, 32}, Activation: ActivationReLU, Outputs: 1, Task: TaskBinary, BatchSize: 32})
	p := m.InitParams(1)
	x, _ := randomBatch(1, 1000, 50, 1, TaskBinary)
	out := make([]float32, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Predict(p, x, 1000, out); err != nil {
			b.Fatal(err)
		}
	}
}
