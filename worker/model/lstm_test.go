package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// smallLSTM is the gradient-check model: 3 steps of 2 features, layers [3, 2].
func smallLSTM(task string, dense []int, batch int, f64 bool) LSTMConfig {
	k := 1
	if task == TaskMulticlass {
		k = 3
	}
	return LSTMConfig{Steps: 3, Features: 2, Hidden: []int{3, 2}, Dense: dense, Outputs: k, Task: task, BatchSize: batch, Seed: 7, Float64: f64}
}

func mustLSTM(t testing.TB, cfg LSTMConfig) Model {
	t.Helper()
	m, err := NewLSTM(cfg)
	if err != nil {
		t.Fatalf("NewLSTM(%+v): %v", cfg, err)
	}
	return m
}

func TestNewLSTMValidation(t *testing.T) {
	ok := smallLSTM(TaskRegression, nil, 4, false)
	tests := []struct {
		name   string
		mutate func(*LSTMConfig)
		want   string // substring of the error; empty means valid
	}{
		{"valid", func(*LSTMConfig) {}, ""},
		{"valid dense multiclass", func(c *LSTMConfig) { c.Dense = []int{4}; c.Task = TaskMulticlass; c.Outputs = 3 }, ""},
		{"zero steps", func(c *LSTMConfig) { c.Steps = 0 }, "steps"},
		{"zero features", func(c *LSTMConfig) { c.Features = 0 }, "features"},
		{"no hidden", func(c *LSTMConfig) { c.Hidden = nil }, "hidden"},
		{"bad hidden", func(c *LSTMConfig) { c.Hidden = []int{3, 0} }, "hidden[1]"},
		{"bad dense", func(c *LSTMConfig) { c.Dense = []int{-1} }, "dense[0]"},
		{"binary two outputs", func(c *LSTMConfig) { c.Task = TaskBinary; c.Outputs = 2 }, "outputs"},
		{"multiclass one output", func(c *LSTMConfig) { c.Task = TaskMulticlass; c.Outputs = 1 }, "outputs"},
		{"unknown task", func(c *LSTMConfig) { c.Task = "ranking" }, "task"},
		{"zero batch", func(c *LSTMConfig) { c.BatchSize = 0 }, "batchSize"},
		{"dropout 1", func(c *LSTMConfig) { c.Dropout = 1 }, "dropout"},
		{"dropout NaN", func(c *LSTMConfig) { c.Dropout = math.NaN() }, "dropout"},
		{"huge hidden", func(c *LSTMConfig) { c.Hidden = []int{1 << 20} }, "parameters"},
		{"huge dense", func(c *LSTMConfig) { c.Dense = []int{1 << 30} }, "parameters"},
		{"huge batch", func(c *LSTMConfig) { c.Steps = 10000; c.Hidden = []int{256}; c.BatchSize = 1 << 16 }, "activations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			cfg.Hidden = slices.Clone(ok.Hidden)
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				mustLSTM(t, cfg)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
			if _, err := NewLSTM(cfg); err == nil {
				t.Fatal("NewLSTM accepted an invalid config")
			}
		})
	}
}

func TestLSTMLayout(t *testing.T) {
	m := mustLSTM(t, LSTMConfig{Steps: 12, Features: 6, Hidden: []int{64, 32}, Dense: []int{16}, Outputs: 1, Task: TaskRegression, BatchSize: 8})
	want := []struct {
		name  string
		shape []int
	}{
		{"lstm0.weight", []int{70, 256}}, {"lstm0.bias", []int{256}},
		{"lstm1.weight", []int{96, 128}}, {"lstm1.bias", []int{128}},
		{"dense0.weight", []int{32, 16}}, {"dense0.bias", []int{16}},
		{"out.weight", []int{16, 1}}, {"out.bias", []int{1}},
	}
	layout := m.Layout()
	if len(layout) != len(want) {
		t.Fatalf("layout has %d tensors, want %d", len(layout), len(want))
	}
	off := 0
	for i, w := range want {
		ti := layout[i]
		if ti.Name != w.name || !slices.Equal(ti.Shape, w.shape) || ti.Offset != off {
			t.Errorf("layout[%d] = %s %v @%d, want %s %v @%d", i, ti.Name, ti.Shape, ti.Offset, w.name, w.shape, off)
		}
		off += ti.Size
	}
	if m.NumParams() != off {
		t.Errorf("NumParams = %d, want %d", m.NumParams(), off)
	}
	other := mustLSTM(t, LSTMConfig{Steps: 3, Features: 6, Hidden: []int{64, 32}, Dense: []int{16}, Outputs: 1, Task: TaskBinary, BatchSize: 2})
	if m.LayoutHash() != other.LayoutHash() {
		t.Error("the lookback and task changed the layout hash; parameters would still fit")
	}
	mlp := mustMLP(t, MLPConfig{Inputs: 32, Hidden: []int{16}, Activation: ActivationReLU, Outputs: 1, Task: TaskRegression, BatchSize: 8})
	if m.LayoutHash() == mlp.LayoutHash() {
		t.Error("an LSTM and an MLP share a layout hash")
	}
}

