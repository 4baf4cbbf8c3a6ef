package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestPrefetchCKernelsMatch checks the 12-row AVX-512 kernels that prefetch C's block
// (microKernelAVX512P and StP) against the plain ones, bit for bit (the same FMAs in
// the same order), and against a float64 loop: adding into a padded C, and storing
// into a C full of NaN (every value of the block set, none outside it touched).
func TestPrefetchCKernelsMatch(t *testing.T) {
	if !cpu.X86.HasAVX512F {
		t.Skip("no AVX-512 on this CPU: the kernels are not used")
	}
	const mr, nr = 12, 32
	rng := rand.New(rand.NewPCG(19, 5))
	for _, kb := range []int{1, 2, 7, 33, 121, kcBlock} {
		a := randFloats32(rng, kb*mr)
		b := randFloats32(rng, kb*nr)
		ldc := nr + 3
		c0 := randFloats32(rng, mr*ldc)
		for _, st := range []bool{false, true} {
			plain, pre := microKernelAVX512, microKernelAVX512P
			if st {
				plain, pre = microKernelAVX512St, microKernelAVX512StP
			}
			want := append([]float32(nil), c0...)
			got := append([]float32(nil), c0...)
			if st {
				for i := range mr {
					for j := range nr {
						got[i*ldc+j] = float32(math.NaN())
					}
				}
			}
			plain(kb, &a[0], &b[0], &want[0], ldc)
			pre(kb, &a[0], &b[0], &got[0], ldc)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("kb %d store %v: c[%d] = %v, plain kernel %v", kb, st, i, got[i], want[i])
				}
			}
			for i := range mr {
				for j := range ldc {
					ref := float64(c0[i*ldc+j])
					if j < nr {
						s := 0.0
						for q := range kb {
							s += float64(a[q*mr+i]) * float64(b[q*nr+j])
						}
						if st {
							ref = s
						} else {
							ref += s
						}
					}
					if d := math.Abs(float64(got[i*ldc+j]) - ref); d > 1e-5*float64(kb+1)*(1+math.Abs(ref)) {
						t.Fatalf("kb %d store %v: c[%d][%d] = %v, float64 loop %v", kb, st, i, j, got[i*ldc+j], ref)
					}
				}
			}
		}
	}
}
