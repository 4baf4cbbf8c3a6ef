package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refMaxAbsBits is maxAbsBits one value at a time.
func refMaxAbsBits(x []float32) uint32 {
	var m uint32
	for _, v := range x {
		if b := math.Float32bits(v) &^ (1 << 31); b > m {
			m = b
		}
	}
	return m
}

// TestMaxAbsBitsMatchesGo checks maxAbsBits, in AVX-512 where the CPU has it and in
// Go, against a plain loop over lengths around the kernel's blocks of 64 and 16 and
// its masked tail, starting off a vector boundary, with the largest magnitude, a
// negative one, +Inf, -Inf or a NaN placed first, last, in a block or in the tail; and
// that allFinite follows it.
func TestMaxAbsBitsMatchesGo(t *testing.T) {
	orig := hasMaxAbsAVX512
	defer func() { hasMaxAbsAVX512 = orig }()
	rng := rand.New(rand.NewPCG(21, 22))
	specials := []float32{0, -9, 1e30, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), -float32(math.NaN()), 1e-42}
	for _, asm := range []bool{false, true} {
		hasMaxAbsAVX512 = asm && orig
		for _, n := range []int{0, 1, 3, 15, 16, 17, 31, 63, 64, 65, 79, 80, 127, 128, 129, 1000, 4099} {
			for _, off := range []int{0, 1, 5} {
				buf := make([]float32, n+off+3)
				for i := range buf {
					buf[i] = float32(rng.NormFloat64())
				}
				// values outside x, larger than any inside: must not count
				buf[0], buf[len(buf)-1] = 1e38, float32(math.NaN())
				x := buf[off+1 : off+1+n]
				for _, sp := range specials {
					for _, at := range []int{0, n - 1, n / 2, n - n%16} {
						if n == 0 || at < 0 || at >= n {
							continue
						}
						saved := x[at]
						x[at] = sp
						name := fmt.Sprintf("asm=%v n=%d off=%d %v at %d", hasMaxAbsAVX512, n, off, sp, at)
						got, want := maxAbsBits(x), refMaxAbsBits(x)
						if got != want {
							t.Fatalf("%s: maxAbsBits %#x, want %#x", name, got, want)
						}
						if allFinite(x) != (want < 0x7f800000) {
							t.Fatalf("%s: allFinite %v", name, allFinite(x))
						}
						x[at] = saved
					}
				}
				if got, want := maxAbsBits(x), refMaxAbsBits(x); got != want {
					t.Fatalf("asm=%v n=%d off=%d: maxAbsBits %#x, want %#x", asm, n, off, got, want)
				}
			}
		}
	}
}

// BenchmarkMaxAbsBits times the per-step check of fashion-cnn's parameter vector
// (225,034 values: convolutions 320 + 18,496, dense 204,928 + 1,290), in AVX-512 where
// the CPU has it and in Go.
func BenchmarkMaxAbsBits(b *testing.B) {
	orig := hasMaxAbsAVX512
	defer func() { hasMaxAbsAVX512 = orig }()
	x := randFloats32(rand.New(rand.NewPCG(23, 24)), 225034)
	for _, asm := range []bool{false, true} {
		b.Run(fmt.Sprintf("asm=%v", asm && orig), func(b *testing.B) {
			hasMaxAbsAVX512 = asm && orig
			for b.Loop() {
				if maxAbsBits(x) >= 0x7f800000 {
					b.Fatal("not finite")
				}
			}
			b.SetBytes(int64(4 * len(x)))
		})
	}
}
