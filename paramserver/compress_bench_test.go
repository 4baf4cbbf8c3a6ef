package paramserver

import (
	"math/rand/v2"
	"testing"
)

// benchValues is n gradient-like values (normal, scaled to 1e-3).
func benchValues(n int) []float32 {
	rng := rand.New(rand.NewPCG(7, 8))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 1e-3)
	}
	return v
}

// BenchmarkFP16Encode converts one shard of fashion-cnn's gradient (112,517 values) to
// fp16 on the wire; BenchmarkFP16Decode converts it back.
func BenchmarkFP16Encode(b *testing.B) {
	v := benchValues(112_517)
	dst := make([]byte, 2*len(v))
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		encodeFP16(dst, v)
	}
}

func BenchmarkFP16Decode(b *testing.B) {
	v := benchValues(112_517)
	src := make([]byte, 2*len(v))
	encodeFP16(src, v)
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		decodeFP16(v, src)
	}
}

// BenchmarkTopK selects the 1% largest magnitudes of one fashion-cnn shard's gradient.
func BenchmarkTopK(b *testing.B) {
	v := benchValues(112_517)
	k := topKCount(0.01, len(v))
	idx := make([]uint32, 0, k)
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		idx = topKIndices(v, k, idx)
	}
}