func TestLSTMInitParams(t *testing.T) {
	m := mustLSTM(t, LSTMConfig{Steps: 4, Features: 6, Hidden: []int{8, 4}, Dense: []int{5}, Outputs: 1, Task: TaskRegression, BatchSize: 2})
	p := m.InitParams(3)
	if !slices.Equal(p, m.InitParams(3)) {
		t.Fatal("InitParams is not deterministic")
	}
	if slices.Equal(p, m.InitParams(4)) {
		t.Fatal("seeds 3 and 4 gave the same parameters")
	}
	for _, ti := range m.Layout() {
		vals := p[ti.Offset : ti.Offset+ti.Size]
		switch {
		case strings.HasSuffix(ti.Name, ".weight"):
			limit := math.Sqrt(6 / float64(ti.Shape[0]+ti.Shape[1]))
			var maxAbs float64
			for _, v := range vals {
				maxAbs = math.Max(maxAbs, math.Abs(float64(v)))
			}
			if maxAbs > limit || maxAbs < limit/2 {
				t.Errorf("%s: max |w| = %v, want within (limit/2, limit], limit %v", ti.Name, maxAbs, limit)
			}
		case strings.HasPrefix(ti.Name, "lstm"):
			h := ti.Size / 4
			for i, v := range vals {
				want := float32(0)
				if i >= h && i < 2*h {
					want = 1
				}
				if v != want {
					t.Errorf("%s[%d] = %v, want %v (forget gate bias 1, others 0)", ti.Name, i, v, want)
				}
			}
		default:
			for i, v := range vals {
				if v != 0 {
					t.Errorf("%s[%d] = %v, want 0", ti.Name, i, v)
				}
			}
		}
	}
}

// refLSTM is a plain-Go float64 forward pass of the same equations; it returns the
// logits of each row.
func refLSTM(cfg LSTMConfig, layout []TensorInfo, p, x []float32, n int) [][]float64 {
	param := func(i int) []float64 {
		ti := layout[i]
		out := make([]float64, ti.Size)
		for j := range out {
			out[j] = float64(p[ti.Offset+j])
		}
		return out
	}
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	dense := func(in []float64, w, b []float64, out int) []float64 {
		z := slices.Clone(b)
		for j := range out {
			for i, v := range in {
				z[j] += v * w[i*out+j]
			}
		}
		return z
	}
	logits := make([][]float64, n)
	in := cfg.Steps * cfg.Features
	for r := range n {
		seq := make([][]float64, cfg.Steps)
		for t := range seq {
			seq[t] = make([]float64, cfg.Features)
			for f := range seq[t] {
				seq[t][f] = float64(x[r*in+t*cfg.Features+f])
			}
		}
		for l, hid := range cfg.Hidden {
			w, b := param(2*l), param(2*l+1)
			h, c := make([]float64, hid), make([]float64, hid)
			out := make([][]float64, cfg.Steps)
			for t := range seq {
				z := dense(append(slices.Clone(seq[t]), h...), w, b, 4*hid)
				for j := range hid {
					i, f, g, o := sig(z[j]), sig(z[hid+j]), math.Tanh(z[2*hid+j]), sig(z[3*hid+j])
					c[j] = f*c[j] + i*g
					h[j] = o * math.Tanh(c[j])
				}
				out[t] = slices.Clone(h)
			}
			seq = out
		}
		h := seq[len(seq)-1]
		base := 2 * len(cfg.Hidden)
		for i, width := range cfg.Dense {
			h = dense(h, param(base+2*i), param(base+2*i+1), width)
			for j := range h {
				h[j] = math.Max(h[j], 0)
			}
		}
		last := len(layout) - 2
		logits[r] = dense(h, param(last), param(last+1), cfg.Outputs)
	}
	return logits
}

