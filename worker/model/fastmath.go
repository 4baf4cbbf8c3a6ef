package model

import "math"

// This file holds the sigmoid and tanh of float32 graphs (the LSTM cell, sigmoid and
// tanh activations): computed in float64 by a branch-free exp (a 16-entry table of
// 2^(j/16) and a degree-4 polynomial, as glibc's expf does) and rounded once to
// float32, so each result is the correctly rounded value or its neighbour (at most 1
// ulp from math's, including saturation and results in float32's denormal range).
// They replace a call of math.Exp per value, whose sign branch random inputs
// mispredict half the time. With AVX-512 the slices run in assembly, eight values at a
// time (fastmath_amd64.s), with the same operations in the same order, so the results
// are bit-identical to the Go code's on any CPU; the float64() conversions below keep
// the compiler from fusing a product and a sum into one FMA (GOAMD64=v3), which the
// assembly does not do. Deterministic at any thread count. float64 graphs (the
// gradient checks) keep math.Exp and math.Tanh.

// expBits is the table's size in log2 (16 entries: two AVX-512 registers).
const expBits = 4

// expTab[j] holds the bits of 2^(j/16) less j<<(52-expBits), so that adding k<<(52-4)
// for an integer k = 16q + j gives the bits of 2^(k/16) = 2^q·2^(j/16).
var expTab = func() (t [1 << expBits]uint64) {
	for j := range t {
		t[j] = math.Float64bits(math.Exp2(float64(j)/(1<<expBits))) - uint64(j)<<(52-expBits)
	}
	return t
}()

const (
	expInvLn2N = (1 << expBits) / math.Ln2 // x·expInvLn2N = x/ln2 in units of 1/16
	expShift   = 0x1.8p52                  // adding it rounds to an integer, kept in the low bits
	// 2^(r/16) = exp(r·c1) for |r| <= 1/2: Taylor's terms to the fourth (the fifth is
	// below 4e-11 relative).
	expC1 = math.Ln2 / (1 << expBits)
	expC2 = expC1 * expC1 / 2
	expC3 = expC1 * expC1 * expC1 / 6
	expC4 = expC1 * expC1 * expC1 * expC1 / 24
)

// expFast returns e^x within 5e-11 relative for x in [-700, 700] (callers clamp).
func expFast(x float64) float64 {
	z := float64(x * expInvLn2N)
	kd := z + expShift
	ki := math.Float64bits(kd)
	kd -= expShift
	r := z - kd // |r| <= 1/2
	t := math.Float64frombits(expTab[ki%(1<<expBits)] + ki<<(52-expBits))
	p := float64(r*expC4) + expC3
	p = float64(r*p) + expC2
	p = float64(r*p) + expC1
	p = float64(r*p) + 1
	return t * p
}

// sigmoidFast is 1/(1+e^-x) within 1e-10 relative. Beyond ±200 no float32 result
// changes (1 or 0), so the input is clamped there.
func sigmoidFast(x float64) float64 {
	x = min(max(x, -200), 200)
	return 1 / (1 + expFast(-x))
}

// tanhSmall is where tanhFast switches from the odd series to the exponential form.
const tanhSmall = 0x1p-4

// tanhFast is tanh(x) within 1e-9 relative: (1-e)/(1+e) with e = e^-2|x| for
// |x| >= 1/16, the odd Taylor series to x⁹ below (where 1-e would cancel; its next
// term is 1e-12 relative at 1/16), the sign restored by its bit. Both are computed and
// one kept without a branch, since small and large values mix in a layer. |x| is
// clamped at 20, where tanh rounds to 1 in float32.
func tanhFast(x float64) float64 {
	a := min(math.Abs(x), 20)
	e := expFast(-2 * a)
	big := (1 - e) / (1 + e)
	a2 := a * a
	q := float64(a2*(62.0/2835)) - 17.0/315
	q = float64(a2*q) + 2.0/15
	q = float64(a2*q) - 1.0/3
	q = float64(a2*q) + 1
	small := a * q
	var keep uint64 // all ones where the series is used
	if a < tanhSmall {
		keep = ^uint64(0)
	}
	bits := math.Float64bits(small)&keep | math.Float64bits(big)&^keep
	return math.Float64frombits(bits | math.Float64bits(x)&(1<<63))
}

