package cpupeak

import "golang.org/x/sys/cpu"

//go:noescape
func fmaLoopAVX512(n int)

//go:noescape
func fmaLoopAVX2(n int)

// fmaLoop returns a loop of independent float32 FMAs at the widest width this CPU
// runs, and the FLOPs of one iteration; nil where it has no FMA.
func fmaLoop() (func(n int), float64) {
	switch {
	case cpu.X86.HasAVX512F:
		return fmaLoopAVX512, 12 * 16 * 2
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return fmaLoopAVX2, 12 * 8 * 2
	}
	return nil, 0
}
