package model

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"sync/atomic"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file holds a 2-D convolution with bias as gorgonia ops, replacing G.Conv2d plus
// a BroadcastAdd: per image, im2col into a buffer reused across steps and one GEMM
// W (F, C·K·K) x col (C·K·K, OH·OW) written straight into the NCHW output, so no
// transposes. Its gradient is three more ops (data, filter, bias). Outputs and scratch
// buffers belong to the op and are reused by every run of the graph; images (and pooled
// planes) are split over the model's threads (parallel.go). A max-pool applies the
// layer's activation to its outputs, on a quarter of the values.

// convGeom is one convolution's geometry at a fixed batch size.
type convGeom struct {
	b          int // images
	c, h, w    int // input channels, height, width
	f, k       int // filters, kernel size
	stride     int
	pad        int
	oh, ow     int // output height, width
	ckk, plane int // C·K·K (GEMM depth), OH·OW (output positions)
}

// convGroupCols is how many output positions (GEMM columns) a convolution's product
// should have at least: layers with small output planes multiply the filters by the
// im2col of several images side by side, so that the micro-kernel's 32-column tiles
// are full and each packed filter block serves more columns.
const convGroupCols = 192

// group returns how many images one product of the convolution covers. The result of
// each output value does not depend on it (the columns of a product are independent).
func (g *convGeom) group() int {
	return max(1, min(g.b, convGroupCols/max(1, g.plane)))
}

// smallDepth tells whether the filter gradient takes its path for few values per
// filter (a first layer): fewer than the micro-kernel's columns and than the filters.
func (g *convGeom) smallDepth() bool { return g.ckk < kernel.nr && g.ckk < g.f }

func newConvGeom(b int, s convShape) convGeom {
	return convGeom{b: b, c: s.inC, h: s.inH, w: s.inW, f: s.outC, k: s.k, stride: s.stride, pad: s.pad,
		oh: s.outH, ow: s.outW, ckk: s.inC * s.k * s.k, plane: s.outH * s.outW}
}

// convIm2col fills col (ckk x plane, row-major with row stride ld >= plane) from one
// image (c x h x w).
func convIm2col[T float](g *convGeom, img, col []T, ld int) {
	if img32, ok := any(img).([]float32); ok && im2colS1(g, img32, any(col).([]float32), ld) {
		return // stride 1, rows of up to 32 values, in AVX-512 (pool_amd64.s)
	}
	if g.stride == 1 && g.pad == 0 && g.ow >= 8 && g.ow <= 32 {
		convIm2colS1(g, img, col, ld)
		return
	}
	for c := range g.c {
		for ki := range g.k {
			for kj := range g.k {
				row := col[((c*g.k+ki)*g.k+kj)*ld:][:g.plane]
				// Output columns [lo, hi) read inside the image (stride 1: a copy).
				lo, hi := convValid(g, kj)
				for oy := range g.oh {
					y := oy*g.stride - g.pad + ki
					dst := row[oy*g.ow : (oy+1)*g.ow]
					if y < 0 || y >= g.h {
						clear(dst)
						continue
					}
					src := img[(c*g.h+y)*g.w : (c*g.h+y+1)*g.w]
					// The few values that read padding (clear would call memclr
					// for one or two values per row).
					for j := range lo {
						dst[j] = 0
					}
					for j := hi; j < len(dst); j++ {
						dst[j] = 0
					}
					if g.stride == 1 {
						copyShort(dst[lo:hi], src[lo-g.pad+kj:])
						continue
					}
					for ox := lo; ox < hi; ox++ {
						dst[ox] = src[ox*g.stride-g.pad+kj]
					}
				}
			}
		}
	}
}

// mv4 copies 4 values: a 16-byte array move is one vector load and store; a larger
// one between slices the compiler cannot prove disjoint becomes a call of memmove.
func mv4[T float](dst, src []T) { *(*[4]T)(dst) = *(*[4]T)(src) }

// copy8to16 copies 8 to 16 values as four overlapping 4-value moves.
func copy8to16[T float](dst, src []T) {
	n := len(dst)
	src = src[:n]
	mv4(dst, src)
	mv4(dst[4:], src[4:])
	mv4(dst[n-8:], src[n-8:])
	mv4(dst[n-4:], src[n-4:])
}

// copy16to32 copies 16 to 32 values as eight overlapping 4-value moves.
func copy16to32[T float](dst, src []T) {
	n := len(dst)
	src = src[:n]
	mv4(dst, src)
	mv4(dst[4:], src[4:])
	mv4(dst[8:], src[8:])
	mv4(dst[12:], src[12:])
	mv4(dst[n-16:], src[n-16:])
	mv4(dst[n-12:], src[n-12:])
	mv4(dst[n-8:], src[n-8:])
	mv4(dst[n-4:], src[n-4:])
}

// convIm2colS1 is convIm2col for stride 1 without padding and output rows of 8 to 32
// values, the shapes of the example networks: every read lies inside the image, so
// each output row is one copy of a fixed-size pattern, inlined rather than called.
func convIm2colS1[T float](g *convGeom, img, col []T, ld int) {
	ow, w, plane := g.ow, g.w, g.plane
	for c := range g.c {
		for ki := range g.k {
			for kj := range g.k {
				row := col[((c*g.k+ki)*g.k+kj)*ld:][:plane]
				src := img[(c*g.h+ki)*w+kj:]
				if ow <= 16 {
					for oy := range g.oh {
						copy8to16(row[oy*ow:oy*ow+ow], src[oy*w:oy*w+ow])
					}
					continue
				}
				for oy := range g.oh {
					copy16to32(row[oy*ow:oy*ow+ow], src[oy*w:oy*w+ow])
				}
			}
		}
	}
}

// copyShort is copy for the short rows of im2col, where a call to memmove costs more
// than the copy: up to 32 values as overlapping 4-value moves.
func copyShort[T float](dst, src []T) {
	n := len(dst)
	switch {
	case n > 32:
		copy(dst, src)
	case n >= 16:
		copy16to32(dst, src[:n])
	case n >= 8:
		copy8to16(dst, src[:n])
	case n >= 4:
		*(*[4]T)(dst) = *(*[4]T)(src)
		*(*[4]T)(dst[n-4:]) = *(*[4]T)(src[n-4 : n])
	default:
		for i := range dst {
			dst[i] = src[i]
		}
	}
}

