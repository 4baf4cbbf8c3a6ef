#include "textflag.h"

// The forward-only 2x2 max-pool of one output row in AVX-512 (conv.go's poolMax):
// y[j] = max(r0[2j], r0[2j+1], r1[2j], r1[2j+1], floor) for j < n, 16 outputs per
// iteration, the last n mod 16 under masks (masked-off lanes neither load nor store).

// pool2Idx holds the even then the odd lane numbers 0..31: VPERMT2PS gathers the
// windows' left and right columns from two registers of 16.
DATA pool2Idx<>+0(SB)/4, $0
DATA pool2Idx<>+4(SB)/4, $2
DATA pool2Idx<>+8(SB)/4, $4
DATA pool2Idx<>+12(SB)/4, $6
DATA pool2Idx<>+16(SB)/4, $8
DATA pool2Idx<>+20(SB)/4, $10
DATA pool2Idx<>+24(SB)/4, $12
DATA pool2Idx<>+28(SB)/4, $14
DATA pool2Idx<>+32(SB)/4, $16
DATA pool2Idx<>+36(SB)/4, $18
DATA pool2Idx<>+40(SB)/4, $20
DATA pool2Idx<>+44(SB)/4, $22
DATA pool2Idx<>+48(SB)/4, $24
DATA pool2Idx<>+52(SB)/4, $26
DATA pool2Idx<>+56(SB)/4, $28
DATA pool2Idx<>+60(SB)/4, $30
DATA pool2Idx<>+64(SB)/4, $1
DATA pool2Idx<>+68(SB)/4, $3
DATA pool2Idx<>+72(SB)/4, $5
DATA pool2Idx<>+76(SB)/4, $7
DATA pool2Idx<>+80(SB)/4, $9
DATA pool2Idx<>+84(SB)/4, $11
DATA pool2Idx<>+88(SB)/4, $13
DATA pool2Idx<>+92(SB)/4, $15
DATA pool2Idx<>+96(SB)/4, $17
DATA pool2Idx<>+100(SB)/4, $19
DATA pool2Idx<>+104(SB)/4, $21
DATA pool2Idx<>+108(SB)/4, $23
DATA pool2Idx<>+112(SB)/4, $25
DATA pool2Idx<>+116(SB)/4, $27
DATA pool2Idx<>+120(SB)/4, $29
DATA pool2Idx<>+124(SB)/4, $31
GLOBL pool2Idx<>(SB), RODATA|NOPTR, $128

// func pool2RowAVX512(r0, r1, y *float32, n int, floor float32)
TEXT ·pool2RowAVX512(SB), NOSPLIT, $0-36
	MOVQ         r0+0(FP), SI
	MOVQ         r1+8(FP), DI
	MOVQ         y+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS floor+32(FP), Z10
	VMOVDQU32    pool2Idx<>+0(SB), Z8
	VMOVDQU32    pool2Idx<>+64(SB), Z9

loop:
	CMPQ      CX, $16
	JLT       tail
	VMOVUPS   (SI), Z0
	VMOVUPS   64(SI), Z1
	VMAXPS    (DI), Z0, Z0 // the two rows' maxima
	VMAXPS    64(DI), Z1, Z1
	VMOVAPS   Z0, Z4
	VPERMT2PS Z1, Z8, Z4 // left columns
	VPERMT2PS Z1, Z9, Z0 // right columns
	VMAXPS    Z0, Z4, Z4
	VMAXPS    Z10, Z4, Z4 // the floor
	VMOVUPS   Z4, (DX)
	ADDQ      $128, SI
	ADDQ      $128, DI
	ADDQ      $64, DX
	SUBQ      $16, CX
	JMP       loop

tail:
	TESTQ     CX, CX
	JZ        done
	MOVQ      $1, AX
	SHLQ      CX, AX
	DECQ      AX
	KMOVW     AX, K1 // n outputs
	SHLQ      $1, CX
	MOVQ      $1, AX
	SHLQ      CX, AX
	DECQ      AX // 2n inputs per row
	KMOVW     AX, K2
	SHRQ      $16, AX
	KMOVW     AX, K3
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS.Z 64(SI), K3, Z1
	VMOVUPS.Z (DI), K2, Z2
	VMOVUPS.Z 64(DI), K3, Z3
	VMAXPS    Z2, Z0, Z0
	VMAXPS    Z3, Z1, Z1
	VMOVAPS   Z0, Z4
	VPERMT2PS Z1, Z8, Z4
	VPERMT2PS Z1, Z9, Z0
	VMAXPS    Z0, Z4, Z4
	VMAXPS    Z10, Z4, Z4
	VMOVUPS   Z4, K1, (DX)

done:
	VZEROUPPER
	RET

