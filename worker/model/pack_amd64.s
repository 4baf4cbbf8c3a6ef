#include "textflag.h"
#include "gemm_amd64.h"

// The column-edge micro-kernels: fastgemm_amd64.s's 12x32 and 4-row kernels (the same
// bodies, gemm_amd64.h) whose rows write C's columns 16-31 under the
// mask K1 (a 6th argument, mask: the columns of a panel of 17 to 31), so that a
// partial panel (fashion-cnn's second layer: 121 = 3·32 + 25 columns) runs them in
// place instead of through macroKernel's edge tile. The FMAs are the whole tile's, in
// the same order: only C's loads and stores are masked.

// MK_ARGS loads (kb int, a, b, c *float32, ldc int, mask uint64): CX = kb, SI = a,
// DI = b, DX = c, R8 = ldc in bytes, K1 = mask.
#define MK_ARGS \
	MOVQ kb+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ b+16(FP), DI; \
	MOVQ c+24(FP), DX; \
	MOVQ ldc+32(FP), R8; \
	SHLQ $2, R8; \
	MOVQ mask+40(FP), AX; \
	KMOVW AX, K1

// MK_ADDROW adds a row's accumulators to C's row at DX and stores the sum there; MK_STROW
// stores them there.
#define MK_ADDROW(r0, r1) \
	VMOVUPS.Z 64(DX), K1, Z26; \
	VADDPS    (DX), r0, r0; \
	VADDPS    Z26, r1, r1; \
	VMOVUPS   r0, (DX); \
	VMOVUPS   r1, K1, 64(DX)
#define MK_STROW(r0, r1) VMOVUPS r0, (DX); VMOVUPS r1, K1, 64(DX)

// MK_KERNEL12 and MK_KERNEL4 are a whole micro-kernel of 12 or 4 rows, ROW (MK_ADDROW or MK_STROW)
// writing each row of the block to C.
#define MK_KERNEL12(ROW) \
	MK_ARGS; \
	KERNEL12BODY(ROW)
#define MK_KERNEL4(ROW) \
	MK_ARGS; \
	KERNEL4BODY(ROW)

