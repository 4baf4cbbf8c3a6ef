package model

import "golang.org/x/sys/cpu"

// pool2RowAVX512 is one output row of the forward-only 2x2 max-pool (pool_amd64.s):
// y[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1], floor) for j < n.
//
//go:noescape
func pool2RowAVX512(r0, r1, y *float32, n int, floor float32)

// hasPoolAVX512 tells whether pool2Row runs the assembly (tests switch it off).
var hasPoolAVX512 = cpu.X86.HasAVX512F

// pool2Row computes one output row of a forward-only float32 2x2 pool in AVX-512 and
// reports whether it did (false: the caller's Go loop does it).
func pool2Row(r0, r1, y []float32, floor float32) bool {
	n := len(y)
	if !hasPoolAVX512 || n == 0 {
		return false
	}
	_, _ = r0[2*n-1], r1[2*n-1]
	pool2RowAVX512(&r0[0], &r1[0], &y[0], n, floor)
	return true
}
