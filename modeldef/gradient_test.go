package modeldef

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// gradCase is a network of random weights for the gradient tests.
type gradCase struct {
	name string
	arch Architecture
}

// gradCases covers every kind, task and activation: MLPs, CNNs with stride 2, padding
// 1 and pool 2 or no pool, and a two-layer LSTM.
func gradCases() []gradCase {
	tasks := []struct {
		task string
		out  int
	}{{TaskBinary, 1}, {TaskMulticlass, 3}, {TaskRegression, 1}}
	var cs []gradCase
	for _, act := range []string{ActReLU, ActTanh, ActSigmoid, ActLeakyReLU} {
		for _, tk := range tasks {
			cs = append(cs, gradCase{fmt.Sprintf("mlp-%s-%s", act, tk.task), Architecture{Kind: KindMLP, Task: tk.task, Inputs: 6,
				Outputs: tk.out, Activation: act, Hidden: []int{7, 5}, LabelMean: 3, LabelStd: 2}})
		}
	}
	for _, tk := range tasks {
		for _, c := range []struct {
			name string
			act  string
			pool int
			conv []Conv
		}{
			{"stride2-pad1-pool2", ActReLU, 2, []Conv{{Filters: 3, Kernel: 3, Stride: 2, Padding: 1}, {Filters: 4, Kernel: 2, Stride: 1}}},
			{"stride2-pad1-pool1", ActLeakyReLU, 1, []Conv{{Filters: 3, Kernel: 3, Stride: 2, Padding: 1}, {Filters: 2, Kernel: 3, Stride: 1, Padding: 1}}},
			{"pool2-tanh", ActTanh, 2, []Conv{{Filters: 2, Kernel: 3, Stride: 1, Padding: 1}}},
			{"pool1-sigmoid", ActSigmoid, 0, []Conv{{Filters: 2, Kernel: 2, Stride: 2, Padding: 1}}},
		} {
			cs = append(cs, gradCase{fmt.Sprintf("cnn-%s-%s", c.name, tk.task), Architecture{Kind: KindCNN, Task: tk.task, Inputs: 2 * 12 * 11,
				Outputs: tk.out, Activation: c.act, Dense: []int{5}, Channels: 2, Height: 12, Width: 11, Pool: c.pool, Conv: c.conv}})
		}
		cs = append(cs, gradCase{"lstm-2layers-" + tk.task, Architecture{Kind: KindLSTM, Task: tk.task, Inputs: 15, Outputs: tk.out,
			Hidden: []int{5, 4}, Dense: []int{4}, Steps: 5, Features: 3, LabelMean: -1, LabelStd: 0.5}})
	}
	return cs
}

// randomWeights draws weights of standard deviation 1.5/sqrt(fan-in) and biases of 0.3.
func randomWeights(t testing.TB, a Architecture, seed uint64) Weights {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 13))
	var ts []Tensor
	for _, spec := range a.Tensors() {
		n, fanIn := 1, 1
		for _, d := range spec.Shape {
			n *= d
		}
		if len(spec.Shape) > 1 {
			fanIn = n / spec.Shape[len(spec.Shape)-1]
			if len(spec.Shape) == 4 { // conv [out, in, k, k]
				fanIn = n / spec.Shape[0]
			}
		}
		std := 1.5 / math.Sqrt(float64(fanIn))
		if len(spec.Shape) == 1 {
			std = 0.3
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * std)
		}
		ts = append(ts, Tensor{Name: spec.Name, Shape: spec.Shape, Data: data})
	}
	w, err := a.CheckWeights(ts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// randomRow draws a row of float32-representable values, so that Predict sees it
// unchanged.
func randomRow(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 17))
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(float32(rng.NormFloat64()))
	}
	return x
}

