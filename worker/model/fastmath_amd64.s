#include "textflag.h"

// The AVX-512 forms of sigmoidFast and tanhFast (fastmath.go), eight float64 values
// per iteration, in place. Every step is the Go code's operation in its order (no
// FMA), so the results are bit-identical to it.

// EXPSETUP loads expFast's constants: Z18 1/ln2 in 16ths, Z19 the rounding shift,
// Z20/Z21 the table, Z22..Z25 c4..c1, Z26 1.0, Z27 the sign bit.
#define EXPSETUP \
	MOVQ         $0x40371547652b82fe, AX \
	VPBROADCASTQ AX, Z18 \
	MOVQ         $0x4338000000000000, AX \
	VPBROADCASTQ AX, Z19 \
	VMOVDQU64    ·expTab+0(SB), Z20 \
	VMOVDQU64    ·expTab+64(SB), Z21 \
	MOVQ         $0x3e83b2ab6fba4e77, AX \
	VPBROADCASTQ AX, Z22 \
	MOVQ         $0x3eec6b08d704a0c0, AX \
	VPBROADCASTQ AX, Z23 \
	MOVQ         $0x3f4ebfbdff82c58f, AX \
	VPBROADCASTQ AX, Z24 \
	MOVQ         $0x3fa62e42fefa39ef, AX \
	VPBROADCASTQ AX, Z25 \
	MOVQ         $0x3ff0000000000000, AX \
	VPBROADCASTQ AX, Z26 \
	MOVQ         $0x8000000000000000, AX \
	VPBROADCASTQ AX, Z27

// EXP sets out = expFast(x), using Z1..Z5.
#define EXP(x, out) \
	VMULPD    Z18, x, Z1 \ // z = x/ln2·16
	VADDPD    Z19, Z1, Z2 \ // kd = z + shift: k in the low bits
	VSUBPD    Z19, Z2, Z3 \ // kd - shift
	VSUBPD    Z3, Z1, Z1 \ // r = z - kd
	VMOVDQA64 Z2, Z4 \
	VPERMI2Q  Z21, Z20, Z4 \ // expTab[k mod 16]
	VPSLLQ    $48, Z2, Z2 \
	VPADDQ    Z2, Z4, Z4 \ // t = 2^(k/16)
	VMULPD    Z22, Z1, Z5 \ // p = r·c4 + c3, ...
	VADDPD    Z23, Z5, Z5 \
	VMULPD    Z5, Z1, Z5 \
	VADDPD    Z24, Z5, Z5 \
	VMULPD    Z5, Z1, Z5 \
	VADDPD    Z25, Z5, Z5 \
	VMULPD    Z5, Z1, Z5 \
	VADDPD    Z26, Z5, Z5 \
	VMULPD    Z5, Z4, out

// func sigmoidAVX512(v *float64, n int)
TEXT ·sigmoidAVX512(SB), NOSPLIT, $0-16
	MOVQ v+0(FP), SI
	MOVQ n+8(FP), CX
	EXPSETUP
	MOVQ         $0xc069000000000000, AX // -200
	VPBROADCASTQ AX, Z16
	MOVQ         $0x4069000000000000, AX // 200
	VPBROADCASTQ AX, Z17
	SHRQ         $3, CX
	JZ           sdone

sloop:
	VMOVUPD (SI), Z0
	VMAXPD  Z0, Z16, Z0 // max(x, -200); x second, so that NaN stays NaN
	VMINPD  Z0, Z17, Z0 // min(x, 200)
	VPXORQ  Z27, Z0, Z0 // -x
	EXP(Z0, Z6)
	VADDPD  Z26, Z6, Z6 // 1 + e
	VDIVPD  Z6, Z26, Z6 // 1 / (1 + e)
	VMOVUPD Z6, (SI)
	ADDQ    $64, SI
	DECQ    CX
	JNZ     sloop

sdone:
	VZEROUPPER
	RET

// func tanhAVX512(v *float64, n int)
TEXT ·tanhAVX512(SB), NOSPLIT, $0-16
	MOVQ v+0(FP), SI
	MOVQ n+8(FP), CX
	EXPSETUP
	MOVQ         $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z16
	MOVQ         $0x4034000000000000, AX // 20
	VPBROADCASTQ AX, Z17
	MOVQ         $0xc000000000000000, AX // -2
	VPBROADCASTQ AX, Z28
	MOVQ         $0x3f9664f4882c10fa, AX // 62/2835
	VPBROADCASTQ AX, Z29
	MOVQ         $0xbfaba1ba1ba1ba1c, AX // -17/315
	VPBROADCASTQ AX, Z30
	MOVQ         $0x3fc1111111111111, AX // 2/15
	VPBROADCASTQ AX, Z31
	MOVQ         $0xbfd5555555555555, AX // -1/3
	VPBROADCASTQ AX, Z15
	MOVQ         $0x3fb0000000000000, AX // tanhSmall
	VPBROADCASTQ AX, Z14
	SHRQ         $3, CX
	JZ           tdone

