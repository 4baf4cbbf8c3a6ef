//go:build !amd64

package model

// gemmKernels lists the micro-kernels this CPU runs, fastest first.
func gemmKernels() []gemmKernel { return []gemmKernel{goKernel} }
