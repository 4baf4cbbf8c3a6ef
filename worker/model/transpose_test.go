package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// transposeNaive is the reference of transposeInto: dst[q*ld+r] = src[r*lds+q].
func transposeNaive(dst []float32, ld int, src []float32, lds, rows, kb int) {
	for r := range rows {
		for q := range kb {
			dst[q*ld+r] = src[r*lds+q]
		}
	}
}

// TestTransposeInto compares transposeInto (with and without the assembly 8-row path,
// and with the last rows%8 rows as an overlapping 8-row group or in Go) with the naive
// loop over odd shapes and strides, and checks that it writes nothing outside the
// transposed block.
func TestTransposeInto(t *testing.T) {
	asm, overlap := hasTranspose8, transposeOverlap
	defer func() { hasTranspose8, transposeOverlap = asm, overlap }()
	for _, on := range []bool{false, asm} {
		for _, ov := range []bool{false, true} {
			hasTranspose8, transposeOverlap = on, ov
			t.Run(fmt.Sprintf("asm=%v/overlap=%v", on, ov), testTransposeInto)
		}
	}
}

func testTransposeInto(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, rows := range []int{1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 20, 23, 31, 32} {
		for _, kb := range []int{1, 3, 4, 5, 8, 11, 121, 256} {
			lds := kb + rng.IntN(3)
			ld := rows + rng.IntN(3)
			src := make([]float32, rows*lds)
			for i := range src {
				src[i] = rng.Float32()
			}
			got := make([]float32, kb*ld)
			want := make([]float32, kb*ld)
			for i := range got {
				got[i], want[i] = -1, -1
			}
			transposeInto(got, ld, src, lds, rows, kb)
			transposeNaive(want, ld, src, lds, rows, kb)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("rows %d kb %d lds %d ld %d: dst[%d] = %v, want %v", rows, kb, lds, ld, i, got[i], want[i])
				}
			}
		}
	}
}

func BenchmarkTransposeInto(b *testing.B) {
	for _, c := range []struct{ rows, kb int }{{32, 121}, {12, 121}, {32, 256}} {
		b.Run(fmt.Sprintf("%dx%d", c.rows, c.kb), func(b *testing.B) {
			src := make([]float32, c.rows*c.kb)
			dst := make([]float32, c.rows*c.kb)
			b.SetBytes(int64(4 * len(src)))
			for b.Loop() {
				transposeInto(dst, c.rows, src, c.kb, c.rows, c.kb)
			}
		})
	}
}
