package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestPackConvBMatchesIm2col checks the B panels packed straight from the image
// (assembly where the CPU has AVX-512, and the Go loop) against im2col followed by
// packB, bit for bit, over whole and partial depth blocks, on shapes with edge panels
// of 1 to 31 columns, one and several channels, kernels 1 to 5, and an image at the
// very end of its slice.
func TestPackConvBMatchesIm2col(t *testing.T) {
	asmOK := hasPackAVX512
	defer func() { hasPackAVX512 = asmOK }()
	shapes := []struct{ c, h, w, k int }{
		{32, 13, 13, 3}, // fashion-cnn's second layer: 121 columns, a 25-column edge
		{1, 10, 10, 3}, {3, 9, 12, 3}, {5, 11, 17, 3}, {2, 16, 10, 1}, {4, 14, 14, 5},
		{7, 12, 10, 2}, {1, 34, 9, 3}, {6, 10, 33, 2},
	}
	for _, s := range shapes {
		g := newConvGeom(1, convShape{inC: s.c, inH: s.h, inW: s.w, outC: 4, k: s.k, stride: 1,
			outH: s.h - s.k + 1, outW: s.w - s.k + 1})
		plan := newConvBPlan(&g)
		if plan == nil {
			t.Fatalf("%+v: no plan", s)
		}
		rng := rand.New(rand.NewPCG(uint64(s.c*1000+s.w), 3))
		img := make([]float32, g.c*g.h*g.w)
		for i := range img {
			img[i] = float32(rng.NormFloat64())
		}
		col := make([]float32, g.ckk*g.plane)
		convIm2col(&g, img, col, g.plane)
		for _, asm := range []bool{true, false} {
			hasPackAVX512 = asm && asmOK
			for _, blk := range [][2]int{{0, g.ckk}, {0, min(g.ckk, 5)}, {g.ckk / 3, g.ckk - g.ckk/3}, {g.ckk - 1, 1}} {
				pc, kb := blk[0], blk[1]
				name := fmt.Sprintf("%dx%dx%d k%d asm=%v rows %d+%d", s.c, s.h, s.w, s.k, hasPackAVX512, pc, kb)
				panels := (g.plane + 31) / 32
				want := make([]float32, panels*32*kb)
				packB(want, 32, false, col, g.plane, pc, 0, kb, g.plane)
				got := make([]float32, len(want))
				for i := range got {
					got[i] = float32(math.NaN()) // every value must be written
				}
				pk := convImageB{plan: plan, img: img}
				pk.packB(got, pc, 0, kb, g.plane)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						pn, r := i/(32*kb), i%(32*kb)
						t.Fatalf("%s: panel %d row %d column %d: %v, want %v", name, pn, pc+r/32, r%32, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestConvBPlanRefuses checks that the geometries the packer cannot read are left to
// im2col: padding, strides, and output rows so short that 16 positions span more than
// 32 input values.
func TestConvBPlanRefuses(t *testing.T) {
	for _, s := range []convShape{
		{inC: 2, inH: 10, inW: 10, outC: 4, k: 3, stride: 1, pad: 1, outH: 10, outW: 10},
		{inC: 2, inH: 11, inW: 11, outC: 4, k: 3, stride: 2, outH: 5, outW: 5},
		{inC: 2, inH: 20, inW: 6, outC: 4, k: 5, stride: 1, outH: 16, outW: 2}, // 8 rows of 6: 44 values
	} {
		g := newConvGeom(1, s)
		if newConvBPlan(&g) != nil {
			t.Errorf("%+v: a plan, want none", s)
		}
	}
	// Rows of 8 values under a 3x3 kernel: 16 positions span 8 + 2 + 8 = 18 values.
	g := newConvGeom(1, convShape{inC: 1, inH: 10, inW: 10, outC: 4, k: 3, stride: 1, outH: 8, outW: 8})
	if newConvBPlan(&g) == nil {
		t.Errorf("8x8 output: no plan, want one")
	}
}

// TestConvPackedSameGradient checks that CNNs whose convolutions pack their B panels
// from the image (the forward's per-image products: second layers of 110 and 121
// positions; the filter gradient's colᵀ from HWC copies: 32 and 48 channels, padding
// 0 and 1, groups of one and of several images) give the same gradient, loss and
// prediction, bit for bit, as with im2col and packB, at 1, 2 and 3 threads (the
// filter gradient's fixed parts of the batch taken by whichever thread is free).
func TestConvPackedSameGradient(t *testing.T) {
	fwd, hwc := hasPackAVX512, packHWC
	defer func() { hasPackAVX512, packHWC = fwd, hwc }()
	if !canPackB() {
		t.Skip("the micro-kernel is not 32 columns wide: no packer runs")
	}
	if runtime.GOMAXPROCS(0) < 3 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	}
	cfgs := map[string]CNNConfig{
		"fashion-like": {Height: 28, Width: 26, Channels: 1, Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 12, Kernel: 3}},
			Pool: 2, Dense: []int{10}, Outputs: 4, Task: TaskMulticlass, BatchSize: 5, Activation: ActivationReLU},
		"padded-groups": {Height: 13, Width: 15, Channels: 3, Conv: []ConvLayer{{Filters: 48, Kernel: 3, Padding: 1}, {Filters: 20, Kernel: 3, Padding: 1}},
			Pool: 2, Dense: []int{12}, Outputs: 3, Task: TaskMulticlass, BatchSize: 7, Activation: ActivationReLU},
	}
	for name, cfg := range cfgs {
		m := mustCNN(t, cfg)
		p := randomParams(m, 7)
		x, y := randomBatch(11, cfg.BatchSize, cnnInputs(cfg), m.OutputSize(), cfg.Task)
		run := func(on bool) ([]float32, float64, []float32) {
			hasPackAVX512, packHWC = on && fwd, on && hwc
			g, loss := gradient(t, m, p, x, y, cfg.BatchSize)
			out := make([]float32, cfg.BatchSize*m.OutputSize())
			if err := m.Predict(p, x, cfg.BatchSize, out); err != nil {
				t.Fatal(err)
			}
			return g, loss, out
		}
		for _, threads := range []int{1, 2, 3} {
			SetThreads(m, threads)
			gOn, lOn, oOn := run(true)
			gOff, lOff, oOff := run(false)
			if lOn != lOff {
				t.Errorf("%s, %d threads: loss %v packed, %v with im2col", name, threads, lOn, lOff)
			}
			for what, pair := range map[string][2][]float32{"gradient": {gOn, gOff}, "predict": {oOn, oOff}} {
				for i := range pair[0] {
					if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
						t.Fatalf("%s, %d threads: %s[%d] = %v packed, %v with im2col", name, threads, what, i, pair[0][i], pair[1][i])
					}
				}
			}
		}
	}
}

// TestHWCBMatchesIm2col checks the filter gradient's colᵀ panels packed from an HWC
// copy against im2col followed by packB's transposes, bit for bit, the columns taken
// in (ki, kj, c) order: channel blocks of 16 and 32 at an offset into the image,
// padding 0 to 2, strides 1 and 2, groups of 1 to 3 images, whole and partial depth
// blocks and panels.
func TestHWCBMatchesIm2col(t *testing.T) {
	asmOK := hasPackAVX512
	defer func() { hasPackAVX512 = asmOK }()
	for _, s := range []struct{ c, h, w, k, stride, pad, c0, nc, grp int }{
		{32, 13, 13, 3, 1, 0, 0, 32, 1}, // fashion-cnn's second layer, one thread
		{32, 13, 13, 3, 1, 0, 16, 16, 1},
		{48, 8, 9, 3, 1, 1, 16, 32, 3},
		{16, 11, 7, 5, 1, 2, 0, 16, 2},
		{16, 12, 11, 3, 2, 1, 0, 16, 1},
		{32, 6, 6, 2, 1, 0, 16, 16, 2},
	} {
		oh, ow := (s.h+2*s.pad-s.k)/s.stride+1, (s.w+2*s.pad-s.k)/s.stride+1
		g := newConvGeom(s.grp, convShape{inC: s.c, inH: s.h, inW: s.w, outC: 4, k: s.k, stride: s.stride, pad: s.pad, outH: oh, outW: ow})
		rng := rand.New(rand.NewPCG(uint64(s.c*100+s.h), 5))
		imgs := make([]float32, s.grp*g.c*g.h*g.w)
		for i := range imgs {
			imgs[i] = float32(rng.NormFloat64())
		}
		// The reference: im2col of the block's channels, images side by side (ckk x n),
		// its rows reordered from (c, ki, kj) to (ki, kj, c), packed transposed.
		kk, n := g.k*g.k, s.grp*g.plane
		sub := g
		sub.c, sub.ckk = s.nc, s.nc*kk
		col := make([]float32, sub.ckk*n)
		for i := range s.grp {
			convIm2col(&sub, imgs[i*g.c*g.h*g.w+s.c0*g.h*g.w:(i+1)*g.c*g.h*g.w], col[i*g.plane:], n)
		}
		perm := make([]float32, len(col))
		for c := range s.nc {
			for tt := range kk {
				copy(perm[(tt*s.nc+c)*n:][:n], col[(c*kk+tt)*n:][:n])
			}
		}
		pk := newHWCB(&g, s.nc, s.grp)
		for i := range s.grp {
			pk.fill(&g, i, s.c0, s.nc, imgs[i*g.c*g.h*g.w:(i+1)*g.c*g.h*g.w])
		}
		blocks := [][4]int{{0, n, 0, sub.ckk}, {1, n - 2, 0, sub.ckk}, {0, n, 32, sub.ckk - 32}, {n - 1, 1, sub.ckk - 16, 16}}
		for i, blk := range append(blocks, blocks...) {
			hasPackAVX512 = i < len(blocks) && asmOK // the assembly panels, then the Go loop
			pc, kb, jc, nb := blk[0], blk[1], blk[2], blk[3]
			if nb <= 0 || kb <= 0 {
				continue
			}
			want := make([]float32, roundUp(nb, 32)*kb)
			packB(want, 32, true, perm, n, pc, jc, kb, nb)
			got := make([]float32, len(want))
			for i := range got {
				got[i] = float32(math.NaN())
			}
			pk.packB(got, pc, jc, kb, nb)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%+v block %v asm=%v: value %d (panel %d row %d column %d) = %v, want %v", s, blk, hasPackAVX512, i, i/(32*kb), i%(32*kb)/32, i%32, got[i], want[i])
				}
			}
		}
	}
}

