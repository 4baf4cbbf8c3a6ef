//go:build !openblas || !cgo

package model

// blasSgemm is the OpenBLAS hook of packedSgemm; without -tags openblas there is none.
func blasSgemm(bool, bool, int, int, int, []float32, int, []float32, int, []float32, int) bool {
	return false
}

// gemmBackend names the GEMM implementation in use.
const gemmBackend = "go"