// sigmoid32 and tanh32 are the float32 results of one value (the slice forms below are
// the fast path).
func sigmoid32(v float32) float32 { return float32(sigmoidFast(float64(v))) }
func tanh32(v float32) float32    { return float32(tanhFast(float64(v))) }

// sigmoid64 and tanh64 apply σ or tanh to v in place: the fast forms when fast is set
// (float32 graphs), math's otherwise (float64 graphs). The values are float64 so that
// no float32 conversion sits inside the loop: the scalar conversions write only part
// of their register, which would chain each value's computation to the previous one's.
func sigmoid64(v []float64, fast bool) {
	if fast {
		for i := sigmoidVec(v); i < len(v); i++ {
			v[i] = sigmoidFast(v[i])
		}
		return
	}
	for i, x := range v {
		v[i] = sigmoid(x)
	}
}

func tanh64(v []float64, fast bool) {
	if fast {
		for i := tanhVec(v); i < len(v); i++ {
			v[i] = tanhFast(v[i])
		}
		return
	}
	for i, x := range v {
		v[i] = math.Tanh(x)
	}
}

// sigmoidFrom sets dst[i] = σ(src[i]) in float64 from a graph's values: in a float32
// graph (fast) the assembly widens and computes in one pass where it can.
func sigmoidFrom[T float](dst []float64, src []T, fast bool) {
	src = src[:len(dst)]
	n := 0
	if s32, ok := any(src).([]float32); ok && fast {
		n = sigmoidVecFrom32(dst, s32)
	}
	widen(dst[n:], src[n:])
	sigmoid64(dst[n:], fast)
}

// tanhFrom is sigmoidFrom for tanh.
func tanhFrom[T float](dst []float64, src []T, fast bool) {
	src = src[:len(dst)]
	n := 0
	if s32, ok := any(src).([]float32); ok && fast {
		n = tanhVecFrom32(dst, s32)
	}
	widen(dst[n:], src[n:])
	tanh64(dst[n:], fast)
}

// isFloat32 tells whether T is float32 (a graph whose sigmoid and tanh are the fast ones).
func isFloat32[T float]() bool {
	var z T
	_, ok := any(z).(float32)
	return ok
}

// widen copies src into dst as float64.
func widen[T float](dst []float64, src []T) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] = float64(v)
	}
}

// narrow copies src into dst as T.
func narrow[T float](dst []T, src []float64) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] = T(v)
	}
}

// actChunk is how many values sigmoidInto and tanhInto convert at a time.
const actChunk = 64

// sigmoidInto sets dst[i] = σ(src[i]) (dst may be src): the fast form in float32, math's
// in float64.
func sigmoidInto[T float](dst, src []T) {
	src = src[:len(dst)]
	fast := isFloat32[T]()
	var buf [actChunk]float64
	for lo := 0; lo < len(dst); lo += actChunk {
		b := buf[:min(actChunk, len(dst)-lo)]
		sigmoidFrom(b, src[lo:], fast)
		narrow(dst[lo:lo+len(b)], b)
	}
}

// tanhInto sets dst[i] = tanh(src[i]) (dst may be src): the fast form in float32, math's
// in float64.
func tanhInto[T float](dst, src []T) {
	src = src[:len(dst)]
	fast := isFloat32[T]()
	var buf [actChunk]float64
	for lo := 0; lo < len(dst); lo += actChunk {
		b := buf[:min(actChunk, len(dst)-lo)]
		tanhFrom(b, src[lo:], fast)
		narrow(dst[lo:lo+len(b)], b)
	}
}
