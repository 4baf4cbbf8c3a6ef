//go:build !amd64

package model

// hasActAVX512 tells whether sigmoidVec and tanhVec run assembly: not on this
// architecture.
var hasActAVX512 = false

// sigmoidVec is the AVX-512 sigmoid of amd64; here it takes nothing.
func sigmoidVec([]float64) int { return 0 }

// tanhVec is the AVX-512 tanh of amd64; here it takes nothing.
func tanhVec([]float64) int { return 0 }

// sigmoidVecFrom32 is the AVX-512 widening sigmoid of amd64; here it takes nothing.
func sigmoidVecFrom32([]float64, []float32) int { return 0 }

// tanhVecFrom32 is the AVX-512 widening tanh of amd64; here it takes nothing.
func tanhVecFrom32([]float64, []float32) int { return 0 }

// sigmoid32Vec is the AVX-512 float32 sigmoid of amd64; here it takes nothing.
func sigmoid32Vec(_, _ []float32) int { return 0 }

// tanh32Vec is the AVX-512 float32 tanh of amd64; here it takes nothing.
func tanh32Vec(_, _ []float32) int { return 0 }
