#include "textflag.h"

// func adamAVX(n int, p, grad, m, v *float32, k *adamConsts)
//
// One Adam step over n values (n a multiple of 8), 8 lanes at a time, with the scalar
// loop's operations in its order and no fused multiply-adds, so each lane rounds as the
// scalar code does:
//   mi = b1*m + ob1*g;  vi = b2*v + (ob2*g)*g;  m, v = mi, vi
//   p  = p*decay - (a*mi) / (sqrt(vi)*c + eps)
// k holds b1, ob1, b2, ob2, decay, a, c, eps.
TEXT ·adamAVX(SB), NOSPLIT, $0-48
	MOVQ n+0(FP), CX
	MOVQ p+8(FP), DI
	MOVQ grad+16(FP), SI
	MOVQ m+24(FP), R8
	MOVQ v+32(FP), R9
	MOVQ k+40(FP), AX
	VBROADCASTSS 0(AX), Y8
	VBROADCASTSS 4(AX), Y9
	VBROADCASTSS 8(AX), Y10
	VBROADCASTSS 12(AX), Y11
	VBROADCASTSS 16(AX), Y12
	VBROADCASTSS 20(AX), Y13
	VBROADCASTSS 24(AX), Y14
	VBROADCASTSS 28(AX), Y15
	XORQ BX, BX
	SHRQ $3, CX
	JZ done

loop:
	VMOVUPS (SI)(BX*1), Y0
	VMOVUPS (R8)(BX*1), Y1
	VMOVUPS (R9)(BX*1), Y2
	VMULPS Y8, Y1, Y1
	VMULPS Y9, Y0, Y3
	VADDPS Y3, Y1, Y1
	VMULPS Y10, Y2, Y2
	VMULPS Y11, Y0, Y4
	VMULPS Y0, Y4, Y4
	VADDPS Y4, Y2, Y2
	VMOVUPS Y1, (R8)(BX*1)
	VMOVUPS Y2, (R9)(BX*1)
	VSQRTPS Y2, Y5
	VMULPS Y14, Y5, Y5
	VADDPS Y15, Y5, Y5
	VMULPS Y13, Y1, Y6
	VDIVPS Y5, Y6, Y6
	VMOVUPS (DI)(BX*1), Y7
	VMULPS Y12, Y7, Y7
	VSUBPS Y6, Y7, Y7
	VMOVUPS Y7, (DI)(BX*1)
	ADDQ $32, BX
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func momentumAVX(n int, p, grad, v *float32, k *momentumConsts)
//
// One momentum step over n values (a multiple of 8), in the scalar loop's order:
//   vi = (mu*v + g) + wd*p;  v = vi;  p = p - lr*vi
// k holds mu, wd, lr.
TEXT ·momentumAVX(SB), NOSPLIT, $0-40
	MOVQ n+0(FP), CX
	MOVQ p+8(FP), DI
	MOVQ grad+16(FP), SI
	MOVQ v+24(FP), R9
	MOVQ k+32(FP), AX
	VBROADCASTSS 0(AX), Y8
	VBROADCASTSS 4(AX), Y9
	VBROADCASTSS 8(AX), Y10
	XORQ BX, BX
	SHRQ $3, CX
	JZ mdone

mloop:
	VMOVUPS (SI)(BX*1), Y0
	VMOVUPS (R9)(BX*1), Y1
	VMOVUPS (DI)(BX*1), Y2
	VMULPS Y8, Y1, Y1
	VADDPS Y0, Y1, Y1
	VMULPS Y9, Y2, Y3
	VADDPS Y3, Y1, Y1
	VMOVUPS Y1, (R9)(BX*1)
	VMULPS Y10, Y1, Y4
	VSUBPS Y4, Y2, Y2
	VMOVUPS Y2, (DI)(BX*1)
	ADDQ $32, BX
	DECQ CX
	JNZ mloop

mdone:
	VZEROUPPER
	RET
