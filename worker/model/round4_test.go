package model

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkCol2im is the data gradient's col2im of fashion-cnn's second layer (a
// 288 x 121 column matrix into one 32 x 13 x 13 image), per image.
func BenchmarkCol2im(b *testing.B) {
	s := convShape{inC: 32, inH: 13, inW: 13, k: 3, stride: 1, outC: 64, outH: 11, outW: 11}
	g := newConvGeom(1, s)
	rng := rand.New(rand.NewPCG(1, 2))
	col := make([]float32, g.ckk*g.plane)
	for i := range col {
		col[i] = float32(rng.NormFloat64())
	}
	img := make([]float32, g.c*g.h*g.w)
	b.ResetTimer()
	for range b.N {
		clear(img)
		convCol2im(&g, col, img, g.plane)
	}
}