// refLoss is the mean loss of the reference logits, as NewMLP documents it.
func refLoss(task string, logits [][]float64, y []float32) float64 {
	var sum float64
	for r, z := range logits {
		switch task {
		case TaskBinary:
			sum += math.Log1p(math.Exp(z[0])) - float64(y[r])*z[0]
		case TaskMulticlass:
			mx := slices.Max(z)
			var s float64
			for _, v := range z {
				s += math.Exp(v - mx)
			}
			sum -= z[int(y[r])] - mx - math.Log(s)
		default:
			d := z[0] - float64(y[r])
			sum += d * d
		}
	}
	return sum / float64(len(logits))
}

func TestLSTMMatchesReferenceForward(t *testing.T) {
	tests := []struct {
		name string
		cfg  LSTMConfig
	}{
		{"regression", smallLSTM(TaskRegression, nil, 5, true)},
		{"binary dense", smallLSTM(TaskBinary, []int{4}, 5, true)},
		{"multiclass", smallLSTM(TaskMulticlass, []int{3, 2}, 5, true)},
		{"one step one layer", LSTMConfig{Steps: 1, Features: 3, Hidden: []int{4}, Outputs: 1, Task: TaskRegression, BatchSize: 5, Float64: true}},
		{"deep long", LSTMConfig{Steps: 7, Features: 2, Hidden: []int{4, 3, 2}, Outputs: 1, Task: TaskRegression, BatchSize: 5, Float64: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustLSTM(t, tt.cfg)
			k := m.OutputSize()
			p := randomParams(m, 21)
			const n = 4 // fewer than the batch: padding must not matter
			x, y := randomBatch(8, 11, tt.cfg.Steps*tt.cfg.Features, k, tt.cfg.Task)
			ref := refLSTM(tt.cfg, m.Layout(), p, x, 11)
			_, loss := gradient(t, m, p, x, y, n)
			if want := refLoss(tt.cfg.Task, ref[:n], y); math.Abs(loss-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("loss %.12g, reference %.12g", loss, want)
			}
			// Predict spans several batches; its output is float32.
			out := make([]float32, 11*k)
			if err := m.Predict(p, x, 11, out); err != nil {
				t.Fatal(err)
			}
			for r, z := range ref {
				want := slices.Clone(z)
				switch tt.cfg.Task {
				case TaskBinary:
					want[0] = 1 / (1 + math.Exp(-z[0]))
				case TaskMulticlass:
					mx := slices.Max(z)
					var s float64
					for _, v := range z {
						s += math.Exp(v - mx)
					}
					for j, v := range z {
						want[j] = math.Exp(v-mx) / s
					}
				}
				for j, w := range want {
					if d := math.Abs(float64(out[r*k+j]) - w); d > 1e-6*math.Max(1, math.Abs(w)) {
						t.Fatalf("row %d output %d = %v, reference %v", r, j, out[r*k+j], w)
					}
				}
			}
		})
	}
}

func TestLSTMGradientFiniteDifferences(t *testing.T) {
	tests := []struct {
		name string
		cfg  LSTMConfig
	}{
		{"regression", smallLSTM(TaskRegression, nil, 5, true)},
		{"binary", smallLSTM(TaskBinary, nil, 5, true)},
		{"binary dense", smallLSTM(TaskBinary, []int{3}, 5, true)},
		{"multiclass", smallLSTM(TaskMulticlass, nil, 5, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustLSTM(t, tt.cfg)
			p := randomParams(m, 13)
			x, y := randomBatch(4, 4, tt.cfg.Steps*tt.cfg.Features, m.OutputSize(), tt.cfg.Task)
			g, _ := gradient(t, m, p, x, y, 4)
			scratch := make([]float32, m.NumParams())
			lossAt := func(q []float32) float64 {
				l, err := m.Gradient(q, x, y, 4, scratch)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			q := slices.Clone(p)
			const eps = 1e-4
			var nonzero int
			for i := range p {
				q[i] = p[i] + eps
				hi, up := float64(q[i]), lossAt(q)
				q[i] = p[i] - eps
				lo, down := float64(q[i]), lossAt(q)
				q[i] = p[i]
				fd := (up - down) / (hi - lo)
				if d := math.Abs(fd - float64(g[i])); d > 1e-4*math.Max(math.Abs(fd), math.Abs(float64(g[i])))+1e-7 {
					t.Errorf("param %d (%s): gradient %v, finite difference %v", i, paramName(m, i), g[i], fd)
				}
				if math.Abs(fd) > 1e-6 {
					nonzero++
				}
			}
			if nonzero < m.NumParams()*3/4 {
				t.Errorf("only %d of %d gradient entries are nonzero", nonzero, m.NumParams())
			}
		})
	}
}

func TestLSTMFloat32AgreesWithFloat64(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			m32 := mustLSTM(t, smallLSTM(task, []int{3}, 6, false))
			m64 := mustLSTM(t, smallLSTM(task, []int{3}, 6, true))
			p := randomParams(m32, 3)
			x, y := randomBatch(5, 6, 6, m32.OutputSize(), task)
			g32, l32 := gradient(t, m32, p, x, y, 6)
			g64, l64 := gradient(t, m64, p, x, y, 6)
			if math.Abs(l32-l64) > 1e-5*math.Max(1, l64) {
				t.Fatalf("loss float32 %v, float64 %v", l32, l64)
			}
			assertClose(t, "gradient", g32, g64, 1e-3, 1e-5)
		})
	}
}

