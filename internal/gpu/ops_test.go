package gpu

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Each op test runs on the emulated device (the CUDA C kernels built for the CPU,
// through the same purego calls) and on a real GPU, comparing with the CPU reference.

func TestGemmMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, tc := range []struct {
			m, n, k        int
			transA, transB bool
		}{
			{3, 5, 4, false, false}, {7, 2, 9, true, false}, {4, 6, 3, false, true}, {64, 33, 100, true, true},
		} {
			a, b, c := randSlice(r, tc.m*tc.k), randSlice(r, tc.k*tc.n), randSlice(r, tc.m*tc.n)
			want := slices.Clone(c)
			CPUGemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, 0.5, a, b, 2, want)
			cb := upload(t, d, c)
			must(t, d.Gemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, 0.5, upload(t, d, a), upload(t, d, b), 2, cb))
			assertClose(t, "gemm", read(t, cb), want, tolAbsGemm, tolRelGemm)
		}
	})
}

func TestMatMulGradMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(3, 4))
		m, n, k := 8, 5, 6
		a, b, dc := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
		wantDA, wantDB := make([]float32, m*k), make([]float32, k*n)
		CPUGemm(false, true, m, k, n, 1, dc, b, 0, wantDA)
		CPUGemm(true, false, k, n, m, 1, a, dc, 0, wantDB)
		da, db := alloc(t, d, m*k), alloc(t, d, k*n)
		must(t, d.MatMulGrad(m, n, k, upload(t, d, a), upload(t, d, b), upload(t, d, dc), da, db, 0))
		assertClose(t, "dA", read(t, da), wantDA, tolAbsGemm, tolRelGemm)
		assertClose(t, "dB", read(t, db), wantDB, tolAbsGemm, tolRelGemm)
	})
}

func TestBiasMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(5, 6))
		rows, cols := 9, 7
		y, bias := randSlice(r, rows*cols), randSlice(r, cols)
		want := slices.Clone(y)
		CPUAddBiasRows(want, bias, rows, cols)
		yb := upload(t, d, y)
		must(t, d.AddBiasRows(yb, upload(t, d, bias), rows, cols))
		assertClose(t, "bias rows", read(t, yb), want, tolAbsElem, tolRelElem)

		wantDB := make([]float32, cols)
		CPUBiasRowsGrad(wantDB, y, rows, cols)
		db := alloc(t, d, cols)
		must(t, d.BiasRowsGrad(db, upload(t, d, y), rows, cols))
		assertClose(t, "bias rows grad", read(t, db), wantDB, tolAbsElem, tolRelElem)

		n, ch, hw := 3, 4, 10
		x, cb := randSlice(r, n*ch*hw), randSlice(r, ch)
		wantC := slices.Clone(x)
		CPUAddBiasChannels(wantC, cb, n, ch, hw)
		xb := upload(t, d, x)
		must(t, d.AddBiasChannels(xb, upload(t, d, cb), n, ch, hw))
		assertClose(t, "bias channels", read(t, xb), wantC, tolAbsElem, tolRelElem)

		wantCDB := make([]float32, ch)
		CPUBiasChannelsGrad(wantCDB, x, n, ch, hw)
		cdb := alloc(t, d, ch)
		must(t, d.BiasChannelsGrad(cdb, upload(t, d, x), n, ch, hw))
		assertClose(t, "bias channels grad", read(t, cdb), wantCDB, tolAbsElem, tolRelElem)
	})
}

func TestActivationsMatchCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(7, 8))
		n := 1000
		x, dy := randSlice(r, n), randSlice(r, n)
		for _, act := range []Activation{ReLU, Sigmoid, Tanh, LeakyReLU} {
			t.Run(act.String(), func(t *testing.T) {
				wantY, wantDX := make([]float32, n), make([]float32, n)
				CPUActivate(act, wantY, x)
				CPUActivateGrad(act, wantDX, dy, wantY)
				xb := upload(t, d, x)
				must(t, d.Activate(act, xb, xb, n)) // in place
				assertClose(t, "forward", read(t, xb), wantY, tolAbsElem, tolRelElem)
				dx := alloc(t, d, n)
				must(t, d.ActivateGrad(act, dx, upload(t, d, dy), xb, n))
				assertClose(t, "backward", read(t, dx), wantDX, tolAbsElem, tolRelElem)
			})
		}
	})
}

