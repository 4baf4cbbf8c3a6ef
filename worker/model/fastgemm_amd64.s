#include "textflag.h"
#include "gemm_amd64.h"

// func microKernelAVX2(kb int, a, b, c *float32, ldc int)
//
// C[6x16] += A·B for an A panel (kb x 6, k-major) and a B panel (kb x 16, k-major);
// ldc is C's row stride in elements. Accumulators: Y0..Y11 (row r in Y(2r), Y(2r+1)).
TEXT ·microKernelAVX2(SB), NOSPLIT, $0-40
	MOVQ kb+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8

	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

	TESTQ CX, CX
	JE    store

loop:
	VMOVUPS      (DI), Y12
	VMOVUPS      32(DI), Y13
	VBROADCASTSS (SI), Y14
	VBROADCASTSS 4(SI), Y15
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS 8(SI), Y14
	VBROADCASTSS 12(SI), Y15
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS 16(SI), Y14
	VBROADCASTSS 20(SI), Y15
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11
	ADDQ         $24, SI
	ADDQ         $64, DI
	DECQ         CX
	JNE          loop

store:
	VADDPS  (DX), Y0, Y0
	VADDPS  32(DX), Y1, Y1
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	ADDQ    R8, DX
	VADDPS  (DX), Y2, Y2
	VADDPS  32(DX), Y3, Y3
	VMOVUPS Y2, (DX)
	VMOVUPS Y3, 32(DX)
	ADDQ    R8, DX
	VADDPS  (DX), Y4, Y4
	VADDPS  32(DX), Y5, Y5
	VMOVUPS Y4, (DX)
	VMOVUPS Y5, 32(DX)
	ADDQ    R8, DX
	VADDPS  (DX), Y6, Y6
	VADDPS  32(DX), Y7, Y7
	VMOVUPS Y6, (DX)
	VMOVUPS Y7, 32(DX)
	ADDQ    R8, DX
	VADDPS  (DX), Y8, Y8
	VADDPS  32(DX), Y9, Y9
	VMOVUPS Y8, (DX)
	VMOVUPS Y9, 32(DX)
	ADDQ    R8, DX
	VADDPS  (DX), Y10, Y10
	VADDPS  32(DX), Y11, Y11
	VMOVUPS Y10, (DX)
	VMOVUPS Y11, 32(DX)
	VZEROUPPER
	RET

// The AVX-512 micro-kernels below (microKernelAVX512, 12 rows, and microKernelAVX512x4,
// 4 rows, each adding its 32-column block to C, and their St forms, storing it) are
// built from these macros. Their machine code is byte-identical to the four kernels
// written out in full, as they were before (compared with go tool objdump).

// KERNEL_ARGS loads (kb int, a, b, c *float32, ldc int): CX = kb, SI = a, DI = b,
// DX = c, R8 = ldc in bytes.
#define KERNEL_ARGS \
	MOVQ kb+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ b+16(FP), DI; \
	MOVQ c+24(FP), DX; \
	MOVQ ldc+32(FP), R8; \
	SHLQ $2, R8

// ADDROW adds a row's accumulators to C's row at DX and stores the sum there; STROW
// stores them there.
#define ADDROW(r0, r1) \
	VADDPS  (DX), r0, r0; \
	VADDPS  64(DX), r1, r1; \
	VMOVUPS r0, (DX); \
	VMOVUPS r1, 64(DX)
#define STROW(r0, r1) VMOVUPS r0, (DX); VMOVUPS r1, 64(DX)

// KERNEL12 and KERNEL4 (and KERNEL12P, which prefetches C first, PREFC12) are a whole
// micro-kernel of 12 or 4 rows, ROW (ADDROW or STROW)
// writing each row of the block to C.
#define KERNEL12(ROW) \
	KERNEL_ARGS; \
	KERNEL12BODY(ROW)
#define KERNEL4(ROW) \
	KERNEL_ARGS; \
	KERNEL4BODY(ROW)
#define KERNEL12P(ROW) \
	KERNEL_ARGS; \
	PREFC12; \
	KERNEL12BODY(ROW)

// PREFC12 prefetches the 12 rows of C's block (two lines each) into L1, so that
// a block first touched by its stores has its lines on the way during the depth loop.
#define PREFC12 \
	MOVQ DX, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); ADDQ R8, R9; \
	PREFETCHT0 (R9); PREFETCHT0 64(R9)



// func microKernelAVX512(kb int, a, b, c *float32, ldc int)
//
// C[12x32] += A·B for an A panel (kb x 12, k-major) and a B panel (kb x 32, k-major);
// ldc is C's row stride in elements. Accumulators: Z0..Z23 (row r in Z(2r), Z(2r+1)).
TEXT ·microKernelAVX512(SB), NOSPLIT, $0-40
	KERNEL12(ADDROW)

// func microKernelAVX512St(kb int, a, b, c *float32, ldc int)
//
// microKernelAVX512 storing its block into c instead of adding to it (the first depth
// block of a product with beta 0: no clearing of C beforehand).
TEXT ·microKernelAVX512St(SB), NOSPLIT, $0-40
	KERNEL12(STROW)

