//go:build !amd64

package model

// hasPool2PlanesAVX512 tells whether the planes' pool kernels run assembly: not on
// this architecture.
var hasPool2PlanesAVX512 = false

// pool2ArgPlanes is the AVX-512 pool over planes of amd64; here it does nothing.
func pool2ArgPlanes(_, _ []float32, _ []int32, _ []pool2Chunk, _, _, _, _ int, _ int32, _ bool) bool {
	return false
}

// pool2GradPlanes is the AVX-512 pool gradient over planes of amd64; here it does
// nothing.
func pool2GradPlanes(_, _, _ []float32, _ []int32, _ []pool2Chunk, _, _, _, _ int, _ int32, _ bool) bool {
	return false
}
