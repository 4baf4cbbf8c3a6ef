package model

import "golang.org/x/sys/cpu"

// sigmoidAVX512 sets v[i] = sigmoidFast(v[i]) for n values, n a multiple of 8
// (fastmath_amd64.s).
//
//go:noescape
func sigmoidAVX512(v *float64, n int)

// tanhAVX512 sets v[i] = tanhFast(v[i]) for n values, n a multiple of 8.
//
//go:noescape
func tanhAVX512(v *float64, n int)

// sigmoidAVX512From32 sets dst[i] = sigmoidFast(float64(src[i])) for n values, n a
// multiple of 8.
//
//go:noescape
func sigmoidAVX512From32(dst *float64, src *float32, n int)

// tanhAVX512From32 sets dst[i] = tanhFast(float64(src[i])) for n values, n a multiple
// of 8.
//
//go:noescape
func tanhAVX512From32(dst *float64, src *float32, n int)

// hasActAVX512 tells whether sigmoidVec and tanhVec run the assembly (tests switch it
// off to compare).
var hasActAVX512 = cpu.X86.HasAVX512F

// sigmoidVec applies sigmoidFast in place to the longest prefix of v the assembly
// takes (whole groups of 8 values) and returns its length: 0 without AVX-512.
func sigmoidVec(v []float64) int {
	n := len(v) &^ 7
	if !hasActAVX512 || n == 0 {
		return 0
	}
	sigmoidAVX512(&v[0], n)
	return n
}

// tanhVec is sigmoidVec for tanhFast.
func tanhVec(v []float64) int {
	n := len(v) &^ 7
	if !hasActAVX512 || n == 0 {
		return 0
	}
	tanhAVX512(&v[0], n)
	return n
}

// sigmoidVecFrom32 sets dst[i] = sigmoidFast(float64(src[i])) for the longest prefix the
// assembly takes (whole groups of 8; len(src) >= len(dst)) and returns its length: 0
// without AVX-512.
func sigmoidVecFrom32(dst []float64, src []float32) int {
	n := len(dst) &^ 7
	if !hasActAVX512 || n == 0 {
		return 0
	}
	_ = src[n-1]
	sigmoidAVX512From32(&dst[0], &src[0], n)
	return n
}

// tanhVecFrom32 is sigmoidVecFrom32 for tanhFast.
func tanhVecFrom32(dst []float64, src []float32) int {
	n := len(dst) &^ 7
	if !hasActAVX512 || n == 0 {
		return 0
	}
	_ = src[n-1]
	tanhAVX512From32(&dst[0], &src[0], n)
	return n
}

// sigmoid32AVX512 sets dst[i] = sigmoidFast32(src[i]) for n values, n a multiple of 16
// (fastmath32_amd64.s).
//
//go:noescape
func sigmoid32AVX512(dst, src *float32, n int)

// tanh32AVX512 sets dst[i] = tanhFast32(src[i]) for n values, n a multiple of 16.
//
//go:noescape
func tanh32AVX512(dst, src *float32, n int)

// sigmoid32Vec runs sigmoid32AVX512 on the longest prefix it takes (whole groups of
// 16; len(src) >= len(dst)) and returns its length: 0 without AVX-512.
func sigmoid32Vec(dst, src []float32) int {
	n := len(dst) &^ 15
	if !hasActAVX512 || n == 0 {
		return 0
	}
	_ = src[n-1]
	sigmoid32AVX512(&dst[0], &src[0], n)
	return n
}

// tanh32Vec is sigmoid32Vec for tanhFast32.
func tanh32Vec(dst, src []float32) int {
	n := len(dst) &^ 15
	if !hasActAVX512 || n == 0 {
		return 0
	}
	_ = src[n-1]
	tanh32AVX512(&dst[0], &src[0], n)
	return n
}
