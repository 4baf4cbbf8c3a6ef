//go:build !amd64

package model

// gemmKernels lists the micro-kernels this CPU runs, fastest first.
func gemmKernels() []gemmKernel { return []gemmKernel{goKernel} }

// hasTranspose8 tells whether transpose8 has an assembly version: not on this
// architecture.
var hasTranspose8 = false

// transpose8 is the assembly 8-row transpose of amd64; here it moves nothing.
func transpose8([]float32, int, []float32, int, int) int { return 0 }

// hasStoreKernels tells whether the micro-kernel has storing variants: not on this
// architecture (the Go kernel adds, after C is cleared for beta 0).
var hasStoreKernels = false

// prefetchCKernels tells whether the micro-kernel prefetches C's block: there is no
// assembly kernel on this architecture.
var prefetchCKernels = false