// benchStepAB is benchStepTurns with a switch flipped every 8 steps (set(true), then
// set(false), ...), reporting the CPU time per step of each setting (on-cpu-ms/op,
// off-cpu-ms/op) and their ratio: an A/B of two code paths in one process.
func benchStepAB(b *testing.B, m Model, inputs, outputs int, task string, set func(on bool)) {
	if ms := benchStepTurns(b, m, inputs, outputs, task, 2, func(i int) { set(i == 0) }, processCPU, 0); ms != nil {
		b.ReportMetric(ms[0], "on-cpu-ms/op")
		b.ReportMetric(ms[1], "off-cpu-ms/op")
		b.ReportMetric(ms[0]/ms[1], "on/off")
	}
}

// BenchmarkCNNStepPack is fashion-cnn's step (BenchmarkCNNStep) with B panels packed
// from the image (on: the forward's and the filter gradient's, each switch below)
// against im2col and packB (off), and with packB's row copies in assembly (rows)
// against a copy call per row, with the next image prefetched or not, and with
// partial panels in the masked edge kernels or the edge tile; all: every one of these
// on against every one off (the code before them), interleaved.
func BenchmarkCNNStepPack(b *testing.B) {
	cfg := CNNConfig{
		Height: 28, Width: 28, Channels: 1,
		Conv: []ConvLayer{{Filters: 32, Kernel: 3}, {Filters: 64, Kernel: 3}}, Pool: 2,
		Dense: []int{128}, Outputs: 10, Task: TaskMulticlass, BatchSize: 64,
	}
	fwd, hwc, rows, pf, edge := hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels
	defer func() {
		hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels = fwd, hwc, rows, pf, edge
	}()
	for _, c := range []struct {
		name string
		set  func(on bool)
	}{
		{"forward", func(on bool) { hasPackAVX512 = on && fwd }},
		{"filtergrad", func(on bool) { packHWC = on && hwc }},
		{"both", func(on bool) { hasPackAVX512, packHWC = on && fwd, on && hwc }},
		{"rows", func(on bool) { hasPackRowsAVX512 = on && rows }},
		{"prefetch", func(on bool) { prefetchNext = on && pf }},
		{"edge", func(on bool) { hasEdgeKernels = on && edge }},
		{"all", func(on bool) {
			hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels = on && fwd, on && hwc, on && rows, on && pf, on && edge
		}},
		{"overlap", func(on bool) { transposeOverlap = on }},
		{"prefetchc", func(on bool) { prefetchCKernels = on; kernel = gemmKernels()[0] }},
		{"round5", func(on bool) { transposeOverlap, prefetchCKernels = on, on; kernel = gemmKernels()[0] }},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchStepAB(b, mustCNN(b, cfg), cnnInputs(cfg), 10, TaskMulticlass, c.set)
		})
	}
}

