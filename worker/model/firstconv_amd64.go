package model

import "golang.org/x/sys/cpu"

// firstConvDWAVX512 is one image's filter and bias gradients of the fused first layer
// (firstconv_amd64.s).
//
//go:noescape
func firstConvDWAVX512(x *float32, w int, dy, y *float32, arg, off *int32, vd, out *float32, f, pp, plane int)

// hasFirstConvAVX512 tells whether firstConvDWAsm runs the assembly (tests switch it
// off).
var hasFirstConvAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

// firstConvDWAsm sets out[fi·16 + 4r + c], for each filter fi < g.f, to one image's
// gradient of the fused first layer's filter fi at kernel position (r, c), c < 3, and
// out[fi·16 + 3] to its bias's, from the image x, its pooled gradient dy, pooled values y and argmax
// arg (indices into the image's F planes), off mapping a plane position to its offset
// in x, vd a scratch of F·pp values; it reports whether it did (false: no AVX-512).
func firstConvDWAsm(g *convGeom, x, dy, y []float32, arg, off []int32, vd, out []float32) bool {
	pp := (g.oh / 2) * (g.ow / 2)
	if !hasFirstConvAVX512 || g.k != 3 || g.c != 1 || pp == 0 || g.f == 0 {
		return false
	}
	n := g.f * pp
	_, _, _, _, _ = x[g.h*g.w-1], dy[n-1], y[n-1], arg[n-1], vd[n-1]
	_, _ = off[g.plane-1], out[g.f*16-1]
	ph, pw := g.oh/2, g.ow/2
	if e := (2*ph + 2) * 4 * 16; hasFirstConvWinAVX512 && pw <= 16 && len(vd) >= e {
		// Rows of up to 16 windows: the windows side by side (vd serves as the
		// image's window columns).
		even := uint32(0x55555555) & (uint32(1)<<(2*pw) - 1)
		firstConvDWWinAVX512(&x[0], g.w, &dy[0], &y[0], &arg[0], &vd[0], &out[0], g.f, ph, pw, g.plane, g.ow,
			uint16(even), uint16(even>>16), uint16(1)<<pw-1)
		return true
	}
	firstConvDWAVX512(&x[0], g.w, &dy[0], &y[0], &arg[0], &off[0], &vd[0], &out[0], g.f, pp, g.plane)
	return true
}

// firstConvDWWinAVX512 is firstConvDWAVX512 for pooled rows of at most 16 windows,
// those of a row side by side in the lanes (firstconvwin_amd64.s); e (vd's room)
// takes the image's window columns, (2·ph+2)·4·16 values.
//
//go:noescape
func firstConvDWWinAVX512(x *float32, w int, dy, y *float32, arg *int32, e, out *float32, f, ph, pw, plane, ow int, evenLo, evenHi, lanes uint16)

// hasFirstConvWinAVX512 tells whether firstConvDWAsm takes firstConvDWWinAVX512 where
// the rows fit (with hasFirstConvAVX512; tests switch it off to compare).
var hasFirstConvWinAVX512 = true

// firstConvFwdAVX512 is one image's convolution with bias of the fused first layer
// (firstconv_amd64.s).
//
//go:noescape
func firstConvFwdAVX512(x *float32, w int, wts, bias, z *float32, f, oh, ow int)

// firstConvFwdAsm sets z (F planes of OH x OW) to one image's 3x3 convolution with
// bias in AVX-512, each value computed as conv2dOp's product computes it (bit for
// bit), and reports whether it did (false: no AVX-512, or rows not of 17 to 32
// values).
func firstConvFwdAsm(g *convGeom, x, wts, bias, z []float32) bool {
	if !hasFirstConvAVX512 || g.k != 3 || g.c != 1 || g.stride != 1 || g.pad != 0 || g.ow <= 16 || g.ow > 32 || g.oh == 0 || g.f == 0 {
		return false
	}
	_, _, _, _ = x[g.h*g.w-1], wts[g.f*9-1], bias[g.f-1], z[g.f*g.plane-1]
	firstConvFwdAVX512(&x[0], g.w, &wts[0], &bias[0], &z[0], g.f, g.oh, g.ow)
	return true
}
