#include "textflag.h"

// The recording 2x2 max-pool and its gradient over ranges of planes, a plane's
// windows in chunks of up to 16 (pool2planes.go's pool2Plan; a pool2Chunk is 448
// bytes: idx at 0, idx1 at 64, top at 128, bot at 256, s at 384, k0 at 388, tm at
// 392, bm at 396, sm at 400).

// pool2pLanes holds 0, 1, ..., 31.
DATA pool2pLanes<>+0(SB)/4, $0
DATA pool2pLanes<>+4(SB)/4, $1
DATA pool2pLanes<>+8(SB)/4, $2
DATA pool2pLanes<>+12(SB)/4, $3
DATA pool2pLanes<>+16(SB)/4, $4
DATA pool2pLanes<>+20(SB)/4, $5
DATA pool2pLanes<>+24(SB)/4, $6
DATA pool2pLanes<>+28(SB)/4, $7
DATA pool2pLanes<>+32(SB)/4, $8
DATA pool2pLanes<>+36(SB)/4, $9
DATA pool2pLanes<>+40(SB)/4, $10
DATA pool2pLanes<>+44(SB)/4, $11
DATA pool2pLanes<>+48(SB)/4, $12
DATA pool2pLanes<>+52(SB)/4, $13
DATA pool2pLanes<>+56(SB)/4, $14
DATA pool2pLanes<>+60(SB)/4, $15
DATA pool2pLanes<>+64(SB)/4, $16
DATA pool2pLanes<>+68(SB)/4, $17
DATA pool2pLanes<>+72(SB)/4, $18
DATA pool2pLanes<>+76(SB)/4, $19
DATA pool2pLanes<>+80(SB)/4, $20
DATA pool2pLanes<>+84(SB)/4, $21
DATA pool2pLanes<>+88(SB)/4, $22
DATA pool2pLanes<>+92(SB)/4, $23
DATA pool2pLanes<>+96(SB)/4, $24
DATA pool2pLanes<>+100(SB)/4, $25
DATA pool2pLanes<>+104(SB)/4, $26
DATA pool2pLanes<>+108(SB)/4, $27
DATA pool2pLanes<>+112(SB)/4, $28
DATA pool2pLanes<>+116(SB)/4, $29
DATA pool2pLanes<>+120(SB)/4, $30
DATA pool2pLanes<>+124(SB)/4, $31
GLOBL pool2pLanes<>(SB), RODATA|NOPTR, $128

// func pool2ArgPlanesAVX512(in, y *float32, arg *int32, plan *pool2Chunk, chunks, planes, w, hw, pw int, at0 int32, floor float32)
//
// conv.go's pool2 for planes planes of hw values (width w), pw outputs each, one
// after another, the indices of plane p from at0 + p·hw: per chunk, the top rows'
// 32 values from the span's start s and the bottom rows' (w values on), the lanes
// no window reads masked off; each window's top pair (a, b) and bottom pair (c, d)
// by permutation, then pool_amd64.s's pool2ArgAVX512 picks: b if b > a else a, d if
// d > c else c, the bottom pick if greater than the top one; the value clamped below
// at floor, NaN when any of the four is NaN; the index at0 + s + idx + {0, 1, w,
// w+1}.
TEXT ·pool2ArgPlanesAVX512(SB), NOSPLIT, $0-80
	MOVQ         in+0(FP), R10
	MOVQ         y+8(FP), DX
	MOVQ         arg+16(FP), BX
	MOVQ         planes+40(FP), R11
	MOVQ         w+48(FP), R13
	VPBROADCASTD R13, Z16 // w
	SHLQ         $2, R13  // w in bytes
	MOVQ         hw+56(FP), R8
	MOVQ         pw+64(FP), R15
	SHLQ         $2, R15  // pw in bytes
	MOVL         at0+72(FP), R12
	VBROADCASTSS floor+76(FP), Z10
	MOVL         $1, AX
	VPBROADCASTD AX, Z18 // 1
	MOVL         $0x7fc00000, AX
	VPBROADCASTD AX, Z20 // NaN

