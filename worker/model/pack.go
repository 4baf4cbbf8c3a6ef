package model

import "math/bits"

// This file packs a convolution's right-hand GEMM operand straight from the image,
// in the micro-kernel's packed B layout (packB's: panels of 32 columns, each stored k
// by k, 32 values per k, the last panel zero-padded), so that the forward product
// needs neither an im2col buffer nor packB's copies of it. The values and their order
// in the panels are those of im2col + packB, so the products are bit-identical.
//
// It applies to stride-1 convolutions without padding, where the im2col value of
// row q = (c, ki, kj) and column p = (oy, ox) is img[off(q) + in(p)], off(q) =
// c·h·w + ki·w + kj and in(p) = oy·w + ox: each row of a panel is the same pattern of
// input offsets, shifted by off(q). A panel row is two halves of 16 positions; when
// the 16 input offsets of each half lie within 32 values (output rows of at least
// 8 values for a 3x3 kernel), a half is two masked loads and one two-table permute
// (pack_amd64.s).

// bPacker packs op(B)[pc:pc+kb, jc:jc+nb] into dst as packB does, for a micro-kernel
// of 32 columns.
type bPacker interface {
	packB(dst []float32, pc, jc, kb, nb int)
}

// packHalf is the pattern of 16 consecutive positions of a panel row: lane i reads
// the input at start + idx[i] (relative to off(q)); its layout is read by the
// assembly (80 bytes).
type packHalf struct {
	idx   [16]int32 // offsets from start, < 32: the lanes' permute indices
	start int64     // in(p) of the half's first position
	lo    uint16    // the first load's lanes: min(span, 16)
	hi    uint16    // the second load's lanes: span - 16
	valid uint16    // the lanes that hold a position (the others are padding: 0)
	_     uint16
}

// convBPlan is how to pack a convolution's im2col panels from an image; nil when
// the geometry does not allow it.
type convBPlan struct {
	halves []packHalf // two per 32-column panel
	offs   []int32    // off(q) for every row q of im2col
	size   int        // the image's values (c·h·w)
}

// newConvBPlan returns the plan of g's per-image products, or nil if g is not a
// stride-1 unpadded convolution whose 16-position halves each read within 32 input
// values.
func newConvBPlan(g *convGeom) *convBPlan {
	if g.stride != 1 || g.pad != 0 || g.plane == 0 || g.ckk == 0 || g.oh != g.h-g.k+1 || g.ow != g.w-g.k+1 {
		return nil
	}
	p := &convBPlan{size: g.c * g.h * g.w}
	in := func(pos int) int { return pos/g.ow*g.w + pos%g.ow }
	panels := (g.plane + 31) / 32
	p.halves = make([]packHalf, 2*panels)
	for hi := range p.halves {
		h := &p.halves[hi]
		p0 := hi * 16
		n := max(0, min(16, g.plane-p0))
		if n == 0 {
			continue
		}
		h.start = int64(in(p0))
		for i := range n {
			d := in(p0+i) - in(p0)
			if d >= 32 {
				return nil
			}
			h.idx[i] = int32(d)
		}
		span := int(h.idx[n-1]) + 1
		h.lo = uint16(1<<min(span, 16) - 1)
		h.hi = uint16(1<<max(0, span-16) - 1)
		h.valid = uint16(1<<n - 1)
	}
	p.offs = make([]int32, g.ckk)
	for q := range p.offs {
		c, t := q/(g.k*g.k), q%(g.k*g.k)
		p.offs[q] = int32(c*g.h*g.w + t/g.k*g.w + t%g.k)
	}
	// Every load stays inside the image (the last row's last span ends at its last
	// value); checked here because the assembly reads without bounds checks.
	last := int(p.offs[g.ckk-1])
	for _, h := range p.halves {
		if h.valid != 0 && last+int(h.start)+int(h.idx[bits.Len16(h.valid)-1])+1 > p.size {
			return nil
		}
	}
	return p
}

// convImageB is a bPacker of one image's im2col under a plan.
type convImageB struct {
	plan *convBPlan
	img  []float32
}

// packB fills dst with the panels of columns [jc, jc+nb) over rows [pc, pc+kb); jc is
// a multiple of 32.
func (p *convImageB) packB(dst []float32, pc, jc, kb, nb int) {
	panels := (nb + 31) / 32
	halves := p.plan.halves[jc/16 : jc/16+2*panels]
	offs := p.plan.offs[pc : pc+kb]
	_ = dst[panels*kb*32-1]
	_ = p.img[p.plan.size-1]
	packConvB(dst, p.img[:p.plan.size], offs, halves, kb, panels)
}

