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
