#include "textflag.h"

// firstConvEven holds 0, 2, ..., 30: the even lanes of two registers (VPERMT2PS), and
// the offsets of 16 windows' first columns.
DATA firstConvEven<>+0(SB)/4, $0
DATA firstConvEven<>+4(SB)/4, $2
DATA firstConvEven<>+8(SB)/4, $4
DATA firstConvEven<>+12(SB)/4, $6
DATA firstConvEven<>+16(SB)/4, $8
DATA firstConvEven<>+20(SB)/4, $10
DATA firstConvEven<>+24(SB)/4, $12
DATA firstConvEven<>+28(SB)/4, $14
DATA firstConvEven<>+32(SB)/4, $16
DATA firstConvEven<>+36(SB)/4, $18
DATA firstConvEven<>+40(SB)/4, $20
DATA firstConvEven<>+44(SB)/4, $22
DATA firstConvEven<>+48(SB)/4, $24
DATA firstConvEven<>+52(SB)/4, $26
DATA firstConvEven<>+56(SB)/4, $28
DATA firstConvEven<>+60(SB)/4, $30
GLOBL firstConvEven<>(SB), RODATA|NOPTR, $64

// FCW_COL sets, for column shift t (at col(CX): image row u's vector at
// col + 256u), s0, s1 and s2 to the window columns that kernel rows 0, 1 and 2 meet
// from each window's maximum: image rows 0, 1 and 2 or, under K3 (maxima in the
// windows' bottom rows), 1, 2 and 3. Each of the four rows is loaded once.
// Clobbers Z10, Z12, Z13, Z29.
#define FCW_COL(col, s0, s1, s2) \
	VMOVUPS   col(CX), Z10 \
	VMOVUPS   (col+256)(CX), Z12 \
	VMOVUPS   (col+512)(CX), Z13 \
	VMOVUPS   (col+768)(CX), Z29 \
	VBLENDMPS Z12, Z10, K3, s0 \
	VBLENDMPS Z13, Z12, K3, s1 \
	VBLENDMPS Z29, Z13, K3, s2

// FCW_TAP adds, for kernel position (ki, kj), the image values under the 16 windows'
// maxima times their gradients Z11 into acc: s0 (column shift kj) or, under K2
// (maxima in the windows' right columns), s1 (kj+1).
#define FCW_TAP(s0, s1, tmp, acc) \
	VBLENDMPS   s1, s0, K2, tmp \
	VFMADD231PS tmp, Z11, acc

// FCW_HSUM stores the sum of z's 16 lanes (y: its lower half) at dst: 8 + 8, 4 + 4,
// 2 + 2, 1 + 1. Clobbers Z23-Z25.
#define FCW_HSUM(z, y, dst) \
	VEXTRACTF64X4 $1, z, Y23 \
	VADDPS        Y23, y, Y23 \
	VEXTRACTF32X4 $1, Y23, X24 \
	VADDPS        X24, X23, X24 \
	VPERMILPS     $0x4e, X24, X25 \
	VADDPS        X25, X24, X24 \
	VMOVSHDUP     X24, X25 \
	VADDSS        X25, X24, X24 \
	VMOVSS        X24, dst

// func firstConvDWWinAVX512(x *float32, w int, dy, y *float32, arg *int32, e, out *float32, f, ph, pw, plane, ow int, evenLo, evenHi, lanes uint16)
//
// One image's filter and bias gradients of the fused first layer (firstconv.go) for
// rows of at most 16 windows, the windows of a pooled row side by side in the lanes.
// First e gets, per image row yy < 2·ph+2 and column shift t < 4, the 16 values
// x[yy·w + 2px + t] (px < pw, 0 beyond): a window's 4x4 block of the image in 16
// vectors. Then per filter fi and pooled row py: v = dy where y > 0 (else 0), and
// each window's maximum (its arg less fi·plane, less its top left 2py·ow + 2px: 0, 1,
// ow or ow+1) picks, per kernel position (ki, kj), the image value at (ki, kj) from
// its maximum, by blends (the row, then the column; masked loads that merge cost
// about twice as much here); 16-lane sums add v times those values, and v for the bias, pooled row
// by pooled row. out[fi·16 + 4ki + kj] gets the lanes' sum of kernel position (ki, kj),
// out[fi·16 + 3] the bias's (8 + 8, 4 + 4, 2 + 2, 1 + 1). The order of the sums
// depends on the shapes alone.
TEXT ·firstConvDWWinAVX512(SB), NOSPLIT, $0-102
	// The image's window columns.
	MOVQ      x+0(FP), SI
	MOVQ      w+8(FP), R8
	SHLQ      $2, R8 // w in bytes
	MOVQ      e+40(FP), DI
	MOVQ      ph+64(FP), R9
	LEAQ      2(R9)(R9*1), R9 // 2ph+2 rows
	KMOVW     evenLo+96(FP), K1
	KMOVW     evenHi+98(FP), K2
	VMOVDQU32 firstConvEven<>(SB), Z30

