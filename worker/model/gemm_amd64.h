// Shared by fastgemm_amd64.s and pack_amd64.s: the body of the AVX-512 12x32 and 4x32
// micro-kernels, once their arguments are in registers (CX = kb, SI = the A panel,
// DI = the B panel, DX = C, R8 = C's row stride in bytes). ROW writes a row's two
// accumulators to C at DX (adding, storing, or masked in pack_amd64.s).

// ZERO2 clears a row's two accumulators.
#define ZERO2(r0, r1) VPXORD r0, r0, r0; VPXORD r1, r1, r1

// FMA2ROWS adds the products of two rows' A values (at o0(SI) and o1(SI)) and the B
// row in Z24 (columns 0-15) and Z25 (16-31) into the rows' accumulators r0, r1 and
// r2, r3.
#define FMA2ROWS(o0, o1, r0, r1, r2, r3) \
	VBROADCASTSS o0(SI), Z26; \
	VBROADCASTSS o1(SI), Z27; \
	VFMADD231PS  Z24, Z26, r0; \
	VFMADD231PS  Z25, Z26, r1; \
	VFMADD231PS  Z24, Z27, r2; \
	VFMADD231PS  Z25, Z27, r3

// The rows' parts: rows 0-3 (the 4-row kernel) and rows 4-11 (the rest of the 12-row
// one): clearing their accumulators, their FMAs with the B row in Z24, Z25, and
// writing them to C by ROW, one row of C (R8 bytes) after another.
#define ZERO_ROWS0_3 ZERO2(Z0, Z1); ZERO2(Z2, Z3); ZERO2(Z4, Z5); ZERO2(Z6, Z7)
#define ZERO_ROWS0_11 \
	ZERO_ROWS0_3; \
	ZERO2(Z8, Z9); \
	ZERO2(Z10, Z11); \
	ZERO2(Z12, Z13); \
	ZERO2(Z14, Z15); \
	ZERO2(Z16, Z17); \
	ZERO2(Z18, Z19); \
	ZERO2(Z20, Z21); \
	ZERO2(Z22, Z23)
#define FMA_ROWS0_3 FMA2ROWS(0, 4, Z0, Z1, Z2, Z3); FMA2ROWS(8, 12, Z4, Z5, Z6, Z7)
#define FMA_ROWS0_11 \
	FMA_ROWS0_3; \
	FMA2ROWS(16, 20, Z8, Z9, Z10, Z11); \
	FMA2ROWS(24, 28, Z12, Z13, Z14, Z15); \
	FMA2ROWS(32, 36, Z16, Z17, Z18, Z19); \
	FMA2ROWS(40, 44, Z20, Z21, Z22, Z23)
#define STORE_ROWS0_3(ROW) \
	ROW(Z0, Z1); \
	ADDQ R8, DX; \
	ROW(Z2, Z3); \
	ADDQ R8, DX; \
	ROW(Z4, Z5); \
	ADDQ R8, DX; \
	ROW(Z6, Z7)
#define STORE_ROWS0_11(ROW) \
	STORE_ROWS0_3(ROW); \
	ADDQ R8, DX; \
	ROW(Z8, Z9); \
	ADDQ R8, DX; \
	ROW(Z10, Z11); \
	ADDQ R8, DX; \
	ROW(Z12, Z13); \
	ADDQ R8, DX; \
	ROW(Z14, Z15); \
	ADDQ R8, DX; \
	ROW(Z16, Z17); \
	ADDQ R8, DX; \
	ROW(Z18, Z19); \
	ADDQ R8, DX; \
	ROW(Z20, Z21); \
	ADDQ R8, DX; \
	ROW(Z22, Z23)

// KERNELBODY is the rest of a micro-kernel: ZERO, then per k the B row's two halves
// into Z24, Z25 and FMAS (the A panel advancing 48 bytes, B 128), then STORE(ROW).
#define KERNELBODY(ZERO, FMAS, STORE, ROW) \
	ZERO; \
	TESTQ CX, CX; \
	JE    kstore; \
kloop:; \
	VMOVUPS (DI), Z24; \
	VMOVUPS 64(DI), Z25; \
	FMAS; \
	ADDQ $48, SI; \
	ADDQ $128, DI; \
	DECQ CX; \
	JNE  kloop; \
kstore:; \
	STORE(ROW); \
	VZEROUPPER; \
	RET

// KERNEL12BODY and KERNEL4BODY are the rest of a micro-kernel of 12 or 4 rows, ROW
// writing each row of the block to C.
#define KERNEL12BODY(ROW) KERNELBODY(ZERO_ROWS0_11, FMA_ROWS0_11, STORE_ROWS0_11, ROW)
#define KERNEL4BODY(ROW) KERNELBODY(ZERO_ROWS0_3, FMA_ROWS0_3, STORE_ROWS0_3, ROW)