// fillBias sets row f of y (rows of n values, one after another) to bias[f]: float32
// in AVX-512 where the CPU has it (fillRows), otherwise with fill.
func fillBias[T float](y, bias []T, n int) {
	if y32, ok := any(y).([]float32); ok && fillRows(y32, any(bias).([]float32), n) {
		return
	}
	for f, v := range bias {
		fill(y[f*n:(f+1)*n], v)
	}
}

// fill sets every value of s to v, eight at a time (a fixed-size array store: two
// vector moves) rather than one value or one memmove call per run.
func fill[T float](s []T, v T) {
	var v8 [8]T
	for i := range v8 {
		v8[i] = v
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		*(*[8]T)(s[i:]) = v8
	}
	for ; i < len(s); i++ {
		s[i] = v
	}
}

// convValid returns the output columns [lo, hi) whose kernel column kj falls inside
// the image (the others read padding).
func convValid(g *convGeom, kj int) (lo, hi int) {
	// x = ox*stride - pad + kj must lie in [0, w).
	lo = max(0, (g.pad-kj+g.stride-1)/g.stride)
	hi = min(g.ow, (g.w-1+g.pad-kj)/g.stride+1)
	if g.w-1+g.pad-kj < 0 {
		hi = 0
	}
	return lo, max(lo, hi)
}

// convCol2im adds col (ckk x plane, row stride ld >= plane) into one image's gradient
// (c x h x w).
func convCol2im[T float](g *convGeom, col, img []T, ld int) {
	if col32, ok := any(col).([]float32); ok && col2im3S1(g, col32, any(img).([]float32), ld) {
		return // 3x3, stride 1, rows of up to 32 values, in AVX-512 (pool_amd64.s)
	}
	if g.k == 3 && g.stride == 1 && g.pad == 0 && g.ow >= 2 {
		convCol2im3(g, col, img, ld)
		return
	}
	if g.k == 3 && g.stride == 1 && g.pad == 1 && g.ow >= 2 {
		convCol2im3Same(g, col, img, ld)
		return
	}
	for c := range g.c {
		for ki := range g.k {
			for kj := range g.k {
				row := col[((c*g.k+ki)*g.k+kj)*ld:][:g.plane]
				lo, hi := convValid(g, kj)
				for oy := range g.oh {
					y := oy*g.stride - g.pad + ki
					if y < 0 || y >= g.h {
						continue
					}
					dst := img[(c*g.h+y)*g.w : (c*g.h+y+1)*g.w]
					src := row[oy*g.ow+lo : oy*g.ow+hi]
					if g.stride == 1 {
						d := dst[lo-g.pad+kj:][:len(src)]
						for i, v := range src {
							d[i] += v
						}
						continue
					}
					for i, v := range src {
						dst[(lo+i)*g.stride-g.pad+kj] += v
					}
				}
			}
		}
	}
}

// convCol2im3 is convCol2im for 3x3 kernels, stride 1, no padding: the three kernel
// columns of a row add into the image row in one pass (one load and store of each
// image value instead of three).
func convCol2im3[T float](g *convGeom, col, img []T, ld int) {
	ow := g.ow
	for c := range g.c {
		for ki := range 3 {
			base := (c*3 + ki) * 3 * ld
			k0 := col[base:][:g.plane]
			k1 := col[base+ld:][:g.plane]
			k2 := col[base+2*ld:][:g.plane]
			for oy := range g.oh {
				y := oy + ki
				d := img[(c*g.h+y)*g.w:][:ow+2]
				r0 := k0[oy*ow : (oy+1)*ow]
				r1 := k1[oy*ow:][:len(r0)]
				r2 := k2[oy*ow:][:len(r0)]
				d[0] += r0[0]
				d[1] += r0[1] + r1[0]
				for x := 2; x < len(r0); x++ {
					d[x] += r0[x] + r1[x-1] + r2[x-2]
				}
				d[ow] += r1[ow-1] + r2[ow-2]
				d[ow+1] += r2[ow-1]
			}
		}
	}
}

// convCol2im3Same is convCol2im for 3x3 kernels, stride 1, padding 1 (output as large
// as the input): the three kernel columns of a row add into the image row in one pass.
// Output column ox of kernel column kj reads input column x = ox - 1 + kj.
func convCol2im3Same[T float](g *convGeom, col, img []T, ld int) {
	w := g.w // = g.ow
	for c := range g.c {
		for ki := range 3 {
			base := (c*3 + ki) * 3 * ld
			k0 := col[base:][:g.plane]
			k1 := col[base+ld:][:g.plane]
			k2 := col[base+2*ld:][:g.plane]
			for oy := range g.oh {
				y := oy + ki - 1
				if y < 0 || y >= g.h {
					continue
				}
				d := img[(c*g.h+y)*w:][:w]
				r0 := k0[oy*w : (oy+1)*w]
				r1 := k1[oy*w:][:len(r0)]
				r2 := k2[oy*w:][:len(r0)]
				d[0] += r0[1] + r1[0]
				for x := 1; x < len(d)-1; x++ {
					d[x] += r0[x+1] + r1[x] + r2[x-1]
				}
				d[w-1] += r1[w-1] + r2[w-2]
			}
		}
	}
}

