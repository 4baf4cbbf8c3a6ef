package model

import (
	"math"
	"testing"
)

// ulpDiff is the number of float32 values between a and b (0 when equal; both NaN
// count as equal, one NaN as far apart).
func ulpDiff(a, b float32) int64 {
	if a != a || b != b {
		if a != a && b != b {
			return 0
		}
		return math.MaxInt64
	}
	ord := func(v float32) int64 { // monotone map of the float32 order onto integers
		u := int64(math.Float32bits(v))
		if u&(1<<31) != 0 {
			return -(u &^ (1 << 31))
		}
		return u
	}
	d := ord(a) - ord(b)
	return max(d, -d)
}

// maxULPError returns the largest distance in ulps of f from ref rounded to float32 over
// every stride-th float32 bit pattern (both signs, denormals, infinities) and the
// given edge values, and an input where it occurs.
func maxULPError(f func(float32) float32, ref func(float64) float64, stride uint64, edges []float32) (worst int64, at float32) {
	check := func(v float32) {
		if v != v {
			return
		}
		if d := ulpDiff(f(v), float32(ref(float64(v)))); d > worst {
			worst, at = d, v
		}
	}
	for u := uint64(0); u < 1<<32; u += stride {
		check(math.Float32frombits(uint32(u)))
	}
	for _, v := range edges {
		for _, w := range []float32{v, -v, math.Nextafter32(v, 0), math.Nextafter32(v, float32(math.Inf(1))), -math.Nextafter32(v, 0)} {
			check(w)
		}
	}
	return worst, at
}

// fastMathEdges are the inputs where sigmoid32 and tanh32 change regime: zero and
// denormals, the series' bound, the clamps, float32's exp overflow and the inputs whose
// sigmoid is float32's smallest normal and denormal.
var fastMathEdges = []float32{0, math.SmallestNonzeroFloat32, 1e-38, 1e-20, 1e-8, tanhSmall, 0.5, 1, 8.3, 9.01, 17, 20, 87.3, 88.72, 103.2, 103.97, 104, 150, 200, math.MaxFloat32, float32(math.Inf(1))}

// TestFastSigmoidTanhULP checks sigmoid32 and tanh32 against math (float64, rounded
// once to float32) on every 257th float32 and the edges: at most 1 ulp apart (an
// exhaustive run over all 2^32 inputs measured 1 ulp for both).
func TestFastSigmoidTanhULP(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func(float32) float32
		ref  func(float64) float64
	}{{"sigmoid", sigmoid32, sigmoid}, {"tanh", tanh32, math.Tanh}} {
		t.Run(c.name, func(t *testing.T) {
			worst, at := maxULPError(c.f, c.ref, 257, fastMathEdges)
			if worst > 1 {
				t.Fatalf("%s(%g) = %g, math gives %g: %d ulp apart, want <= 1", c.name, at, c.f(at), float32(c.ref(float64(at))), worst)
			}
		})
	}
}

// TestFastSigmoidTanhEdges checks exact values where the result is fixed: odd tanh
// with its signed zero, saturation to ±1, 0 and 1, and sigmoid's denormal results.
func TestFastSigmoidTanhEdges(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name      string
		got, want float32
	}{
		{"tanh(0)", tanh32(0), 0},
		{"tanh(20)", tanh32(20), 1},
		{"tanh(-inf)", tanh32(-inf), -1},
		{"tanh(max)", tanh32(math.MaxFloat32), 1},
		{"tanh(1e-30)", tanh32(1e-30), 1e-30},
		{"sigmoid(0)", sigmoid32(0), 0.5},
		{"sigmoid(inf)", sigmoid32(inf), 1},
		{"sigmoid(-inf)", sigmoid32(-inf), 0},
		{"sigmoid(-200)", sigmoid32(-200), 0},
		{"sigmoid(-100)", sigmoid32(-100), float32(math.Exp(-100))},
	} {
		if c.got != c.want {
			t.Errorf("%s = %g, want %g", c.name, c.got, c.want)
		}
	}
	if s := sigmoid32(-100); s == 0 || s >= math.SmallestNonzeroFloat32*(1<<23) {
		t.Errorf("sigmoid(-100) = %g, want a float32 denormal", s)
	}
	if z := tanh32(float32(math.Copysign(0, -1))); z != 0 || !math.Signbit(float64(z)) {
		t.Errorf("tanh(-0) = %g, want -0", z)
	}
	for _, v := range []float32{-3, -0.01, 0.02, 0.7, 5} {
		if s, n := tanh32(v), tanh32(-v); s != -n {
			t.Errorf("tanh(%g) = %g, tanh(%g) = %g: not odd", v, s, -v, n)
		}
	}
}