// func packConvBAVX512(dst, img *float32, offs *int32, halves *packHalf, kb, panels int)
//
// pack.go's packConvBGo: for each 32-column panel and each row q of the block, the
// row's two halves of 16 lanes. A half reads the span of input values its positions
// cover (at most 32, from img + off(q) + start) with two masked loads (lanes past the
// span load nothing, so nothing past the image is touched), then VPERMT2PS picks each
// lane's value by its index, zeroing the lanes without a position.
// packHalf: idx [16]int32 at 0, start at 64, masks lo/hi/valid at 72/74/76; 80 bytes.
TEXT ·packConvBAVX512(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ img+8(FP), SI
	MOVQ halves+24(FP), R8
	MOVQ panels+40(FP), R9

ppanel:
	TESTQ     R9, R9
	JZ        pdone
	VMOVDQU32 0(R8), Z2  // half 0's indices
	VMOVDQU32 80(R8), Z3 // half 1's
	KMOVW     72(R8), K1
	KMOVW     74(R8), K2
	KMOVW     76(R8), K3
	KMOVW     152(R8), K4
	KMOVW     154(R8), K5
	KMOVW     156(R8), K6
	MOVQ      64(R8), R10
	LEAQ      (SI)(R10*4), R10 // img + start of half 0
	MOVQ      144(R8), R11
	LEAQ      (SI)(R11*4), R11 // img + start of half 1
	MOVQ      offs+16(FP), DX
	MOVQ      kb+32(FP), CX

prow:
	TESTQ       CX, CX
	JZ          pnext
	MOVLQSX     (DX), AX
	LEAQ        (R10)(AX*4), BX
	VMOVUPS.Z   (BX), K1, Z0
	VMOVUPS.Z   64(BX), K2, Z1
	VPERMT2PS.Z Z1, Z2, K3, Z0
	LEAQ        (R11)(AX*4), BX
	VMOVUPS.Z   (BX), K4, Z4
	VMOVUPS.Z   64(BX), K5, Z5
	VPERMT2PS.Z Z5, Z3, K6, Z4
	VMOVUPS     Z0, (DI)
	VMOVUPS     Z4, 64(DI)
	ADDQ        $4, DX
	ADDQ        $128, DI
	DECQ        CX
	JMP         prow

pnext:
	ADDQ $160, R8
	DECQ R9
	JMP  ppanel

pdone:
	VZEROUPPER
	RET

// func packHWCAVX512(dst, hwc *float32, rows *int32, kb, o0, o1 int)
//
// pack.go's hwcB.packB for one panel: row q gets the 16 values at hwc + rows[q] + o0
// and the 16 at hwc + rows[q] + o1, or zeros when o1 < 0 (a panel of 16 columns).
TEXT ·packHWCAVX512(SB), NOSPLIT, $0-48
	MOVQ   dst+0(FP), DI
	MOVQ   hwc+8(FP), SI
	MOVQ   rows+16(FP), DX
	MOVQ   kb+24(FP), CX
	MOVQ   o0+32(FP), R8
	MOVQ   o1+40(FP), R9
	LEAQ   (SI)(R8*4), R8
	VPXORD Z1, Z1, Z1
	TESTQ  R9, R9
	JLT    hone
	LEAQ   (SI)(R9*4), R9

htwo:
	TESTQ   CX, CX
	JZ      hdone
	MOVLQSX (DX), AX
	VMOVUPS (R8)(AX*4), Z0
	VMOVUPS (R9)(AX*4), Z1
	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	ADDQ    $4, DX
	ADDQ    $128, DI
	DECQ    CX
	JMP     htwo

hone:
	TESTQ   CX, CX
	JZ      hdone
	MOVLQSX (DX), AX
	VMOVUPS (R8)(AX*4), Z0
	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	ADDQ    $4, DX
	ADDQ    $128, DI
	DECQ    CX
	JMP     hone

hdone:
	VZEROUPPER
	RET

// func packRowsAVX512(dst, b *float32, ldb, kb, cols int)
//
// fastgemm.go's packB for one panel of a B that is not transposed: row q of the
// panel gets the cols (1 to 32) values at b + q·ldb, zero-padded to 32, two masked
// loads and two stores a row (no lane past cols is read).
TEXT ·packRowsAVX512(SB), NOSPLIT, $0-40
	MOVQ  dst+0(FP), DI
	MOVQ  b+8(FP), SI
	MOVQ  ldb+16(FP), DX
	SHLQ  $2, DX
	MOVQ  kb+24(FP), CX
	MOVQ  cols+32(FP), BX
	MOVQ  $1, AX
	SHLXQ BX, AX, AX
	DECQ  AX
	KMOVW AX, K1
	SHRQ  $16, AX
	KMOVW AX, K2

rrow:
	TESTQ     CX, CX
	JZ        rdone
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z 64(SI), K2, Z1
	VMOVUPS   Z0, (DI)
	VMOVUPS   Z1, 64(DI)
	ADDQ      DX, SI
	ADDQ      $128, DI
	DECQ      CX
	JMP       rrow

rdone:
	VZEROUPPER
	RET

// func prefetchAVX512(p *float32, n int)
//
// Asks for the cache lines of n values at p (PREFETCHT0, one per 64 bytes): the next
// image of a convolution's loop, fetched while the current one is multiplied.
TEXT ·prefetchAVX512(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	LEAQ (SI)(CX*4), CX

pfloop:
	CMPQ       SI, CX
	JAE        pfdone
	PREFETCHT0 (SI)
	ADDQ       $64, SI
	JMP        pfloop

pfdone:
	RET

// func microKernelAVX512M(kb int, a, b, c *float32, ldc int, mask uint64)
TEXT ·microKernelAVX512M(SB), NOSPLIT, $0-48
	MK_KERNEL12(MK_ADDROW)

// func microKernelAVX512StM(kb int, a, b, c *float32, ldc int, mask uint64)
TEXT ·microKernelAVX512StM(SB), NOSPLIT, $0-48
	MK_KERNEL12(MK_STROW)

// func microKernelAVX512x4M(kb int, a, b, c *float32, ldc int, mask uint64)
TEXT ·microKernelAVX512x4M(SB), NOSPLIT, $0-48
	MK_KERNEL4(MK_ADDROW)

// func microKernelAVX512x4StM(kb int, a, b, c *float32, ldc int, mask uint64)
TEXT ·microKernelAVX512x4StM(SB), NOSPLIT, $0-48
	MK_KERNEL4(MK_STROW)
