#include "textflag.h"

// The AVX-512 forms of sigmoidFast32 and tanhFast32 (fastmath32.go), sixteen float32
// values per iteration. Every step is the Go code's operation in its order (no FMA),
// so the results are bit-identical to it.

// EXP32SETUP loads expFast32's constants: Z18 1/ln2 in 16ths, Z19 the rounding shift,
// Z20 the table, Z21/Z25 ln2/16 high and low, Z22 1/6, Z23 1/2, Z26 1.0, Z27 the sign
// bit.
#define EXP32SETUP \
	MOVL         $0x41b8aa3b, AX \
	VPBROADCASTD AX, Z18 \
	MOVL         $0x4b400000, AX \
	VPBROADCASTD AX, Z19 \
	VMOVDQU32    ·expTab32+0(SB), Z20 \
	MOVL         $0x3d317000, AX \
	VPBROADCASTD AX, Z21 \
	MOVL         $0x3605fdf4, AX \
	VPBROADCASTD AX, Z25 \
	MOVL         $0x3e2aaaab, AX \
	VPBROADCASTD AX, Z22 \
	MOVL         $0x3f000000, AX \
	VPBROADCASTD AX, Z23 \
	MOVL         $0x3f800000, AX \
	VPBROADCASTD AX, Z26 \
	MOVL         $0x80000000, AX \
	VPBROADCASTD AX, Z27

// EXP32 sets out = expFast32(x), using Z1..Z5.
#define EXP32(x, out) \
	VMULPS Z18, x, Z1 \ // z = x/ln2·16
	VADDPS Z19, Z1, Z2 \ // kd = z + shift: k in the low bits
	VSUBPS Z19, Z2, Z3 \ // kd - shift
	VMULPS Z21, Z3, Z1 \
	VSUBPS Z1, x, Z1 \ // x - k·ln2hi/16
	VMULPS Z25, Z3, Z5 \
	VSUBPS Z5, Z1, Z1 \ // r = x - k·ln2/16
	VPERMD Z20, Z2, Z4 \ // expTab32[k mod 16]
	VPSLLD $19, Z2, Z2 \
	VPADDD Z2, Z4, Z4 \ // t = 2^(k/16)
	VMULPS Z22, Z1, Z5 \ // p = r/6 + 1/2, ...
	VADDPS Z23, Z5, Z5 \
	VMULPS Z5, Z1, Z5 \
	VADDPS Z26, Z5, Z5 \
	VMULPS Z5, Z1, Z5 \
	VADDPS Z26, Z5, Z5 \
	VMULPS Z5, Z4, out

// func sigmoid32AVX512(dst, src *float32, n int)
TEXT ·sigmoid32AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	EXP32SETUP
	MOVL         $0xc2b00000, AX // -88
	VPBROADCASTD AX, Z16
	MOVL         $0x42b00000, AX // 88
	VPBROADCASTD AX, Z17
	SHRQ         $4, CX
	JZ           sdone

sloop:
	VMOVUPS (SI), Z0
	VMAXPS  Z0, Z16, Z0 // max(x, -88); x second, so that NaN stays NaN
	VMINPS  Z0, Z17, Z0 // min(x, 88)
	VPXORD  Z27, Z0, Z0 // -x
	EXP32(Z0, Z6)
	VADDPS  Z26, Z6, Z6 // 1 + e
	VDIVPS  Z6, Z26, Z6 // 1 / (1 + e)
	VMOVUPS Z6, (DI)
	ADDQ    $64, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     sloop

sdone:
	VZEROUPPER
	RET

// func tanh32AVX512(dst, src *float32, n int)
TEXT ·tanh32AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	EXP32SETUP
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z16
	MOVL         $0x41200000, AX // 10
	VPBROADCASTD AX, Z17
	MOVL         $0xc0000000, AX // -2
	VPBROADCASTD AX, Z28
	MOVL         $0x3cb327a4, AX // 62/2835
	VPBROADCASTD AX, Z29
	MOVL         $0xbd5d0dd1, AX // -17/315
	VPBROADCASTD AX, Z30
	MOVL         $0x3e088889, AX // 2/15
	VPBROADCASTD AX, Z31
	MOVL         $0xbeaaaaab, AX // -1/3
	VPBROADCASTD AX, Z15
	MOVL         $0x3e800000, AX // tanh32Small
	VPBROADCASTD AX, Z14
	SHRQ         $4, CX
	JZ           tdone

tloop:
	VMOVUPS   (SI), Z0
	VPANDD    Z16, Z0, Z7 // |x|
	VMINPS    Z7, Z17, Z7 // a = min(|x|, 10)
	VMULPS    Z28, Z7, Z8 // -2a
	EXP32(Z8, Z6)
	VSUBPS    Z6, Z26, Z9 // 1 - e
	VADDPS    Z26, Z6, Z6 // 1 + e
	VDIVPS    Z6, Z9, Z9 // big
	VMULPS    Z7, Z7, Z10 // a²
	VMULPS    Z29, Z10, Z11
	VADDPS    Z30, Z11, Z11
	VMULPS    Z11, Z10, Z11
	VADDPS    Z31, Z11, Z11
	VMULPS    Z11, Z10, Z11
	VADDPS    Z15, Z11, Z11
	VMULPS    Z11, Z10, Z11
	VADDPS    Z26, Z11, Z11
	VMULPS    Z11, Z7, Z11 // small
	VCMPPS    $0x11, Z14, Z7, K1 // a < 1/4 (ordered)
	VBLENDMPS Z11, Z9, K1, Z9 // small where K1, big elsewhere
	VPANDD    Z27, Z0, Z0 // x's sign
	VPORD     Z0, Z9, Z9
	VMOVUPS   Z9, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       tloop

tdone:
	VZEROUPPER
	RET
