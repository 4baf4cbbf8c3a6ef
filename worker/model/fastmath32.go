package model

import "math"

// This file holds float32 sigmoid and tanh for prediction graphs only (forward ops
// that keep no activations for a gradient: the LSTM cell in Predict). They compute in
// float32, sixteen values per AVX-512 instruction instead of eight in float64, and
// trade the 1-ulp bound of fastmath.go for a few ulp: at most 4 ulp for sigmoid and 6
// for tanh against math's correctly rounded values (TestFast32ULP samples it, TestFast32ULPAll sweeps float32), and for
// x < -88, where σ(x) < 7e-39 is in float32's denormal range, an absolute error under
// 7e-39. Training keeps fastmath.go's forms, so gradients are unchanged. As there, the
// assembly (fastmath32_amd64.s) does the Go code's operations in its order without FMA,
// so the results are bit-identical with or without it.

// expTab32[j] holds the bits of 2^(j/16) in float32 less j<<(23-expBits).
var expTab32 = func() (t [1 << expBits]uint32) {
	for j := range t {
		t[j] = math.Float32bits(float32(math.Exp2(float64(j)/(1<<expBits)))) - uint32(j)<<(23-expBits)
	}
	return t
}()

const (
	expShift32 = 0x1.8p23
	// e^r for |r| <= ln2/32: Taylor's terms to the third (the fourth is below 1e-8
	// relative).
	// ln2/16 in two parts, the first with 12 significant bits so that k times it is
	// exact for |k| < 2^12 (Cody and Waite's reduction: the product x·16/ln2 alone
	// loses up to 1e-4 of r in float32 near |x| = 88).
	exp32Ln2Hi = 0x1.62ep-5
	exp32Ln2Lo = 0x1.0bfbe8p-19
	// tanh32Small is where tanhFast32 switches from the odd series (to x⁹; the next
	// term is 9e-9 relative at 1/4) to (1-e)/(1+e).
	tanh32Small = 0.25
)

// expFast32 returns e^x in float32 for x in [-88, 88]; below -87.3 the result is not
// e^x but a value under 2^-126 (callers add it to 1).
func expFast32(x float32) float32 {
	z := float32(x * expInvLn2N)
	kd := z + expShift32
	ki := math.Float32bits(kd)
	kd -= expShift32
	r := x - float32(kd*exp32Ln2Hi)
	r -= float32(kd * exp32Ln2Lo)
	t := math.Float32frombits(expTab32[ki%(1<<expBits)] + ki<<(23-expBits))
	p := float32(r*(1.0/6)) + 0.5
	p = float32(r*p) + 1
	p = float32(r*p) + 1
	return t * p
}

// sigmoidFast32 is σ(x) in float32 (see the file's comment for the error).
func sigmoidFast32(x float32) float32 {
	x = min(max(x, -88), 88)
	return 1 / (1 + expFast32(-x))
}

// tanhFast32 is tanh(x) in float32, the same form as tanhFast's.
func tanhFast32(x float32) float32 {
	a := min(math.Float32frombits(math.Float32bits(x)&^(1<<31)), 10)
	e := expFast32(-2 * a)
	big := (1 - e) / (1 + e)
	a2 := a * a
	q := float32(a2*(62.0/2835)) - 17.0/315
	q = float32(a2*q) + 2.0/15
	q = float32(a2*q) - 1.0/3
	q = float32(a2*q) + 1
	small := a * q
	var keep uint32
	if a < tanh32Small {
		keep = ^uint32(0)
	}
	bits := math.Float32bits(small)&keep | math.Float32bits(big)&^keep
	return math.Float32frombits(bits | math.Float32bits(x)&(1<<31))
}

// sigmoid32Into sets dst[i] = sigmoidFast32(src[i]) (dst may be src).
func sigmoid32Into(dst, src []float32) {
	src = src[:len(dst)]
	for i := sigmoid32Vec(dst, src); i < len(dst); i++ {
		dst[i] = sigmoidFast32(src[i])
	}
}

// tanh32Into sets dst[i] = tanhFast32(src[i]) (dst may be src).
func tanh32Into(dst, src []float32) {
	src = src[:len(dst)]
	for i := tanh32Vec(dst, src); i < len(dst); i++ {
		dst[i] = tanhFast32(src[i])
	}
}