func TestLSTMMaskedRows(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			cfg := smallLSTM(task, []int{3}, 8, true)
			m := mustLSTM(t, cfg)
			k := m.OutputSize()
			p := randomParams(m, 9)
			x, y := randomBatch(6, 8, 6, k, task)
			x2, y2 := randomBatch(7, 8, 6, k, task)
			// Rows 5..7 differ between the two batches; only 5 rows are valid.
			copy(x2[:5*6], x[:5*6])
			copy(y2[:5], y[:5])
			g1, l1 := gradient(t, m, p, x, y, 5)
			g2, l2 := gradient(t, m, p, x2, y2, 5)
			if l1 != l2 || !slices.Equal(g1, g2) {
				t.Fatalf("padding rows changed the result: loss %v vs %v", l1, l2)
			}
			cfg.BatchSize = 5
			exact := mustLSTM(t, cfg)
			g3, l3 := gradient(t, exact, p, x, y, 5)
			if math.Abs(l1-l3) > 1e-12 {
				t.Fatalf("loss %v, with an exact-size batch %v", l1, l3)
			}
			assertClose(t, "gradient", g1, g3, 1e-6, 1e-7)
		})
	}
}

func TestLSTMWeightedBatchesEqualUnion(t *testing.T) {
	for _, task := range allTasks {
		t.Run(task, func(t *testing.T) {
			m := mustLSTM(t, smallLSTM(task, nil, 8, true))
			k := m.OutputSize()
			p := randomParams(m, 2)
			x, y := randomBatch(12, 8, 6, k, task)
			all, lossAll := gradient(t, m, p, x, y, 8)
			a, la := gradient(t, m, p, x, y, 3)
			b, lb := gradient(t, m, p, x[3*6:], y[3:], 5)
			mixed := make([]float32, len(all))
			for i := range mixed {
				mixed[i] = float32((3*float64(a[i]) + 5*float64(b[i])) / 8)
			}
			assertClose(t, "weighted gradient", mixed, all, 1e-5, 1e-7)
			if l := (3*la + 5*lb) / 8; math.Abs(l-lossAll) > 1e-9 {
				t.Fatalf("weighted loss %v, union %v", l, lossAll)
			}
			// Repeating the call gives the same gradient: nothing accumulates.
			again, _ := gradient(t, m, p, x, y, 8)
			if !slices.Equal(again, all) {
				t.Fatal("a second Gradient call gave a different gradient")
			}
		})
	}
}

func TestLSTMDropout(t *testing.T) {
	cfg := smallLSTM(TaskRegression, []int{4}, 8, true)
	plain := mustLSTM(t, cfg)
	cfg.Dropout = 0.5
	m1, m2 := mustLSTM(t, cfg), mustLSTM(t, cfg)
	p := randomParams(m1, 4)
	// Positive dense biases keep the ReLU units alive, so every mask matters.
	for _, ti := range m1.Layout() {
		if ti.Name == "dense0.bias" {
			for i := range ti.Size {
				p[ti.Offset+i] = 0.5
			}
		}
	}
	x, y := randomBatch(3, 8, 6, 1, TaskRegression)
	g0, l0 := gradient(t, plain, p, x, y, 8)
	ga, la := gradient(t, m1, p, x, y, 8)
	gb, lb := gradient(t, m1, p, x, y, 8)
	gc, lc := gradient(t, m2, p, x, y, 8)
	if la == l0 || slices.Equal(ga, g0) {
		t.Fatal("dropout did not change the first call's loss or gradient")
	}
	if la == lb || slices.Equal(ga, gb) {
		t.Fatal("two calls drew the same masks")
	}
	if la != lc || !slices.Equal(ga, gc) {
		t.Fatal("the same seed and call number gave different masks")
	}
	o1, o0 := make([]float32, 8), make([]float32, 8)
	if err := m1.Predict(p, x, 8, o1); err != nil {
		t.Fatal(err)
	}
	if err := plain.Predict(p, x, 8, o0); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o0, o1) {
		t.Fatal("Predict applied dropout")
	}
}