// convGemm computes c = a·b + beta·c on row-major matrices (a m x k, b k x n, c m x n),
// transposing a or b when asked (then lda, ldb are their stored row lengths): float32
// with packedSgemm, float64 with gonum's Dgemm.
func convGemm[T float](tA, tB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	switch a := any(a).(type) {
	case []float32:
		packedSgemm(tA, tB, m, n, k, a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		gonum.Implementation{}.Dgemm(ta, tb, m, n, k, 1, a, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// convScratch returns per-worker buffers of n values each, reusing the previous ones.
func convScratch[T float](bufs *[][]T, workers, n int) [][]T {
	for len(*bufs) < workers {
		*bufs = append(*bufs, make([]T, n))
	}
	return *bufs
}

// convBase holds what the four ops share: the geometry, a reused output and scratch.
type convBase[T float] struct {
	par  *intraOp // the model's intra-op split
	g    convGeom
	name string
	out  []T        // reused output backing
	col  [][]T      // per-worker im2col buffers
	ybuf [][]T      // per-worker products of a group of images (convGeom.group)
	dy   []T        // the filter gradient's partial sums (a first layer's)
	lhs  gemmLHS[T] // the filters, packed once per run for the per-image products
}

// output returns a fresh tensor header over the op's reused output buffer (a header
// per run, so that a later op reshaping its input in place cannot affect the next run).
func (o *convBase[T]) output(shape ...int) (*tensor.Dense, []T) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if len(o.out) != n {
		o.out = make([]T, n)
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(o.out)), o.out
}

// writeOutputTo makes buf (float32) the op's output backing (outputTarget).
func (o *convBase[T]) writeOutputTo(buf []float32) bool {
	b, ok := any(buf).([]T)
	if ok {
		o.out = b
	}
	return ok
}

func (o *convBase[T]) ReturnsPtr() bool     { return false }
func (o *convBase[T]) CallsExtern() bool    { return false }
func (o *convBase[T]) OverwritesInput() int { return -1 }
func (o *convBase[T]) String() string {
	return fmt.Sprintf("%s<%dx%d s%d p%d>", o.name, o.g.k, o.g.k, o.g.stride, o.g.pad)
}

// WriteHash includes the op's address: each op owns buffers, so two must never be merged.
func (o *convBase[T]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s%p", o.name, o) }
func (o *convBase[T]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

func convTensorType(dims int) G.TensorType { return G.TensorType{Dims: dims, Of: hm.TypeVariable('a')} }

// conv2dOp computes y = conv2d(x, w) + b: inputs x (B,C,H,W), w (F,C,K,K), b (F);
// output (B,F,OH,OW).
type conv2dOp[T float] struct {
	convBase[T]
	cols   []T  // every image's im2col (B, ckk, plane), kept for the filter gradient
	needDX bool // whether x needs a gradient (not when it is the model's input)
	// keepCols is set when the gradient ops are built (SymDiff) and the filter gradient
	// takes its first-layer path (convGeom.smallDepth). Without it (Predict, and layers
	// whose filter gradient makes its own im2col)
	// each worker reuses one image's im2col buffer, which stays in cache, instead of
	// writing all B of them.
	keepCols bool
	// bplan packs the per-image products' B panels straight from the image (float32,
	// AVX-512, a group of one image, no kept im2col; pack.go); planned once, nil when
	// the geometry does not allow it. packers holds one packer per worker.
	bplan     *convBPlan
	bplanDone bool
	packers   []convImageB
}

// packPlan returns the plan of packing B from the image for this run, or nil when the
// run takes im2col and packB.
func (o *conv2dOp[T]) packPlan() *convBPlan {
	if _, ok := any(o.out).([]float32); !ok || o.keepCols || o.g.group() != 1 || !hasPackAVX512 || !canPackB() {
		return nil
	}
	if !o.bplanDone {
		o.bplan, o.bplanDone = newConvBPlan(&o.g), true
	}
	return o.bplan
}

func (o *conv2dOp[T]) Arity() int { return 3 }
func (o *conv2dOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4), convTensorType(1), convTensorType(4))
}
func (o *conv2dOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.b, o.g.f, o.g.oh, o.g.ow}, nil
}

func (o *conv2dOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[T](o.name, inputs, 3)
	if err != nil {
		return nil, err
	}
	x, w, bias := in[0], in[1], in[2]
	g := &o.g
	out, y := o.output(g.b, g.f, g.oh, g.ow)
	grp := g.group()
	groups := (g.b + grp - 1) / grp
	var scratchs, ybuf [][]T
	plan := o.packPlan()
	switch {
	case o.keepCols:
		if n := g.b * g.ckk * g.plane; len(o.cols) != n {
			o.cols = make([]T, n)
		}
	case plan != nil:
		for len(o.packers) < o.par.workers(groups) {
			o.packers = append(o.packers, convImageB{plan: plan})
		}
	default:
		scratchs = convScratch(&o.col, o.par.workers(groups), g.ckk*grp*g.plane)
	}
	if grp > 1 {
		ybuf = convScratch(&o.ybuf, o.par.workers(groups), g.f*grp*g.plane)
	}
	o.lhs.set(false, g.f, g.ckk, w, g.ckk)
	img := g.c * g.h * g.w
	o.par.forRanges(groups, func(worker, lo, hi int) {
		for gi := lo; gi < hi; gi++ {
			i0, i1 := gi*grp, min(g.b, (gi+1)*grp)
			n := (i1 - i0) * g.plane
			if plan != nil {
				// One image, its B panels packed from the image, the product straight
				// into its NCHW output.
				yi := y[i0*g.f*g.plane : i1*g.f*g.plane]
				fillBias(yi, bias, g.plane)
				pk := &o.packers[worker]
				pk.img = any(x[i0*img : i1*img]).([]float32)
				if i1 < min(g.b, hi*grp) {
					prefetch(any(x[i1*img : (i1+1)*img]).([]float32))
				}
				o.lhs.packed.mulPacker(n, pk, any(yi).([]float32), g.plane)
				continue
			}
			// The group's im2col, its images side by side: ckk x n, row stride ld.
			var col []T
			ld := n
			if o.keepCols {
				col, ld = o.cols[i0*g.plane:], g.b*g.plane
			} else {
				col = scratchs[worker]
			}
			for i := i0; i < i1; i++ {
				convIm2col(g, x[i*img:(i+1)*img], col[(i-i0)*g.plane:], ld)
			}
			if grp == 1 {
				// One image: the product goes straight into its NCHW output.
				yi := y[i0*g.f*g.plane : i1*g.f*g.plane]
				fillBias(yi, bias, g.plane)
				o.lhs.mul(false, n, col, ld, 1, yi, g.plane)
				continue
			}
			yb := ybuf[worker][:g.f*n]
			fillBias(yb, bias, n)
			o.lhs.mul(false, n, col, ld, 1, yb, n)
			for i := i0; i < i1; i++ {
				for f := range g.f {
					copy(y[(i*g.f+f)*g.plane:(i*g.f+f+1)*g.plane], yb[f*n+(i-i0)*g.plane:])
				}
			}
		}
	})
	return out, nil
}

func (o *conv2dOp[T]) DiffWRT(int) []bool { return []bool{o.needDX, true, true} }

func (o *conv2dOp[T]) SymDiff(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("conv: %d inputs, want 3", len(inputs))
	}
	// A filter gradient of few values per filter reads the batch's im2col kept by
	// this op; the others make their own (convFilterGradOp.Do).
	o.keepCols = o.g.smallDepth()
	var dx *G.Node
	var err error
	if o.needDX {
		if dx, err = G.ApplyOp(&convDataGradOp[T]{convBase[T]{par: buildPar, g: o.g, name: "conv2d_dx"}}, inputs[1], grad); err != nil {
			return nil, err
		}
	}
	dw, err := G.ApplyOp(&convFilterGradOp[T]{convBase: convBase[T]{par: buildPar, g: o.g, name: "conv2d_dw"}, fwd: o}, inputs[0], grad)
	if err != nil {
		return nil, err
	}
	db, err := G.ApplyOp(&convBiasGradOp[T]{convBase[T]{par: buildPar, g: o.g, name: "conv2d_db"}}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw, db}, nil
}

// convDataGradOp computes dx (B,C,H,W) from w (F,C,K,K) and dy (B,F,OH,OW).
type convDataGradOp[T float] struct{ convBase[T] }

func (o *convDataGradOp[T]) Arity() int { return 2 }
func (o *convDataGradOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4), convTensorType(4))
}
func (o *convDataGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.b, o.g.c, o.g.h, o.g.w}, nil
}

