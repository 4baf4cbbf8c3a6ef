package model

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkFirstConvDW times one image's filter and bias gradients of fashion-cnn's
// fused first layer (28x28, 32 filters, 13x13 windows a plane) in AVX-512: the windows
// side by side (firstconvwin_amd64.s) against one by one (firstconv_amd64.s).
func BenchmarkFirstConvDW(b *testing.B) {
	if !hasFirstConvAVX512 {
		b.Skip("no AVX-512")
	}
	s := convShape{inC: 1, inH: 28, inW: 28, k: 3, stride: 1, outC: 32, outH: 26, outW: 26}
	g := newConvGeom(1, s)
	pp := 13 * 13
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 28*28)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	dy, y, arg := make([]float32, g.f*pp), make([]float32, g.f*pp), make([]int32, g.f*pp)
	for j := range dy {
		f, p := j/pp, j%pp
		dy[j], y[j] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		arg[j] = int32(f*g.plane + (2*(p/13)+rng.IntN(2))*26 + 2*(p%13) + rng.IntN(2))
	}
	off := make([]int32, g.plane)
	for p := range off {
		off[p] = int32(p/g.ow*g.w + p%g.ow)
	}
	vd, out := make([]float32, g.f*g.plane), make([]float32, 16*g.f)
	defer func(on bool) { hasFirstConvWinAVX512 = on }(hasFirstConvWinAVX512)
	for _, win := range []bool{false, true} {
		b.Run(map[bool]string{false: "windows", true: "rows"}[win], func(b *testing.B) {
			hasFirstConvWinAVX512 = win
			cpu0 := processCPU()
			for range b.N {
				firstConvDWAsm(&g, x, dy, y, arg, off, vd, out)
			}
			reportCPU(b, cpu0)
		})
	}
}