// pool2Il holds the lane numbers that interleave two registers of 16: 0, 16, 1, 17,
// ..., 7, 23 then 8, 24, ..., 15, 31 (VPERMT2PS spreads each window's pair of values
// back over two input columns).
DATA pool2Il<>+0(SB)/4, $0
DATA pool2Il<>+4(SB)/4, $16
DATA pool2Il<>+8(SB)/4, $1
DATA pool2Il<>+12(SB)/4, $17
DATA pool2Il<>+16(SB)/4, $2
DATA pool2Il<>+20(SB)/4, $18
DATA pool2Il<>+24(SB)/4, $3
DATA pool2Il<>+28(SB)/4, $19
DATA pool2Il<>+32(SB)/4, $4
DATA pool2Il<>+36(SB)/4, $20
DATA pool2Il<>+40(SB)/4, $5
DATA pool2Il<>+44(SB)/4, $21
DATA pool2Il<>+48(SB)/4, $6
DATA pool2Il<>+52(SB)/4, $22
DATA pool2Il<>+56(SB)/4, $7
DATA pool2Il<>+60(SB)/4, $23
DATA pool2Il<>+64(SB)/4, $8
DATA pool2Il<>+68(SB)/4, $24
DATA pool2Il<>+72(SB)/4, $9
DATA pool2Il<>+76(SB)/4, $25
DATA pool2Il<>+80(SB)/4, $10
DATA pool2Il<>+84(SB)/4, $26
DATA pool2Il<>+88(SB)/4, $11
DATA pool2Il<>+92(SB)/4, $27
DATA pool2Il<>+96(SB)/4, $12
DATA pool2Il<>+100(SB)/4, $28
DATA pool2Il<>+104(SB)/4, $13
DATA pool2Il<>+108(SB)/4, $29
DATA pool2Il<>+112(SB)/4, $14
DATA pool2Il<>+116(SB)/4, $30
DATA pool2Il<>+120(SB)/4, $15
DATA pool2Il<>+124(SB)/4, $31
GLOBL pool2Il<>(SB), RODATA|NOPTR, $128

// pool2Lane2 holds 0, 2, 4, ..., 30: the offsets of 16 windows' first columns.
DATA pool2Lane2<>+0(SB)/4, $0
DATA pool2Lane2<>+4(SB)/4, $2
DATA pool2Lane2<>+8(SB)/4, $4
DATA pool2Lane2<>+12(SB)/4, $6
DATA pool2Lane2<>+16(SB)/4, $8
DATA pool2Lane2<>+20(SB)/4, $10
DATA pool2Lane2<>+24(SB)/4, $12
DATA pool2Lane2<>+28(SB)/4, $14
DATA pool2Lane2<>+32(SB)/4, $16
DATA pool2Lane2<>+36(SB)/4, $18
DATA pool2Lane2<>+40(SB)/4, $20
DATA pool2Lane2<>+44(SB)/4, $22
DATA pool2Lane2<>+48(SB)/4, $24
DATA pool2Lane2<>+52(SB)/4, $26
DATA pool2Lane2<>+56(SB)/4, $28
DATA pool2Lane2<>+60(SB)/4, $30
GLOBL pool2Lane2<>(SB), RODATA|NOPTR, $64

// POOL2_ARG_BODY picks 16 windows from the two rows' 32 values each, Z0:Z1 (top) and
// Z2:Z3 (bottom): the values into Z4, the indices into Z6; it advances Z17 (at0 + 2j)
// by 32. Clobbers Z0-Z7, Z11, Z12, K1-K5.
#define POOL2_ARG_BODY \
	VMOVAPS   Z0, Z4 \
	VPERMT2PS Z1, Z8, Z4 \
	VPERMT2PS Z1, Z9, Z0 \
	VMOVAPS   Z2, Z5 \
	VPERMT2PS Z3, Z8, Z5 \
	VPERMT2PS Z3, Z9, Z2 \
	VCMPPS    $0x1e, Z4, Z0, K1 \
	VCMPPS    $0x1e, Z5, Z2, K2 \
	VCMPPS    $3, Z0, Z4, K4 \
	VCMPPS    $3, Z2, Z5, K5 \
	KORW      K4, K5, K4 \
	VBLENDMPS Z0, Z4, K1, Z11 \
	VBLENDMPS Z2, Z5, K2, Z12 \
	VMOVDQA32 Z17, Z6 \
	VPADDD    Z18, Z6, K1, Z6 \
	VPADDD    Z16, Z17, Z7 \
	VPADDD    Z18, Z7, K2, Z7 \
	VCMPPS    $0x1e, Z11, Z12, K3 \
	VBLENDMPS Z12, Z11, K3, Z4 \
	VPBLENDMD Z7, Z6, K3, Z6 \
	VMAXPS    Z10, Z4, Z4 \
	VBLENDMPS Z20, Z4, K4, Z4 \
	VPADDD    Z19, Z17, Z17

// POOL2_GRAD_BODY spreads the gradients Z0 of the 16 windows under K6 (their argmax
// indices in Z1) over the two rows' 32 values each, Z4:Z5 (top) and Z6:Z7 (bottom):
// each to the position its index names, 0 elsewhere. With relu (R9 = 0) only the
// windows whose pooled value at (R8) is above 0 pass; without (R9 = 0xffff) all do.
// It advances Z17 (at0 + 2j) by 32. Clobbers Z0-Z7, Z11, Z12, K1, K4, K5, K7.
#define POOL2_GRAD_BODY \
	VMOVUPS.Z   (R8), K6, Z2 \
	VCMPPS      $0x1e, Z14, Z2, K6, K1 \
	KMOVW       R9, K7 \
	KANDW       K6, K7, K7 \
	KORW        K7, K1, K1 \
	VPSUBD      Z17, Z1, Z1 \
	VPCMPEQD    Z14, Z1, K1, K4 \
	VMOVAPS.Z   Z0, K4, Z4 \
	VPCMPEQD    Z18, Z1, K1, K5 \
	VMOVAPS.Z   Z0, K5, Z11 \
	VPCMPEQD    Z16, Z1, K1, K4 \
	VMOVAPS.Z   Z0, K4, Z6 \
	VPCMPEQD    Z15, Z1, K1, K7 \
	VMOVAPS.Z   Z0, K7, Z12 \
	VMOVAPS     Z4, Z5 \
	VPERMT2PS   Z11, Z8, Z4 \
	VPERMT2PS   Z11, Z9, Z5 \
	VMOVAPS     Z6, Z7 \
	VPERMT2PS   Z12, Z8, Z6 \
	VPERMT2PS   Z12, Z9, Z7 \
	VPADDD      Z19, Z17, Z17