func (o *convDataGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[T](o.name, inputs, 2)
	if err != nil {
		return nil, err
	}
	w, dy := in[0], in[1]
	g := &o.g
	out, dx := o.output(g.b, g.c, g.h, g.w)
	grp := g.group()
	groups := (g.b + grp - 1) / grp
	workers := o.par.workers(groups)
	cols := convScratch(&o.col, workers, g.ckk*grp*g.plane)
	var dys [][]T
	if grp > 1 {
		dys = convScratch(&o.ybuf, workers, g.f*grp*g.plane)
	}
	img := g.c * g.h * g.w
	o.lhs.set(true, g.ckk, g.f, w, g.ckk)
	o.par.forRanges(groups, func(worker, lo, hi int) {
		col := cols[worker]
		for gi := lo; gi < hi; gi++ {
			i0, i1 := gi*grp, min(g.b, (gi+1)*grp)
			n := (i1 - i0) * g.plane
			// dcol (ckk, n) = Wᵀ (ckk, F) · dy of the group (F, n), its images side by side
			if grp == 1 {
				if dy32, ok := any(dy).([]float32); ok && i1 < min(g.b, hi*grp) {
					prefetch(dy32[i1*g.f*g.plane : (i1+1)*g.f*g.plane])
				}
				o.lhs.mul(false, n, dy[i0*g.f*g.plane:i1*g.f*g.plane], g.plane, 0, col, n)
			} else {
				d := dys[worker][:g.f*n]
				for i := i0; i < i1; i++ {
					for f := range g.f {
						copy(d[f*n+(i-i0)*g.plane:][:g.plane], dy[(i*g.f+f)*g.plane:(i*g.f+f+1)*g.plane])
					}
				}
				o.lhs.mul(false, n, d, n, 0, col, n)
			}
			for i := i0; i < i1; i++ {
				di := dx[i*img : (i+1)*img]
				clear(di)
				convCol2im(g, col[(i-i0)*g.plane:], di, n)
			}
		}
	})
	return out, nil
}

// convFilterGradOp computes dw (F,C,K,K) from x (B,C,H,W) and dy (B,F,OH,OW).
type convFilterGradOp[T float] struct {
	convBase[T]
	fwd *conv2dOp[T] // its forward op, whose im2col of x this run reuses
	// hwc holds each worker's packer of colᵀ from HWC copies of the images, when the
	// products pack it so (pack.go).
	hwc []hwcB
}

// hwcWorkers returns nw workers' packers of colᵀ from HWC images, or nil when this run
// takes im2col (float64, a kernel other than the 32-column one, a channel count not a
// multiple of 16).
func (o *convFilterGradOp[T]) hwcWorkers(nw int) []hwcB {
	g := &o.g
	if _, ok := any(o.out).([]float32); !ok || !packHWC || !canPackB() || g.c%16 != 0 {
		return nil
	}
	for len(o.hwc) < nw {
		o.hwc = append(o.hwc, newHWCB(g, g.c, g.group()))
	}
	return o.hwc[:nw]
}

func (o *convFilterGradOp[T]) Arity() int { return 2 }
func (o *convFilterGradOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4), convTensorType(4))
}
func (o *convFilterGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.f, o.g.c, o.g.k, o.g.k}, nil
}

