//go:build !amd64

package model

// hasFirstConvAVX512 tells whether firstConvDWAsm runs assembly: not on this
// architecture.
var hasFirstConvAVX512 = false

// firstConvDWAsm is the AVX-512 gradient of the fused first layer of amd64; here it
// declines.
func firstConvDWAsm(_ *convGeom, _, _, _ []float32, _, _ []int32, _, _ []float32) bool { return false }

// firstConvFwdAsm is the AVX-512 convolution of the fused first layer of amd64; here
// it declines.
func firstConvFwdAsm(_ *convGeom, _, _, _, _ []float32) bool { return false }

// hasFirstConvWinAVX512 tells whether firstConvDWAsm takes its windows-side-by-side
// kernel: not on this architecture.
var hasFirstConvWinAVX512 = false
