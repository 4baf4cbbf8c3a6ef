#include "textflag.h"

// firstConvOne3 is a vector of 4 lanes, lane 3 set to 1: the bias's lane of a patch.
DATA firstConvOne3<>+0(SB)/8, $0
DATA firstConvOne3<>+8(SB)/8, $0x3f80000000000000
GLOBL firstConvOne3<>(SB), RODATA|NOPTR, $16

// FIRSTCONV_WINDOW adds window j's share (its arg and vd at off(BX) and off(DI)) into
// one running sum: the patch under its maximum into la, lb, lc (lane 3 of la: 1, from
// X15), times vd[j] broadcast in bc, into a0, a1, a2.
#define FIRSTCONV_WINDOW(off, la, lb, lc, bc, a0, a1, a2) \
	MOVL         off(BX), AX; \
	SUBQ         R13, AX; \
	MOVL         (R10)(AX*4), AX; \
	LEAQ         (SI)(AX*4), AX; \
	VMOVAPS      X15, la; \
	VMOVUPS      (AX), K1, la; \
	VMOVUPS.Z    (AX)(R8*1), K1, lb; \
	VMOVUPS.Z    (AX)(R14*1), K1, lc; \
	VBROADCASTSS off(DI), bc; \
	VFMADD231PS  bc, la, a0; \
	VFMADD231PS  bc, lb, a1; \
	VFMADD231PS  bc, lc, a2

// func firstConvDWAVX512(x *float32, w int, dy, y *float32, arg, off *int32, vd, out *float32, f, pp, plane int)
//
// One image's filter and bias gradients of the fused first layer (firstconv.go),
// from the pooled gradient alone: each window's gradient goes to one position of its
// plane, so filter fi's sums are, over its pp windows j, vd[j] times the 3x3 patch of
// the image x (width w) under the window's maximum, and vd[j] for the bias, where vd
// is dy where the pooled value y is above 0 (relu), else 0 (written first, f·pp
// values). arg[j] - fi·plane is the maximum's position in the plane, off[] that
// position's offset in x. A patch is three masked loads of 3 values (its rows) into
// vectors of 4, the first one's lane 3 set to 1 (the bias); out[fi·16 + 4r + l] gets
// lane l of row r's sum (l < 3: the filter's gradient at (r, l); lane 3 of row 0: its
// bias's; lane 3 of rows 1 and 2: 0), the windows taken in order into two running sums
// (even and odd j), added at the end.
TEXT ·firstConvDWAVX512(SB), NOSPLIT, $0-88
	MOVQ   dy+16(FP), AX
	MOVQ   y+24(FP), BX
	MOVQ   vd+48(FP), DI
	MOVQ   f+64(FP), R9
	IMULQ  pp+72(FP), R9 // f·pp values
	VPXORD Z1, Z1, Z1

mloop:
	CMPQ      R9, $16
	JLT       mtail
	VMOVUPS   (BX), Z2
	VCMPPS    $0x1e, Z1, Z2, K1 // y > 0
	VMOVUPS.Z (AX), K1, Z3
	VMOVUPS   Z3, (DI)
	ADDQ      $64, AX
	ADDQ      $64, BX
	ADDQ      $64, DI
	SUBQ      $16, R9
	JMP       mloop

mtail:
	TESTQ     R9, R9
	JZ        mdone
	MOVQ      R9, CX
	MOVQ      $1, DX
	SHLQ      CX, DX
	DECQ      DX
	KMOVW     DX, K2 // the last values
	VMOVUPS.Z (BX), K2, Z2
	VCMPPS    $0x1e, Z1, Z2, K2, K1
	VMOVUPS.Z (AX), K1, Z3
	VMOVUPS   Z3, K2, (DI)

mdone:
	MOVQ    x+0(FP), SI
	MOVQ    w+8(FP), R8
	SHLQ    $2, R8          // w in bytes
	LEAQ    (R8)(R8*1), R14 // 2w in bytes
	MOVQ    arg+32(FP), BX
	MOVQ    off+40(FP), R10
	MOVQ    vd+48(FP), DI
	MOVQ    out+56(FP), DX
	MOVQ    f+64(FP), R11
	MOVQ    plane+80(FP), R12
	XORQ    R13, R13        // fi·plane
	MOVL    $0x7, AX
	KMOVW   AX, K1          // a patch row's 3 values
	VMOVUPS firstConvOne3<>(SB), X15

filt:
	TESTQ  R11, R11
	JZ     done
	VXORPS X0, X0, X0
	VXORPS X1, X1, X1
	VXORPS X2, X2, X2
	VXORPS X8, X8, X8
	VXORPS X9, X9, X9
	VXORPS X10, X10, X10
	MOVQ   pp+72(FP), CX

win2:
	CMPQ         CX, $2
	JLT          win1
	FIRSTCONV_WINDOW(0, X4, X5, X6, X7, X0, X1, X2)
	FIRSTCONV_WINDOW(4, X11, X12, X13, X14, X8, X9, X10)
	ADDQ         $8, BX
	ADDQ         $8, DI
	SUBQ         $2, CX
	JMP          win2

win1:
	TESTQ        CX, CX
	JZ           fend
	FIRSTCONV_WINDOW(0, X4, X5, X6, X7, X0, X1, X2)
	ADDQ         $4, BX
	ADDQ         $4, DI

