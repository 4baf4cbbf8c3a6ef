//go:build !amd64

package model

// hasPackAVX512 tells whether convolutions pack B panels from the image in assembly:
// not on this architecture (they take im2col and packB).
var hasPackAVX512 = false

// packConvB is packConvBGo on this architecture.
func packConvB(dst, img []float32, offs []int32, halves []packHalf, kb, panels int) {
	packConvBGo(dst, img, offs, halves, kb, panels)
}

// packHWCPanel is the AVX-512 panel copy of amd64; here it does nothing.
func packHWCPanel(_, _ []float32, _ []int32, _, _ int) bool { return false }

// hasPackRowsAVX512 tells whether packB copies rows in assembly: not on this
// architecture.
var hasPackRowsAVX512 = false

// packRowsPanel is the AVX-512 panel copy of amd64; here it does nothing.
func packRowsPanel(_, _ []float32, _, _, _ int) bool { return false }

// prefetchNext tells whether the convolutions prefetch their next image: not on this
// architecture.
var prefetchNext = false

// prefetch is amd64's cache hint; here it does nothing.
func prefetch([]float32) {}

// hasEdgeKernels tells whether macroKernel has masked column-edge kernels: not on this
// architecture.
var hasEdgeKernels = false

// edgeKernelsFor returns no masked kernels on this architecture.
func edgeKernelsFor(*gemmKernel) *edgeKernels { return nil }
