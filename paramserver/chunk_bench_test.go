package paramserver

import (
	"fmt"
	"testing"
)

// BenchmarkPushPullChunk sweeps the data-plane chunk size over 256 KiB-4 MiB for one
// sync step (push a 16 MiB gradient to 2 shards, pull 16 MiB of values) over real
// loopback gRPC. BENCHMARKS.md records the sweep and the DefaultChunkBytes it picked.
func BenchmarkPushPullChunk(b *testing.B) {
	const n = 4 << 20 // 16 MiB of float32
	for _, kib := range []int{256, 512, 1024, 2048, 4096 - 64} {
		b.Run(fmt.Sprintf("chunk=%dKiB", kib), func(b *testing.B) { benchPushPull(b, n, kib<<10) })
	}
}