func TestLSTMErrors(t *testing.T) {
	m := mustLSTM(t, smallLSTM(TaskBinary, nil, 4, false))
	p := m.InitParams(1)
	x, y := randomBatch(1, 4, 6, 1, TaskBinary)
	g := make([]float32, m.NumParams())
	nan := slices.Clone(x)
	nan[6+4] = float32(math.NaN())
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"short params", func() error { _, err := m.Gradient(p[1:], x, y, 4, g); return err }, "params"},
		{"short grad", func() error { _, err := m.Gradient(p, x, y, 4, g[1:]); return err }, "grad"},
		{"too many rows", func() error { _, err := m.Gradient(p, x, y, 5, g); return err }, "row count"},
		{"short x", func() error { _, err := m.Gradient(p, x[:20], y, 4, g); return err }, "x has"},
		{"bad label", func() error { _, err := m.Gradient(p, x, []float32{0, 2, 1, 0}, 4, g); return err }, "y[1]"},
		{"NaN input", func() error { _, err := m.Gradient(p, nan, y, 4, g); return err }, "row 1 input 4"},
		{"predict short out", func() error { return m.Predict(p, x, 4, make([]float32, 3)) }, "out has"},
		{"predict NaN", func() error { return m.Predict(p, nan, 4, make([]float32, 4)) }, "not finite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestLSTMLearnsSequenceTask trains on windows whose target depends on the order of
// the steps (a recency-weighted sum of feature 0 plus the product of the last two
// steps' feature 1), which a mean prediction cannot fit.
func TestLSTMLearnsSequenceTask(t *testing.T) {
	const n, steps, feat, batch = 512, 6, 2, 32
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, n*steps*feat)
	y := make([]float32, n)
	for i := range n {
		var target float64
		for s := range steps {
			for f := range feat {
				x[(i*steps+s)*feat+f] = float32(rng.NormFloat64())
			}
			target += 0.3 * float64(s+1) / steps * float64(x[(i*steps+s)*feat])
		}
		target += 0.5 * float64(x[(i*steps+steps-1)*feat+1]*x[(i*steps+steps-2)*feat+1])
		y[i] = float32(target)
	}
	var mean, variance float64
	for _, v := range y {
		mean += float64(v) / n
	}
	for _, v := range y {
		variance += (float64(v) - mean) * (float64(v) - mean) / n
	}
	m := mustLSTM(t, LSTMConfig{Steps: steps, Features: feat, Hidden: []int{16}, Outputs: 1, Task: TaskRegression, BatchSize: batch, Seed: 1})
	p := m.InitParams(2)
	g := make([]float32, m.NumParams())
	// Adam, as the parameter servers would run it.
	mom, vel := make([]float64, len(p)), make([]float64, len(p))
	const lr, b1, b2 = 0.01, 0.9, 0.999
	step := 0
	for range 60 {
		for lo := 0; lo < n; lo += batch {
			if _, err := m.Gradient(p, x[lo*steps*feat:], y[lo:], batch, g); err != nil {
				t.Fatal(err)
			}
			step++
			for i := range p {
				gi := float64(g[i])
				mom[i] = b1*mom[i] + (1-b1)*gi
				vel[i] = b2*vel[i] + (1-b2)*gi*gi
				mh := mom[i] / (1 - math.Pow(b1, float64(step)))
				vh := vel[i] / (1 - math.Pow(b2, float64(step)))
				p[i] -= float32(lr * mh / (math.Sqrt(vh) + 1e-8))
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
	if mse > 0.2*variance {
		t.Fatalf("mse %.4f after training; predicting the mean gives %.4f, want < 20%% of it", mse, variance)
	}
	t.Logf("mse %.4f, mean-prediction mse %.4f", mse, variance)
}

func BenchmarkLSTMGradient(b *testing.B) {
	for _, f64 := range []bool{false, true} {
		name := map[bool]string{false: "float32", true: "float64"}[f64]
		b.Run(name, func(b *testing.B) {
			const batch = 64
			m := mustLSTM(b, LSTMConfig{Steps: 12, Features: 6, Hidden: []int{64, 32}, Outputs: 1, Task: TaskRegression, BatchSize: batch, Float64: f64})
			p := m.InitParams(1)
			x, y := randomBatch(1, batch, 12*6, 1, TaskRegression)
			g := make([]float32, m.NumParams())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.Gradient(p, x, y, batch, g); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/row")
		})
	}
}
