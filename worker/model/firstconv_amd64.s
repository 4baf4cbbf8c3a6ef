#include "textflag.h"

// firstConvOne3 is a vector of 4 lanes, lane 3 set to 1: the bias's lane of a patch.
DATA firstConvOne3<>+0(SB)/8, $0
DATA firstConvOne3<>+8(SB)/8, $0x3f80000000000000
GLOBL firstConvOne3<>(SB), RODATA|NOPTR, $16

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
	MOVL         (BX), AX
	SUBQ         R13, AX
	MOVL         (R10)(AX*4), AX
	LEAQ         (SI)(AX*4), AX
	VMOVAPS      X15, X4
	VMOVUPS      (AX), K1, X4
	VMOVUPS.Z    (AX)(R8*1), K1, X5
	VMOVUPS.Z    (AX)(R14*1), K1, X6
	VBROADCASTSS (DI), X7
	VFMADD231PS  X7, X4, X0
	VFMADD231PS  X7, X5, X1
	VFMADD231PS  X7, X6, X2
	MOVL         4(BX), AX
	SUBQ         R13, AX
	MOVL         (R10)(AX*4), AX
	LEAQ         (SI)(AX*4), AX
	VMOVAPS      X15, X11
	VMOVUPS      (AX), K1, X11
	VMOVUPS.Z    (AX)(R8*1), K1, X12
	VMOVUPS.Z    (AX)(R14*1), K1, X13
	VBROADCASTSS 4(DI), X14
	VFMADD231PS  X14, X11, X8
	VFMADD231PS  X14, X12, X9
	VFMADD231PS  X14, X13, X10
	ADDQ         $8, BX
	ADDQ         $8, DI
	SUBQ         $2, CX
	JMP          win2

win1:
	TESTQ        CX, CX
	JZ           fend
	MOVL         (BX), AX
	SUBQ         R13, AX
	MOVL         (R10)(AX*4), AX
	LEAQ         (SI)(AX*4), AX
	VMOVAPS      X15, X4
	VMOVUPS      (AX), K1, X4
	VMOVUPS.Z    (AX)(R8*1), K1, X5
	VMOVUPS.Z    (AX)(R14*1), K1, X6
	VBROADCASTSS (DI), X7
	VFMADD231PS  X7, X4, X0
	VFMADD231PS  X7, X5, X1
	VFMADD231PS  X7, X6, X2
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