// func pool2ArgAVX512(in, y *float32, arg *int32, n, w, rows int, at0 int32, floor float32)
//
// The recording 2x2 max-pool of one plane of width w (conv.go's pool2): rows output
// rows of n windows, output row r reading input rows 2r and 2r+1. For each window,
// with a, b its top pair and c, d its bottom pair, the top pick is b if b > a else
// a, the bottom pick d if d > c else c, and the window's pick the bottom one if it is
// greater than the top one; y gets the picked value clamped below at floor (0: relu;
// -Inf: none), NaN when any of the four is NaN, and arg the picked value's index,
// at0 + its offset in the plane. 16 windows per iteration, the last n mod 16 of a row
// under masks (masked-off lanes neither load nor store).
TEXT ·pool2ArgAVX512(SB), NOSPLIT, $0-56
	MOVQ         in+0(FP), R10
	MOVQ         y+8(FP), DX
	MOVQ         arg+16(FP), BX
	MOVQ         w+32(FP), R13
	MOVQ         rows+40(FP), R11
	MOVL         at0+48(FP), R12
	VPBROADCASTD R13, Z16         // w
	VBROADCASTSS floor+52(FP), Z10
	VMOVDQU32    pool2Idx<>+0(SB), Z8
	VMOVDQU32    pool2Idx<>+64(SB), Z9
	MOVL         $1, AX
	VPBROADCASTD AX, Z18          // 1
	MOVL         $32, AX
	VPBROADCASTD AX, Z19          // 32: the next 16 windows
	MOVL         $0x7fc00000, AX
	VPBROADCASTD AX, Z20          // NaN
	SHLQ         $2, R13          // w in bytes

arow:
	TESTQ        R11, R11
	JZ           adone
	MOVQ         R10, SI
	LEAQ         (R10)(R13*1), DI
	VPBROADCASTD R12, Z17
	VPADDD       pool2Lane2<>+0(SB), Z17, Z17 // at0 + 2j for the 16 lanes
	MOVQ         n+24(FP), CX

aloop:
	CMPQ      CX, $16
	JLT       atail
	VMOVUPS   (SI), Z0
	VMOVUPS   64(SI), Z1
	VMOVUPS   (DI), Z2
	VMOVUPS   64(DI), Z3
	POOL2_ARG_BODY
	VMOVUPS   Z4, (DX)
	VMOVDQU32 Z6, (BX)
	ADDQ      $128, SI
	ADDQ      $128, DI
	ADDQ      $64, DX
	ADDQ      $64, BX
	SUBQ      $16, CX
	JMP       aloop

atail:
	TESTQ     CX, CX
	JZ        anext
	LEAQ      (DX)(CX*4), R14 // past the row's outputs
	LEAQ      (BX)(CX*4), R15
	MOVQ      $1, AX
	SHLQ      CX, AX
	DECQ      AX
	KMOVW     AX, K6 // the last outputs
	SHLQ      $1, CX
	MOVQ      $1, AX
	SHLQ      CX, AX
	DECQ      AX // two inputs each per row
	KMOVW     AX, K2
	SHRQ      $16, AX
	KMOVW     AX, K3
	VMOVUPS.Z (SI), K2, Z0
	VMOVUPS.Z 64(SI), K3, Z1
	VMOVUPS.Z (DI), K2, Z2
	VMOVUPS.Z 64(DI), K3, Z3
	POOL2_ARG_BODY
	VMOVUPS   Z4, K6, (DX)
	VMOVDQU32 Z6, K6, (BX)
	MOVQ      R14, DX
	MOVQ      R15, BX

anext:
	LEAQ (R10)(R13*2), R10 // two input rows on
	MOVQ R13, AX
	SHRQ $1, AX
	ADDL AX, R12 // at0 + 2w
	DECQ R11
	JMP  arow

adone:
	VZEROUPPER
	RET

