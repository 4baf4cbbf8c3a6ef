//go:build !amd64

package model

// hasPoolAVX512 tells whether pool2Row runs assembly: not on this architecture.
var hasPoolAVX512 = false

// pool2Row is the AVX-512 pool row of amd64; here it does nothing.
func pool2Row(_, _, _ []float32, _ float32) bool { return false }