pplane:
	TESTQ R11, R11
	JZ    pdone
	MOVQ  plan+24(FP), CX
	MOVQ  chunks+32(FP), R9

pchunk:
	MOVL         384(CX), AX // s
	LEAQ         (R10)(AX*4), SI
	LEAQ         (SI)(R13*1), DI
	KMOVW        392(CX), K2
	KMOVW        394(CX), K3
	VMOVUPS.Z    (SI), K2, Z0
	VMOVUPS.Z    64(SI), K3, Z1
	KMOVW        396(CX), K2
	KMOVW        398(CX), K3
	VMOVUPS.Z    (DI), K2, Z2
	VMOVUPS.Z    64(DI), K3, Z3
	ADDL         R12, AX // at0 + s
	VPBROADCASTD AX, Z17
	VMOVDQU32    (CX), Z13   // idx
	VMOVDQU32    64(CX), Z14 // idx + 1
	VPADDD       Z13, Z17, Z17 // the windows' top left indices
	VMOVAPS      Z0, Z4
	VPERMT2PS    Z1, Z13, Z4 // a
	VPERMT2PS    Z1, Z14, Z0 // b
	VMOVAPS      Z2, Z5
	VPERMT2PS    Z3, Z13, Z5 // c
	VPERMT2PS    Z3, Z14, Z2 // d
	VCMPPS       $0x1e, Z4, Z0, K1 // b > a
	VCMPPS       $0x1e, Z5, Z2, K2 // d > c
	VCMPPS       $3, Z0, Z4, K4
	VCMPPS       $3, Z2, Z5, K5
	KORW         K4, K5, K4 // a NaN among the four
	VBLENDMPS    Z0, Z4, K1, Z11
	VBLENDMPS    Z2, Z5, K2, Z12
	VMOVDQA32    Z17, Z6
	VPADDD       Z18, Z6, K1, Z6
	VPADDD       Z16, Z17, Z7
	VPADDD       Z18, Z7, K2, Z7
	VCMPPS       $0x1e, Z11, Z12, K3 // bottom > top
	VBLENDMPS    Z12, Z11, K3, Z4
	VPBLENDMD    Z7, Z6, K3, Z6
	VMAXPS       Z10, Z4, Z4
	VBLENDMPS    Z20, Z4, K4, Z4
	MOVL         388(CX), AX // k0
	KMOVW        400(CX), K6
	VMOVUPS      Z4, K6, (DX)(AX*4)
	VMOVDQU32    Z6, K6, (BX)(AX*4)
	ADDQ         $448, CX
	DECQ         R9
	JNZ          pchunk
	LEAQ         (R10)(R8*4), R10
	ADDQ         R15, DX
	ADDQ         R15, BX
	ADDL         R8, R12
	DECQ         R11
	JMP          pplane

pdone:
	VZEROUPPER
	RET

// POOL2P_SPAN writes one half (16 lanes) of a chunk's top or bottom span at dst: per
// lane, the rel of the window covering it (its lane at tab(CX)) compared with ids
// (the lane's offset from s, plus w for the bottom span) picks that window's
// gradient (Z0), else 0, stored under the covered lanes' mask at mask(CX).
// Clobbers Z4-Z6, K2, K3.
#define POOL2P_SPAN(tab, ids, mask, dst) \
	VMOVDQU32   tab(CX), Z4 \
	VPERMD      Z1, Z4, Z5 \
	VPCMPEQD    ids, Z5, K2 \
	VPERMPS.Z   Z0, Z4, K2, Z6 \
	KMOVW       mask(CX), K3 \
	VMOVUPS     Z6, K3, dst