// func pool2GradAVX512(dy, y *float32, arg *int32, dz *float32, n, w, rows int, at0 int32, relu bool)
//
// The gradient of the recording 2x2 max-pool over one plane of width w (conv.go's
// maxPoolGradOp.route), written densely: for each of rows rows of n windows, dy
// (0 when relu is set and y <= 0) goes to the one of the window's four positions that
// arg names (arg - at0 - its top left's offset in {0, 1, w, w+1}), 0 to the three
// others and, when w is odd, to the column the pool dropped. The rows below the last
// window row are the caller's. 16 windows per iteration, the last n mod 16 of a row
// under masks.
TEXT ·pool2GradAVX512(SB), NOSPLIT, $0-61
	MOVQ         dy+0(FP), SI
	MOVQ         y+8(FP), R8
	MOVQ         arg+16(FP), BX
	MOVQ         dz+24(FP), R10
	MOVQ         w+40(FP), R13
	MOVQ         rows+48(FP), R11
	MOVL         at0+56(FP), R12
	VPBROADCASTD R13, Z16         // w
	LEAQ         1(R13), AX
	VPBROADCASTD AX, Z15          // w+1
	MOVBQZX      relu+60(FP), R9
	DECQ         R9
	ANDQ         $0xffff, R9      // 0 with relu: K6 & (y > 0); else K6
	VMOVDQU32    pool2Il<>+0(SB), Z8
	VMOVDQU32    pool2Il<>+64(SB), Z9
	MOVL         $1, AX
	VPBROADCASTD AX, Z18          // 1
	MOVL         $32, AX
	VPBROADCASTD AX, Z19          // 32
	VPXORD       Z14, Z14, Z14    // 0
	SHLQ         $2, R13          // w in bytes
	MOVQ         n+32(FP), R14
	SHLQ         $3, R14          // 2n values in bytes

grow:
	TESTQ        R11, R11
	JZ           gdone
	MOVQ         R10, DI
	LEAQ         (R10)(R13*1), DX
	VPBROADCASTD R12, Z17
	VPADDD       pool2Lane2<>+0(SB), Z17, Z17 // at0 + 2j for the 16 lanes
	MOVQ         n+32(FP), CX

gloop:
	CMPQ        CX, $16
	JLT         gtail
	KXNORW      K6, K6, K6 // 16 windows
	VMOVUPS     (SI), Z0
	VMOVDQU32   (BX), Z1
	POOL2_GRAD_BODY
	VMOVUPS     Z4, (DI)
	VMOVUPS     Z5, 64(DI)
	VMOVUPS     Z6, (DX)
	VMOVUPS     Z7, 64(DX)
	ADDQ        $64, SI
	ADDQ        $64, R8
	ADDQ        $64, BX
	ADDQ        $128, DI
	ADDQ        $128, DX
	SUBQ        $16, CX
	JMP         gloop

gtail:
	TESTQ       CX, CX
	JZ          gcol
	MOVQ        $1, AX
	SHLQ        CX, AX
	DECQ        AX
	KMOVW       AX, K6 // the last windows
	VMOVUPS.Z   (SI), K6, Z0
	VMOVDQU32.Z (BX), K6, Z1
	LEAQ        (SI)(CX*4), SI // past the row's windows
	LEAQ        (BX)(CX*4), BX
	LEAQ        (R8)(CX*4), R15
	SHLQ        $1, CX
	MOVQ        $1, AX
	SHLQ        CX, AX
	DECQ        AX // two values each per row
	KMOVW       AX, K2
	SHRQ        $16, AX
	KMOVW       AX, K3
	POOL2_GRAD_BODY
	VMOVUPS     Z4, K2, (DI)
	VMOVUPS     Z5, K3, 64(DI)
	VMOVUPS     Z6, K2, (DX)
	VMOVUPS     Z7, K3, 64(DX)
	MOVQ        R15, R8

gcol:
	// Odd widths: zero the column the pool dropped (2n values in, R14 bytes).
	CMPQ R14, R13
	JGE  gnext
	MOVL $0, (R10)(R14*1)
	LEAQ (R10)(R13*1), AX
	MOVL $0, (AX)(R14*1)

gnext:
	LEAQ (R10)(R13*2), R10 // two dz rows on
	MOVQ R13, AX
	SHRQ $1, AX
	ADDL AX, R12 // at0 + 2w
	DECQ R11
	JMP  grow

gdone:
	VZEROUPPER
	RET

// func im2colS1AVX512(img, col *float32, ld, c, h, w, k, pad, oh, ow int)
//
// conv.go's convIm2col for stride 1 and output rows of at most 32 values: for each
// channel ci, kernel row ki and column kj, col row (ci·k+ki)·k+kj (row stride ld)
// gets oh output rows of ow values, output (oy, ox) reading image value (oy+ki-pad,
// ox+kj-pad), 0 where that lies in the padding. Each output row is one or two masked
// loads (the lanes that read padding are masked off, so they load nothing and read
// 0) and one or two masked stores.
TEXT ·im2colS1AVX512(SB), NOSPLIT, $0-80
	MOVQ  img+0(FP), SI
	MOVQ  col+8(FP), DI
	MOVQ  c+24(FP), R8
	MOVQ  w+40(FP), R15
	SHLQ  $2, R15 // w in bytes
	MOVQ  ow+72(FP), CX
	MOVQ  $1, DX
	SHLQ  CX, DX
	DECQ  DX
	KMOVW DX, K3 // the output row's values
	SHRQ  $16, DX
	KMOVW DX, K4

ichan:
	TESTQ R8, R8
	JZ    idone
	XORQ  R9, R9 // ki

iki:
	XORQ R10, R10 // kj

