package model

import (
	"fmt"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file fuses a CNN's first layer when it is a float32 3x3 convolution of one input
// channel (stride 1, no padding) followed by relu and a 2x2 max-pool, as in
// fashion-cnn: per image, the convolution with bias (a direct 3x3 kernel in AVX-512
// for rows of 17 to 32 values, firstconv_amd64.s; otherwise im2col and one product),
// then the recording pool with relu, into a buffer of one image's planes in cache,
// so the batch's full-size output (fashion-cnn: 26x26x32 per image, 5.5 MB a batch)
// is never written, nor read back, nor its gradient. The backward pass takes the filter
// and bias gradients from the pooled gradient alone: each window passes its gradient to
// one position, so in AVX-512 each window adds its gradient times the 3x3 patch under
// its maximum (firstconv_amd64.s); elsewhere it routes each image's pooled gradient
// into one image's planes and takes inner products. Every other first layer, and every
// later one, keeps conv2dOp and maxPoolOp.

// fuseFirstConv tells whether buildCNNNet fuses an eligible first layer (tests switch
// it off to compare with the separate ops).
var fuseFirstConv = true

// firstConvFusable tells whether the first layer s, followed by a pool of size pool
// and the activation act, takes the fused ops in a graph of dtype dt.
func firstConvFusable(s convShape, pool int, act string, dt tensor.Dtype) bool {
	return fuseFirstConv && dt == tensor.Float32 && s.inC == 1 && s.k == 3 && s.stride == 1 && s.pad == 0 &&
		pool == 2 && act == ActivationReLU
}

// firstConvPool applies the fused first layer s (conv2d + bias, relu, 2x2 max-pool) to
// x (B,1,H,W): output (B,F,OH/2,OW/2).
func firstConvPool(x, w, bias *G.Node, batch int, s convShape) (*G.Node, error) {
	op := &firstConvOp{convBase: convBase[float32]{par: buildPar, g: newConvGeom(batch, s), name: "conv2d_relu_pool"}}
	return G.ApplyOp(op, x, w, bias)
}

// firstConvOp computes maxpool2(relu(conv2d(x, w) + b)) for inputs x (B,1,H,W), w
// (F,1,3,3), b (F); output (B,F,OH/2,OW/2). g describes the convolution. With needArg
// it records each window's first maximum, as maxPoolOp does, but as an index into
// one image's F planes of OH x OW.
type firstConvOp struct {
	convBase[float32]
	arg     []int32
	needArg bool // set when the gradient ops are built (SymDiff); Predict records nothing
}

func (o *firstConvOp) Arity() int { return 3 }
func (o *firstConvOp) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4), convTensorType(1), convTensorType(4))
}
func (o *firstConvOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.b, o.g.f, o.g.oh / 2, o.g.ow / 2}, nil
}

func (o *firstConvOp) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[float32](o.name, inputs, 3)
	if err != nil {
		return nil, err
	}
	x, w, bias := in[0], in[1], in[2]
	g := &o.g
	ph, pw := g.oh/2, g.ow/2
	out, y := o.output(g.b, g.f, ph, pw)
	if o.needArg && len(o.arg) != len(y) {
		o.arg = make([]int32, len(y))
	}
	nw := o.par.workers(g.b)
	cols := convScratch(&o.col, nw, g.ckk*g.plane)
	planes := convScratch(&o.ybuf, nw, g.f*g.plane)
	o.lhs.set(false, g.f, g.ckk, w, g.ckk)
	img, pp := g.h*g.w, ph*pw
	o.par.forRanges(g.b, func(worker, lo, hi int) {
		col, z := cols[worker], planes[worker]
		for i := lo; i < hi; i++ {
			// The image's convolution with bias, in cache: the same values as
			// conv2dOp's (the same product per column; in AVX-512 a direct 3x3
			// kernel computing each value in the same order).
			if !firstConvFwdAsm(g, x[i*img:(i+1)*img], w, bias, z) {
				convIm2col(g, x[i*img:(i+1)*img], col, g.plane)
				fillBias(z, bias, g.plane)
				o.lhs.mul(false, g.plane, col, g.plane, 1, z, g.plane)
			}
			// With an even height, the image's planes pool as one plane of F·OH rows
			// (the same windows and indices); otherwise plane by plane.
			np, rows := 1, g.f*ph
			if g.oh%2 != 0 {
				np, rows = g.f, ph
			}
			for f := range np {
				zf := z[f*g.plane:]
				yf := y[i*g.f*pp+f*pp:][:rows*pw]
				if !o.needArg {
					poolMax(zf, yf, 2, g.ow, rows, pw, true)
					continue
				}
				pool2(zf, yf, o.arg[i*g.f*pp+f*pp:][:rows*pw], g.ow, rows, pw, int32(f*g.plane), true)
			}
		}
	})
	return out, nil
}

