package model

import "golang.org/x/sys/cpu"

// packConvBAVX512 is packConvBGo in AVX-512 (pack_amd64.s): per half of a panel row,
// two masked loads of the input span and one two-table permute, zero-masked to the
// half's positions.
//
//go:noescape
func packConvBAVX512(dst, img *float32, offs *int32, halves *packHalf, kb, panels int)

// hasPackAVX512 tells whether convolutions pack their products' B panels straight
// from the image (packConvB in assembly); tests switch it off, and then the forward
// convolution takes im2col and packB.
var hasPackAVX512 = cpu.X86.HasAVX512F

// packConvB writes panels panels of kb rows each, rows off(q) for q in offs, into dst
// (see convImageB.packB, which checks the bounds).
func packConvB(dst, img []float32, offs []int32, halves []packHalf, kb, panels int) {
	if !hasPackAVX512 {
		packConvBGo(dst, img, offs, halves, kb, panels)
		return
	}
	if kb == 0 || panels == 0 {
		return
	}
	packConvBAVX512(&dst[0], &img[0], &offs[0], &halves[0], kb, panels)
}

// packHWCAVX512 is one panel of hwcB.packB in AVX-512 (pack_amd64.s): per row two
// 16-value copies (the second zeros when o1 < 0).
//
//go:noescape
func packHWCAVX512(dst, hwc *float32, rows *int32, kb, o0, o1 int)

// packHWCPanel writes one panel of kb rows (see hwcB.packB) and reports whether it
// did (false: no AVX-512, the caller's loop does it).
func packHWCPanel(panel, hwc []float32, rows []int32, o0, o1 int) bool {
	if !hasPackAVX512 || len(rows) == 0 {
		return false
	}
	// rowOff grows with the position, so the last row reads furthest.
	_ = panel[len(rows)*32-1]
	_ = hwc[int(rows[len(rows)-1])+max(o0, o1)+15]
	_ = hwc[int(rows[0])]
	packHWCAVX512(&panel[0], &hwc[0], &rows[0], len(rows), o0, o1)
	return true
}

// packRowsAVX512 is one panel of packB for a B that is not transposed (pack_amd64.s):
// per row, cols (1 to 32) values in two masked loads, stored zero-padded to 32.
//
//go:noescape
func packRowsAVX512(dst, b *float32, ldb, kb, cols int)

// hasPackRowsAVX512 tells whether packB copies the rows of a B that is not transposed
// in assembly (tests switch it off: then a copy call per row).
var hasPackRowsAVX512 = cpu.X86.HasAVX512F

// packRowsPanel writes one panel of kb rows of cols values of b (row stride ldb) into
// p, zero-padded to 32 columns, and reports whether it did (false: the caller's loop
// does it).
func packRowsPanel(p, b []float32, ldb, kb, cols int) bool {
	if !hasPackRowsAVX512 || kb == 0 || cols <= 0 || cols > 32 {
		return false
	}
	_ = p[kb*32-1]
	_ = b[(kb-1)*ldb+cols-1]
	packRowsAVX512(&p[0], &b[0], ldb, kb, cols)
	return true
}

// prefetchAVX512 asks for the cache lines of n values at p (pack_amd64.s).
//
//go:noescape
func prefetchAVX512(p *float32, n int)

// prefetchNext tells whether the convolutions prefetch their next image (benchmarks
// switch it).
var prefetchNext = true

// prefetch asks for the cache lines of s, when prefetchNext is set (a hint: nothing
// is read into registers, nothing faults).
func prefetch(s []float32) {
	if prefetchNext && len(s) > 0 {
		prefetchAVX512(&s[0], len(s))
	}
}

// The column-edge micro-kernels (pack_amd64.s): microKernelAVX512 and
// microKernelAVX512x4, adding or (St) storing, with C's columns 16-31 written under
// mask (bit j: column 16+j).
//
//go:noescape
func microKernelAVX512M(kb int, a, b, c *float32, ldc int, mask uint64)

//go:noescape
func microKernelAVX512StM(kb int, a, b, c *float32, ldc int, mask uint64)

//go:noescape
func microKernelAVX512x4M(kb int, a, b, c *float32, ldc int, mask uint64)

//go:noescape
func microKernelAVX512x4StM(kb int, a, b, c *float32, ldc int, mask uint64)

// hasEdgeKernels tells whether macroKernel runs partial panels of 17 to 31 columns
// through the masked kernels (tests switch it off: then through the edge tile).
var hasEdgeKernels = cpu.X86.HasAVX512F

// edgeKernelsAVX512 are the masked kernels, with the bounds checks of what they read
// and write (cols of C's columns, 16 < cols < 32).
var edgeKernelsAVX512 = func() *edgeKernels {
	wrap := func(rows int, f func(kb int, a, b, c *float32, ldc int, mask uint64)) func(kb int, a, b, c []float32, ldc, cols int) {
		return func(kb int, a, b, c []float32, ldc, cols int) {
			if kb == 0 {
				return
			}
			_ = a[(kb-1)*12+rows-1]
			_ = b[kb*32-1]
			_ = c[(rows-1)*ldc+cols-1]
			f(kb, &a[0], &b[0], &c[0], ldc, 1<<(cols-16)-1)
		}
	}
	return &edgeKernels{run: wrap(12, microKernelAVX512M), runStore: wrap(12, microKernelAVX512StM),
		quad: wrap(4, microKernelAVX512x4M), quadStore: wrap(4, microKernelAVX512x4StM)}
}()

// edgeKernelsFor returns the masked kernels of kn, or nil (not the AVX-512 kernel, or
// switched off).
func edgeKernelsFor(kn *gemmKernel) *edgeKernels {
	if !hasEdgeKernels || kn.name != "avx512" || kn.mr != 12 || kn.nr != 32 || kn.quad == nil {
		return nil
	}
	return edgeKernelsAVX512
}
