package model

import (
	"math"
	"os"
	"testing"
)

// TestFast32ULPAll measures sigmoidFast32 and tanhFast32 over every stride-th float32
// input (COHORT_FAST32_ALL=stride; 1 is all 2^32, about a minute per function), NaNs
// skipped. Off by default: TestFast32ULP covers the ranges that matter in the ordinary
// run.
func TestFast32ULPAll(t *testing.T) {
	stride := 0
	if s := os.Getenv("COHORT_FAST32_ALL"); s != "" {
		for _, c := range s {
			stride = stride*10 + int(c-'0')
		}
	}
	if stride <= 0 {
		t.Skip("set COHORT_FAST32_ALL=stride to run")
	}
	var worstS, worstT int64
	var worstSx, worstTx float32
	for b := uint64(0); b < 1<<32; b += uint64(stride) {
		x := math.Float32frombits(uint32(b))
		if x != x {
			continue
		}
		if x >= -88 {
			if e := ulp32(sigmoidFast32(x), 1/(1+math.Exp(-float64(x)))); e > worstS {
				worstS, worstSx = e, x
			}
		} else if d := math.Abs(float64(sigmoidFast32(x)) - 1/(1+math.Exp(-float64(x)))); d > 7e-39 {
			t.Fatalf("sigmoid32(%g): absolute error %g", x, d)
		}
		if e := ulp32(tanhFast32(x), math.Tanh(float64(x))); e > worstT {
			worstT, worstTx = e, x
		}
	}
	t.Logf("stride %d: sigmoid at most %d ulp (at %g), tanh %d ulp (at %g)", stride, worstS, worstSx, worstT, worstTx)
	if worstS > 4 || worstT > 6 {
		t.Fatal("over the bounds (4 and 6 ulp)")
	}
}