func (o *convFilterGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	// x (inputs[0]) orders this op after the forward one. With few values per filter
	// (convGeom.smallDepth) its im2col is fwd.cols; otherwise this op makes it again.
	if len(inputs) != 2 {
		return nil, fmt.Errorf("%s: %d inputs, want 2", o.name, len(inputs))
	}
	x, err := opData[T](o.name, 0, inputs[0])
	if err != nil {
		return nil, err
	}
	dy, err := opData[T](o.name, 1, inputs[1])
	if err != nil {
		return nil, err
	}
	g := &o.g
	out, dw := o.output(g.f, g.c, g.k, g.k)
	cols := o.fwd.cols
	if g.smallDepth() && len(cols) != g.b*g.ckk*g.plane {
		return nil, fmt.Errorf("conv dw: the forward convolution has not run")
	}
	// dw (F, ckk) = Σ over groups of images (convGeom.group) of dy_group (F, n) ·
	// col_groupᵀ (n, ckk), summed in group order, col_group being the group's im2col
	// (ckk, n), its images side by side; a group of one image reads its dy in place, a
	// larger one gathers its images' dy side by side. The forward op's kept im2col
	// (first layers) is one matrix (ckk, B·plane).
	ldc := g.b * g.plane
	grp := g.group()
	groups := (g.b + grp - 1) / grp
	// groupDY returns rows [f0, f1) of group gi's dy as a (f1-f0, n) matrix and its
	// row stride, gathered into buf when the group has several images.
	groupDY := func(buf []T, gi, f0, f1 int) ([]T, int) {
		i0, i1 := gi*grp, min(g.b, (gi+1)*grp)
		if i1-i0 == 1 {
			return dy[(i0*g.f+f0)*g.plane : (i0*g.f+f1)*g.plane], g.plane
		}
		n := (i1 - i0) * g.plane
		for i := i0; i < i1; i++ {
			for f := f0; f < f1; f++ {
				copy(buf[(f-f0)*n+(i-i0)*g.plane:][:g.plane], dy[(i*g.f+f)*g.plane:(i*g.f+f+1)*g.plane])
			}
		}
		return buf[:(f1-f0)*n], n
	}
	span := func(gi int) (int, int) { return gi * grp * g.plane, (min(g.b, (gi+1)*grp) - gi*grp) * g.plane }
	if g.smallDepth() {
		// Few values per filter (a first layer on one channel: ckk 9): a product with
		// ckk columns would leave most of each micro-kernel tile empty, so compute
		// dwᵀ (ckk, F) = Σ col_group · dy_groupᵀ and transpose it. Its few tiles give
		// the threads nothing to split, so the groups are cut into up to convDWParts
		// fixed parts (whatever the thread count), each summed by one worker into its
		// own buffer, then the parts are added in order.
		//
		// In AVX-512 (float32, at least 3 x 8 values) dot3x8 computes them instead:
		// each value of dwᵀ is an inner product of an im2col row and a dy row, which
		// lie along the same positions, so nothing is packed or transposed; the
		// parts are then cut from the images, each summed in order.
		cols32, direct := any(cols).([]float32)
		direct = direct && hasDotAVX512 && g.ckk >= 3 && g.f >= 8
		parts := min(convDWParts, groups)
		if direct {
			parts = min(convDWParts, g.b)
		}
		size := g.ckk * g.f
		if len(o.dy) != parts*size {
			o.dy = make([]T, parts*size)
		}
		nw := o.par.workers(parts)
		if direct {
			dy32, part32 := any(dy).([]float32), any(o.dy).([]float32)
			o.par.run(nw, func(w int) {
				for q := w * parts / nw; q < (w+1)*parts/nw; q++ {
					i0, i1 := q*g.b/parts, (q+1)*g.b/parts
					dot3x8(g.ckk, g.f, g.plane, i1-i0, cols32[i0*g.plane:], ldc, g.plane,
						dy32[i0*g.f*g.plane:], g.plane, g.f*g.plane, part32[q*size:(q+1)*size], g.f)
				}
			})
		} else {
			var bufs [][]T
			if grp > 1 {
				bufs = convScratch(&o.ybuf, nw, g.f*grp*g.plane)
			}
			o.par.run(nw, func(w int) {
				var buf []T
				if bufs != nil {
					buf = bufs[w]
				}
				for q := w * parts / nw; q < (w+1)*parts/nw; q++ {
					first := q * groups / parts
					for gi := first; gi < (q+1)*groups/parts; gi++ {
						var beta T
						if gi > first {
							beta = 1
						}
						d, ld := groupDY(buf, gi, 0, g.f)
						c0, n := span(gi)
						convGemm(false, true, g.ckk, g.f, n, cols[c0:], ldc, d, ld, beta, o.dy[q*size:(q+1)*size], g.f)
					}
				}
			})
		}
		for q := range g.ckk {
			for f := range g.f {
				v := o.dy[q*g.f+f]
				for p := 1; p < parts; p++ {
					v += o.dy[p*size+q*g.f+f]
				}
				dw[f*g.ckk+q] = v
			}
		}
		return out, nil
	}
	// The batch's groups are cut into up to convDWImageParts fixed parts (whatever
	// the thread count); each part's products are summed in group order into the
	// part's own dw, and the parts are added in order at the end, so the result does
	// not depend on the number of threads. Goroutines take the parts as they come
	// free. Each makes the im2col of its group itself, into a buffer that stays in
	// cache (cheaper than writing the whole batch's in the forward op and reading it
	// back here), or with AVX-512 packs colᵀ straight from an HWC copy of the images
	// (pack.go); either way every product has all of dw's columns, so at two threads
	// no worker packs the same dy as another nor runs half-empty panels, which a split
	// by input channels did (issue #19).
	kk := g.k * g.k
	parts := min(convDWImageParts, groups)
	size := g.f * g.ckk
	if len(o.dy) != parts*size {
		o.dy = make([]T, parts*size)
	}
	nw := o.par.workers(parts)
	var bufs [][]T
	if grp > 1 {
		bufs = convScratch(&o.ybuf, nw, g.f*grp*g.plane)
	}
	img := g.c * g.h * g.w
	// part returns part q's groups.
	part := func(q int) (int, int) { return q * groups / parts, (q + 1) * groups / parts }
	// With AVX-512, colᵀ is packed from HWC copies of the images, dw's columns in
	// (ki, kj, c) order, permuted into dw once the parts are added; otherwise each
	// group's im2col is made into a buffer that stays in cache.
	hwc := o.hwcWorkers(nw)
	var colBufs [][]T
	if hwc == nil {
		colBufs = convScratch(&o.col, nw, g.ckk*grp*g.plane)
	}
	var next atomic.Int32
	o.par.run(nw, func(w int) {
		var buf []T
		if bufs != nil {
			buf = bufs[w]
		}
		for q := int(next.Add(1)) - 1; q < parts; q = int(next.Add(1)) - 1 {
			first, last := part(q)
			dst := o.dy[q*size : (q+1)*size]
			for gi := first; gi < last; gi++ {
				var beta T
				if gi > first {
					beta = 1
				}
				i0, i1 := gi*grp, min(g.b, (gi+1)*grp)
				n := (i1 - i0) * g.plane
				if hwc != nil {
					x32 := any(x).([]float32)
					for i := i0; i < i1; i++ {
						hwc[w].fill(g, i-i0, 0, g.c, x32[i*img:(i+1)*img])
					}
					if i2 := min(g.b, i1+grp); gi+1 < last {
						// The next group's images and dy, fetched during this product.
						prefetch(x32[i1*img : i2*img])
						prefetch(any(dy[i1*g.f*g.plane : i2*g.f*g.plane]).([]float32))
					}
					d, ld := groupDY(buf, gi, 0, g.f)
					sgemmPackedB(g.f, g.ckk, n, any(d).([]float32), ld, &hwc[w], float32(beta), any(dst).([]float32), g.ckk)
					continue
				}
				col := colBufs[w]
				for i := i0; i < i1; i++ {
					convIm2col(g, x[i*img:(i+1)*img], col[(i-i0)*g.plane:], n)
				}
				d, ld := groupDY(buf, gi, 0, g.f)
				convGemm(false, true, g.f, g.ckk, n, d, ld, col, n, beta, dst, g.ckk)
			}
		}
	})
	o.par.forRanges(g.f, func(_, lo, hi int) {
		for f := lo; f < hi; f++ {
			src := sumParts(o.dy, parts, size, f*g.ckk, g.ckk)
			dst := dw[f*g.ckk : (f+1)*g.ckk]
			if hwc == nil {
				copy(dst, src)
				continue
			}
			for t := range kk {
				for c := range g.c {
					dst[c*kk+t] = src[t*g.c+c]
				}
			}
		}
	})
	return out, nil
}

