package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// refGemm is C = op(A)·op(B) + beta·C in float64, the reference for packedSgemm.
func refGemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for q := range k {
				var av, bv float32
				if tA {
					av = a[q*lda+i]
				} else {
					av = a[i*lda+q]
				}
				if tB {
					bv = b[j*ldb+q]
				} else {
					bv = b[q*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			if beta != 0 {
				s += float64(beta) * float64(c[i*ldc+j])
			}
			out[i*n+j] = s
		}
	}
	return out
}

func randFloats32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// TestPackedSgemm checks every transpose combination against a float64 reference on
// shapes with edge tiles, several K blocks, several M and N blocks and padded strides,
// including that beta 0 ignores NaN in C and that columns beyond n are left alone.
func TestPackedSgemm(t *testing.T) {
	for _, kn := range gemmKernels() {
		t.Run(kn.name, func(t *testing.T) {
			defer func(k gemmKernel) { kernel = k }(kernel)
			kernel = kn
			testPackedSgemm(t, kn)
		})
	}
}

func testPackedSgemm(t *testing.T, kn gemmKernel) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{
		{1, 1, 1}, {6, 16, 1}, {5, 15, 7}, {7, 17, 3}, {13, 33, 300}, {64, 121, 288},
		{20*kn.mr + 7, 40, 20}, {9, 64*kn.nr + 5, 30}, {12, 32, kcBlock}, {3, 2, 0},
		// partial row panels of 4, 8 and 5 rows over whole column panels (the 4-row kernel)
		{4, 2 * kn.nr, 33}, {8, kn.nr, 17}, {kn.mr + 5, kn.nr, 9},
	}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, beta := range []float32{0, 1, 0.5} {
					name := fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/beta=%v", m, n, k, tA, tB, beta)
					t.Run(name, func(t *testing.T) {
						ar, ac := m, k
						if tA {
							ar, ac = k, m
						}
						br, bc := k, n
						if tB {
							br, bc = n, k
						}
						lda, ldb, ldc := ac+3, bc+1, n+2
						a := randFloats32(rng, max(ar*lda, 1))
						b := randFloats32(rng, max(br*ldb, 1))
						c := randFloats32(rng, m*ldc)
						if beta == 0 {
							for i := range c {
								c[i] = float32(math.NaN())
							}
						}
						want := refGemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
						packedSgemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
						for i := range m {
							for j := range ldc {
								got := float64(c[i*ldc+j])
								if j >= n {
									if beta == 0 && !math.IsNaN(got) || beta != 0 && math.IsNaN(got) {
										t.Fatalf("C[%d][%d] beyond n changed to %v", i, j, got)
									}
									continue
								}
								w := want[i*n+j]
								if math.Abs(got-w) > 1e-4*(1+math.Sqrt(float64(k)))*(1+math.Abs(w)) {
									t.Fatalf("C[%d][%d] = %v, want %v", i, j, got, w)
								}
							}
						}
					})
				}
			}
		}
	}
}

// TestMicroKernelsMatchGo checks every micro-kernel this CPU runs (assembly on AVX2
// and AVX-512 machines) against the Go loop, with a padded C stride.
func TestMicroKernelsMatchGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kn := range gemmKernels() {
		for _, kb := range []int{0, 1, 2, 7, kcBlock} {
			a := randFloats32(rng, max(kb*kn.mr, 1))
			b := randFloats32(rng, max(kb*kn.nr, 1))
			ldc := kn.nr + 5
			c0 := randFloats32(rng, kn.mr*ldc)
			c1 := append([]float32(nil), c0...)
			kn.run(kb, a, b, c0, ldc)
			microKernelGo(kn.mr, kn.nr, kb, a, b, c1, ldc)
			for i := range c0 {
				if d := math.Abs(float64(c0[i] - c1[i])); d > 1e-4*(1+math.Abs(float64(c1[i]))) {
					t.Fatalf("%s kb %d: c[%d] = %v, Go loop %v", kn.name, kb, i, c0[i], c1[i])
				}
			}
		}
	}
}

// TestPackedSgemmSplitIsExact checks that computing C in row and column blocks gives
// bit-identical results to one call (what lets callers parallelise without changing
// results).
func TestPackedSgemmSplitIsExact(t *testing.T) {
	if gemmBackend != "go" {
		t.Skipf("the %s backend does not promise split-exact results", gemmBackend)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	m, n, k := 50, 70, 600
	a, b := randFloats32(rng, m*k), randFloats32(rng, k*n)
	whole := make([]float32, m*n)
	packedSgemm(false, false, m, n, k, a, k, b, n, 0, whole, n)
	parts := make([]float32, m*n)
	for _, r := range [][2]int{{0, 18}, {18, 50}} {
		for _, cr := range [][2]int{{0, 32}, {32, 70}} {
			packedSgemm(false, false, r[1]-r[0], cr[1]-cr[0], k, a[r[0]*k:], k, b[cr[0]:], n, 0, parts[r[0]*n+cr[0]:], n)
		}
	}
	for i := range whole {
		if whole[i] != parts[i] {
			t.Fatalf("element %d: %v whole, %v split", i, whole[i], parts[i])
		}
	}
}

// TestPackedLHS checks that products with a left operand packed once equal packedSgemm
// bit for bit, for several right operands, both transposes, several K and M blocks.
func TestPackedLHS(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, sh := range [][3]int{{7, 9, 5}, {64, 121, 288}, {20*kernel.mr + 3, 40, kcBlock + 9}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				lda, ldb := k, n
				if tA {
					lda = m
				}
				if tB {
					ldb = k
				}
				a := randFloats32(rng, m*k)
				var l gemmLHS[float32]
				l.set(tA, m, k, a, lda)
				for range 3 {
					b := randFloats32(rng, k*n)
					want, got := randFloats32(rng, m*n), randFloats32(rng, m*n)
					copy(got, want)
					packedSgemm(tA, tB, m, n, k, a, lda, b, ldb, 1, want, n)
					l.mul(tB, n, b, ldb, 1, got, n)
					if !slices.Equal(got, want) {
						t.Fatalf("%dx%dx%d tA=%v tB=%v: packed-once product differs", m, n, k, tA, tB)
					}
				}
			}
		}
	}
}