ikj:
	// Load mask: output columns [lo, hi) read inside the image, lo = max(0, pad-kj),
	// hi = min(ow, w+pad-kj) (0 if negative).
	XORQ    DX, DX
	MOVQ    pad+56(FP), AX
	SUBQ    R10, AX
	CMPQ    AX, $0
	CMOVQLT DX, AX // lo
	MOVQ    w+40(FP), BX
	ADDQ    pad+56(FP), BX
	SUBQ    R10, BX
	CMPQ    BX, $0
	CMOVQLT DX, BX
	MOVQ    ow+72(FP), CX
	CMPQ    BX, CX
	CMOVQGT CX, BX // hi
	MOVQ    BX, CX
	MOVQ    $1, DX
	SHLQ    CX, DX
	DECQ    DX // hi ones
	MOVQ    AX, CX
	MOVQ    $1, BX
	SHLQ    CX, BX
	DECQ    BX
	NOTQ    BX
	ANDQ    BX, DX // lanes [lo, hi)
	KMOVW   DX, K1
	SHRQ    $16, DX
	KMOVW   DX, K2

	// y = ki - pad; the first row's source: img + (y·w + kj - pad) values.
	MOVQ  R9, R14
	SUBQ  pad+56(FP), R14
	MOVQ  R14, AX
	IMULQ w+40(FP), AX
	ADDQ  R10, AX
	SUBQ  pad+56(FP), AX
	LEAQ  (SI)(AX*4), R12
	MOVQ  DI, R13
	MOVQ  oh+64(FP), R11
	MOVQ  ow+72(FP), BX
	SHLQ  $2, BX // ow in bytes
	MOVQ  h+32(FP), CX
	CMPQ  BX, $64
	JGT   irow

	// Rows of up to 16 values: the output rows that read padding rows (zeros),
	// then those inside the image in a loop of one load and one store each, then
	// padding again.
	VPXORD Z1, Z1, Z1

inarrow:
	TESTQ   R11, R11
	JZ      inext
	CMPQ    R14, $0
	JGE     iinside
	VMOVUPS Z1, K3, (R13)
	ADDQ    R15, R12
	ADDQ    BX, R13
	INCQ    R14
	DECQ    R11
	JMP     inarrow

iinside:
	MOVQ    CX, AX
	SUBQ    R14, AX // image rows left
	CMPQ    AX, R11
	CMOVQGT R11, AX
	TESTQ   AX, AX
	JLE     ibelow
	SUBQ    AX, R11
	ADDQ    AX, R14

iinrow:
	VMOVUPS.Z (R12), K1, Z0
	VMOVUPS   Z0, K3, (R13)
	ADDQ      R15, R12
	ADDQ      BX, R13
	DECQ      AX
	JNZ       iinrow

ibelow:
	TESTQ   R11, R11
	JZ      inext
	VMOVUPS Z1, K3, (R13)
	ADDQ    BX, R13
	DECQ    R11
	JMP     ibelow

irow:
	TESTQ     R11, R11
	JZ        inext
	CMPQ      R14, $0
	JLT       izero
	CMPQ      R14, CX
	JGE       izero
	VMOVUPS.Z (R12), K1, Z0
	VMOVUPS.Z 64(R12), K2, Z1
	JMP       istore

izero:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1

istore:
	VMOVUPS Z0, K3, (R13)
	VMOVUPS Z1, K4, 64(R13)
	ADDQ    R15, R12
	ADDQ    BX, R13
	INCQ    R14
	DECQ    R11
	JMP     irow

inext:
	MOVQ ld+16(FP), AX
	LEAQ (DI)(AX*4), DI // the next col row
	INCQ R10
	CMPQ R10, k+48(FP)
	JLT  ikj
	INCQ R9
	CMPQ R9, k+48(FP)
	JLT  iki
	MOVQ h+32(FP), AX
	IMULQ R15, AX
	ADDQ AX, SI // the next channel
	DECQ R8
	JMP  ichan

idone:
	VZEROUPPER
	RET

// C2I_HALF adds, for output row (R14) of kernel row ki, the three kernel columns'
// terms of image lanes off/4 to off/4+15 (kj masks ka, kb, kc; image lanes' mask at
// moff(BX)) into image row (R15)'s values, loaded into zi: zi = img + ((r0 + r1) + r2).
// Clobbers AX, Z1, Z2, zs, K7.
#define C2I_HALF(off, ka, kb, kc, moff, zs, zi) \
	VMOVUPS.Z off(R14)(CX*1), ka, zs \
	LEAQ      (off-4)(R14)(R11*1), AX \
	VMOVUPS.Z (AX)(CX*1), kb, Z1 \
	LEAQ      (off-8)(R14)(R11*2), AX \
	VMOVUPS.Z (AX)(CX*1), kc, Z2 \
	VADDPS    Z1, zs, zs \
	VADDPS    Z2, zs, zs \
	KMOVW     moff(BX), K7 \
	VMOVUPS.Z off(R15), K7, zi \
	VADDPS    zs, zi, zi

// C2I_STORE stores the pending image row, Z7 (and Z8 when rows are wider than 16
// values), at (DX) under the image lanes' masks. Clobbers K7.
#define C2I_STORE(wide) \
	KMOVW   12(BX), K7 \
	VMOVUPS Z7, K7, (DX) \
	CMPQ    R13, $64 \
	JLE     wide \
	KMOVW   14(BX), K7 \
	VMOVUPS Z8, K7, 64(DX) \
wide:

// func col2im3S1AVX512(col, img *float32, masks *[8]uint16, ld, c, h, w, oh, ow, pad int)
//
// conv.go's convCol2im for 3x3 kernels, stride 1 and image rows of at most 32 values:
// for each channel, kernel row ki and output row oy whose image row y = oy+ki-pad lies
// inside the image, image value (y, x) += (r0[x+pad] + r1[x+pad-1]) + r2[x+pad-2],
// r_kj being output row oy of col row (ci·3+ki)·3+kj (row stride ld) and a term whose
// column falls outside [0, ow) left out: masks holds, per kernel column, the lanes x
// whose term exists (lanes 0-15, then 16-31), then the image row's lanes.
//
// Each image row's sum is stored one row later, after the next row's image values
// are loaded: rows are w values apart, so a 64-byte load of row y+1 overlaps the
// span (not the lanes) of row y's masked store, and a load issued after such a store
// waits for it to leave the store queue (no forwarding from masked stores).
TEXT ·col2im3S1AVX512(SB), NOSPLIT, $0-80
	MOVQ  col+0(FP), SI
	MOVQ  img+8(FP), DI
	MOVQ  masks+16(FP), BX
	KMOVW 0(BX), K1
	KMOVW 2(BX), K2
	KMOVW 4(BX), K3
	KMOVW 6(BX), K4
	KMOVW 8(BX), K5
	KMOVW 10(BX), K6
	MOVQ  ld+24(FP), R11
	SHLQ  $2, R11 // ld in bytes
	MOVQ  w+48(FP), R13
	SHLQ  $2, R13 // w in bytes
	MOVQ  ow+64(FP), R12
	SHLQ  $2, R12 // ow in bytes
	MOVQ  pad+72(FP), CX
	SHLQ  $2, CX  // pad in bytes
	MOVQ  c+32(FP), R8

cchan:
	TESTQ R8, R8
	JZ    cdone
	XORQ  R9, R9 // ki

cki:
	// Output rows [lo, hi) of kernel row ki land inside the image: lo = max(0,
	// pad-ki), hi = min(oh, h+pad-ki).
	MOVQ  pad+72(FP), AX
	SUBQ  R9, AX
	XORQ  DX, DX
	CMPQ  AX, DX
	CMOVQLT DX, AX // lo
	MOVQ  h+40(FP), R10
	ADDQ  pad+72(FP), R10
	SUBQ  R9, R10
	CMPQ  R10, oh+56(FP)
	CMOVQGT oh+56(FP), R10 // hi
	SUBQ  AX, R10          // rows
	JLE   cnextki
	MOVQ  AX, R14
	IMULQ R12, R14
	ADDQ  SI, R14 // output row lo of kernel column 0
	ADDQ  R9, AX
	SUBQ  pad+72(FP), AX // image row lo+ki-pad
	IMULQ R13, AX
	LEAQ  (DI)(AX*1), R15
	C2I_HALF(0, K1, K3, K5, 12, Z0, Z7)
	CMPQ  R13, $64
	JLE   cfirst
	C2I_HALF(64, K2, K4, K6, 14, Z0, Z8)

cfirst:
	MOVQ R15, DX // the pending row

crow:
	DECQ R10
	JZ   cflush
	ADDQ R12, R14
	ADDQ R13, R15
	C2I_HALF(0, K1, K3, K5, 12, Z0, Z3)
	CMPQ R13, $64
	JLE  cstore
	C2I_HALF(64, K2, K4, K6, 14, Z0, Z4)

cstore:
	C2I_STORE(cstored)
	MOVQ    R15, DX
	VMOVAPS Z3, Z7
	VMOVAPS Z4, Z8
	JMP     crow

cflush:
	C2I_STORE(cflushed)

cnextki:
	LEAQ (SI)(R11*2), SI
	ADDQ R11, SI // three col rows on
	INCQ R9
	CMPQ R9, $3
	JLT  cki
	MOVQ h+40(FP), AX
	IMULQ R13, AX
	ADDQ AX, DI // the next channel
	DECQ R8
	JMP  cchan

cdone:
	VZEROUPPER
	RET

// DOT_REDUCE stores the sum of the 16 lanes of z (y, x: its lower halves) at dst,
// halving pairwise: 8 + 8, 4 + 4, 2 + 2, 1 + 1. Clobbers Z28.
#define DOT_REDUCE(z, y, x, dst) \
	VEXTRACTF64X4 $1, z, Y28 \
	VADDPS        Y28, y, y \
	VEXTRACTF32X4 $1, y, X28 \
	VADDPS        X28, x, x \
	VPERMILPS     $0x4e, x, X28 \
	VADDPS        X28, x, x \
	VMOVSHDUP     x, X28 \
	VADDSS        X28, x, x \
	VMOVSS        x, dst

// DOT_BROW loads b's row at src with LD and adds its products with a's three rows
// (Z24-Z26) into the accumulators r0, r1, r2.
#define DOT_BROW(LD, src, r0, r1, r2) \
	LD(src, Z27); \
	VFMADD231PS Z27, Z24, r0; \
	VFMADD231PS Z27, Z25, r1; \
	VFMADD231PS Z27, Z26, r2