func TestMulAndAxpy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(17, 18))
		n := 333
		a, b := randSlice(r, n), randSlice(r, n)
		want, wantAxpy := make([]float32, n), make([]float32, n)
		for i := range a {
			want[i] = a[i] * b[i]
			wantAxpy[i] = want[i] + 0.5*b[i]
		}
		ab, bb := upload(t, d, a), upload(t, d, b)
		must(t, d.Mul(ab, ab, bb, n)) // in place
		assertClose(t, "mul", read(t, ab), want, 0, 0)
		must(t, d.Axpy(ab, bb, 0.5, n))
		assertClose(t, "axpy", read(t, ab), wantAxpy, tolAbsElem, tolRelElem)
	})
}

func oneHot(r *rand.Rand, rows, cols int) []float32 {
	t := make([]float32, rows*cols)
	for i := range rows {
		t[i*cols+r.IntN(cols)] = 1
	}
	return t
}

func TestSoftmaxCrossEntropyMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(9, 10))
		rows, cols := 17, 10
		logits, targets := randSlice(r, rows*cols), oneHot(r, rows, cols)
		logits[3] = 80 // large logits must not overflow
		wantP, wantL, wantDZ := make([]float32, rows*cols), make([]float32, rows), make([]float32, rows*cols)
		CPUSoftmaxCrossEntropy(wantP, wantL, logits, targets, rows, cols)
		CPUSoftmaxCrossEntropyGrad(wantDZ, wantP, targets, rows, cols, 1/float32(rows))
		p, l, dz := alloc(t, d, rows*cols), alloc(t, d, rows), alloc(t, d, rows*cols)
		tb := upload(t, d, targets)
		must(t, d.SoftmaxCrossEntropy(p, l, upload(t, d, logits), tb, rows, cols))
		must(t, d.SoftmaxCrossEntropyGrad(dz, p, tb, rows, cols, 1/float32(rows)))
		assertClose(t, "probs", read(t, p), wantP, tolAbsElem, tolRelElem)
		assertClose(t, "loss", read(t, l), wantL, tolAbsElem, tolRelElem)
		assertClose(t, "dlogits", read(t, dz), wantDZ, tolAbsElem, tolRelElem)
	})
}

var convShapes = []ConvShape{
	{N: 2, C: 3, H: 8, W: 7, F: 4, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 3, C: 2, H: 9, W: 9, F: 5, KH: 3, KW: 2, Stride: 2, Pad: 0},
	{N: 1, C: 1, H: 28, W: 28, F: 8, KH: 5, KW: 5, Stride: 1, Pad: 2},
}

func TestConvolutionMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, s := range convShapes {
			k, out := s.C*s.KH*s.KW, s.N*s.F*s.OutH()*s.OutW()
			x, w, b, dy := randSlice(r, s.N*s.C*s.H*s.W), randSlice(r, s.F*k), randSlice(r, s.F), randSlice(r, out)
			wantCols := make([]float32, s.ColsLen())
			CPUIm2col(wantCols, x, s)
			wantY := make([]float32, out)
			CPUConv2D(s, x, w, b, wantY)
			wantDX, wantDW, wantDB := make([]float32, len(x)), make([]float32, len(w)), make([]float32, s.F)
			CPUConv2DGrad(s, x, w, dy, wantDX, wantDW, wantDB)

			xb, wb := upload(t, d, x), upload(t, d, w)
			cols, dcols := alloc(t, d, s.ColsLen()), alloc(t, d, s.ColsLen())
			must(t, d.Im2col(cols, xb, s))
			assertClose(t, "im2col", read(t, cols), wantCols, 0, 0)
			y := alloc(t, d, out)
			must(t, d.Conv2D(s, xb, wb, upload(t, d, b), y, cols))
			assertClose(t, "conv forward", read(t, y), wantY, tolAbsGemm, tolRelGemm)
			dx, dw, db := alloc(t, d, len(x)), alloc(t, d, len(w)), alloc(t, d, s.F)
			must(t, d.Conv2DGrad(s, xb, wb, upload(t, d, dy), dx, dw, db, cols, dcols))
			assertClose(t, "conv dx", read(t, dx), wantDX, tolAbsGemm, tolRelGemm)
			assertClose(t, "conv dw", read(t, dw), wantDW, tolAbsGemm, tolRelGemm)
			assertClose(t, "conv db", read(t, db), wantDB, tolAbsGemm, tolRelGemm)
		}
	})
}

func TestMaxPoolMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(13, 14))
		for _, s := range []PoolShape{{Planes: 6, H: 8, W: 8, K: 2, Stride: 2}, {Planes: 2, H: 7, W: 9, K: 3, Stride: 2}} {
			x, dy := randSlice(r, s.Planes*s.H*s.W), randSlice(r, s.OutLen())
			wantY, wantIdx, wantDX := make([]float32, s.OutLen()), make([]int32, s.OutLen()), make([]float32, len(x))
			CPUMaxPool(s, x, wantY, wantIdx)
			CPUMaxPoolGrad(s, wantDX, dy, wantIdx)
			y, idx, dx := alloc(t, d, s.OutLen()), alloc(t, d, s.OutLen()), alloc(t, d, len(x))
			must(t, d.MaxPool(s, upload(t, d, x), y, idx))
			assertClose(t, "maxpool", read(t, y), wantY, 0, 0)
			gotIdx, err := idx.ReadInt32()
			must(t, err)
			if !slices.Equal(gotIdx, wantIdx) {
				t.Fatalf("maxpool indices %v, want %v", gotIdx, wantIdx)
			}
			must(t, d.MaxPoolGrad(s, dx, upload(t, d, dy), idx))
			assertClose(t, "maxpool grad", read(t, dx), wantDX, tolAbsElem, tolRelElem)
		}
	})
}

func TestLSTMCellMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(15, 16))
		b, h := 5, 7
		gates, cprev, dh, dc := randSlice(r, 4*b*h), randSlice(r, b*h), randSlice(r, b*h), randSlice(r, b*h)
		wantH, wantC, wantActs := make([]float32, b*h), make([]float32, b*h), make([]float32, 4*b*h)
		CPULSTMCell(b, h, gates, cprev, wantH, wantC, wantActs)
		wantDG, wantDC := make([]float32, 4*b*h), make([]float32, b*h)
		CPULSTMCellGrad(b, h, dh, dc, wantActs, wantC, cprev, wantDG, wantDC)

		cp := upload(t, d, cprev)
		hb, cb, acts := alloc(t, d, b*h), alloc(t, d, b*h), alloc(t, d, 4*b*h)
		must(t, d.LSTMCell(b, h, upload(t, d, gates), cp, hb, cb, acts))
		assertClose(t, "lstm h", read(t, hb), wantH, tolAbsElem, tolRelElem)
		assertClose(t, "lstm c", read(t, cb), wantC, tolAbsElem, tolRelElem)
		assertClose(t, "lstm acts", read(t, acts), wantActs, tolAbsElem, tolRelElem)
		dg, dcp := alloc(t, d, 4*b*h), alloc(t, d, b*h)
		must(t, d.LSTMCellGrad(b, h, upload(t, d, dh), upload(t, d, dc), acts, cb, cp, dg, dcp))
		assertClose(t, "lstm dgates", read(t, dg), wantDG, tolAbsElem, tolRelElem)
		assertClose(t, "lstm dcprev", read(t, dcp), wantDC, tolAbsElem, tolRelElem)
	})
}

func TestOpsRejectShortBuffers(t *testing.T) {
	d := emulatedDevice(t)
	small := alloc(t, d, 2)
	if err := d.Gemm(false, false, 2, 2, 2, 1, small, small, 0, small); err == nil {
		t.Fatal("Gemm with 2-element buffers for 2x2 matrices succeeded")
	}
	if err := d.Activate(Activation(9), small, small, 2); err == nil {
		t.Fatal("unknown activation accepted")
	}
	if err := d.Conv2D(ConvShape{N: 1, C: 1, H: 2, W: 2, F: 1, KH: 3, KW: 3, Stride: 1}, small, small, nil, small, small); err == nil {
		t.Fatal("conv with an empty output accepted")
	}
}