// TestSigmoidTanhInto checks the slice forms in both dtypes: float32 through the fast
// functions, float64 through math exactly.
func TestSigmoidTanhInto(t *testing.T) {
	src := []float64{-30, -2, -0.03, 0, 0.01, 1.5, 40}
	d64 := make([]float64, len(src))
	sigmoidInto(d64, src)
	for i, v := range src {
		if d64[i] != sigmoid(v) {
			t.Errorf("float64 sigmoid(%g) = %g, want %g", v, d64[i], sigmoid(v))
		}
	}
	tanhInto(d64, src)
	for i, v := range src {
		if d64[i] != math.Tanh(v) {
			t.Errorf("float64 tanh(%g) = %g, want %g", v, d64[i], math.Tanh(v))
		}
	}
	s32 := make([]float32, len(src))
	for i, v := range src {
		s32[i] = float32(v)
	}
	d32 := make([]float32, len(src))
	sigmoidInto(d32, s32)
	for i, v := range s32 {
		if d32[i] != sigmoid32(v) {
			t.Errorf("float32 sigmoid(%g) = %g, want %g", v, d32[i], sigmoid32(v))
		}
	}
	tanhInto(d32, s32)
	for i, v := range s32 {
		if d32[i] != tanh32(v) {
			t.Errorf("float32 tanh(%g) = %g, want %g", v, d32[i], tanh32(v))
		}
	}
}

// BenchmarkSigmoidTanh times the float32 forms against math's per value.
func BenchmarkSigmoidTanh(b *testing.B) {
	src := make([]float32, 4096)
	x, _ := randomBatch(3, 1, len(src), 1, TaskRegression)
	for i := range src {
		src[i] = 3 * x[i]
	}
	dst := make([]float32, len(src))
	for _, c := range []struct {
		name string
		f    func(dst, src []float32)
	}{
		{"sigmoid32", sigmoidInto[float32]},
		{"sigmoid-math", func(d, s []float32) {
			for i, v := range s {
				d[i] = float32(sigmoid(float64(v)))
			}
		}},
		{"tanh32", tanhInto[float32]},
		{"tanh-math", func(d, s []float32) {
			for i, v := range s {
				d[i] = float32(math.Tanh(float64(v)))
			}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.f(dst, src)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(src)), "ns/value")
		})
	}
}

