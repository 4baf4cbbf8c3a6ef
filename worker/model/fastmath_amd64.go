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
