package paramserver

import "golang.org/x/sys/cpu"

// adamAVX is one Adam step over n values (a multiple of 8) in AVX assembly
// (adam_amd64.s).
//
//go:noescape
func adamAVX(n int, p, grad, m, v *float32, k *adamConsts)

// momentumAVX is one momentum step over n values (a multiple of 8) in AVX assembly.
//
//go:noescape
func momentumAVX(n int, p, grad, v *float32, k *momentumConsts)

// momentumVector is adamVector for momentum.
func momentumVector(p, g, v []float32, k *momentumConsts) int {
	n := len(p) &^ 7
	if !haveAdamAVX || n == 0 {
		return 0
	}
	_, _ = g[n-1], v[n-1]
	momentumAVX(n, &p[0], &g[0], &v[0], k)
	return n
}

// haveAdamAVX reports whether this CPU runs adamAVX and momentumAVX (AVX; the OS saves the YMM state).
var haveAdamAVX = cpu.X86.HasAVX

// adamVector applies the Adam step to the longest prefix of the slices that is a whole
// number of 8-value blocks, and returns its length; the caller does the rest.
func adamVector(p, g, m, v []float32, k *adamConsts) int {
	n := len(p) &^ 7
	if !haveAdamAVX || n == 0 {
		return 0
	}
	_, _, _ = g[n-1], m[n-1], v[n-1]
	adamAVX(n, &p[0], &g[0], &m[0], &v[0], k)
	return n
}
