package model

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
	"time"
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
	cpu0 := processCPU()
	for range b.N {
		clear(img)
		convCol2im(&g, col, img, g.plane)
	}
	reportCPU(b, cpu0)
}

// reportCPU reports the process's CPU time per operation since cpu0, in
// microseconds (cpu-us/op): steadier than wall time on a shared machine.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/op")
	}
}

// TestPool2PlanesMatchReference checks the AVX-512 2x2 pool over ranges of planes
// (pool2ArgPlanes, pool2GradPlanes) against the Go row loop pool2RowGo and a plain
// gradient loop (clear, then each window's gradient at its recorded index, through
// relu), bit for bit (any NaN matching any NaN), on odd and even sizes, rows of 1 to
// 32 windows, planes whose windows make one or many chunks, values from a few levels
// (ties, both zeros) and NaNs, with indices offset by at0.
func TestPool2PlanesMatchReference(t *testing.T) {
	if !hasPoolAVX512 || !hasPool2PlanesAVX512 {
		t.Skip("no AVX-512 on this CPU: the planes' kernels do not run (their Go fallback is the row loop)")
	}
	levels := []float32{-1.5, -0.5, float32(math.Copysign(0, -1)), 0, 0.5, 1.5}
	same := func(a, b float32) bool {
		return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
	}
	for _, sz := range []struct{ h, w int }{
		{2, 2}, {3, 3}, {5, 7}, {11, 11}, {13, 13}, {26, 26}, {4, 33}, {9, 65}, {13, 31}, {6, 35}, {3, 64}, {2, 40}, {7, 5}, {17, 3},
	} {
		oh, ow := sz.h/2, sz.w/2
		plan := pool2Plan(sz.w, oh, ow)
		if plan == nil {
			t.Fatalf("%v: no plan", sz)
		}
		for _, relu := range []bool{false, true} {
			for _, nan := range []bool{false, true} {
				const planes, at0 = 3, 7
				hw, pw := sz.h*sz.w, oh*ow
				rng := rand.New(rand.NewPCG(uint64(sz.h), uint64(sz.w)))
				in := make([]float32, planes*hw)
				for i := range in {
					in[i] = levels[rng.IntN(len(levels))]
					if nan && rng.IntN(13) == 0 {
						in[i] = float32(math.NaN())
					}
				}
				wantY, wantArg := make([]float32, planes*pw), make([]int32, planes*pw)
				for p := range planes {
					for py := range oh {
						r0 := in[p*hw+2*py*sz.w:]
						pool2RowGo(r0[:2*ow], r0[sz.w:sz.w+2*ow], wantY[p*pw+py*ow:][:ow], wantArg[p*pw+py*ow:][:ow], sz.w, int32(at0+p*hw+2*py*sz.w), relu)
					}
				}
				gotY, gotArg := make([]float32, planes*pw), make([]int32, planes*pw)
				if !pool2ArgPlanes(in, gotY, gotArg, plan, planes, sz.w, hw, pw, at0, relu) {
					t.Fatal("pool2ArgPlanes declined")
				}
				for i := range wantY {
					if !same(gotY[i], wantY[i]) || gotArg[i] != wantArg[i] {
						t.Fatalf("%v relu=%v nan=%v: output %d = %v at %d, want %v at %d", sz, relu, nan, i, gotY[i], gotArg[i], wantY[i], wantArg[i])
					}
				}
				dy := make([]float32, planes*pw)
				for i := range dy {
					dy[i] = float32(rng.NormFloat64())
				}
				dy[0] = float32(math.Copysign(0, -1))
				want := make([]float32, planes*hw)
				for i, v := range dy {
					if !relu || wantY[i] > 0 {
						want[wantArg[i]-at0] = v
					}
				}
				got := make([]float32, planes*hw)
				for i := range got {
					got[i] = 9 // every value must be written
				}
				if !pool2GradPlanes(got, dy, wantY, wantArg, plan, planes, sz.w, hw, pw, at0, relu) {
					t.Fatal("pool2GradPlanes declined")
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%v relu=%v nan=%v: dz[%d] = %v, want %v", sz, relu, nan, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestPool2Plan checks the chunks' invariants: every window once, in order; at most
// 16 a chunk; each window's top pair inside its chunk's 32-value span; and fashion-
// cnn's second layer in 3 chunks a plane.
func TestPool2Plan(t *testing.T) {
	for _, sz := range []struct{ w, oh, ow int }{{11, 5, 5}, {26, 13, 13}, {65, 4, 32}, {3, 8, 1}, {40, 1, 20}} {
		plan := pool2Plan(sz.w, sz.oh, sz.ow)
		k := 0
		for _, c := range plan {
			if int(c.k0) != k {
				t.Fatalf("%v: chunk at window %d, want %d", sz, c.k0, k)
			}
			n := bits.OnesCount32(c.sm)
			if n == 0 || n > 16 || c.sm != 1<<n-1 {
				t.Fatalf("%v: chunk mask %#x", sz, c.sm)
			}
			for l := range n {
				at := 2*(k/sz.ow)*sz.w + 2*(k%sz.ow)
				if int(c.s+c.idx[l]) != at || c.idx1[l] != c.idx[l]+1 || c.idx1[l] > 31 {
					t.Fatalf("%v: window %d at %d+%d, want %d", sz, k, c.s, c.idx[l], at)
				}
				k++
			}
		}
		if k != sz.oh*sz.ow {
			t.Fatalf("%v: %d windows planned, want %d", sz, k, sz.oh*sz.ow)
		}
	}
	if n := len(pool2Plan(11, 5, 5)); n != 3 {
		t.Fatalf("11x11 -> 5x5: %d chunks, want 3", n)
	}
	if pool2Plan(2000, 500, 1000) != nil || pool2Plan(4, 0, 2) != nil {
		t.Fatal("a plan for a plane too large or empty")
	}
}

// TestPool2RowKernelsMatchReference runs TestPool2MatchesReference's checks on the
// row-by-row AVX-512 kernels (pool_amd64.s), which planes without a plan (too large)
// still take.
func TestPool2RowKernelsMatchReference(t *testing.T) {
	if !hasPoolAVX512 {
		t.Skip("no AVX-512 on this CPU: the row kernels do not run")
	}
	defer func(on bool) { hasPool2PlanesAVX512 = on }(hasPool2PlanesAVX512)
	hasPool2PlanesAVX512 = false
	for _, sz := range []struct{ h, w int }{{11, 11}, {26, 26}, {5, 7}, {9, 65}} {
		for _, act := range []string{ActivationReLU, identity} {
			for _, nan := range []bool{false, true} {
				testPool2MatchesReference(t, sz.h, sz.w, act, nan)
			}
		}
	}
}

// BenchmarkPool2 is fashion-cnn's second pool (a batch of 64 x 64 planes of 11x11
// pooled to 5x5, relu) through maxPoolOp's forward and gradient: the planes' kernels
// (pool2planes_amd64.s) against the row kernels (pool_amd64.s).
func BenchmarkPool2(b *testing.B) {
	if !hasPoolAVX512 {
		b.Skip("no AVX-512")
	}
	const planes = 64 * 64
	g := convGeom{b: 64, c: 64, h: 11, w: 11, k: 2, stride: 2, oh: 5, ow: 5}
	rng := rand.New(rand.NewPCG(3, 4))
	z := make([]float32, planes*121)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	dy := make([]float32, planes*25)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	dz := make([]float32, planes*121)
	fwd := &maxPoolOp[float32]{convBase: convBase[float32]{g: g}, act: ActivationReLU, needArg: true}
	fwd.out = make([]float32, planes*25)
	fwd.arg = make([]int32, planes*25)
	fwd.plan = pool2Plan(g.w, g.oh, g.ow)
	grad := &maxPoolGradOp[float32]{convBase: convBase[float32]{g: g}, fwd: fwd}
	defer func(on bool) { hasPool2PlanesAVX512 = on }(hasPool2PlanesAVX512)
	for _, planesOn := range []bool{false, true} {
		name := map[bool]string{false: "rows", true: "planes"}[planesOn]
		b.Run(name+"/forward", func(b *testing.B) {
			hasPool2PlanesAVX512 = planesOn
			cpu0 := processCPU()
			for range b.N {
				fwd.pool(z, fwd.out, 0, planes)
			}
			reportCPU(b, cpu0)
		})
		b.Run(name+"/backward", func(b *testing.B) {
			hasPool2PlanesAVX512 = planesOn
			fwd.pool(z, fwd.out, 0, planes)
			cpu0 := processCPU()
			for range b.N {
				grad.route(dz, dy, 0, planes)
			}
			reportCPU(b, cpu0)
		})
	}
}

// BenchmarkIm2col is the im2col of fashion-cnn's second layer (one 32 x 13 x 13 image
// into 288 x 121), per image.
func BenchmarkIm2col(b *testing.B) {
	s := convShape{inC: 32, inH: 13, inW: 13, k: 3, stride: 1, outC: 64, outH: 11, outW: 11}
	g := newConvGeom(1, s)
	rng := rand.New(rand.NewPCG(1, 3))
	img := make([]float32, g.c*g.h*g.w)
	for i := range img {
		img[i] = float32(rng.NormFloat64())
	}
	col := make([]float32, g.ckk*g.plane)
	cpu0 := processCPU()
	for range b.N {
		convIm2col(&g, img, col, g.plane)
	}
	reportCPU(b, cpu0)
}

// BenchmarkPool2FirstLayer is the recording pool of fashion-cnn's fused first layer,
// one image (32 planes of 26x26 pooled to 13x13, relu): one call of the row kernel
// over the planes as one plane of 416 rows (firstConvOp's) against the planes' kernel.
func BenchmarkPool2FirstLayer(b *testing.B) {
	if !hasPoolAVX512 {
		b.Skip("no AVX-512")
	}
	const f, w, pw = 32, 26, 13
	rng := rand.New(rand.NewPCG(7, 8))
	z := make([]float32, f*w*w)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	y, arg := make([]float32, f*pw*pw), make([]int32, f*pw*pw)
	plan := pool2Plan(w, pw, pw)
	b.Run("rows", func(b *testing.B) {
		cpu0 := processCPU()
		for range b.N {
			pool2(z, y, arg, w, f*pw, pw, 0, true)
		}
		reportCPU(b, cpu0)
	})
	b.Run("planes", func(b *testing.B) {
		cpu0 := processCPU()
		for range b.N {
			pool2ArgPlanes(z, y, arg, plan, f, w, w*w, pw*pw, 0, true)
		}
		reportCPU(b, cpu0)
	})
}