// TestOutputGradientMatchesFiniteDifferences compares every partial derivative of every
// output with a central difference (h = 1e-5) of the same forward pass, and the value
// with Predict's.
func TestOutputGradientMatchesFiniteDifferences(t *testing.T) {
	const h = 1e-5
	for ci, c := range gradCases() {
		t.Run(c.name, func(t *testing.T) {
			a := c.arch
			w := randomWeights(t, a, uint64(ci)+1)
			var gs []convGeom
			if a.Kind == KindCNN {
				var err error
				if gs, err = a.geometry(); err != nil {
					t.Fatal(err)
				}
			}
			worst := 0.0
			for rowSeed := uint64(1); rowSeed <= 2; rowSeed++ {
				x := randomRow(a.Inputs, uint64(ci)*10+rowSeed)
				pred := make([]float32, a.Outputs)
				if err := a.Predict(w, toFloat32(x), 1, pred); err != nil {
					t.Fatal(err)
				}
				grad := make([]float64, a.Inputs)
				for k := range a.Outputs {
					v, err := a.OutputGradient(w, x, k, grad)
					if err != nil {
						t.Fatal(err)
					}
					if float32(v) != pred[k] {
						t.Fatalf("output %d = %v, Predict writes %v", k, v, pred[k])
					}
					xp := append([]float64(nil), x...)
					for i := range x {
						xp[i] = x[i] + h
						fp := a.value(gs, w, xp, k)
						xp[i] = x[i] - h
						fm := a.value(gs, w, xp, k)
						xp[i] = x[i]
						fd := (fp - fm) / (2 * h)
						d := math.Abs(grad[i] - fd)
						if !(d <= 1e-7+1e-5*math.Abs(fd)) {
							t.Fatalf("row %d output %d: d/dx[%d] = %.10g, finite difference %.10g", rowSeed, k, i, grad[i], fd)
						}
						worst = math.Max(worst, d)
					}
				}
			}
			t.Logf("max |gradient - finite difference| %.3g", worst)
		})
	}
}

func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// TestIntegratedGradientsCompleteness checks that the attributions sum to the change of
// the output from the baseline, for every kind, from a zero and a random baseline, and
// that a relu network started at 1 step doubles its steps to get there.
func TestIntegratedGradientsCompleteness(t *testing.T) {
	for ci, c := range gradCases() {
		t.Run(c.name, func(t *testing.T) {
			a := c.arch
			w := randomWeights(t, a, uint64(ci)+100)
			x := randomRow(a.Inputs, uint64(ci)+200)
			for bi, base := range [][]float64{make([]float64, a.Inputs), randomRow(a.Inputs, uint64(ci)+300)} {
				for _, steps := range []int{1, 32} {
					res, err := a.IntegratedGradients(w, x, base, a.Outputs-1, steps)
					if err != nil {
						t.Fatal(err)
					}
					grad := make([]float64, a.Inputs)
					fx, _ := a.OutputGradient(w, x, a.Outputs-1, grad)
					fb, _ := a.OutputGradient(w, base, a.Outputs-1, grad)
					var sum float64
					for _, v := range res.Attr {
						sum += v
					}
					gap := sum - (fx - fb)
					if res.Output != fx || res.Baseline != fb || math.Abs(gap-res.Gap) > 1e-12 {
						t.Fatalf("result %v %v gap %v, want %v %v gap %v", res.Output, res.Baseline, res.Gap, fx, fb, gap)
					}
					if !(math.Abs(gap) < 1e-3) || res.Steps < steps {
						t.Fatalf("baseline %d, %d steps: sum %.8g, output change %.8g (gap %.3g after %d steps)", bi, steps, sum, fx-fb, gap, res.Steps)
					}
					if steps == 1 && math.Abs(gap) > CompletenessTolerance*math.Max(1, math.Abs(fx-fb)) && res.Steps < MaxIntegratedGradientsSteps {
						t.Fatalf("gap %.3g above tolerance after %d steps, below the cap", gap, res.Steps)
					}
					t.Logf("baseline %d, from %d steps: %d steps, gap %.3g", bi, steps, res.Steps, gap)
				}
			}
		})
	}
}

