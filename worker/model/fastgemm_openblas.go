//go:build openblas && cgo

package model

import "github.com/cohort-dev/cohort/worker/model/openblas"

// blasSgemm computes C += op(A)·op(B) with OpenBLAS (built with -tags openblas).
func blasSgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) bool {
	openblas.Sgemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc)
	return true
}

// gemmBackend names the GEMM implementation in use.
const gemmBackend = "openblas"
