package model

import "golang.org/x/sys/cpu"

// microKernelAVX2 is the 6x16 micro-kernel in AVX2/FMA assembly (fastgemm_amd64.s).
//
//go:noescape
func microKernelAVX2(kb int, a, b, c *float32, ldc int)

// microKernelAVX512 is the 12x32 micro-kernel in AVX-512 assembly.
//
//go:noescape
func microKernelAVX512(kb int, a, b, c *float32, ldc int)

// asmKernel wraps an assembly micro-kernel with the bounds checks of what it reads and
// writes.
func asmKernel(name string, mr, nr int, f func(kb int, a, b, c *float32, ldc int)) gemmKernel {
	return gemmKernel{name: name, mr: mr, nr: nr, run: func(kb int, a, b, c []float32, ldc int) {
		if kb == 0 {
			return
		}
		_ = a[kb*mr-1]
		_ = b[kb*nr-1]
		_ = c[(mr-1)*ldc+nr-1]
		f(kb, &a[0], &b[0], &c[0], ldc)
	}}
}

// gemmKernels lists the micro-kernels this CPU runs, fastest first.
func gemmKernels() []gemmKernel {
	var ks []gemmKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, asmKernel("avx512", 12, 32, microKernelAVX512))
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, asmKernel("avx2", 6, 16, microKernelAVX2))
	}
	return append(ks, goKernel)
}