// BenchmarkCIFARStepPack is BenchmarkCIFARStep with B panels packed from the image (its
// padded layers: the filter gradients' colᵀ from HWC copies) against im2col and
// packB, and packB's row copies in assembly or not, interleaved.
func BenchmarkCIFARStepPack(b *testing.B) {
	fwd, hwc, rows, pf, edge := hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels
	defer func() {
		hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels = fwd, hwc, rows, pf, edge
	}()
	cfg := cifarConfig(64)
	for _, c := range []struct {
		name string
		set  func(on bool)
	}{
		{"both", func(on bool) { hasPackAVX512, packHWC = on && fwd, on && hwc }},
		{"rows", func(on bool) { hasPackRowsAVX512 = on && rows }},
		{"prefetch", func(on bool) { prefetchNext = on && pf }},
		{"edge", func(on bool) { hasEdgeKernels = on && edge }},
		{"prefetchc", func(on bool) { prefetchCKernels = on; kernel = gemmKernels()[0] }},
		{"round5", func(on bool) { transposeOverlap, prefetchCKernels = on, on; kernel = gemmKernels()[0] }},
		{"all", func(on bool) {
			hasPackAVX512, packHWC, hasPackRowsAVX512, prefetchNext, hasEdgeKernels = on && fwd, on && hwc, on && rows, on && pf, on && edge
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchStepAB(b, mustCNN(b, cfg), cnnInputs(cfg), 10, TaskMulticlass, c.set)
		})
	}
}