// convDWImageParts is the number of fixed parts of the batch a filter gradient (but a
// first layer's) sums separately: 8 lets two or three threads balance their share to
// within an eighth of the op.
const convDWImageParts = 8

// sumParts adds values [at, at+n) of parts 1.. of v (parts blocks of size values) into
// block 0's, in part order, and returns them (the filter gradient's parts, a row of dw
// at a time, split over the threads).
func sumParts[T float](v []T, parts, size, at, n int) []T {
	dst := v[at : at+n]
	for q := 1; q < parts; q++ {
		src := v[q*size+at:][:n]
		i := 0
		for ; i+8 <= n; i += 8 {
			d, x := (*[8]T)(dst[i:]), (*[8]T)(src[i:])
			d[0], d[1], d[2], d[3] = d[0]+x[0], d[1]+x[1], d[2]+x[2], d[3]+x[3]
			d[4], d[5], d[6], d[7] = d[4]+x[4], d[5]+x[5], d[6]+x[6], d[7]+x[7]
		}
		for ; i < n; i++ {
			dst[i] += src[i]
		}
	}
	return dst
}

// convDWParts is the number of fixed parts of a first layer's filter gradient.
const convDWParts = 4

// convBiasGradOp computes db (F) from dy (B,F,OH,OW): the sum over images and positions.
type convBiasGradOp[T float] struct{ convBase[T] }

func (o *convBiasGradOp[T]) Arity() int { return 1 }
func (o *convBiasGradOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(1))
}
func (o *convBiasGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.f}, nil
}

func (o *convBiasGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[T](o.name, inputs, 1)
	if err != nil {
		return nil, err
	}
	dy := in[0]
	g := &o.g
	out, db := o.output(g.f)
	// Each filter's sum runs over the images in order, whoever computes it.
	dy32, _ := any(dy).([]float32)
	db32, _ := any(db).([]float32)
	o.par.forRanges(g.f, func(_, lo, hi int) {
		for f := lo; f < hi; f++ {
			if dy32 != nil {
				// In AVX-512: lanes of 16 over every image, added at the end.
				if v, ok := sumRows(dy32[f*g.plane:], g.plane, g.b, g.f*g.plane); ok {
					db32[f] = v
					continue
				}
			}
			var sum T
			for i := range g.b {
				sum += sum4(dy[(i*g.f+f)*g.plane : (i*g.f+f+1)*g.plane])
			}
			db[f] = sum
		}
	})
	return out, nil
}

// sum4 is the sum of v over four running sums (four times the throughput of one
// dependent chain of additions).
func sum4[T float](v []T) T {
	var s0, s1, s2, s3 T
	i := 0
	for ; i+4 <= len(v); i += 4 {
		w := v[i : i+4 : i+4]
		s0 += w[0]
		s1 += w[1]
		s2 += w[2]
		s3 += w[3]
	}
	for _, x := range v[i:] {
		s0 += x
	}
	return (s0 + s1) + (s2 + s3)
}

// conv2d applies the convolution with bias of layer s to h (B,C,H,W).
func conv2d[T float](h, w, bias *G.Node, batch int, s convShape) (*G.Node, error) {
	return conv2dLayer[T](h, w, bias, batch, s, true)
}

// conv2dLayer is conv2d whose input needs a gradient only when needDX is set (not for
// the first layer, whose input is the data).
func conv2dLayer[T float](h, w, bias *G.Node, batch int, s convShape, needDX bool) (*G.Node, error) {
	op := &conv2dOp[T]{convBase: convBase[T]{par: buildPar, g: newConvGeom(batch, s), name: "conv2d"}, needDX: needDX}
	return G.ApplyOp(op, h, w, bias)
}

// maxPoolOp is a p x p max-pool with stride p (windows that do not fit are dropped):
// input (B,C,H,W), output (B,C,H/p,W/p). It records each window's first maximum for
// its gradient op in a buffer reused across runs. g.c, g.h, g.w describe the input,
// g.k the pool size, g.oh, g.ow the output.
type maxPoolOp[T float] struct {
	convBase[T]
	arg []int32 // per output value, the index of its window's maximum in the input
	act string  // activation applied to the pooled values (identity: none)
	// plan is pool2Plan of a recording float32 2x2 pool's planes (nil: none, or too
	// large), which pool2ArgPlanes and the gradient's pool2GradPlanes follow.
	plan []pool2Chunk
	// needArg is set when the gradient op is built (SymDiff): a forward-only graph
	// (Predict) records no maxima.
	needArg bool
}