fend:
	VADDPS  X8, X0, X0
	VADDPS  X9, X1, X1
	VADDPS  X10, X2, X2
	VMOVUPS X0, (DX)
	VMOVUPS X1, 16(DX)
	VMOVUPS X2, 32(DX)
	ADDQ    $64, DX
	ADDQ    R12, R13
	DECQ    R11
	JMP     filt

done:
	VZEROUPPER
	RET

// FIRSTCONV_FILTER computes one filter's output row of 16+ values, lo and hi, from
// the 18 shifted input vectors Z0-Z17 (kernel position r in Z(2r), Z(2r+1)), weights
// at (R11), bias at (R12): w0·x0, then w1·x1 … w8·x8 added in order by FMAs, then the
// bias, as the product with bias of conv2dOp computes each value.
#define FIRSTCONV_FILTER(lo, hi) \
	VMULPS.BCST      (R11), Z0, lo \
	VMULPS.BCST      (R11), Z1, hi \
	VFMADD231PS.BCST 4(R11), Z2, lo \
	VFMADD231PS.BCST 4(R11), Z3, hi \
	VFMADD231PS.BCST 8(R11), Z4, lo \
	VFMADD231PS.BCST 8(R11), Z5, hi \
	VFMADD231PS.BCST 12(R11), Z6, lo \
	VFMADD231PS.BCST 12(R11), Z7, hi \
	VFMADD231PS.BCST 16(R11), Z8, lo \
	VFMADD231PS.BCST 16(R11), Z9, hi \
	VFMADD231PS.BCST 20(R11), Z10, lo \
	VFMADD231PS.BCST 20(R11), Z11, hi \
	VFMADD231PS.BCST 24(R11), Z12, lo \
	VFMADD231PS.BCST 24(R11), Z13, hi \
	VFMADD231PS.BCST 28(R11), Z14, lo \
	VFMADD231PS.BCST 28(R11), Z15, hi \
	VFMADD231PS.BCST 32(R11), Z16, lo \
	VFMADD231PS.BCST 32(R11), Z17, hi \
	VADDPS.BCST      (R12), lo, lo \
	VADDPS.BCST      (R12), hi, hi

// func firstConvFwdAVX512(x *float32, w int, wts, bias, z *float32, f, oh, ow int)
//
// One image's 3x3 convolution with bias, one input channel, stride 1, no padding, for
// output rows of 17 to 32 values (firstconv.go): z[fi·oh·ow + oy·ow + ox] = bias[fi] +
// Σ over kernel positions r = 3ki + kj in order of wts[9fi + r] · x[(oy+ki)·w + ox+kj].
// Per output row, the 18 vectors of the three input rows at shifts 0-2 (16 values and
// the rest under a mask) are loaded once and serve every filter.
TEXT ·firstConvFwdAVX512(SB), NOSPLIT, $0-64
	MOVQ  x+0(FP), SI
	MOVQ  w+8(FP), R8
	SHLQ  $2, R8 // w in bytes
	MOVQ  ow+56(FP), CX
	LEAQ  (CX*4), R14 // ow in bytes
	SUBQ  $16, CX
	MOVQ  $1, AX
	SHLQ  CX, AX
	DECQ  AX
	KMOVW AX, K1 // the row's values past 16
	MOVQ  ow+56(FP), R9
	IMULQ oh+48(FP), R9
	SHLQ  $2, R9 // a plane in bytes
	MOVQ  z+32(FP), DI
	MOVQ  oh+48(FP), R10

frow:
	TESTQ     R10, R10
	JZ        fdone
	LEAQ      (SI)(R8*1), AX
	LEAQ      (SI)(R8*2), BX
	VMOVUPS   (SI), Z0
	VMOVUPS.Z 64(SI), K1, Z1
	VMOVUPS   4(SI), Z2
	VMOVUPS.Z 68(SI), K1, Z3
	VMOVUPS   8(SI), Z4
	VMOVUPS.Z 72(SI), K1, Z5
	VMOVUPS   (AX), Z6
	VMOVUPS.Z 64(AX), K1, Z7
	VMOVUPS   4(AX), Z8
	VMOVUPS.Z 68(AX), K1, Z9
	VMOVUPS   8(AX), Z10
	VMOVUPS.Z 72(AX), K1, Z11
	VMOVUPS   (BX), Z12
	VMOVUPS.Z 64(BX), K1, Z13
	VMOVUPS   4(BX), Z14
	VMOVUPS.Z 68(BX), K1, Z15
	VMOVUPS   8(BX), Z16
	VMOVUPS.Z 72(BX), K1, Z17
	MOVQ      wts+16(FP), R11
	MOVQ      bias+24(FP), R12
	MOVQ      DI, DX
	MOVQ      f+40(FP), R13

ffilt:
	TESTQ   R13, R13
	JZ      fnext
	FIRSTCONV_FILTER(Z18, Z19)
	VMOVUPS Z18, (DX)
	VMOVUPS Z19, K1, 64(DX)
	ADDQ    $36, R11
	ADDQ    $4, R12
	ADDQ    R9, DX
	DECQ    R13
	JMP     ffilt

fnext:
	ADDQ R8, SI
	ADDQ R14, DI
	DECQ R10
	JMP  frow

fdone:
	VZEROUPPER
	RET