erow:
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z 64(SI), K2, Z1
	VPERMT2PS Z1, Z30, Z0
	VMOVUPS   Z0, (DI)
	VMOVUPS.Z 4(SI), K1, Z0
	VMOVUPS.Z 68(SI), K2, Z1
	VPERMT2PS Z1, Z30, Z0
	VMOVUPS   Z0, 64(DI)
	VMOVUPS.Z 8(SI), K1, Z0
	VMOVUPS.Z 72(SI), K2, Z1
	VPERMT2PS Z1, Z30, Z0
	VMOVUPS   Z0, 128(DI)
	VMOVUPS.Z 12(SI), K1, Z0
	VMOVUPS.Z 76(SI), K2, Z1
	VPERMT2PS Z1, Z30, Z0
	VMOVUPS   Z0, 192(DI)
	ADDQ      R8, SI
	ADDQ      $256, DI
	DECQ      R9
	JNZ       erow

	MOVQ         dy+16(FP), R10
	MOVQ         y+24(FP), R14
	MOVQ         arg+32(FP), BX
	MOVQ         out+48(FP), DX
	MOVQ         f+56(FP), R11
	MOVQ         pw+72(FP), R15
	SHLQ         $2, R15 // pw in bytes
	KMOVW        lanes+100(FP), K7
	VPXORD       Z31, Z31, Z31 // 0
	MOVL         $1, AX
	VPBROADCASTD AX, Z28 // 1: top right
	MOVQ         ow+88(FP), AX
	VPBROADCASTD AX, Z27 // ow: bottom left
	INCQ         AX
	VPBROADCASTD AX, Z26 // ow+1: bottom right
	MOVQ         ow+88(FP), DI
	SHLQ         $1, DI // 2ow: the next pooled row's top left
	XORQ         R13, R13 // fi·plane

wfilt:
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	VXORPS Z8, Z8, Z8
	VXORPS Z9, Z9, Z9
	MOVQ   e+40(FP), CX
	MOVQ   R13, R12
	MOVQ   ph+64(FP), R9

wrow:
	VMOVUPS.Z    (R14), K7, Z10
	VCMPPS       $0x1e, Z31, Z10, K7, K1 // y > 0
	VMOVUPS.Z    (R10), K1, Z11          // v
	VMOVDQU32.Z  (BX), K7, Z12
	VPBROADCASTD R12, Z13
	VPSUBD       Z13, Z12, Z12
	VPSUBD       Z30, Z12, Z12 // the maximum's offset from the window's top left
	VPCMPEQD     Z28, Z12, K2
	VPCMPEQD     Z26, Z12, K4
	KORW         K4, K2, K2 // maxima in the right column
	VPCMPD       $5, Z27, Z12, K3 // maxima in the bottom row
	FCW_COL(0, Z14, Z18, Z22)
	FCW_COL(64, Z15, Z19, Z23)
	FCW_COL(128, Z16, Z20, Z24)
	FCW_COL(192, Z17, Z21, Z25)
	FCW_TAP(Z14, Z15, Z10, Z0)
	FCW_TAP(Z15, Z16, Z12, Z1)
	FCW_TAP(Z16, Z17, Z13, Z2)
	FCW_TAP(Z18, Z19, Z29, Z3)
	FCW_TAP(Z19, Z20, Z10, Z4)
	FCW_TAP(Z20, Z21, Z12, Z5)
	FCW_TAP(Z22, Z23, Z13, Z6)
	FCW_TAP(Z23, Z24, Z29, Z7)
	FCW_TAP(Z24, Z25, Z10, Z8)
	VADDPS       Z11, Z9, Z9
	ADDQ         R15, R14
	ADDQ         R15, R10
	ADDQ         R15, BX
	ADDQ         $512, CX // two image rows on
	ADDQ         DI, R12
	DECQ         R9
	JNZ          wrow
	FCW_HSUM(Z0, Y0, 0(DX))
	FCW_HSUM(Z1, Y1, 4(DX))
	FCW_HSUM(Z2, Y2, 8(DX))
	FCW_HSUM(Z3, Y3, 16(DX))
	FCW_HSUM(Z4, Y4, 20(DX))
	FCW_HSUM(Z5, Y5, 24(DX))
	FCW_HSUM(Z6, Y6, 32(DX))
	FCW_HSUM(Z7, Y7, 36(DX))
	FCW_HSUM(Z8, Y8, 40(DX))
	FCW_HSUM(Z9, Y9, 12(DX))
	ADDQ         $64, DX
	ADDQ         plane+80(FP), R13
	DECQ         R11
	JNZ          wfilt
	VZEROUPPER
	RET