// DOT3X8_STEP adds 16 values' products of a's 3 rows (SI, SI+lda, SI+2 lda) and b's 8
// rows (DI + 0-3 ldb, BX + 0-3 ldb) into Z0-Z23 (a row r, b row j: Z(8r+j)), LD
// loading each 16 values: DOT_LD, or DOT_LDZ, the lanes of K1 only (the rest zero).
#define DOT_LD(src, dst) VMOVUPS src, dst
#define DOT_LDZ(src, dst) VMOVUPS.Z src, K1, dst
#define DOT3X8_STEP(LD) \
	LD((SI), Z24); \
	LD((SI)(R10*1), Z25); \
	LD((SI)(R10*2), Z26); \
	DOT_BROW(LD, (DI), Z0, Z8, Z16); \
	DOT_BROW(LD, (DI)(R8*1), Z1, Z9, Z17); \
	DOT_BROW(LD, (DI)(R8*2), Z2, Z10, Z18); \
	DOT_BROW(LD, (DI)(R9*1), Z3, Z11, Z19); \
	DOT_BROW(LD, (BX), Z4, Z12, Z20); \
	DOT_BROW(LD, (BX)(R8*1), Z5, Z13, Z21); \
	DOT_BROW(LD, (BX)(R8*2), Z6, Z14, Z22); \
	DOT_BROW(LD, (BX)(R9*1), Z7, Z15, Z23)

// func dot3x8AVX512(a *float32, lda, aimg int, b *float32, ldb, bimg, n, images int, c *float32, ldc int)
//
// A 3x8 block of inner products summed over images (conv.go's first-layer filter
// gradient): c[r·ldc+j] = Σ over images i of Σ over p < n of a[i·aimg + r·lda + p] ·
// b[i·bimg + j·ldb + p], for r < 3, j < 8 (strides in values). Each of the 24 sums
// runs in 16 lanes (lane l takes the p ≡ l mod 16 of every image, in image order, the
// last n mod 16 values under a mask), the lanes added pairwise at the end; the order
// depends on n alone.
TEXT ·dot3x8AVX512(SB), NOSPLIT, $0-80
	MOVQ   lda+8(FP), R10
	SHLQ   $2, R10 // lda in bytes
	MOVQ   ldb+32(FP), R8
	SHLQ   $2, R8 // ldb in bytes
	LEAQ   (R8)(R8*2), R9 // 3 ldb
	MOVQ   n+48(FP), CX
	ANDQ   $15, CX
	MOVQ   $1, DX
	SHLQ   CX, DX
	DECQ   DX
	KMOVW  DX, K1 // the last n mod 16 values
	MOVQ   a+0(FP), R12
	MOVQ   b+24(FP), R13
	MOVQ   images+56(FP), R11

	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

dimg:
	TESTQ R11, R11
	JZ    dsum
	MOVQ  R12, SI
	MOVQ  R13, DI
	LEAQ  (DI)(R8*4), BX // b rows 4-7
	MOVQ  n+48(FP), CX

dloop:
	CMPQ CX, $16
	JLT  dtail
	DOT3X8_STEP(DOT_LD)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, BX
	SUBQ $16, CX
	JMP  dloop

dtail:
	TESTQ CX, CX
	JZ    dnext
	DOT3X8_STEP(DOT_LDZ)

dnext:
	MOVQ aimg+16(FP), AX
	LEAQ (R12)(AX*4), R12
	MOVQ bimg+40(FP), AX
	LEAQ (R13)(AX*4), R13
	DECQ R11
	JMP  dimg

dsum:
	MOVQ c+64(FP), DI
	MOVQ ldc+72(FP), AX
	SHLQ $2, AX
	DOT_REDUCE(Z0, Y0, X0, 0(DI))
	DOT_REDUCE(Z1, Y1, X1, 4(DI))
	DOT_REDUCE(Z2, Y2, X2, 8(DI))
	DOT_REDUCE(Z3, Y3, X3, 12(DI))
	DOT_REDUCE(Z4, Y4, X4, 16(DI))
	DOT_REDUCE(Z5, Y5, X5, 20(DI))
	DOT_REDUCE(Z6, Y6, X6, 24(DI))
	DOT_REDUCE(Z7, Y7, X7, 28(DI))
	ADDQ AX, DI
	DOT_REDUCE(Z8, Y8, X8, 0(DI))
	DOT_REDUCE(Z9, Y9, X9, 4(DI))
	DOT_REDUCE(Z10, Y10, X10, 8(DI))
	DOT_REDUCE(Z11, Y11, X11, 12(DI))
	DOT_REDUCE(Z12, Y12, X12, 16(DI))
	DOT_REDUCE(Z13, Y13, X13, 20(DI))
	DOT_REDUCE(Z14, Y14, X14, 24(DI))
	DOT_REDUCE(Z15, Y15, X15, 28(DI))
	ADDQ AX, DI
	DOT_REDUCE(Z16, Y16, X16, 0(DI))
	DOT_REDUCE(Z17, Y17, X17, 4(DI))
	DOT_REDUCE(Z18, Y18, X18, 8(DI))
	DOT_REDUCE(Z19, Y19, X19, 12(DI))
	DOT_REDUCE(Z20, Y20, X20, 16(DI))
	DOT_REDUCE(Z21, Y21, X21, 20(DI))
	DOT_REDUCE(Z22, Y22, X22, 24(DI))
	DOT_REDUCE(Z23, Y23, X23, 28(DI))
	VZEROUPPER
	RET

