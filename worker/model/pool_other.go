//go:build !amd64

package model

// hasPoolAVX512 tells whether pool2Row runs assembly: not on this architecture.
var hasPoolAVX512 = false

// pool2Row is the AVX-512 pool row of amd64; here it does nothing.
func pool2Row(_, _, _ []float32, _ float32) bool { return false }

// pool2Arg is the AVX-512 recording pool of amd64; here it does nothing.
func pool2Arg(_, _ []float32, _ []int32, _, _, _ int, _ int32, _ bool) bool { return false }

// pool2GradAVX512Plane is the AVX-512 pool gradient of amd64; here it does nothing.
func pool2GradAVX512Plane(_, _, _ []float32, _ []int32, _, _, _ int, _ int32, _ bool) bool {
	return false
}

// hasIm2colAVX512 tells whether im2colS1 runs assembly: not on this architecture.
var hasIm2colAVX512 = false

// im2colS1 is the AVX-512 im2col of amd64; here it does nothing.
func im2colS1(_ *convGeom, _, _ []float32, _ int) bool { return false }

// hasCol2imAVX512 tells whether col2im3S1 runs assembly: not on this architecture.
var hasCol2imAVX512 = false

// col2im3S1 is the AVX-512 col2im of amd64; here it does nothing.
func col2im3S1(_ *convGeom, _, _ []float32, _ int) bool { return false }

// hasDotAVX512 tells whether dot3x8 runs assembly: not on this architecture.
var hasDotAVX512 = false

// dot3x8 is the AVX-512 block of inner products of amd64; here it does nothing.
func dot3x8(_, _, _, _ int, _ []float32, _, _ int, _ []float32, _, _ int, _ []float32, _ int) bool {
	return false
}

// hasRowsAVX512 tells whether sumRows and fillRows run assembly: not on this
// architecture.
var hasRowsAVX512 = false

// sumRows is the AVX-512 row sum of amd64; here it does nothing.
func sumRows(_ []float32, _, _, _ int) (float32, bool) { return 0, false }

// fillRows is the AVX-512 row fill of amd64; here it does nothing.
func fillRows(_, _ []float32, _ int) bool { return false }

// hasMaxAbsAVX512 tells whether maxAbsBits runs assembly: not on this architecture.
var hasMaxAbsAVX512 = false

// maxAbsBitsAsm is the AVX-512 maxAbsBits of amd64; here it declines.
func maxAbsBitsAsm([]float32) (uint32, bool) { return 0, false }