// packConvBGo is packConvB's portable loop (and its reference in the tests).
func packConvBGo(dst, img []float32, offs []int32, halves []packHalf, kb, panels int) {
	for pn := range panels {
		panel := dst[pn*kb*32 : (pn+1)*kb*32]
		for hh := range 2 {
			h := &halves[2*pn+hh]
			for q, off := range offs {
				row := panel[q*32+hh*16 : q*32+hh*16+16]
				base := int(off) + int(h.start)
				for i := range row {
					if h.valid&(1<<i) == 0 {
						row[i] = 0
						continue
					}
					row[i] = img[base+int(h.idx[i])]
				}
			}
		}
	}
}

// A filter gradient dw (F, C·K·K) = Σ dy (F, positions) · colᵀ (positions, C·K·K)
// takes B = colᵀ: each packed row is one position's 32 values of im2col's column, in
// the order (c, ki, kj), which lie far apart in the image (NCHW). In the order
// (ki, kj, c) instead, with the image transposed to HWC (and padded with zeros),
// they are runs of channels side by side: with a channel block of a multiple of 16,
// each half of a panel row is one 16-value copy. The worker computes its block of dw
// in that column order and permutes it at the end: the same sums in the same order
// (the columns of a product are independent), so bit-identical to im2col's.

// packHWC tells whether filter gradients pack colᵀ from HWC copies of the images
// (tests switch it off, and then they take im2col and packB's transposes).
var packHWC = true

// hwcB is a bPacker of colᵀ of a group of images from their HWC copy.
type hwcB struct {
	hwc    []float32 // the group's images: (h+2·pad) x (w+2·pad) x nc each, zero borders
	rowOff []int32   // per position of the group (B's row): its window's first value in hwc
	colOff []int32   // per column (ki, kj, c): its offset from the window's first value
}

// newHWCB returns the packer of a channel block of nc channels (a multiple of 16) for
// groups of up to grp images of g.
func newHWCB(g *convGeom, nc, grp int) hwcB {
	hp, wp := g.h+2*g.pad, g.w+2*g.pad
	p := hwcB{hwc: make([]float32, grp*hp*wp*nc), rowOff: make([]int32, grp*g.plane), colOff: make([]int32, g.k*g.k*nc)}
	for i := range p.rowOff {
		img, pos := i/g.plane, i%g.plane
		oy, ox := pos/g.ow, pos%g.ow
		p.rowOff[i] = int32(img*hp*wp*nc + (oy*g.stride*wp+ox*g.stride)*nc)
	}
	for j := range p.colOff {
		t, c := j/nc, j%nc
		p.colOff[j] = int32((t/g.k*wp+t%g.k)*nc + c)
	}
	return p
}

// fill copies channels [c0, c0+nc) of image img (c x h x w) into slot i of the group's
// HWC copy.
func (p *hwcB) fill(g *convGeom, i, c0, nc int, img []float32) {
	hp, wp, hw := g.h+2*g.pad, g.w+2*g.pad, g.h*g.w
	dst := p.hwc[i*hp*wp*nc : (i+1)*hp*wp*nc]
	src := img[c0*hw:]
	if g.pad == 0 {
		transposeInto(dst, nc, src, hw, nc, hw)
		return
	}
	for y := range g.h {
		transposeInto(dst[((y+g.pad)*wp+g.pad)*nc:], nc, src[y*g.w:], hw, nc, g.w)
	}
}

// packB fills dst with the panels of columns [jc, jc+nb) over rows [pc, pc+kb): each
// half of a row is the 16 values at its window plus the half's first column offset.
func (p *hwcB) packB(dst []float32, pc, jc, kb, nb int) {
	rows := p.rowOff[pc : pc+kb]
	for jr := 0; jr < nb; jr += 32 {
		cols := min(32, nb-jr)
		panel := dst[jr*kb : jr*kb+kb*32]
		o0 := int(p.colOff[jc+jr])
		o1 := -1
		if cols > 16 {
			o1 = int(p.colOff[jc+jr+16])
		}
		if packHWCPanel(panel, p.hwc, rows, o0, o1) {
			continue
		}
		if cols <= 16 {
			clear(panel)
			for q, r := range rows {
				*(*[16]float32)(panel[q*32:]) = *(*[16]float32)(p.hwc[int(r)+o0:])
			}
			continue
		}
		for q, r := range rows {
			*(*[16]float32)(panel[q*32:]) = *(*[16]float32)(p.hwc[int(r)+o0:])
			*(*[16]float32)(panel[q*32+16:]) = *(*[16]float32)(p.hwc[int(r)+o1:])
		}
	}
}

// edgeKernels are a 32-column micro-kernel's variants for a partial panel of 17 to 31
// columns (cols), which compute the whole tile, in the same order, but write only
// C's first cols columns: run and quad add, runStore and quadStore store (see
// gemmKernel). The values are the edge tile's; only a sum of exactly -0 stays -0
// (the tile, cleared to +0 and added to, made it +0).
type edgeKernels struct {
	run, quad, runStore, quadStore func(kb int, a, b, c []float32, ldc, cols int)
}