// func sumRowsAVX512(p *float32, n, rows, stride int) float32
//
// The sum of rows rows of n values, stride values apart (conv.go's bias gradient):
// two 16-lane sums take alternate groups of 16 values of every row in turn (the
// last n mod 16 of each row under a mask, into the first), then are added lane by
// lane and the lanes pairwise; the order depends on n alone.
TEXT ·sumRowsAVX512(SB), NOSPLIT, $0-36
	MOVQ   p+0(FP), SI
	MOVQ   rows+16(FP), R11
	MOVQ   stride+24(FP), R8
	SHLQ   $2, R8
	MOVQ   n+8(FP), CX
	ANDQ   $15, CX
	MOVQ   $1, DX
	SHLQ   CX, DX
	DECQ   DX
	KMOVW  DX, K1
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1

srow:
	TESTQ R11, R11
	JZ    sdone
	MOVQ  SI, DI
	MOVQ  n+8(FP), CX

s32:
	CMPQ   CX, $32
	JLT    s16
	VADDPS (DI), Z0, Z0
	VADDPS 64(DI), Z1, Z1
	ADDQ   $128, DI
	SUBQ   $32, CX
	JMP    s32

s16:
	CMPQ   CX, $16
	JLT    stail
	VADDPS (DI), Z0, Z0
	ADDQ   $64, DI
	SUBQ   $16, CX

stail:
	TESTQ     CX, CX
	JZ        snext
	VMOVUPS.Z (DI), K1, Z2
	VADDPS    Z2, Z0, Z0

snext:
	ADDQ R8, SI
	DECQ R11
	JMP  srow

sdone:
	VADDPS        Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VPERMILPS     $0x4e, X0, X1
	VADDPS        X1, X0, X0
	VMOVSHDUP     X0, X1
	VADDSS        X1, X0, X0
	VZEROUPPER
	MOVSS         X0, ret+32(FP)
	RET

// func fillRowsAVX512(y, v *float32, rows, n int)
//
// Sets row r of y (rows rows of n values, one after another) to v[r] (conv.go's bias
// broadcast): 16 values per store, the last n mod 16 of a row under a mask.
TEXT ·fillRowsAVX512(SB), NOSPLIT, $0-32
	MOVQ  y+0(FP), DI
	MOVQ  v+8(FP), SI
	MOVQ  rows+16(FP), R11
	MOVQ  n+24(FP), CX
	ANDQ  $15, CX
	MOVQ  $1, DX
	SHLQ  CX, DX
	DECQ  DX
	KMOVW DX, K1

frow:
	TESTQ        R11, R11
	JZ           fdone
	VBROADCASTSS (SI), Z0
	MOVQ         n+24(FP), CX

f16:
	CMPQ    CX, $16
	JLT     ftail
	VMOVUPS Z0, (DI)
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     f16

ftail:
	TESTQ   CX, CX
	JZ      fnext
	VMOVUPS Z0, K1, (DI)
	LEAQ    (DI)(CX*4), DI

fnext:
	ADDQ $4, SI
	DECQ R11
	JMP  frow

fdone:
	VZEROUPPER
	RET

// func maxAbsBitsAVX512(x *float32, n int) uint32
//
// The largest of x[i]'s bits with the sign cleared, for i < n (mlp.go's maxAbsBits):
// as unsigned integers these order finite values by magnitude, above them +Inf
// (0x7f800000) and NaNs. Four 16-lane maxima over 64 values at a time, then 16, then
// the last n mod 16 under a mask (zeros elsewhere, which change no maximum).
TEXT ·maxAbsBitsAVX512(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z31
	VPXORD       Z0, Z0, Z0
	VPXORD       Z1, Z1, Z1
	VPXORD       Z2, Z2, Z2
	VPXORD       Z3, Z3, Z3

m64:
	CMPQ    CX, $64
	JLT     m16
	VPANDD  (SI), Z31, Z4
	VPANDD  64(SI), Z31, Z5
	VPANDD  128(SI), Z31, Z6
	VPANDD  192(SI), Z31, Z7
	VPMAXUD Z4, Z0, Z0
	VPMAXUD Z5, Z1, Z1
	VPMAXUD Z6, Z2, Z2
	VPMAXUD Z7, Z3, Z3
	ADDQ    $256, SI
	SUBQ    $64, CX
	JMP     m64

m16:
	CMPQ    CX, $16
	JLT     mtail
	VPANDD  (SI), Z31, Z4
	VPMAXUD Z4, Z0, Z0
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     m16

mtail:
	TESTQ       CX, CX
	JZ          mdone
	MOVQ        $1, DX
	SHLQ        CX, DX
	DECQ        DX
	KMOVW       DX, K1
	VMOVDQU32.Z (SI), K1, Z4
	VPANDD      Z4, Z31, Z4
	VPMAXUD     Z4, Z0, Z0

mdone:
	VPMAXUD       Z1, Z0, Z0
	VPMAXUD       Z3, Z2, Z2
	VPMAXUD       Z2, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPMAXUD       Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPMAXUD       X1, X0, X0
	VPSHUFD       $0x4e, X0, X1
	VPMAXUD       X1, X0, X0
	VPSHUFD       $0xb1, X0, X1
	VPMAXUD       X1, X0, X0
	VMOVD         X0, AX
	VZEROUPPER
	MOVL          AX, ret+16(FP)
	RET
