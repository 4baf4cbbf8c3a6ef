package model

import (
	"math"
	"unsafe"
)

// pool2ArgPlanesAVX512 is the recording 2x2 max-pool of planes planes after the
// chunks of plan (pool2planes_amd64.s).
//
//go:noescape
func pool2ArgPlanesAVX512(in, y *float32, arg *int32, plan *pool2Chunk, chunks, planes, w, hw, pw int, at0 int32, floor float32)

// pool2GradPlanesAVX512 is the 2x2 pool's gradient over planes planes after the chunks
// of plan (pool2planes_amd64.s).
//
//go:noescape
func pool2GradPlanesAVX512(dy, y *float32, arg *int32, dz *float32, plan *pool2Chunk, chunks, planes, w, hw, pw int, at0 int32, relu bool)

// hasPool2PlanesAVX512 tells whether pool2ArgPlanes and pool2GradPlanes run the
// assembly (with hasPoolAVX512; tests switch it off to compare with the row kernels).
var hasPool2PlanesAVX512 = true

// The assembly reads a pool2Chunk's fields at fixed offsets.
var _ = [1]struct{}{}[unsafe.Offsetof(pool2Chunk{}.s)-384+unsafe.Offsetof(pool2Chunk{}.sm)-400+unsafe.Sizeof(pool2Chunk{})-448]

// pool2ArgPlanes computes planes planes of a recording float32 2x2 pool, plan being
// pool2Plan(w, oh, ow) of planes of hw values (width w) pooled to pw = oh·ow outputs,
// plane p's indices from at0 + p·hw: the values and indices of conv.go's pool2, bit
// for bit. It reports whether it did (false: no AVX-512, or no plan).
func pool2ArgPlanes(in, y []float32, arg []int32, plan []pool2Chunk, planes, w, hw, pw int, at0 int32, relu bool) bool {
	if !hasPoolAVX512 || !hasPool2PlanesAVX512 || len(plan) == 0 || planes <= 0 {
		return false
	}
	_, _, _ = in[planes*hw-1], y[planes*pw-1], arg[planes*pw-1]
	floor := float32(math.Inf(-1))
	if relu {
		floor = 0
	}
	pool2ArgPlanesAVX512(&in[0], &y[0], &arg[0], &plan[0], len(plan), planes, w, hw, pw, at0, floor)
	return true
}

// pool2GradPlanes writes planes planes of hw values of a float32 2x2 pool's gradient
// dz (plan as for pool2ArgPlanes): every value, the same as maxPoolGradOp.route's,
// bit for bit. It reports whether it did.
func pool2GradPlanes(dz, dy, y []float32, arg []int32, plan []pool2Chunk, planes, w, hw, pw int, at0 int32, relu bool) bool {
	if !hasPoolAVX512 || !hasPool2PlanesAVX512 || len(plan) == 0 || planes <= 0 {
		return false
	}
	_, _, _, _ = dz[planes*hw-1], dy[planes*pw-1], y[planes*pw-1], arg[planes*pw-1]
	pool2GradPlanesAVX512(&dy[0], &y[0], &arg[0], &dz[0], &plan[0], len(plan), planes, w, hw, pw, at0, relu)
	return true
}
