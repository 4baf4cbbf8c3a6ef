package model

import (
	"math"

	"golang.org/x/sys/cpu"
)

// pool2RowAVX512 is one output row of the forward-only 2x2 max-pool (pool_amd64.s):
// y[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1], floor) for j < n.
//
//go:noescape
func pool2RowAVX512(r0, r1, y *float32, n int, floor float32)

// hasPoolAVX512 tells whether pool2Row runs the assembly (tests switch it off).
var hasPoolAVX512 = cpu.X86.HasAVX512F

// pool2Row computes one output row of a forward-only float32 2x2 pool in AVX-512 and
// reports whether it did (false: the caller's Go loop does it).
func pool2Row(r0, r1, y []float32, floor float32) bool {
	n := len(y)
	if !hasPoolAVX512 || n == 0 {
		return false
	}
	_, _ = r0[2*n-1], r1[2*n-1]
	pool2RowAVX512(&r0[0], &r1[0], &y[0], n, floor)
	return true
}

// pool2ArgAVX512 is the recording 2x2 max-pool of one plane (pool_amd64.s): conv.go's
// pool2RowGo for each of rows output rows of n windows, indices from at0.
//
//go:noescape
func pool2ArgAVX512(in, y *float32, arg *int32, n, w, rows int, at0 int32, floor float32)

// pool2GradAVX512 is the 2x2 pool's gradient over one plane (pool_amd64.s): conv.go's
// maxPoolGradOp.route for rows rows of n windows, but for the rows below them.
//
//go:noescape
func pool2GradAVX512(dy, y *float32, arg *int32, dz *float32, n, w, rows int, at0 int32, relu bool)

// pool2Arg computes one plane's output y (oh x ow) and argmax of a recording float32
// 2x2 pool over in (width w) in AVX-512, and reports whether it did (false: the
// caller's Go loop does it).
func pool2Arg(in, y []float32, arg []int32, w, oh, ow int, at0 int32, relu bool) bool {
	if !hasPoolAVX512 || oh == 0 || ow == 0 {
		return false
	}
	_, _, _ = in[(2*oh-1)*w+2*ow-1], y[oh*ow-1], arg[oh*ow-1]
	floor := float32(math.Inf(-1))
	if relu {
		floor = 0
	}
	pool2ArgAVX512(&in[0], &y[0], &arg[0], ow, w, oh, at0, floor)
	return true
}

// pool2GradAVX512Plane writes one plane dz (width w, at least 2·oh rows) of a float32
// 2x2 pool's gradient in AVX-512 but for its rows from 2·oh on, and reports whether it
// did.
func pool2GradAVX512Plane(dz, dy, y []float32, arg []int32, w, oh, ow int, at0 int32, relu bool) bool {
	if !hasPoolAVX512 || oh == 0 || ow == 0 {
		return false
	}
	_, _, _, _ = dz[2*oh*w-1], dy[oh*ow-1], y[oh*ow-1], arg[oh*ow-1]
	pool2GradAVX512(&dy[0], &y[0], &arg[0], &dz[0], ow, w, oh, at0, relu)
	return true
}

// im2colS1AVX512 is convIm2col for stride 1 and output rows of at most 32 values
// (pool_amd64.s).
//
//go:noescape
func im2colS1AVX512(img, col *float32, ld, c, h, w, k, pad, oh, ow int)

// hasIm2colAVX512 tells whether im2colS1 runs the assembly (tests switch it off).
var hasIm2colAVX512 = cpu.X86.HasAVX512F

// im2colS1 runs convIm2col's stride-1 case for rows of at most 32 values in AVX-512
// and reports whether it did (false: the caller's Go loops do it).
func im2colS1(g *convGeom, img, col []float32, ld int) bool {
	if !hasIm2colAVX512 || g.stride != 1 || g.ow > 32 || g.ow == 0 || g.oh == 0 || g.c == 0 || g.k == 0 {
		return false
	}
	_ = img[g.c*g.h*g.w-1]
	_ = col[(g.ckk-1)*ld+g.plane-1]
	im2colS1AVX512(&img[0], &col[0], ld, g.c, g.h, g.w, g.k, g.pad, g.oh, g.ow)
	return true
}

// col2im3S1AVX512 is convCol2im for 3x3 kernels, stride 1 and image rows of at most
// 32 values (pool_amd64.s).
//
//go:noescape
func col2im3S1AVX512(col, img *float32, masks *[8]uint16, ld, c, h, w, oh, ow, pad int)

// hasCol2imAVX512 tells whether col2im3S1 runs the assembly (tests switch it off).
var hasCol2imAVX512 = cpu.X86.HasAVX512F

