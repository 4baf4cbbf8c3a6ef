package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ulp32 is the distance in float32 ulps between got and the float32 rounding of want.
func ulp32(got float32, want float64) int64 {
	w := float32(want)
	a, b := int64(int32(math.Float32bits(got))), int64(int32(math.Float32bits(w)))
	if a < 0 {
		a = math.MinInt32 - a
	}
	if b < 0 {
		b = math.MinInt32 - b
	}
	if a > b {
		return a - b
	}
	return b - a
}

// fast32Inputs are values over the range that matters, dense near the switches.
func fast32Inputs() []float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	var in []float32
	for range 400000 {
		in = append(in, float32(rng.NormFloat64()*4), float32((rng.Float64()*2-1)*100), float32((rng.Float64()*2-1)*0.6))
	}
	for _, c := range []float32{0.25, 0.125, 10, 88, 87, 9} {
		for _, s := range []float32{1, -1} {
			v := c * s
			for range 2000 {
				in = append(in, v)
				v = math.Nextafter32(v, 0)
			}
		}
	}
	return append(in, 0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1e-45, 200, -200, 1e30, -1e30)
}

// TestFast32ULP measures the float32 forms against math's: at most 4 ulp for sigmoid and
// 6 for tanh (below -88, sigmoid's absolute error under 7e-39).
func TestFast32ULP(t *testing.T) {
	var worstS, worstT int64
	for _, x := range fast32Inputs() {
		want := 1 / (1 + math.Exp(-float64(x)))
		if got := sigmoidFast32(x); x >= -88 {
			worstS = max(worstS, ulp32(got, want))
		} else if math.Abs(float64(got)-want) > 7e-39 {
			t.Fatalf("sigmoid32(%g) = %g, want %g", x, got, want)
		}
		worstT = max(worstT, ulp32(tanhFast32(x), math.Tanh(float64(x))))
	}
	t.Logf("max error: sigmoid %d ulp, tanh %d ulp", worstS, worstT)
	if worstS > 4 || worstT > 6 {
		t.Fatalf("max error: sigmoid %d ulp (bound 4), tanh %d ulp (bound 6)", worstS, worstT)
	}
	for _, c := range []struct {
		name string
		f    func(float32) float32
		x    float32
		want float32
	}{{"sigmoid", sigmoidFast32, float32(math.Inf(1)), 1}, {"sigmoid", sigmoidFast32, float32(math.Inf(-1)), 0},
		{"tanh", tanhFast32, float32(math.Inf(1)), 1}, {"tanh", tanhFast32, float32(math.Inf(-1)), -1}} {
		if got := c.f(c.x); math.Abs(float64(got-c.want)) > 1e-38 {
			t.Errorf("%s(%g) = %g, want %g", c.name, c.x, got, c.want)
		}
	}
	if !math.IsNaN(float64(sigmoidFast32(float32(math.NaN())))) || !math.IsNaN(float64(tanhFast32(float32(math.NaN())))) {
		t.Error("NaN in, not NaN out")
	}
}

// TestFast32VecMatchesScalar checks the assembly against the Go code, bit for bit, at
// every length and offset (the tail is Go's).
func TestFast32VecMatchesScalar(t *testing.T) {
	in := fast32Inputs()
	in = append(in, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)))
	for _, c := range []struct {
		name   string
		vec    func(dst, src []float32)
		scalar func(float32) float32
	}{{"sigmoid", sigmoid32Into, sigmoidFast32}, {"tanh", tanh32Into, tanhFast32}} {
		out := make([]float32, len(in))
		c.vec(out, in)
		for i, x := range in {
			if want := c.scalar(x); math.Float32bits(out[i]) != math.Float32bits(want) {
				t.Fatalf("%s(%g): %g, the scalar form %g (assembly %v)", c.name, x, out[i], want, hasActAVX512)
			}
		}
		for n := range 40 {
			for lo := range 3 {
				o := make([]float32, n)
				c.vec(o, in[lo:lo+n])
				for i := range o {
					if want := c.scalar(in[lo+i]); math.Float32bits(o[i]) != math.Float32bits(want) {
						t.Fatalf("%s of %d values at %d: [%d] = %g, want %g", c.name, n, lo, i, o[i], want)
					}
				}
			}
		}
	}
}