// TestFastActVecMatchesScalar checks the slice forms (AVX-512 assembly where the CPU
// has it) bit for bit against sigmoidFast and tanhFast value by value, on every
// 4099th float32 pattern, random values across the clamps, the edges, and slices of
// every length up to 20 (the Go tail after the groups of 8).
func TestFastActVecMatchesScalar(t *testing.T) {
	var in []float64
	for u := uint64(0); u < 1<<32; u += 4099 {
		if v := math.Float32frombits(uint32(u)); v == v {
			in = append(in, float64(v))
		}
	}
	x, _ := randomBatch(5, 1, 20000, 1, TaskRegression)
	for _, v := range x {
		in = append(in, 60*float64(v), float64(v)/20)
	}
	for _, v := range fastMathEdges {
		in = append(in, float64(v), -float64(v), float64(math.Nextafter32(v, 0)), -float64(math.Nextafter32(v, 0)))
	}
	in = append(in, 0x1p-4, -0x1p-4, math.Nextafter(0x1p-4, 0), 200, -200, 20, -20, 1e300, -1e300, math.Inf(-1))
	for _, c := range []struct {
		name   string
		slice  func([]float64, bool)
		scalar func(float64) float64
	}{{"sigmoid", sigmoid64, sigmoidFast}, {"tanh", tanh64, tanhFast}} {
		t.Run(c.name, func(t *testing.T) {
			for n := range 21 {
				for lo := 0; lo+n <= len(in); lo += max(n, 1) * 97 {
					v := append([]float64(nil), in[lo:lo+n]...)
					c.slice(v, true)
					for i, got := range v {
						if want := c.scalar(in[lo+i]); math.Float64bits(got) != math.Float64bits(want) {
							t.Fatalf("%s of %d values: [%d] (%g) = %g, the scalar form %g (assembly %v)", c.name, n, i, in[lo+i], got, want, hasActAVX512)
						}
					}
				}
			}
			// The widening forms, from float32 values.
			in32 := make([]float32, len(in))
			for i, v := range in {
				in32[i] = float32(v)
			}
			from := map[string]func([]float64, []float32, bool){"sigmoid": sigmoidFrom[float32], "tanh": tanhFrom[float32]}[c.name]
			for n := range 21 {
				for lo := 0; lo+n <= len(in32); lo += max(n, 1) * 89 {
					v := make([]float64, n)
					from(v, in32[lo:lo+n], true)
					for i, got := range v {
						if want := c.scalar(float64(in32[lo+i])); math.Float64bits(got) != math.Float64bits(want) {
							t.Fatalf("%s from float32, %d values: [%d] (%g) = %g, the scalar form %g (assembly %v)", c.name, n, i, in32[lo+i], got, want, hasActAVX512)
						}
					}
				}
			}
			v := append([]float64(nil), in...)
			c.slice(v, true)
			for i, got := range v {
				if want := c.scalar(in[i]); math.Float64bits(got) != math.Float64bits(want) {
					t.Fatalf("%s(%g) = %g, the scalar form %g (assembly %v)", c.name, in[i], got, want, hasActAVX512)
				}
			}
		})
	}
}

// TestLSTMAssemblyMatchesGo runs an LSTM's Predict and Gradient with the AVX-512
// activations and with the Go ones (hasActAVX512 off): bit-identical, as the assembly
// performs the Go code's operations in its order. Without AVX-512 both runs are Go.
func TestLSTMAssemblyMatchesGo(t *testing.T) {
	cfg := LSTMConfig{Steps: 5, Features: 3, Hidden: []int{13, 8}, Outputs: 1, Task: TaskRegression, BatchSize: 7}
	m := mustLSTM(t, cfg)
	p := m.InitParams(2)
	x, y := randomBatch(4, cfg.BatchSize, cfg.Steps*cfg.Features, 1, TaskRegression)
	for i := range x {
		x[i] *= 4 // reach the saturated ends
	}
	run := func() ([]float32, []float32) {
		out := make([]float32, cfg.BatchSize)
		if err := m.Predict(p, x, cfg.BatchSize, out); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, m.NumParams())
		if _, err := m.Gradient(p, x, y, cfg.BatchSize, g); err != nil {
			t.Fatal(err)
		}
		return out, g
	}
	asmOut, asmGrad := run()
	saved := hasActAVX512
	hasActAVX512 = false
	goOut, goGrad := run()
	hasActAVX512 = saved
	for i := range asmOut {
		if math.Float32bits(asmOut[i]) != math.Float32bits(goOut[i]) {
			t.Fatalf("prediction %d: %v with the assembly, %v without", i, asmOut[i], goOut[i])
		}
	}
	for i := range asmGrad {
		if math.Float32bits(asmGrad[i]) != math.Float32bits(goGrad[i]) {
			t.Fatalf("gradient %d: %v with the assembly, %v without", i, asmGrad[i], goGrad[i])
		}
	}
}