func (o *firstConvOp) DiffWRT(int) []bool { return []bool{false, true, true} }

func (o *firstConvOp) SymDiff(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("%s: %d inputs, want 3", o.name, len(inputs))
	}
	o.needArg = true
	gop := &firstConvGradOp{convBase: convBase[float32]{par: buildPar, g: o.g, name: "conv2d_relu_pool_dw"}, fwd: o}
	dw, err := G.ApplyOp(gop, inputs[0], grad)
	if err != nil {
		return nil, err
	}
	// The bias gradient is computed with the filters' (firstConvGradOp.Do); its op
	// takes dw as input only to run after it.
	db, err := G.ApplyOp(&firstConvBiasOp{convBase: convBase[float32]{par: buildPar, g: o.g, name: "conv2d_relu_pool_db"}, grad: gop}, dw)
	if err != nil {
		return nil, err
	}
	return G.Nodes{nil, dw, db}, nil
}

// firstConvGradOp computes dw (F,1,3,3) from x (B,1,H,W) and the pooled gradient dy
// (B,F,OH/2,OW/2), and db (F) alongside, which firstConvBiasOp returns.
//
// The images are cut into up to convDWParts fixed parts (whatever the thread count);
// each image of a part, in order, adds its sums into the part's: in AVX-512 over its
// windows (firstConvDWAsm), otherwise as inner products of its im2col (with a row of
// ones below, for the bias) and its planes' gradient dz (each pooled gradient at its
// window's maximum, through relu), both made in cache. The parts are then added in
// order. So the sums run image by image (each image's first), another order than
// conv2dOp's gradient ops, and the results are bit-identical at any thread count.
type firstConvGradOp struct {
	convBase[float32]
	fwd  *firstConvOp
	db   []float32 // the bias gradient of the last run
	sums []float32 // per part, (ckk+1) x F: Σ col·dz, the last row Σ dz
	off  []int32   // per position of a plane, its offset in the image (firstConvDWAsm)
}

func (o *firstConvGradOp) Arity() int { return 2 }
func (o *firstConvGradOp) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(4), convTensorType(4))
}
func (o *firstConvGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.f, o.g.c, o.g.k, o.g.k}, nil
}

func (o *firstConvGradOp) Do(inputs ...G.Value) (G.Value, error) {
	in, err := opInputs[float32](o.name, inputs, 2)
	if err != nil {
		return nil, err
	}
	x, dy := in[0], in[1]
	fwd := o.fwd
	if len(fwd.arg) != len(dy) || len(fwd.out) != len(dy) {
		return nil, fmt.Errorf("%s: the forward op has not run", o.name)
	}
	g := &o.g
	out, dw := o.output(g.f, g.c, g.k, g.k)
	if len(o.db) != g.f {
		o.db = make([]float32, g.f)
	}
	rows := g.ckk + 1
	size := rows * g.f
	parts := min(convDWParts, g.b)
	if len(o.sums) != parts*size {
		o.sums = make([]float32, parts*size)
	}
	nw := o.par.workers(parts)
	cols := convScratch(&o.col, nw, rows*g.plane)
	if len(o.off) != g.plane {
		o.off = make([]int32, g.plane)
		for p := range o.off {
			o.off[p] = int32(p/g.ow*g.w + p%g.ow)
		}
	}
	// Each worker's dz planes, then one image's products (16 per filter in AVX-512).
	planes := convScratch(&o.ybuf, nw, g.f*g.plane+16*g.f)
	img, pp := g.h*g.w, g.oh/2*(g.ow/2)
	o.par.run(nw, func(w int) {
		col, dz, prod := cols[w], planes[w][:g.f*g.plane], planes[w][g.f*g.plane:][:16*g.f]
		fill(col[g.ckk*g.plane:][:g.plane], 1)
		for q := w * parts / nw; q < (w+1)*parts/nw; q++ {
			sum := o.sums[q*size : (q+1)*size]
			clear(sum)
			for i := q * g.b / parts; i < (q+1)*g.b/parts; i++ {
				xi := x[i*img : (i+1)*img]
				dyi, yi, ai := dy[i*g.f*pp:][:g.f*pp], fwd.out[i*g.f*pp:][:g.f*pp], fwd.arg[i*g.f*pp:][:g.f*pp]
				if firstConvDWAsm(g, xi, dyi, yi, ai, o.off, dz, prod) {
					// Straight from the windows: each one's gradient times the
					// patch under its maximum.
					for f := range g.f {
						for r := range g.ckk {
							sum[r*g.f+f] += prod[f*16+r/3*4+r%3]
						}
						sum[g.ckk*g.f+f] += prod[f*16+3]
					}
					continue
				}
				convIm2col(g, xi, col, g.plane)
				firstConvRoute(g, dz, dyi, yi, ai)
				firstConvDot(rows, g.f, g.plane, col, dz, prod[:size])
				for j, v := range prod[:size] {
					sum[j] += v
				}
			}
		}
	})
	for f := range g.f {
		for r := range rows {
			v := o.sums[r*g.f+f]
			for q := 1; q < parts; q++ {
				v += o.sums[q*size+r*g.f+f]
			}
			if r < g.ckk {
				dw[f*g.ckk+r] = v
			} else {
				o.db[f] = v
			}
		}
	}
	return out, nil
}