func (o *maxPoolOp[T]) Arity() int { return 1 }
func (o *maxPoolOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4))
}
func (o *maxPoolOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.b, o.g.c, o.g.oh, o.g.ow}, nil
}

func (o *maxPoolOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[T](o.name, inputs, 1)
	if err != nil {
		return nil, err
	}
	z := in[0]
	g := &o.g
	out, y := o.output(g.b, g.c, g.oh, g.ow)
	if o.needArg && len(o.arg) != len(y) {
		o.arg = make([]int32, len(y))
	}
	if _, f32 := any(z).([]float32); f32 && o.needArg && g.k == 2 && o.plan == nil {
		o.plan = pool2Plan(g.w, g.oh, g.ow)
	}
	o.par.forRanges(g.b*g.c, func(_, lo, hi int) { o.pool(z, y, lo, hi) })
	return out, nil
}

// pool computes planes [lo, hi) of the output y from z, with the activation.
func (o *maxPoolOp[T]) pool(z, y []T, lo, hi int) {
	g := &o.g
	p := g.k
	hw, pw := g.h*g.w, g.oh*g.ow
	first := lo
	if z32, ok := any(z).([]float32); ok && o.needArg && p == 2 &&
		pool2ArgPlanes(z32[lo*hw:hi*hw], any(y).([]float32)[lo*pw:hi*pw], o.arg[lo*pw:hi*pw], o.plan, hi-lo, g.w, hw, pw, int32(lo*hw), o.act == ActivationReLU) {
		// Float32 2x2 windows over the whole range of planes in AVX-512
		// (pool2planes_amd64.s), the same picks as pool2's.
		lo = hi
	}
	for plane := lo; plane < hi; plane++ {
		in := z[plane*g.h*g.w : (plane+1)*g.h*g.w]
		base := plane * g.oh * g.ow
		if !o.needArg {
			// Forward only: the maxima alone (relu folded in).
			poolMax(in, y[base:base+g.oh*g.ow], p, g.w, g.oh, g.ow, o.act == ActivationReLU)
			continue
		}
		if p == 2 {
			pool2(in, y[base:base+g.oh*g.ow], o.arg[base:base+g.oh*g.ow], g.w, g.oh, g.ow, int32(plane*g.h*g.w), o.act == ActivationReLU)
			continue
		}
		for py := range g.oh {
			for px := range g.ow {
				at := py*p*g.w + px*p
				best := in[at]
				for dy := range p {
					row := (py*p+dy)*g.w + px*p
					for dx, v := range in[row : row+p] {
						if v > best {
							best, at = v, row+dx
						}
					}
				}
				y[base+py*g.ow+px] = best
				o.arg[base+py*g.ow+px] = int32(plane*g.h*g.w + at)
			}
		}
	}
	// relu is folded into the forward-only pool and the recording 2x2 one.
	if o.act != ActivationReLU || (o.needArg && p != 2) {
		activateInPlace(y[first*pw:hi*pw], o.act)
	}
}

// poolMax sets y (oh x ow) to the maxima of the p x p windows of one plane of width w,
// clamped below at 0 when relu is set (relu commutes with the maximum): a forward-only
// pool, which records no argmax. Each window's maximum is the same value the argmax
// loops keep.
func poolMax[T float](in, y []T, p, w, oh, ow int, relu bool) {
	var floor T
	if !relu {
		floor = T(math.Inf(-1))
	}
	// float32 rows of a 2x2 pool run in AVX-512 where the CPU has it (pool_amd64.s).
	in32, _ := any(in).([]float32)
	y32, _ := any(y).([]float32)
	floor32 := float32(floor)
	for py := range oh {
		yr := y[py*ow : (py+1)*ow]
		if p == 2 {
			r0 := in[2*py*w : 2*py*w+2*ow]
			r1 := in[(2*py+1)*w : (2*py+1)*w+2*ow]
			if in32 != nil && pool2Row(in32[2*py*w:2*py*w+2*ow], in32[(2*py+1)*w:(2*py+1)*w+2*ow], y32[py*ow:(py+1)*ow], floor32) {
				continue
			}
			for px := range yr {
				a := r0[2*px : 2*px+2 : 2*px+2]
				b := r1[2*px : 2*px+2 : 2*px+2]
				yr[px] = max(max(a[0], a[1]), max(b[0], b[1]), floor)
			}
			continue
		}
		for px := range yr {
			m := floor
			for dy := range p {
				row := (py*p+dy)*w + px*p
				for _, v := range in[row : row+p] {
					m = max(m, v)
				}
			}
			yr[px] = m
		}
	}
}

// pool2 is the 2x2 case of maxPoolOp.Do for one plane of width w, indices from off:
// float32 in AVX-512 where the CPU has it (pool_amd64.s), otherwise row by row in
// pool2RowGo.
func pool2[T float](in, y []T, arg []int32, w, oh, ow int, off int32, relu bool) {
	if in32, ok := any(in).([]float32); ok && pool2Arg(in32, any(y).([]float32), arg, w, oh, ow, off, relu) {
		return
	}
	for py := range oh {
		pool2RowGo(in[2*py*w:2*py*w+2*ow], in[(2*py+1)*w:(2*py+1)*w+2*ow], y[py*ow:(py+1)*ow], arg[py*ow:(py+1)*ow], w, int32(2*py*w)+off, relu)
	}
}