// func pool2GradPlanesAVX512(dy, y *float32, arg *int32, dz *float32, plan *pool2Chunk, chunks, planes, w, hw, pw int, at0 int32, relu bool)
//
// conv.go's maxPoolGradOp.route for 2x2 windows over planes planes of dz (hw values,
// width w; pw windows each, one after another; indices of plane p from at0 + p·hw):
// each plane is cleared, then per chunk each window's gradient dy (0 when relu is set
// and y is not above 0) goes to the position of the four that arg names, 0 to the
// three others, by permutation into the top and bottom spans, stored under the masks
// of the lanes the windows cover.
TEXT ·pool2GradPlanesAVX512(SB), NOSPLIT, $0-85
	MOVQ         dy+0(FP), SI
	MOVQ         y+8(FP), R8
	MOVQ         arg+16(FP), BX
	MOVQ         dz+24(FP), R10
	MOVQ         planes+48(FP), R11
	MOVQ         w+56(FP), R13
	VPBROADCASTD R13, Z16 // w
	SHLQ         $2, R13  // w in bytes
	MOVQ         hw+64(FP), R14
	MOVQ         pw+72(FP), R15
	SHLQ         $2, R15 // pw in bytes
	MOVL         at0+80(FP), R12
	MOVBQZX      relu+84(FP), AX
	DECQ         AX
	KMOVW        AX, K0 // 0 with relu: windows pass where y > 0; else all
	MOVQ         R14, CX
	ANDQ         $15, CX
	MOVQ         $1, AX
	SHLQ         CX, AX
	DECQ         AX
	KMOVW        AX, K4 // a plane's last hw mod 16 values
	VPXORD       Z14, Z14, Z14 // 0
	VMOVDQU32    pool2pLanes<>+0(SB), Z21  // 0-15
	VMOVDQU32    pool2pLanes<>+64(SB), Z22 // 16-31
	VPADDD       Z16, Z21, Z23 // w + 0-15
	VPADDD       Z16, Z22, Z24 // w + 16-31

gplane:
	TESTQ R11, R11
	JZ    gpdone
	MOVQ  R10, DI
	MOVQ  R14, DX

gzero:
	CMPQ    DX, $16
	JLT     gztail
	VMOVUPS Z14, (DI)
	ADDQ    $64, DI
	SUBQ    $16, DX
	JMP     gzero

gztail:
	TESTQ   DX, DX
	JZ      gchunks
	VMOVUPS Z14, K4, (DI)

gchunks:
	MOVQ plan+32(FP), CX
	MOVQ chunks+40(FP), R9

gchunk:
	MOVL         388(CX), AX // k0
	KMOVW        400(CX), K6
	VMOVUPS.Z    (SI)(AX*4), K6, Z0
	VMOVDQU32.Z  (BX)(AX*4), K6, Z1
	VMOVUPS.Z    (R8)(AX*4), K6, Z2
	VCMPPS       $0x1e, Z14, Z2, K6, K1 // y > 0
	KANDW        K6, K0, K7
	KORW         K7, K1, K1
	VMOVAPS.Z    Z0, K1, Z0 // the gradients that pass
	MOVL         384(CX), AX // s
	LEAQ         (R10)(AX*4), DI
	LEAQ         (DI)(R13*1), DX
	ADDL         R12, AX
	VPBROADCASTD AX, Z3
	VPSUBD       Z3, Z1, Z1 // rel: arg - (at0 + s)
	POOL2P_SPAN(128, Z21, 392, (DI))
	POOL2P_SPAN(192, Z22, 394, 64(DI))
	POOL2P_SPAN(256, Z23, 396, (DX))
	POOL2P_SPAN(320, Z24, 398, 64(DX))
	ADDQ         $448, CX
	DECQ         R9
	JNZ          gchunk
	LEAQ         (R10)(R14*4), R10
	ADDQ         R15, SI
	ADDQ         R15, R8
	ADDQ         R15, BX
	ADDL         R14, R12
	DECQ         R11
	JMP          gplane

gpdone:
	VZEROUPPER
	RET
