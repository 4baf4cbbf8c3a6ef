package model

import (
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// This file holds a float32 matrix product for the models' hot paths: a BLIS-style
// blocked GEMM that packs panels of A (mr rows) and B (nr columns) into contiguous
// buffers and runs an mr x nr register-blocked micro-kernel over them. On amd64 the
// micro-kernel is assembly (fastgemm_amd64.s): 12x32 with AVX-512, 6x16 with AVX2 and
// FMA; elsewhere it is plain Go. Packing handles the transposes, so op(A)·op(B) costs
// the same for every combination. Built with -tags openblas (and cgo), packedSgemm
// calls OpenBLAS's cblas_sgemm instead.
//
// The result does not depend on how a caller splits C into row or column blocks (each
// element is summed over K in the same order), so splitting a product over goroutines
// keeps results bit-identical to a single-threaded run.

// gemmKernel is a micro-kernel: run adds the product of an A panel (kb x mr, k-major)
// and a B panel (kb x nr, k-major) into the mr x nr block at c (row stride ldc).
type gemmKernel struct {
	name   string
	mr, nr int
	run    func(kb int, a, b, c []float32, ldc int)
	// quad, when set, adds the product of 4 rows of an A panel (starting at a, mr
	// values per k) and a B panel into the 4 x nr block at c: the rows of a partial
	// tile in multiples of 4, computed in place instead of through the edge tile.
	quad func(kb int, a, b, c []float32, ldc int)
	// runStore and quadStore, when set, are run and quad storing their block into c
	// rather than adding to it: the first depth block of a product with beta 0 runs
	// them, so C needs no clearing beforehand (the sums are the same: 0 + x = x, but
	// for a sum of -0, which is stored as -0 rather than +0).
	runStore, quadStore func(kb int, a, b, c []float32, ldc int)
}

// goKernel is the portable micro-kernel.
var goKernel = gemmKernel{name: "go", mr: 6, nr: 16, run: func(kb int, a, b, c []float32, ldc int) {
	microKernelGo(6, 16, kb, a, b, c, ldc)
}}

// kernel is the micro-kernel in use, the fastest this CPU runs (see gemmKernels).
var kernel = gemmKernels()[0]

// kcBlock is the depth of a packed block: a B micro-panel (kcBlock x nr) stays in L1.
const kcBlock = 256

// maxTile bounds mr*nr over the kernels.
const maxTile = 12 * 32

// gemmScratch holds the packing buffers of one packedSgemm call; pooled so that steady
// state does not allocate.
type gemmScratch struct {
	a, b []float32
	tile [maxTile]float32
}

var gemmScratchPool = sync.Pool{New: func() any { return new(gemmScratch) }}

// packedSgemm computes C = op(A)·op(B) + beta·C for row-major matrices, with op(A)
// m x k, op(B) k x n and C m x n; op transposes when tA (tB) is set, so A is stored
// k x m (B n x k) then. lda, ldb and ldc are the row strides. beta 0 overwrites C
// (its old contents, NaN included, are ignored).
func packedSgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if store := beta == 0 && k > 0 && gemmBackend == "go" && kernel.runStore != nil; store {
		sgemmBlocks(kernel, nil, nil, tA, tB, m, n, k, a, lda, b, ldb, c, ldc, true)
		return
	}
	scaleC(m, n, beta, c, ldc)
	if k <= 0 || blasSgemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc) {
		return
	}
	sgemmBlocks(kernel, nil, nil, tA, tB, m, n, k, a, lda, b, ldb, c, ldc, false)
}