// pool2RowGo is one output row of a recording 2x2 pool: windows of r0 and r1 (the next
// input row, w values on). Each window picks its first maximum in row-major order, as
// the general loop does (the top pair's, the bottom pair's, then the greater of the
// two, the top one on a tie); y gets the picked value (relu: at least 0; NaN when the
// window holds one) and arg its index, at0 plus its offset from r0[0]. The AVX-512 row
// computes the same, bit for bit.
func pool2RowGo[T float](r0, r1, y []T, arg []int32, w int, at0 int32, relu bool) {
	r0, r1, arg = r0[:2*len(y)], r1[:2*len(y)], arg[:len(y)]
	for px := range y {
		a, b, c, d := r0[2*px], r0[2*px+1], r1[2*px], r1[2*px+1]
		top, it := a, int32(2*px)
		if b > a {
			top, it = b, it+1
		}
		bottom, ib := c, int32(w+2*px)
		if d > c {
			bottom, ib = d, ib+1
		}
		if bottom > top {
			top, it = bottom, ib
		}
		if relu {
			top = max(top, 0)
		}
		if a != a || b != b || c != c || d != d {
			top = T(math.NaN())
		}
		y[px], arg[px] = top, at0+it
	}
}

func (o *maxPoolOp[T]) DiffWRT(int) []bool { return []bool{true} }

func (o *maxPoolOp[T]) SymDiff(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("maxpool: %d inputs, want 1", len(inputs))
	}
	o.needArg = true
	dz, err := G.ApplyOp(&maxPoolGradOp[T]{convBase: convBase[T]{par: buildPar, g: o.g, name: "maxpool_dz"}, fwd: o}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dz}, nil
}

// maxPoolGradOp routes the pooled gradient (B,C,H/p,W/p) to each window's maximum
// recorded by the forward op of the same run; everything else gets 0.
type maxPoolGradOp[T float] struct {
	convBase[T]
	fwd *maxPoolOp[T]
	dp  []T // the pooled gradient through the activation
}

func (o *maxPoolGradOp[T]) Arity() int { return 1 }
func (o *maxPoolGradOp[T]) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4))
}
func (o *maxPoolGradOp[T]) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.b, o.g.c, o.g.h, o.g.w}, nil
}

func (o *maxPoolGradOp[T]) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[T](o.name, inputs, 1)
	if err != nil {
		return nil, err
	}
	dy := in[0]
	if len(o.fwd.arg) != len(dy) {
		return nil, fmt.Errorf("maxpool dz: the forward pool has not run")
	}
	g := &o.g
	out, dz := o.output(g.b, g.c, g.h, g.w)
	if o.fwd.act != identity && o.fwd.act != ActivationReLU {
		if len(o.dp) != len(dy) {
			o.dp = make([]T, len(dy))
		}
		activationGrad(o.dp, o.fwd.out, dy, o.fwd.act)
		dy = o.dp
	}
	o.par.forRanges(g.b*g.c, func(_, lo, hi int) { o.route(dz, dy, lo, hi) })
	return out, nil
}

// route writes planes [lo, hi) of dz: each pooled gradient to its window's maximum
// (through relu's derivative when the forward applied relu), 0 elsewhere. Windows do
// not overlap (stride p), so each input gets at most one value.
func (o *maxPoolGradOp[T]) route(dz, dy []T, lo, hi int) {
	g := &o.g
	hw, pw := g.h*g.w, g.oh*g.ow
	if dz32, ok := any(dz).([]float32); ok && g.k == 2 &&
		pool2GradPlanes(dz32[lo*hw:hi*hw], any(dy).([]float32)[lo*pw:hi*pw], any(o.fwd.out).([]float32)[lo*pw:hi*pw], o.fwd.arg[lo*pw:hi*pw], o.fwd.plan, hi-lo, g.w, hw, pw, int32(lo*hw), o.fwd.act == ActivationReLU) {
		// Float32 2x2 windows over the whole range of planes in AVX-512
		// (pool2planes_amd64.s), every value of dz written once.
		return
	}
	if dz32, ok := any(dz).([]float32); ok && g.k == 2 && g.oh > 0 && g.ow > 0 && hasPoolAVX512 {
		// Float32 2x2 windows in AVX-512, every value of dz written once: the
		// windows' rows there, the rows the pool dropped here.
		dy32, y32 := any(dy).([]float32), any(o.fwd.out).([]float32)
		relu := o.fwd.act == ActivationReLU
		for p := lo; p < hi; p++ {
			d := dz32[p*hw : (p+1)*hw]
			pool2GradAVX512Plane(d, dy32[p*pw:(p+1)*pw], y32[p*pw:(p+1)*pw], o.fwd.arg[p*pw:(p+1)*pw], g.w, g.oh, g.ow, int32(p*hw), relu)
			for i := 2 * g.oh * g.w; i < len(d); i++ {
				d[i] = 0
			}
		}
		return
	}
	clear(dz[lo*hw : hi*hw])
	arg := o.fwd.arg[lo*pw : hi*pw]
	dy = dy[lo*pw : hi*pw]
	if o.fwd.act == ActivationReLU {
		y := o.fwd.out[lo*pw : hi*pw]
		if y32, ok := any(y).([]float32); ok {
			// Branch-free in float32: keep v's bits where y > 0.
			dz32, dy32 := any(dz).([]float32), any(dy).([]float32)
			y32 = y32[:len(dy32)]
			for i, v := range dy32 {
				var keep uint32
				if y32[i] > 0 {
					keep = ^uint32(0)
				}
				dz32[arg[i]] = math.Float32frombits(math.Float32bits(v) & keep)
			}
			return
		}
		y = y[:len(dy)]
		for i, v := range dy {
			if y[i] > 0 {
				dz[arg[i]] = v
			}
		}
		return
	}
	for i, v := range dy {
		dz[arg[i]] = v
	}
}

// maxPool applies a p x p max-pool with stride p to h (B,C,H,W) of layer s's output,
// then the activation act (identity: none); act must be non-decreasing, so that it
// commutes with the maximum.
func maxPool[T float](h *G.Node, batch, p int, s convShape, act string) (*G.Node, error) {
	switch act {
	case identity, ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU:
	default:
		return nil, fmt.Errorf("maxpool: unknown activation %q", act)
	}
	g := convGeom{b: batch, c: s.outC, h: s.outH, w: s.outW, k: p, stride: p, oh: s.poolH, ow: s.poolW}
	return G.ApplyOp(&maxPoolOp[T]{convBase: convBase[T]{par: buildPar, g: g, name: "maxpool"}, act: act}, h)
}