// BenchmarkPackedSgemm times the GEMMs of the reference CNN's second convolution (per
// image: forward, filter gradient, data gradient) and of its dense layer, against
// gonum's Sgemm.
func BenchmarkPackedSgemm(b *testing.B) {
	cases := []struct {
		name    string
		tA, tB  bool
		m, n, k int
	}{
		{"conv1_fwd_32x676x9", false, false, 32, 676, 9},
		{"conv1_dW_32x9x676", false, true, 32, 9, 676},
		{"conv2_fwd_64x121x288", false, false, 64, 121, 288},
		{"conv2_dW_64x288x121", false, true, 64, 288, 121},
		{"conv2_dcol_288x121x64", true, false, 288, 121, 64},
		{"dense_fwd_64x128x1600", false, false, 64, 128, 1600},
		{"dense_dW_1600x128x64", true, false, 1600, 128, 64},
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range cases {
		lda, ldb := c.k, c.n
		if c.tA {
			lda = c.m
		}
		if c.tB {
			ldb = c.k
		}
		x, y, z := randFloats32(rng, c.m*c.k), randFloats32(rng, c.k*c.n), make([]float32, c.m*c.n)
		flops := float64(2 * c.m * c.n * c.k)
		for _, kn := range gemmKernels() {
			b.Run(c.name+"/"+kn.name, func(b *testing.B) {
				defer func(k gemmKernel) { kernel = k }(kernel)
				kernel = kn
				for b.Loop() {
					packedSgemm(c.tA, c.tB, c.m, c.n, c.k, x, lda, y, ldb, 0, z, c.n)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		b.Run(c.name+"/gonum", func(b *testing.B) {
			ta, tb := blas.NoTrans, blas.NoTrans
			if c.tA {
				ta = blas.Trans
			}
			if c.tB {
				tb = blas.Trans
			}
			for b.Loop() {
				gonum.Implementation{}.Sgemm(ta, tb, c.m, c.n, c.k, 1, x, lda, y, ldb, 0, z, c.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestStoreKernelsMatchAdd checks the micro-kernel's storing variants (the first
// depth block of a product with beta 0 sets C instead of clearing it and adding)
// against the same kernel without them: equal values (a zero's sign aside) for full
// tiles, 4-row parts, edge tiles and depths over one block, through packedSgemm and
// a packed left operand, C filled with NaN beforehand. On a CPU without the AVX-512
// kernel both sides add, and the test checks that the storing variants are absent.
func TestStoreKernelsMatchAdd(t *testing.T) {
	saved, savedFlag := kernel, hasStoreKernels
	defer func() { kernel, hasStoreKernels = saved, savedFlag }()
	withStore := gemmKernels()[0]
	hasStoreKernels = false
	without := gemmKernels()[0]
	hasStoreKernels = savedFlag
	if (withStore.name == "avx512") != (withStore.runStore != nil && withStore.quadStore != nil) {
		t.Fatalf("kernel %s: storing variants %v", withStore.name, withStore.runStore != nil)
	}
	if without.runStore != nil {
		t.Fatal("hasStoreKernels off: the kernel still stores")
	}
	rng := rand.New(rand.NewPCG(13, 14))
	for _, sh := range [][3]int{{12, 32, 7}, {24, 64, kcBlock + 9}, {13, 33, 5}, {16, 96, 40}, {5, 7, 3}, {64, 121, 288}, {30, 40, 1}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tB := range []bool{false, true} {
			a := randFloats32(rng, m*k)
			br, bc := k, n
			if tB {
				br, bc = n, k
			}
			b := randFloats32(rng, br*bc)
			run := func(kn gemmKernel, packed bool) []float32 {
				kernel = kn
				c := make([]float32, m*(n+3))
				for i := range c {
					c[i] = float32(math.NaN())
				}
				if packed {
					var p packedLHS
					p.pack(false, m, k, a, k)
					p.mul(tB, n, b, bc, 0, c, n+3)
				} else {
					packedSgemm(false, tB, m, n, k, a, k, b, bc, 0, c, n+3)
				}
				return c
			}
			for _, packed := range []bool{false, true} {
				want, got := run(without, packed), run(withStore, packed)
				for i := range want {
					if i%(n+3) >= n {
						if got[i] == got[i] {
							t.Fatalf("%v tB=%v packed=%v: C[%d] beyond n written", sh, tB, packed, i)
						}
						continue
					}
					if got[i] != want[i] {
						t.Fatalf("%v tB=%v packed=%v: C[%d] = %v storing, %v adding", sh, tB, packed, i, got[i], want[i])
					}
				}
			}
		}
	}
}