tloop:
	VMOVUPD   (SI), Z0
	VPANDQ    Z16, Z0, Z7 // |x|
	VMINPD    Z7, Z17, Z7 // a = min(|x|, 20)
	VMULPD    Z28, Z7, Z8 // -2a
	EXP(Z8, Z6)
	VSUBPD    Z6, Z26, Z9 // 1 - e
	VADDPD    Z26, Z6, Z6 // 1 + e
	VDIVPD    Z6, Z9, Z9 // big
	VMULPD    Z7, Z7, Z10 // a²
	VMULPD    Z29, Z10, Z11
	VADDPD    Z30, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z31, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z15, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z26, Z11, Z11
	VMULPD    Z11, Z7, Z11 // small
	VCMPPD    $0x11, Z14, Z7, K1 // a < 1/16 (ordered)
	VBLENDMPD Z11, Z9, K1, Z9 // small where K1, big elsewhere
	VPANDQ    Z27, Z0, Z0 // x's sign
	VPORQ     Z0, Z9, Z9
	VMOVUPD   Z9, (SI)
	ADDQ      $64, SI
	DECQ      CX
	JNZ       tloop

tdone:
	VZEROUPPER
	RET

// func sigmoidAVX512From32(dst *float64, src *float32, n int): dst[i] = f(float64(src[i])).
TEXT ·sigmoidAVX512From32(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	EXPSETUP
	MOVQ         $0xc069000000000000, AX // -200
	VPBROADCASTQ AX, Z16
	MOVQ         $0x4069000000000000, AX // 200
	VPBROADCASTQ AX, Z17
	SHRQ         $3, CX
	JZ           sdone32

sloop32:
	VCVTPS2PD (SI), Z0
	VMAXPD  Z0, Z16, Z0 // max(x, -200); x second, so that NaN stays NaN
	VMINPD  Z0, Z17, Z0 // min(x, 200)
	VPXORQ  Z27, Z0, Z0 // -x
	EXP(Z0, Z6)
	VADDPD  Z26, Z6, Z6 // 1 + e
	VDIVPD  Z6, Z26, Z6 // 1 / (1 + e)
	VMOVUPD Z6, (DI)
	ADDQ    $32, SI
	ADDQ    $64, DI
	DECQ    CX
	JNZ     sloop32

sdone32:
	VZEROUPPER
	RET


// func tanhAVX512From32(dst *float64, src *float32, n int): dst[i] = f(float64(src[i])).
TEXT ·tanhAVX512From32(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	EXPSETUP
	MOVQ         $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z16
	MOVQ         $0x4034000000000000, AX // 20
	VPBROADCASTQ AX, Z17
	MOVQ         $0xc000000000000000, AX // -2
	VPBROADCASTQ AX, Z28
	MOVQ         $0x3f9664f4882c10fa, AX // 62/2835
	VPBROADCASTQ AX, Z29
	MOVQ         $0xbfaba1ba1ba1ba1c, AX // -17/315
	VPBROADCASTQ AX, Z30
	MOVQ         $0x3fc1111111111111, AX // 2/15
	VPBROADCASTQ AX, Z31
	MOVQ         $0xbfd5555555555555, AX // -1/3
	VPBROADCASTQ AX, Z15
	MOVQ         $0x3fb0000000000000, AX // tanhSmall
	VPBROADCASTQ AX, Z14
	SHRQ         $3, CX
	JZ           tdone32

tloop32:
	VCVTPS2PD (SI), Z0
	VPANDQ    Z16, Z0, Z7 // |x|
	VMINPD    Z7, Z17, Z7 // a = min(|x|, 20)
	VMULPD    Z28, Z7, Z8 // -2a
	EXP(Z8, Z6)
	VSUBPD    Z6, Z26, Z9 // 1 - e
	VADDPD    Z26, Z6, Z6 // 1 + e
	VDIVPD    Z6, Z9, Z9 // big
	VMULPD    Z7, Z7, Z10 // a²
	VMULPD    Z29, Z10, Z11
	VADDPD    Z30, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z31, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z15, Z11, Z11
	VMULPD    Z11, Z10, Z11
	VADDPD    Z26, Z11, Z11
	VMULPD    Z11, Z7, Z11 // small
	VCMPPD    $0x11, Z14, Z7, K1 // a < 1/16 (ordered)
	VBLENDMPD Z11, Z9, K1, Z9 // small where K1, big elsewhere
	VPANDQ    Z27, Z0, Z0 // x's sign
	VPORQ     Z0, Z9, Z9
	VMOVUPD   Z9, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       tloop32

tdone32:
	VZEROUPPER
	RET