// scaleC sets C = beta·C; beta 0 clears C whatever it holds.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	switch beta {
	case 0:
		for i := range m {
			clear(c[i*ldc : i*ldc+n])
		}
	case 1:
	default:
		for i := range m {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// sgemmBlocks adds op(A)·op(B) into C block by block, or with store (kn has storing
// variants) sets C to it, its first depth block storing; pa, when set, holds op(A)
// already packed for kn (then tA, a and lda are unused); pb, when set, packs op(B)'s
// panels (then tB, b and ldb are unused).
func sgemmBlocks(kn gemmKernel, pa *packedLHS, pb bPacker, tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, store bool) {
	mc, nc := 20*kn.mr, 64*kn.nr // an A block of mc x kcBlock stays in L2
	s := gemmScratchPool.Get().(*gemmScratch)
	defer gemmScratchPool.Put(s)
	for jc := 0; jc < n; jc += nc {
		nb := min(nc, n-jc)
		block := 0
		for pc := 0; pc < k; pc += kcBlock {
			kb := min(kcBlock, k-pc)
			s.b = growFloats(s.b, kb*roundUp(nb, kn.nr))
			if pb != nil {
				pb.packB(s.b, pc, jc, kb, nb)
			} else {
				packB(s.b, kn.nr, tB, b, ldb, pc, jc, kb, nb)
			}
			for ic := 0; ic < m; ic += mc {
				mb := min(mc, m-ic)
				var ap []float32
				if pa != nil {
					ap = pa.blocks[block]
					block++
				} else {
					s.a = growFloats(s.a, kb*roundUp(mb, kn.mr))
					ap = s.a
					packA(ap, kn.mr, tA, a, lda, ic, pc, mb, kb)
				}
				macroKernel(&kn, ap, s, mb, nb, kb, c[ic*ldc+jc:], ldc, store && pc == 0)
			}
		}
	}
}

// packedLHS is a left operand op(A) packed once for several products with different
// right operands (a convolution's filters against each image). Its methods may run
// concurrently once pack has returned.
type packedLHS struct {
	kn     gemmKernel
	m, k   int
	blocks [][]float32 // the packed (kcBlock, mc) blocks, k-block major
	// Without a Go kernel (the OpenBLAS build) the operand is kept as it is.
	tA  bool
	a   []float32
	lda int
}

// pack packs op(A) (m x k; A stored k x m when tA) with row stride lda.
func (p *packedLHS) pack(tA bool, m, k int, a []float32, lda int) {
	p.kn, p.m, p.k, p.tA, p.a, p.lda = kernel, m, k, tA, a, lda
	if gemmBackend != "go" {
		return
	}
	mc := 20 * p.kn.mr
	i := 0
	for pc := 0; pc < k; pc += kcBlock {
		kb := min(kcBlock, k-pc)
		for ic := 0; ic < m; ic += mc {
			mb := min(mc, m-ic)
			if i == len(p.blocks) {
				p.blocks = append(p.blocks, nil)
			}
			p.blocks[i] = growFloats(p.blocks[i], kb*roundUp(mb, p.kn.mr))
			packA(p.blocks[i], p.kn.mr, tA, a, lda, ic, pc, mb, kb)
			i++
		}
	}
}

// mul computes C = A·op(B) + beta·C with the packed A (m x k), op(B) k x n.
func (p *packedLHS) mul(tB bool, n int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if p.m <= 0 || n <= 0 {
		return
	}
	if store := beta == 0 && p.k > 0 && gemmBackend == "go" && p.kn.runStore != nil; store {
		sgemmBlocks(p.kn, p, nil, false, tB, p.m, n, p.k, nil, 0, b, ldb, c, ldc, true)
		return
	}
	scaleC(p.m, n, beta, c, ldc)
	if p.k <= 0 || blasSgemm(p.tA, tB, p.m, n, p.k, p.a, p.lda, b, ldb, c, ldc) {
		return
	}
	sgemmBlocks(p.kn, p, nil, false, tB, p.m, n, p.k, nil, 0, b, ldb, c, ldc, false)
}

// mulPacker computes C = A·B + C with the packed A (m x k) and B (k x n) packed by pb,
// for a Go backend whose kernel has 32 columns (canPackB).
func (p *packedLHS) mulPacker(n int, pb bPacker, c []float32, ldc int) {
	if p.m <= 0 || n <= 0 || p.k <= 0 {
		return
	}
	sgemmBlocks(p.kn, p, pb, false, false, p.m, n, p.k, nil, 0, nil, 0, c, ldc, false)
}

// sgemmPackedB computes C = A·B + beta·C (A m x k, row stride lda) with B (k x n)
// packed by pb, for a Go backend whose kernel has 32 columns (canPackB); beta 0
// overwrites C, as in packedSgemm, and the sums are packedSgemm's.
func sgemmPackedB(m, n, k int, a []float32, lda int, pb bPacker, beta float32, c []float32, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if store := beta == 0 && k > 0 && kernel.runStore != nil; store {
		sgemmBlocks(kernel, nil, pb, false, false, m, n, k, a, lda, nil, 0, c, ldc, true)
		return
	}
	scaleC(m, n, beta, c, ldc)
	if k > 0 {
		sgemmBlocks(kernel, nil, pb, false, false, m, n, k, a, lda, nil, 0, c, ldc, false)
	}
}

// canPackB tells whether products may take a bPacker: the Go backend with a kernel of
// 32 columns (the layout the packers write).
func canPackB() bool { return gemmBackend == "go" && kernel.nr == 32 }

// gemmLHS is packedLHS for either dtype: float64 products (gradient checks) keep A and
// go to gonum's Dgemm.
type gemmLHS[T float] struct {
	tA     bool
	m, k   int
	a      []T
	lda    int
	packed packedLHS
}

// set makes op(A) (m x k) the left operand of the following products.
func (l *gemmLHS[T]) set(tA bool, m, k int, a []T, lda int) {
	l.tA, l.m, l.k, l.a, l.lda = tA, m, k, a, lda
	if a32, ok := any(a).([]float32); ok {
		l.packed.pack(tA, m, k, a32, lda)
	}
}

// mul computes C = op(A)·op(B) + beta·C, op(B) k x n.
func (l *gemmLHS[T]) mul(tB bool, n int, b []T, ldb int, beta T, c []T, ldc int) {
	if b32, ok := any(b).([]float32); ok {
		l.packed.mul(tB, n, b32, ldb, float32(beta), any(c).([]float32), ldc)
		return
	}
	parallelGemm(nil, l.tA, tB, l.m, n, l.k, l.a, l.lda, b, ldb, beta, c, ldc)
}

// parallelGemm is packedSgemm for either dtype (float64, used by gradient checks, goes
// to gonum's Dgemm). A float32 product large enough to repay a hand-off is split into
// row or column blocks over p's threads (the model's; nil: GOMAXPROCS); the split does
// not change the result (see packedSgemm).
func parallelGemm[T float](p *intraOp, tA, tB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	switch a := any(a).(type) {
	case []float32:
		p.sgemm(tA, tB, m, n, k, a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		if m <= 0 || n <= 0 {
			return
		}
		ta, tb := blas.NoTrans, blas.NoTrans
		if tA {
			ta = blas.Trans
		}
		if tB {
			tb = blas.Trans
		}
		gonum.Implementation{}.Dgemm(ta, tb, m, n, k, 1, a, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// minParallelFlops is the smallest product (2·m·n·k) intraOp.sgemm splits.
const minParallelFlops = 1 << 21

// sgemm is parallelGemm for float32.
func (p *intraOp) sgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	workers := p.workers(m * n)
	if workers == 1 || 2*m*n*k < minParallelFlops {
		packedSgemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
		return
	}
	mr, nr := kernel.mr, kernel.nr
	byRows := (m+mr-1)/mr >= (n+nr-1)/nr
	tile, size := nr, n
	if byRows {
		tile, size = kernel.mr, m
	}
	tiles := (size + tile - 1) / tile
	workers = min(workers, tiles)
	p.run(workers, func(i int) {
		lo, hi := i*tiles/workers*tile, min(size, (i+1)*tiles/workers*tile)
		if lo >= hi {
			return
		}
		if byRows {
			ai := lo * lda
			if tA {
				ai = lo
			}
			packedSgemm(tA, tB, hi-lo, n, k, a[ai:], lda, b, ldb, beta, c[lo*ldc:], ldc)
			return
		}
		bi := lo
		if tB {
			bi = lo * ldb
		}
		packedSgemm(tA, tB, m, hi-lo, k, a, lda, b[bi:], ldb, beta, c[lo:], ldc)
	})
}

// macroKernel runs the micro-kernel over one packed A block a (mb x kb) and B panel
// (kb x nb), adding into c (row stride ldc), or with store (kn has storing variants)
// setting c.
func macroKernel(kn *gemmKernel, a []float32, s *gemmScratch, mb, nb, kb int, c []float32, ldc int, store bool) {
	mr, nr := kn.mr, kn.nr
	tile := s.tile[:mr*nr]
	run, quad := kn.run, kn.quad
	if store {
		run, quad = kn.runStore, kn.quadStore
	}
	// viaTile computes the whole tile of panels ap, bp into s.tile and adds (or with
	// store sets) the first cols values of its rows [from, rows) into c's rows from ir
	// and columns from jr: what the kernels writing C in place do not cover.
	viaTile := func(ap, bp []float32, ir, jr, from, rows, cols int) {
		clear(tile)
		kn.run(kb, ap, bp, tile, nr)
		for r := from; r < rows; r++ {
			dst := c[(ir+r)*ldc+jr:][:cols]
			if store {
				copy(dst, tile[r*nr:][:cols])
				continue
			}
			for j, v := range tile[r*nr:][:cols] {
				dst[j] += v
			}
		}
	}
	// Partial panels of more than half the columns run masked kernels in place.
	ek := edgeKernelsFor(kn)
	for jr := 0; jr < nb; jr += nr {
		bp := s.b[jr*kb:]
		cols := min(nr, nb-jr)
		for ir := 0; ir < mb; ir += mr {
			ap := a[ir*kb:]
			rows := min(mr, mb-ir)
			if rows == mr && cols == nr {
				run(kb, ap, bp, c[ir*ldc+jr:], ldc)
				continue
			}
			if ek != nil && cols < nr && cols > nr/2 && rows >= 4 {
				erun, equad := ek.run, ek.quad
				if store {
					erun, equad = ek.runStore, ek.quadStore
				}
				if rows == mr {
					erun(kb, ap, bp, c[ir*ldc+jr:], ldc, cols)
					continue
				}
				r := 0
				for ; r+4 <= rows; r += 4 {
					equad(kb, ap[r:], bp, c[(ir+r)*ldc+jr:], ldc, cols)
				}
				if r < rows {
					viaTile(ap, bp, ir, jr, r, rows, cols)
				}
				continue
			}
			if quad != nil && cols == nr && rows >= 4 {
				r := 0
				for ; r+4 <= rows; r += 4 {
					quad(kb, ap[r:], bp, c[(ir+r)*ldc+jr:], ldc)
				}
				if r < rows { // the last rows%4 rows: the whole tile, of which only they are added
					viaTile(ap, bp, ir, jr, r, rows, cols)
				}
				continue
			}
			// Edge tile: compute into a full tile, then add the valid part.
			viaTile(ap, bp, ir, jr, 0, rows, cols)
		}
	}
}

// packA copies op(A)[ic:ic+mb, pc:pc+kb] into dst as panels of mr rows, each stored
// column by column (mr values per k), the last panel zero-padded.
func packA(dst []float32, mr int, tA bool, a []float32, lda, ic, pc, mb, kb int) {
	for ir := 0; ir < mb; ir += mr {
		rows := min(mr, mb-ir)
		p := dst[ir*kb : ir*kb+kb*mr]
		if rows < mr {
			clear(p)
		}
		if tA {
			// op(A)[i][q] = a[q*lda+i]: each k holds rows contiguous in memory.
			for q := range kb {
				copy(p[q*mr:q*mr+rows], a[(pc+q)*lda+ic+ir:][:rows])
			}
			continue
		}
		transposeInto(p, mr, a[(ic+ir)*lda+pc:], lda, rows, kb)
	}
}

// transposeOverlap, when set, lets transposeInto move the last rows%8 rows of 8 or
// more as an overlapping 8-row group in assembly instead of 4x4 blocks in Go; a
// variable so that tests and benchmarks can compare.
var transposeOverlap = true

// transposeInto writes rows x kb values of src (row stride lds) into dst transposed,
// with row stride ld: dst[q*ld+r] = src[r*lds+q]. With AVX2, eight rows at a time in
// assembly; otherwise (and for the last rows) it moves 4x4 blocks (four source rows
// read in order, four destination runs of four written), so that each value costs one
// load and one store, with the bounds checks per block.
func transposeInto(dst []float32, ld int, src []float32, lds, rows, kb int) {
	r := 0
	if hasTranspose8 && kb >= 8 {
		// Eight rows at a time in assembly (8x8 blocks in AVX registers), the last
		// kb%8 values of those rows here.
		for ; r+8 <= rows; r += 8 {
			for q := transpose8(dst[r:], ld, src[r*lds:], lds, kb); q < kb; q++ {
				d := dst[q*ld+r:][:8:8]
				for i := range d {
					d[i] = src[(r+i)*lds+q]
				}
			}
		}
		if transposeOverlap && r < rows && rows >= 8 {
			// The last rows%8 rows as the 8-row group ending at the last row: its first
			// rows are written again with the same values (12-row panels: rows 4-11).
			r0 := rows - 8
			for q := transpose8(dst[r0:], ld, src[r0*lds:], lds, kb); q < kb; q++ {
				d := dst[q*ld+r0:][:8:8]
				for i := range d {
					d[i] = src[(r0+i)*lds+q]
				}
			}
			r = rows
		}
	}
	for ; r+4 <= rows; r += 4 {
		s0 := src[r*lds:][:kb]
		s1 := src[(r+1)*lds:][:kb]
		s2 := src[(r+2)*lds:][:kb]
		s3 := src[(r+3)*lds:][:kb]
		q := 0
		for ; q+4 <= kb; q += 4 {
			a := s0[q : q+4 : q+4]
			b := s1[q : q+4 : q+4]
			c := s2[q : q+4 : q+4]
			d := s3[q : q+4 : q+4]
			d0 := dst[q*ld+r:][:4:4]
			d1 := dst[(q+1)*ld+r:][:4:4]
			d2 := dst[(q+2)*ld+r:][:4:4]
			d3 := dst[(q+3)*ld+r:][:4:4]
			d0[0], d0[1], d0[2], d0[3] = a[0], b[0], c[0], d[0]
			d1[0], d1[1], d1[2], d1[3] = a[1], b[1], c[1], d[1]
			d2[0], d2[1], d2[2], d2[3] = a[2], b[2], c[2], d[2]
			d3[0], d3[1], d3[2], d3[3] = a[3], b[3], c[3], d[3]
		}
		for ; q < kb; q++ {
			d := dst[q*ld+r:][:4:4]
			d[0], d[1], d[2], d[3] = s0[q], s1[q], s2[q], s3[q]
		}
	}
	for ; r < rows; r++ {
		for q, v := range src[r*lds:][:kb] {
			dst[q*ld+r] = v
		}
	}
}

// packB copies op(B)[pc:pc+kb, jc:jc+nb] into dst as panels of nr columns, each stored
// row by row (nr values per k), the last panel zero-padded.
func packB(dst []float32, nr int, tB bool, b []float32, ldb, pc, jc, kb, nb int) {
	for jr := 0; jr < nb; jr += nr {
		cols := min(nr, nb-jr)
		p := dst[jr*kb : jr*kb+kb*nr]
		if !tB && nr == 32 && packRowsPanel(p, b[pc*ldb+jc+jr:], ldb, kb, cols) {
			continue // in AVX-512, padding included (pack_amd64.s)
		}
		if cols < nr {
			clear(p)
		}
		if !tB {
			for q := range kb {
				copy(p[q*nr:q*nr+cols], b[(pc+q)*ldb+jc+jr:][:cols])
			}
			continue
		}
		// op(B)[q][j] = b[j*ldb+q].
		transposeInto(p, nr, b[(jc+jr)*ldb+pc:], ldb, cols, kb)
	}
}

// microKernelGo adds the product of an A panel (kb x mr, k-major) and a B panel
// (kb x nr, k-major) into the mr x nr block at c (row stride ldc); mr*nr <= maxTile.
func microKernelGo(mr, nr, kb int, a, b, c []float32, ldc int) {
	var acc [maxTile]float32
	a, b = a[:kb*mr], b[:kb*nr]
	for q := range kb {
		bv := b[q*nr : q*nr+nr]
		for r, x := range a[q*mr : q*mr+mr] {
			row := acc[r*nr : r*nr+nr]
			for j, y := range bv {
				row[j] += x * y
			}
		}
	}
	for r := range mr {
		dst := c[r*ldc : r*ldc+nr]
		for j, v := range acc[r*nr : r*nr+nr] {
			dst[j] += v
		}
	}
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// growFloats returns buf resliced to n values, reallocated only when too small.
func growFloats(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}