// TestIntegratedGradientsSmoothIsExact checks the quadrature on a smooth network: 32
// steps need no refinement and leave a gap at rounding level; and that a linear network
// is attributed exactly weight*(x-b) from the first panel.
func TestIntegratedGradientsSmoothIsExact(t *testing.T) {
	a := Architecture{Kind: KindMLP, Task: TaskBinary, Inputs: 6, Outputs: 1, Activation: ActTanh, Hidden: []int{7, 5}}
	w := randomWeights(t, a, 7)
	res, err := a.IntegratedGradients(w, randomRow(6, 1), randomRow(6, 2), 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 32 || math.Abs(res.Gap) > 1e-10 {
		t.Fatalf("%d steps, gap %.3g", res.Steps, res.Gap)
	}
	t.Logf("tanh mlp, 32 steps: gap %.3g", res.Gap)
	lin := Architecture{Kind: KindMLP, Task: TaskRegression, Inputs: 4, Outputs: 1, Activation: ActReLU}
	lw := randomWeights(t, lin, 8)
	x, b := randomRow(4, 3), randomRow(4, 4)
	res, err = lin.IntegratedGradients(lw, x, b, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != panelNodes {
		t.Fatalf("linear network: %d steps, want %d", res.Steps, panelNodes)
	}
	for i, v := range res.Attr {
		if want := float64(lw["out.weight"][i]) * (x[i] - b[i]); math.Abs(v-want) > 1e-12 {
			t.Fatalf("linear attribution %d = %v, want %v", i, v, want)
		}
	}
}

// TestGaussLegendre checks the quadrature rules: weights summing to 1, sorted nodes
// inside (0, 1), and exactness on a^(2n-1).
func TestGaussLegendre(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8, 32, 33, 1024} {
		nodes, weights := gaussLegendre(n)
		var sw, mono float64
		for i, a := range nodes {
			if !(a > 0 && a < 1) || i > 0 && !(a > nodes[i-1]) || !(weights[i] > 0) {
				t.Fatalf("n=%d: node %d = %v, weight %v", n, i, a, weights[i])
			}
			sw += weights[i]
			mono += weights[i] * math.Pow(a, float64(2*n-1))
		}
		if math.Abs(sw-1) > 1e-12 {
			t.Fatalf("n=%d: weights sum to %v", n, sw)
		}
		if want := 1 / float64(2*n); n <= 33 && math.Abs(mono-want) > 1e-13 {
			t.Fatalf("n=%d: integral of a^%d = %v, want %v", n, 2*n-1, mono, want)
		}
	}
}

func TestGradientRejects(t *testing.T) {
	a := Architecture{Kind: KindMLP, Task: TaskMulticlass, Inputs: 3, Outputs: 2, Activation: ActReLU, Hidden: []int{2}}
	w := randomWeights(t, a, 1)
	x, g := make([]float64, 3), make([]float64, 3)
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"short x", func() error { _, err := a.OutputGradient(w, x[:2], 0, g); return err }, "x has 2 values, want 3"},
		{"short grad", func() error { _, err := a.OutputGradient(w, x, 0, g[:1]); return err }, "grad has 1 values"},
		{"output", func() error { _, err := a.OutputGradient(w, x, 2, g); return err }, "output 2: the model has outputs 0 to 1"},
		{"nan", func() error { _, err := a.OutputGradient(w, []float64{0, math.NaN(), 0}, 0, g); return err }, "x value 1 is not finite"},
		{"baseline", func() error { _, err := a.IntegratedGradients(w, x, x[:1], 0, 8); return err }, "baseline has 1 values"},
		{"steps 0", func() error { _, err := a.IntegratedGradients(w, x, x, 0, 0); return err }, "steps 0: must be in [1, 1024]"},
		{"steps 2048", func() error { _, err := a.IntegratedGradients(w, x, x, 0, 2048); return err }, "steps 2048"},
	} {
		if err := tc.err(); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// BenchmarkIntegratedGradientsCNN explains one class of a 28x28 relu CNN (conv 32-3,
// pool 2, conv 64-3, pool 2, dense 128, 10 classes) from 32 steps; the steps metric is
// where the doubling ended.
func BenchmarkIntegratedGradientsCNN(b *testing.B) {
	a := Architecture{Kind: KindCNN, Task: TaskMulticlass, Inputs: 28 * 28, Outputs: 10, Activation: ActReLU, Dense: []int{128},
		Channels: 1, Height: 28, Width: 28, Pool: 2, Conv: []Conv{{Filters: 32, Kernel: 3, Stride: 1}, {Filters: 64, Kernel: 3, Stride: 1}}}
	w := randomWeights(b, a, 1)
	x := randomRow(a.Inputs, 2)
	for i := range x {
		x[i] = math.Abs(x[i]) / 3 // pixels in [0, 1]-ish
	}
	base := make([]float64, a.Inputs)
	var res Attribution
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if res, err = a.IntegratedGradients(w, x, base, 3, 32); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(res.Steps), "steps")
	b.ReportMetric(math.Abs(res.Gap), "|gap|")
}