// TestPackBRowsMatchesGo checks packB of a B that is not transposed with the row
// copies in assembly against its Go loop, bit for bit: 1 to 70 columns (full panels
// and edges of every width), depth blocks at an offset, a B ending right at its last
// read value.
func TestPackBRowsMatchesGo(t *testing.T) {
	asmOK := hasPackRowsAVX512
	defer func() { hasPackRowsAVX512 = asmOK }()
	rng := rand.New(rand.NewPCG(8, 8))
	for _, nb := range []int{1, 7, 16, 17, 25, 31, 32, 33, 57, 64, 70} {
		for _, kb := range []int{1, 3, 12} {
			pc, jc, ldb := 2, 3, nb+5
			b := make([]float32, (pc+kb-1)*ldb+jc+nb) // the last row ends at its last value
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			pack := func(asm bool) []float32 {
				hasPackRowsAVX512 = asm && asmOK
				dst := make([]float32, kb*roundUp(nb, 32))
				for i := range dst {
					dst[i] = float32(math.NaN())
				}
				packB(dst, 32, false, b, ldb, pc, jc, kb, nb)
				return dst
			}
			got, want := pack(true), pack(false)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("nb %d kb %d: value %d = %v, want %v", nb, kb, i, got[i], want[i])
				}
			}
		}
	}
}

// TestEdgeKernelsMatchTile checks products whose last panel has 17 to 31 columns with
// the masked edge kernels against the edge tile (bit for bit: the same FMAs in the
// same order) and against a float64 reference (1e-5 relative), beta 0 (storing) and
// 1 (adding), on 4 to 30 rows (whole tiles, 4-row parts, a remainder), and that C's
// values past the product's columns are left alone.
func TestEdgeKernelsMatchTile(t *testing.T) {
	if edgeKernelsFor(&kernel) == nil {
		t.Skip("no masked edge kernels for this micro-kernel")
	}
	defer func(v bool) { hasEdgeKernels = v }(hasEdgeKernels)
	rng := rand.New(rand.NewPCG(4, 4))
	for _, sh := range [][3]int{{12, 25, 7}, {64, 121, 288}, {30, 17, 5}, {7, 31, 40}, {13, 49, 3}, {4, 20, 1}, {5, 60, 9}} {
		m, n, k := sh[0], sh[1], sh[2]
		ldc := n + 9
		a := make([]float32, m*k)
		b := make([]float32, k*n)
		c0 := make([]float32, m*ldc)
		for _, s := range [][]float32{a, b, c0} {
			for i := range s {
				s[i] = float32(rng.NormFloat64())
			}
		}
		for _, beta := range []float32{0, 1} {
			run := func(on bool) []float32 {
				hasEdgeKernels = on
				c := append([]float32(nil), c0...)
				packedSgemm(false, false, m, n, k, a, k, b, n, beta, c, ldc)
				return c
			}
			got, want := run(true), run(false)
			for i := range m {
				for j := range ldc {
					g, w := got[i*ldc+j], want[i*ldc+j]
					if math.Float32bits(g) != math.Float32bits(w) {
						t.Fatalf("%v beta %v: c[%d][%d] = %v with edge kernels, %v with the tile", sh, beta, i, j, g, w)
					}
					if j >= n {
						if g != c0[i*ldc+j] {
							t.Fatalf("%v beta %v: c[%d][%d] past the columns changed: %v, was %v", sh, beta, i, j, g, c0[i*ldc+j])
						}
						continue
					}
					ref := float64(beta) * float64(c0[i*ldc+j])
					for q := range k {
						ref += float64(a[i*k+q]) * float64(b[q*n+j])
					}
					if math.Abs(float64(g)-ref) > 1e-5*(1+math.Abs(ref))*math.Sqrt(float64(k)) {
						t.Fatalf("%v beta %v: c[%d][%d] = %v, reference %v", sh, beta, i, j, g, ref)
					}
				}
			}
		}
	}
}
