package paramserver

import (
	"math"
	"math/rand/v2"
	"testing"
)

// ulpsApart is the number of float32 values between a and b.
func ulpsApart(a, b float32) int64 {
	ia, ib := int64(math.Float32bits(a)), int64(math.Float32bits(b))
	if ia < 0x80000000 != (ib < 0x80000000) {
		return math.MaxInt64 // different signs (and not both zero)
	}
	if d := ia - ib; d >= 0 {
		return d
	}
	return ib - ia
}

// TestAdamVectorMatchesScalar: the vector Adam step (where the CPU has one) computes
// what the scalar reference does, lane by lane, for every length around the 8-value
// blocks and over many steps, with gradients, moments and parameters across scales.
// The operations are the same in the same order, so they agree to the bit; the test
// allows 1 ulp for builds where the compiler fuses the scalar multiply-adds (GOAMD64=v3).
func TestAdamVectorMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099} {
		mk := func() (p, g, m, v []float32) {
			p, g, m, v = make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range p {
				scale := float32(math.Pow(10, float64(rng.IntN(9)-6)))
				p[i] = float32(rng.NormFloat64()) * scale
				m[i] = float32(rng.NormFloat64()) * scale * 0.1
				v[i] = float32(rng.ExpFloat64()) * scale * scale * 0.01
			}
			return
		}
		p1, g, m1, v1 := mk()
		p2, m2, v2 := append([]float32(nil), p1...), append([]float32(nil), m1...), append([]float32(nil), v1...)
		k := adamConsts{b1: 0.9, ob1: 0.1, b2: 0.999, ob2: 1 - float32(0.999), decay: 1 - 1e-5, a: 1e-3 / 0.1, c: 1 / float32(math.Sqrt(0.001)), eps: 1e-8}
		for step := range 20 {
			for i := range g {
				g[i] = float32(rng.NormFloat64()) * float32(math.Pow(10, float64(rng.IntN(7)-4)))
			}
			done := adamVector(p1, g, m1, v1, &k)
			if haveAdamAVX && done != n&^7 {
				t.Fatalf("n=%d: vector part did %d values, want %d", n, done, n&^7)
			}
			adamScalar(p1[done:], g[done:], m1[done:], v1[done:], &k)
			adamScalar(p2, g, m2, v2, &k)
			for i := range n {
				for _, c := range []struct {
					what string
					a, b float32
				}{{"parameter", p1[i], p2[i]}, {"m", m1[i], m2[i]}, {"v", v1[i], v2[i]}} {
					if ulpsApart(c.a, c.b) > 1 {
						t.Fatalf("n=%d step %d: %s %d is %v (vector), %v (scalar)", n, step, c.what, i, c.a, c.b)
					}
				}
			}
		}
	}
}

// TestMomentumVectorMatchesScalar is TestAdamVectorMatchesScalar for momentum.
func TestMomentumVectorMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 8, 9, 17, 64, 65, 1000, 4099} {
		p1, g, v1 := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range p1 {
			p1[i] = float32(rng.NormFloat64())
			v1[i] = float32(rng.NormFloat64()) * 0.01
		}
		p2, v2 := append([]float32(nil), p1...), append([]float32(nil), v1...)
		k := momentumConsts{mu: 0.9, wd: 1e-4, lr: 0.05}
		for step := range 20 {
			for i := range g {
				g[i] = float32(rng.NormFloat64()) * float32(math.Pow(10, float64(rng.IntN(7)-4)))
			}
			done := momentumVector(p1, g, v1, &k)
			momentumScalar(p1[done:], g[done:], v1[done:], &k)
			momentumScalar(p2, g, v2, &k)
			for i := range n {
				if ulpsApart(p1[i], p2[i]) > 1 || ulpsApart(v1[i], v2[i]) > 1 {
					t.Fatalf("n=%d step %d: value %d: vector (%v, %v), scalar (%v, %v)", n, step, i, p1[i], v1[i], p2[i], v2[i])
				}
			}
		}
	}
}