// col2im3S1 runs convCol2im's 3x3 stride-1 case for image rows of at most 32 values
// in AVX-512 and reports whether it did (false: the caller's Go loops do it). Each
// image value gets the same sum, in the same order, as convCol2im3 and
// convCol2im3Same add, a missing term being a 0 (so only the sign of a zero sum can
// differ).
func col2im3S1(g *convGeom, col, img []float32, ld int) bool {
	if !hasCol2imAVX512 || g.k != 3 || g.stride != 1 || g.w > 32 || g.oh == 0 || g.ow == 0 || g.c == 0 {
		return false
	}
	_ = col[(g.ckk-1)*ld+g.plane-1]
	_ = img[g.c*g.h*g.w-1]
	// lanes returns the bits of lanes [lo, hi) of 32, clipped to the image row.
	lanes := func(lo, hi int) uint32 {
		lo, hi = max(lo, 0), min(hi, g.w)
		if hi <= lo {
			return 0
		}
		return uint32((uint64(1)<<hi - 1) &^ (uint64(1)<<lo - 1))
	}
	var masks [8]uint16
	for kj := range 3 {
		// Image column x takes output column x+pad-kj, which must lie in [0, ow).
		m := lanes(kj-g.pad, g.ow+kj-g.pad)
		masks[2*kj], masks[2*kj+1] = uint16(m), uint16(m>>16)
	}
	m := lanes(0, g.w)
	masks[6], masks[7] = uint16(m), uint16(m>>16)
	col2im3S1AVX512(&col[0], &img[0], &masks, ld, g.c, g.h, g.w, g.oh, g.ow, g.pad)
	return true
}

// dot3x8AVX512 is a 3x8 block of inner products summed over images (pool_amd64.s).
//
//go:noescape
func dot3x8AVX512(a *float32, lda, aimg int, b *float32, ldb, bimg, n, images int, c *float32, ldc int)

// hasDotAVX512 tells whether dot3x8 runs the assembly (tests switch it off).
var hasDotAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

// dot3x8 sets c[r·ldc+j] (r < m, j < f) to Σ over images i of Σ over p < n of
// a[i·aimg + r·lda + p] · b[i·bimg + j·ldb + p] in AVX-512, in 3x8 blocks (the last
// ones overlapping the others where m or f is not a multiple: those values come out
// the same from either), and reports whether it did (false: m < 3, f < 8 or no
// AVX-512). Each value's order of additions depends on n alone.
func dot3x8(m, f, n, images int, a []float32, lda, aimg int, b []float32, ldb, bimg int, c []float32, ldc int) bool {
	if !hasDotAVX512 || m < 3 || f < 8 || n <= 0 || images <= 0 {
		return false
	}
	_ = a[(images-1)*aimg+(m-1)*lda+n-1]
	_ = b[(images-1)*bimg+(f-1)*ldb+n-1]
	_ = c[(m-1)*ldc+f-1]
	for r := 0; r < m; r += 3 {
		r = min(r, m-3)
		for j := 0; j < f; j += 8 {
			j = min(j, f-8)
			dot3x8AVX512(&a[r*lda], lda, aimg, &b[j*ldb], ldb, bimg, n, images, &c[r*ldc+j], ldc)
		}
	}
	return true
}

// sumRowsAVX512 is the sum of rows rows of n values, stride apart (pool_amd64.s).
//
//go:noescape
func sumRowsAVX512(p *float32, n, rows, stride int) float32

// fillRowsAVX512 sets row r of y (rows rows of n values) to v[r] (pool_amd64.s).
//
//go:noescape
func fillRowsAVX512(y, v *float32, rows, n int)

// hasRowsAVX512 tells whether sumRows and fillRows run the assembly (tests switch it
// off).
var hasRowsAVX512 = cpu.X86.HasAVX512F

// sumRows returns the sum of rows rows of n values of p, stride apart, in AVX-512, and
// whether it computed it (false: the caller sums in Go). Its order of additions
// depends on n alone.
func sumRows(p []float32, n, rows, stride int) (float32, bool) {
	if !hasRowsAVX512 || n <= 0 || rows <= 0 {
		return 0, false
	}
	_ = p[(rows-1)*stride+n-1]
	return sumRowsAVX512(&p[0], n, rows, stride), true
}

// fillRows sets row r of y (rows of n values, one after another) to v[r] in AVX-512
// and reports whether it did.
func fillRows(y, v []float32, n int) bool {
	if !hasRowsAVX512 || n <= 0 || len(v) == 0 {
		return false
	}
	_ = y[len(v)*n-1]
	fillRowsAVX512(&y[0], &v[0], len(v), n)
	return true
}

// maxAbsBitsAVX512 is maxAbsBits over n values in AVX-512 (pool_amd64.s).
//
//go:noescape
func maxAbsBitsAVX512(x *float32, n int) uint32

// hasMaxAbsAVX512 tells whether maxAbsBits runs the assembly (tests switch it off).
var hasMaxAbsAVX512 = cpu.X86.HasAVX512F

// maxAbsBitsAsm is maxAbsBits in AVX-512 where the CPU has it; ok false otherwise.
func maxAbsBitsAsm(x []float32) (bits uint32, ok bool) {
	if !hasMaxAbsAVX512 || len(x) == 0 {
		return 0, false
	}
	return maxAbsBitsAVX512(&x[0], len(x)), true
}