// func transpose8x8AVX2(src *float32, lds int, dst *float32, ld int, blocks int)
//
// Transposes blocks 8x8 blocks side by side: for b < blocks, r, q < 8,
// dst[(8b+q)*ld + r] = src[r*lds + 8b+q]. lds and ld are row strides in elements.
TEXT ·transpose8x8AVX2(SB), NOSPLIT, $0-40
	MOVQ src+0(FP), SI
	MOVQ lds+8(FP), R8
	MOVQ dst+16(FP), DI
	MOVQ ld+24(FP), R11
	MOVQ blocks+32(FP), CX
	SHLQ $2, R8
	SHLQ $2, R11
	LEAQ (R8)(R8*2), R9   // 3 rows of src
	LEAQ (R11)(R11*2), R12 // 3 rows of dst
	TESTQ CX, CX
	JE    tdone

tloop:
	LEAQ    (SI)(R8*4), R10
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R9*1), Y3
	VMOVUPS (R10), Y4
	VMOVUPS (R10)(R8*1), Y5
	VMOVUPS (R10)(R8*2), Y6
	VMOVUPS (R10)(R9*1), Y7

	VUNPCKLPS Y1, Y0, Y8  // t0
	VUNPCKHPS Y1, Y0, Y9  // t1
	VUNPCKLPS Y3, Y2, Y10 // t2
	VUNPCKHPS Y3, Y2, Y11 // t3
	VUNPCKLPS Y5, Y4, Y12 // t4
	VUNPCKHPS Y5, Y4, Y13 // t5
	VUNPCKLPS Y7, Y6, Y14 // t6
	VUNPCKHPS Y7, Y6, Y15 // t7

	VSHUFPS $0x44, Y10, Y8, Y0  // u0
	VSHUFPS $0xEE, Y10, Y8, Y1  // u1
	VSHUFPS $0x44, Y11, Y9, Y2  // u2
	VSHUFPS $0xEE, Y11, Y9, Y3  // u3
	VSHUFPS $0x44, Y14, Y12, Y4 // u4
	VSHUFPS $0xEE, Y14, Y12, Y5 // u5
	VSHUFPS $0x44, Y15, Y13, Y6 // u6
	VSHUFPS $0xEE, Y15, Y13, Y7 // u7

	VPERM2F128 $0x20, Y4, Y0, Y8  // column 0
	VPERM2F128 $0x20, Y5, Y1, Y9  // column 1
	VPERM2F128 $0x20, Y6, Y2, Y10 // column 2
	VPERM2F128 $0x20, Y7, Y3, Y11 // column 3
	VPERM2F128 $0x31, Y4, Y0, Y12 // column 4
	VPERM2F128 $0x31, Y5, Y1, Y13 // column 5
	VPERM2F128 $0x31, Y6, Y2, Y14 // column 6
	VPERM2F128 $0x31, Y7, Y3, Y15 // column 7

	LEAQ    (DI)(R11*4), R13
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(R11*1)
	VMOVUPS Y10, (DI)(R11*2)
	VMOVUPS Y11, (DI)(R12*1)
	VMOVUPS Y12, (R13)
	VMOVUPS Y13, (R13)(R11*1)
	VMOVUPS Y14, (R13)(R11*2)
	VMOVUPS Y15, (R13)(R12*1)

	ADDQ $32, SI
	LEAQ (R13)(R11*4), DI
	DECQ CX
	JNE  tloop

tdone:
	VZEROUPPER
	RET

// func microKernelAVX512x4(kb int, a, b, c *float32, ldc int)
//
// C[4x32] += A·B for 4 rows of a 12-row A panel (kb x 12, k-major: the 4 rows start at
// a, each k 12 values further) and a B panel (kb x 32, k-major): the rows of a panel
// that a partial 12-row tile leaves, without the edge tile's detour.
TEXT ·microKernelAVX512x4(SB), NOSPLIT, $0-40
	KERNEL4(ADDROW)

// func microKernelAVX512x4St(kb int, a, b, c *float32, ldc int)
//
// microKernelAVX512x4 storing its block into c instead of adding to it (the first depth
// block of a product with beta 0: no clearing of C beforehand).
TEXT ·microKernelAVX512x4St(SB), NOSPLIT, $0-40
	KERNEL4(STROW)

// func microKernelAVX512P(kb int, a, b, c *float32, ldc int)
//
// microKernelAVX512 prefetching C's block (PREFC12) before its depth loop.
TEXT ·microKernelAVX512P(SB), NOSPLIT, $0-40
	KERNEL12P(ADDROW)

// func microKernelAVX512StP(kb int, a, b, c *float32, ldc int)
//
// microKernelAVX512St prefetching C's block (PREFC12) before its depth loop.
TEXT ·microKernelAVX512StP(SB), NOSPLIT, $0-40
	KERNEL12P(STROW)