// firstConvRoute writes one image's planes dz (F x OH x OW) of the pooled layer's
// gradient: each pooled gradient of dy (F x OH/2 x OW/2) at its window's maximum arg
// (an index into dz) where the pooled value y is above 0 (relu), 0 everywhere else.
// In AVX-512 where the CPU has it (pool2GradAVX512Plane), otherwise in Go.
func firstConvRoute(g *convGeom, dz, dy, y []float32, arg []int32) {
	ph, pw := g.oh/2, g.ow/2
	pp := ph * pw
	if hasPoolAVX512 && pp > 0 {
		if g.oh%2 == 0 {
			// The planes as one of F·OH rows, as the forward op pooled them.
			pool2GradAVX512Plane(dz, dy, y, arg, g.ow, g.f*ph, pw, 0, true)
			return
		}
		for f := range g.f {
			d := dz[f*g.plane : (f+1)*g.plane]
			pool2GradAVX512Plane(d, dy[f*pp:(f+1)*pp], y[f*pp:(f+1)*pp], arg[f*pp:(f+1)*pp], g.ow, ph, pw, int32(f*g.plane), true)
			clear(d[2*ph*g.ow:]) // the row an odd height drops
		}
		return
	}
	clear(dz)
	for j, v := range dy {
		if y[j] > 0 {
			dz[arg[j]] = v
		}
	}
}

// firstConvDot sets prod[r·f+j] to the inner product of row r of a (m rows of n) and
// row j of b (f rows of n), for r < m, j < f: in AVX-512 where the CPU has it (dot3x8),
// otherwise in Go over four running sums.
func firstConvDot(m, f, n int, a, b, prod []float32) {
	if dot3x8(m, f, n, 1, a, n, m*n, b, n, f*n, prod, f) {
		return
	}
	for r := range m {
		ar := a[r*n : (r+1)*n]
		for j := range f {
			br := b[j*n:][:len(ar)]
			var s0, s1, s2, s3 float32
			p := 0
			for ; p+4 <= len(ar); p += 4 {
				s0 += ar[p] * br[p]
				s1 += ar[p+1] * br[p+1]
				s2 += ar[p+2] * br[p+2]
				s3 += ar[p+3] * br[p+3]
			}
			for ; p < len(ar); p++ {
				s0 += ar[p] * br[p]
			}
			prod[r*f+j] = (s0 + s1) + (s2 + s3)
		}
	}
}

// firstConvBiasOp returns the bias gradient that its firstConvGradOp computed with the
// filters' in the same run; its input (dw) orders it after that op.
type firstConvBiasOp struct {
	convBase[float32]
	grad *firstConvGradOp
}

func (o *firstConvBiasOp) Arity() int { return 1 }
func (o *firstConvBiasOp) Type() hm.Type {
	return hm.NewFnType(convTensorType(4), convTensorType(1))
}
func (o *firstConvBiasOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.g.f}, nil
}

func (o *firstConvBiasOp) Do(inputs ...G.Value) (G.Value, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("%s: %d inputs, want 1", o.name, len(inputs))
	}
	if len(o.grad.db) != o.g.f {
		return nil, fmt.Errorf("%s: the filter gradient has not run", o.name)
	}
	out, db := o.output(o.g.f)
	copy(db, o.grad.db)
	return out, nil
}
