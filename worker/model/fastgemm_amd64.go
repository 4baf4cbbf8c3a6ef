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

// microKernelAVX512x4 is the 4-row part of the 12x32 kernel: 4 rows of a 12-row A
// panel times a 32-column B panel.
//
//go:noescape
func microKernelAVX512x4(kb int, a, b, c *float32, ldc int)

// microKernelAVX512St is microKernelAVX512 storing its block instead of adding it.
//
//go:noescape
func microKernelAVX512St(kb int, a, b, c *float32, ldc int)

// microKernelAVX512x4St is microKernelAVX512x4 storing its rows instead of adding them.
//
//go:noescape
func microKernelAVX512x4St(kb int, a, b, c *float32, ldc int)

// microKernelAVX512P is microKernelAVX512 prefetching C's block before its depth loop.
//
//go:noescape
func microKernelAVX512P(kb int, a, b, c *float32, ldc int)

// microKernelAVX512StP is microKernelAVX512St prefetching C's block before its depth
// loop.
//
//go:noescape
func microKernelAVX512StP(kb int, a, b, c *float32, ldc int)

// prefetchCKernels tells whether gemmKernels gives the AVX-512 kernel the 12-row
// kernels that prefetch C's block (tests and benchmarks switch it and rebuild the kernel).
var prefetchCKernels = true

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
		run, runStore := microKernelAVX512, microKernelAVX512St
		if prefetchCKernels {
			run, runStore = microKernelAVX512P, microKernelAVX512StP
		}
		k := asmKernel("avx512", 12, 32, run)
		quad := func(f func(kb int, a, b, c *float32, ldc int)) func(kb int, a, b, c []float32, ldc int) {
			return func(kb int, a, b, c []float32, ldc int) {
				if kb == 0 {
					return
				}
				_ = a[(kb-1)*12+3]
				_ = b[kb*32-1]
				_ = c[3*ldc+31]
				f(kb, &a[0], &b[0], &c[0], ldc)
			}
		}
		k.quad = quad(microKernelAVX512x4)
		if hasStoreKernels {
			k.runStore = asmKernel("avx512", 12, 32, runStore).run
			k.quadStore = quad(microKernelAVX512x4St)
		}
		ks = append(ks, k)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, asmKernel("avx2", 6, 16, microKernelAVX2))
	}
	return append(ks, goKernel)
}

// hasStoreKernels tells whether gemmKernels gives the AVX-512 kernel its storing
// variants (tests switch it off and rebuild the kernel).
var hasStoreKernels = true

// transpose8x8AVX2 transposes blocks 8x8 blocks side by side (fastgemm_amd64.s):
// dst[(8b+q)*ld + r] = src[r*lds + 8b+q].
//
//go:noescape
func transpose8x8AVX2(src *float32, lds int, dst *float32, ld int, blocks int)

// hasTranspose8 tells whether transpose8 runs the assembly (tests switch it off).
var hasTranspose8 = cpu.X86.HasAVX2

// transpose8 transposes 8 rows of src (row stride lds) over their first 8·⌊kb/8⌋
// values into dst (row stride ld), dst[q*ld+r] = src[r*lds+q], and returns how many
// values of each row it moved (0 without AVX2).
func transpose8(dst []float32, ld int, src []float32, lds, kb int) int {
	blocks := kb / 8
	if !hasTranspose8 || blocks == 0 {
		return 0
	}
	_ = src[7*lds+8*blocks-1]
	_ = dst[(8*blocks-1)*ld+7]
	transpose8x8AVX2(&src[0], lds, &dst[0], ld, blocks)
	return 8 * blocks
}
