package paramserver

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// refHalves are the finite non-negative halves, in increasing order, as float64
// values computed from the definition of IEEE 754 binary16 (not by fp16ToFloat32).
var refHalves = func() []float64 {
	out := make([]float64, 0x7c00)
	for h := range 0x7c00 {
		e, m := h>>10, float64(h&0x3ff)
		if e == 0 {
			out[h] = math.Ldexp(m/1024, -14)
		} else {
			out[h] = math.Ldexp(1+m/1024, e-15)
		}
	}
	return out
}()

// refToHalf is the reference conversion: the nearest half by search over every finite
// half, ties to the even bit pattern, |x| >= 65520 (the midpoint past the largest
// half) to Inf.
func refToHalf(f float32) uint16 {
	x := float64(f)
	var sign uint16
	if math.Signbit(x) {
		sign, x = 0x8000, -x
	}
	switch {
	case math.IsNaN(x):
		return 0x7e00
	case x >= 65520:
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(refHalves, x) // first half >= x
	if i < len(refHalves) && refHalves[i] == x {
		return sign | uint16(i)
	}
	lo, hi := i-1, i
	if hi == len(refHalves) {
		return sign | uint16(lo)
	}
	dl, dh := x-refHalves[lo], refHalves[hi]-x
	switch {
	case dl < dh:
		return sign | uint16(lo)
	case dh < dl:
		return sign | uint16(hi)
	case lo%2 == 0:
		return sign | uint16(lo)
	}
	return sign | uint16(hi)
}

// TestFP16DecodeMatchesDefinition decodes every one of the 65536 halves and compares
// it with the value the IEEE 754 definition gives (both signs, subnormals, Inf, NaN).
func TestFP16DecodeMatchesDefinition(t *testing.T) {
	for h := range 1 << 16 {
		got := float64(fp16ToFloat32(uint16(h)))
		mag := uint16(h) & 0x7fff
		var want float64
		switch {
		case mag > 0x7c00:
			if !math.IsNaN(got) {
				t.Fatalf("half %#04x decoded to %v, want NaN", h, got)
			}
			continue
		case mag == 0x7c00:
			want = math.Inf(1)
		default:
			want = refHalves[mag]
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got != want || math.Signbit(got) != math.Signbit(want) {
			t.Fatalf("half %#04x decoded to %v, want %v", h, got, want)
		}
		// Every half survives the round trip exactly (the NaNs keep their payload's top bits).
		if back := float32ToFP16(float32(got)); back != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, got, back)
		}
	}
}

// TestFP16EncodeMatchesReference checks float32ToFP16 against the search reference on
// the inputs where rounding is decided: every half, the exact midpoints between
// neighbouring halves (ties) and the float32 values just either side of each, the
// subnormal and overflow edges, and a million random float32 bit patterns.
func TestFP16EncodeMatchesReference(t *testing.T) {
	check := func(f float32) {
		t.Helper()
		got, want := float32ToFP16(f), refToHalf(f)
		if math.IsNaN(float64(f)) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 || got&0x8000 != uint16(math.Float32bits(f)>>16)&0x8000 {
				t.Fatalf("NaN %#08x encoded as %#04x, want a NaN of the same sign", math.Float32bits(f), got)
			}
			return
		}
		if got != want {
			t.Fatalf("%v (%#08x) encoded as %#04x (%v), want %#04x (%v)", f, math.Float32bits(f), got, fp16ToFloat32(got), want, fp16ToFloat32(want))
		}
	}
	for i, v := range refHalves {
		for _, s := range []float32{1, -1} {
			f := s * float32(v)
			check(f)
			check(math.Nextafter32(f, 0))
			check(math.Nextafter32(f, s*float32(math.Inf(1))))
			if i+1 < len(refHalves) {
				mid := s * float32((v+refHalves[i+1])/2) // exact in float32
				check(mid)
				check(math.Nextafter32(mid, 0))
				check(math.Nextafter32(mid, s*float32(math.Inf(1))))
			}
		}
	}
	for _, f := range []float32{0, float32(math.Copysign(0, -1)), 65504, 65519.99, 65520, 65536, math.MaxFloat32,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.SmallestNonzeroFloat32,
		0x1p-24, 0x1p-25, 0x1.000002p-25, 0x1.8p-25, 0x1p-26, 0x1p-14, 0x1.ffcp-15} {
		check(f)
		check(-f)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		check(math.Float32frombits(rng.Uint32()))
	}
}

// TestEncodeFP16Saturates: finite values beyond the half range go to ±65504 on the
// wire, Inf and NaN stay what they are, and the rest are float32ToFP16's.
func TestEncodeFP16Saturates(t *testing.T) {
	in := []float32{1e6, -70000, 65520, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1.5, 0x1p-24}
	b := make([]byte, 2*len(in))
	encodeFP16(b, in)
	out := make([]float32, len(in))
	decodeFP16(out, b)
	want := []float32{65504, -65504, 65504, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1.5, 0x1p-24}
	for i := range want {
		if out[i] != want[i] && !(math.IsNaN(float64(out[i])) && math.IsNaN(float64(want[i]))) {
			t.Errorf("value %d: %v went as %v, want %v", i, in[i], out[i], want[i])
		}
	}
}

// refTopK is the reference selection: indices sorted by magnitude (NaN largest),
// largest first, lower index first among equals; the first k, in increasing order.
func refTopK(vals []float32, k int) []uint32 {
	idx := make([]uint32, len(vals))
	for i := range idx {
		idx[i] = uint32(i)
	}
	mag := func(i uint32) float64 {
		if v := float64(vals[i]); !math.IsNaN(v) {
			return math.Abs(v)
		}
		return math.Inf(1) // NaN after +Inf: see the tie-break below
	}
	slices.SortStableFunc(idx, func(a, b uint32) int {
		na, nb := math.IsNaN(float64(vals[a])), math.IsNaN(float64(vals[b]))
		if na != nb {
			if na {
				return -1
			}
			return 1
		}
		return cmp.Compare(mag(b), mag(a))
	})
	out := slices.Clone(idx[:k])
	slices.Sort(out)
	return out
}

// TestTopKSelectsLargestMagnitudes: on random vectors with many ties, zeros, both
// signs, subnormals and some Inf, topKIndices returns exactly k indices, increasing,
// and the same set as the sorting reference; every value left out is no larger in
// magnitude than every value taken.
func TestTopKSelectsLargestMagnitudes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 400 {
		n := 1 + rng.IntN(3000)
		vals := make([]float32, n)
		for i := range vals {
			switch rng.IntN(6) {
			case 0:
				vals[i] = 0
			case 1:
				vals[i] = float32(rng.IntN(5) - 2) // ties
			case 2:
				vals[i] = math.Float32frombits(rng.Uint32() & 0x807fffff) // subnormal
			case 3:
				if rng.IntN(50) == 0 {
					vals[i] = float32(math.Inf(1 - 2*rng.IntN(2)))
				}
			default:
				vals[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(12)-6)))
			}
		}
		k := rng.IntN(n + 1)
		if trial%5 == 0 {
			k = topKCount(0.01, n)
		}
		got := topKIndices(vals, k, nil)
		if want := refTopK(vals, k); !slices.Equal(got, want) {
			t.Fatalf("trial %d (n %d, k %d): got %v, want %v", trial, n, k, got, want)
		}
		taken := make([]bool, n)
		minTaken := math.Inf(1)
		for _, i := range got {
			taken[i] = true
			minTaken = min(minTaken, math.Abs(float64(vals[i])))
		}
		for i, v := range vals {
			if !taken[i] && math.Abs(float64(v)) > minTaken {
				t.Fatalf("trial %d: |%v| at %d left out, but %v was taken", trial, v, i, minTaken)
			}
		}
	}
	if got := topKIndices([]float32{1, float32(math.NaN()), 3}, 1, nil); !slices.Equal(got, []uint32{1}) {
		t.Errorf("NaN is not taken first: %v", got)
	}
	for _, tc := range []struct {
		ratio float64
		n, k  int
	}{{0.01, 0, 0}, {0.01, 1, 1}, {0.01, 100, 1}, {0.01, 101, 2}, {0.01, 112_000, 1120}, {1, 7, 7}} {
		if got := topKCount(tc.ratio, tc.n); got != tc.k {
			t.Errorf("topKCount(%g, %d) = %d, want %d", tc.ratio, tc.n, got, tc.k)
		}
	}
}

// decodeBody decodes a prepared push body the way a shard does (through its chunks
// and newChunkDecoder), into n values.
func decodeBody(t *testing.T, b *pushBody, per, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	for i := range out {
		out[i] = 12345 // the decoder must overwrite (FLOAT32, FP16) or clear (SPARSE)
	}
	dec, err := newChunkDecoder(b.enc, out, true)
	if err != nil {
		t.Fatal(err)
	}
	wire := 0
	if err := b.send(per, func(c *cohortv1.Chunk) error {
		wire += len(c.GetData())
		return dec.add(c.GetOffset(), c.GetData())
	}); err != nil {
		t.Fatal(err)
	}
	if err := dec.done(); err != nil {
		t.Fatal(err)
	}
	if wire != b.wireBytes(per) {
		t.Fatalf("sent %d bytes, wireBytes says %d", wire, b.wireBytes(per))
	}
	return out
}

// TestErrorFeedbackConservesSum pushes random gradients through a compressing Client's
// encoder for many steps, with fp16 and top-k: at every accepted push, what was sent
// (decoded as a shard decodes it) plus the new residual equals the gradient plus the
// previous residual, bit for bit; a failed push leaves the residual as it was; an
// empty batch (0 samples) leaves it too; a new generation starts it from zero; top-k
// sends exactly ceil(1% of the range) values, the largest of gradient + residual.
func TestErrorFeedbackConservesSum(t *testing.T) {
	for _, comp := range []Compression{{TopK: 0.01, ErrorFeedback: true}, {FP16: true, ErrorFeedback: true}} {
		c := newTestClient(t, ClientConfig{Addresses: []string{"127.0.0.1:1", "127.0.0.1:2"}, JobID: "j", Generation: 1,
			TotalParams: 1001, ChunkBytes: 64, Compression: comp})
		rng := rand.New(rand.NewPCG(5, 6))
		per := c.chunk
		for shard, r := range c.Ranges() {
			n := int(r.Length)
			prev := make([]float32, n)
			grad := make([]float32, n)
			for step := range 60 {
				for i := range grad {
					grad[i] = float32(rng.NormFloat64()) * 1e-3
					if comp.FP16 && i%17 == 0 {
						grad[i] *= 1e-4 // around the half subnormals
					}
				}
				if step == 30 {
					c.SetMembership(uint64(10+shard), 0)
					clear(prev)
				}
				samples := int64(32)
				if step%10 == 9 {
					samples = 0
				}
				body, settle := c.preparePush(shard, grad, samples)
				sent := decodeBody(t, body, per, n)
				if samples == 0 {
					settle(true)
					if res := c.comp.shards[shard].residual; !slices.Equal(res, prev) {
						t.Fatalf("%+v step %d: an empty batch changed the residual", comp, step)
					}
					continue
				}
				if comp.TopK > 0 {
					acc := make([]float32, n)
					for i := range acc {
						acc[i] = grad[i] + prev[i]
					}
					want := refTopK(acc, topKCount(comp.TopK, n))
					if !slices.Equal(body.indices, want) {
						t.Fatalf("%+v step %d: sent %v, want the largest %v", comp, step, body.indices, want)
					}
				}
				if step%7 == 3 {
					settle(false) // refused: the residual stays
					if res := c.comp.shards[shard].residual; step > 0 && !slices.Equal(res, prev) {
						t.Fatalf("%+v step %d: a failed push changed the residual", comp, step)
					}
					continue
				}
				settle(true)
				res := c.comp.shards[shard].residual
				for i := range grad {
					if lhs, rhs := sent[i]+res[i], grad[i]+prev[i]; lhs != rhs {
						t.Fatalf("%+v shard %d step %d value %d: sent %v + residual %v = %v, want gradient %v + previous residual %v = %v",
							comp, shard, step, i, sent[i], res[i], lhs, grad[i], prev[i], rhs)
					}
				}
				copy(prev, res)
			}
		}
		tr := c.Traffic()
		if tr.PushBytes <= 0 || tr.PushBytes*2 > tr.PushDenseBytes+4*int64(len(c.ranges)) {
			t.Errorf("%+v: traffic %+v: compressed pushes should be at most half their float32 size", comp, tr)
		}
	}
}

// TestCompressionValidate refuses the combinations a spec cannot ask for.
func TestCompressionValidate(t *testing.T) {
	for _, tc := range []struct {
		c   Compression
		msg string
	}{
		{Compression{TopK: -1}, "topK"},
		{Compression{TopK: 2}, "topK"},
		{Compression{TopK: math.NaN()}, "topK"},
		{Compression{FP16: true, TopK: 0.1}, "cannot be combined"},
		{Compression{ErrorFeedback: true}, "errorFeedback"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: %v, want an error about %s", tc.c, err, tc.msg)
		}
		if _, err := NewClient(ClientConfig{Addresses: []string{"x:1"}, JobID: "j", Compression: tc.c}); err == nil {
			t.Errorf("%+v: NewClient accepted it", tc.c)
		}
	}
}

// sparseChunk builds SPARSE chunk data with an explicit count (which may lie).
func sparseChunk(count uint32, idx []uint32, vals []float32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, count)
	for _, i := range idx {
		b = binary.LittleEndian.AppendUint32(b, i)
	}
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// TestSparseDecoderRefusals: each malformed sparse chunk is refused with an error that
// names the field and the problem, before any value is written.
func TestSparseDecoderRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset uint64
		data   []byte
		msg    string
	}{
		{"no count", 0, []byte{1, 0}, "no entry count"},
		{"truncated", 0, sparseChunk(2, []uint32{1, 2}, []float32{1})[:15], "needs 20 bytes"},
		{"oversized count", 0, sparseChunk(math.MaxUint32, []uint32{1}, []float32{1}), "count 4294967295 needs"},
		{"count beyond the range", 0, sparseChunk(9, make([]uint32, 9), make([]float32, 9)), "exceeds the 8 values left"},
		{"index out of range", 0, sparseChunk(1, []uint32{8}, []float32{1}), "index 8 is outside the range length 8"},
		{"index repeated", 0, sparseChunk(2, []uint32{3, 3}, []float32{1, 2}), "index 3 after index 3"},
		{"index decreasing", 0, sparseChunk(2, []uint32{4, 2}, []float32{1, 2}), "indices must increase"},
		{"offset skips", 5, sparseChunk(1, []uint32{1}, []float32{1}), "chunk.offset 5, want 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]float32, 8)
			dec, err := newChunkDecoder(cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE, dst, true)
			if err != nil {
				t.Fatal(err)
			}
			err = dec.add(tc.offset, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "chunk.") {
				t.Fatalf("error %v, want one naming chunk.* and %q", err, tc.msg)
			}
		})
	}
	if _, err := newChunkDecoder(cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE, nil, false); err == nil {
		t.Error("a pull accepted sparse values")
	}
	if _, err := newChunkDecoder(cohortv1.TensorEncoding(77), nil, true); err == nil || !strings.Contains(err.Error(), "77") {
		t.Errorf("unknown encoding: %v", err)
	}
}

// FuzzSparseDecoder feeds two arbitrary sparse chunks (outside input) into a range of
// n values: the decoder must never panic, and whatever it accepts must equal the
// reference reading of the chunks (count, then indices, then values; indices in range
// and strictly increasing; offsets counting entries), every other value 0.
func FuzzSparseDecoder(f *testing.F) {
	f.Add(uint8(8), uint64(0), sparseChunk(2, []uint32{1, 5}, []float32{1.5, -2}), uint64(2), sparseChunk(1, []uint32{7}, []float32{3}))
	f.Add(uint8(8), uint64(0), sparseChunk(math.MaxUint32, []uint32{1}, []float32{1}), uint64(0), []byte(nil))
	f.Add(uint8(4), uint64(0), sparseChunk(1, []uint32{9}, []float32{1}), uint64(1), sparseChunk(0, nil, nil))
	f.Add(uint8(4), uint64(0), sparseChunk(2, []uint32{1, 2}, []float32{1})[:13], uint64(0), []byte{})
	f.Add(uint8(0), uint64(0), sparseChunk(0, nil, nil), uint64(0), sparseChunk(0, nil, nil))
	f.Fuzz(func(t *testing.T, n uint8, off1 uint64, d1 []byte, off2 uint64, d2 []byte) {
		dst := make([]float32, n)
		for i := range dst {
			dst[i] = 7
		}
		dec, err := newChunkDecoder(cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE, dst, true)
		if err != nil {
			t.Fatal(err)
		}
		if err = dec.add(off1, d1); err == nil {
			if err = dec.add(off2, d2); err == nil {
				err = dec.done()
			}
		}
		if err != nil {
			return
		}
		want := make([]float32, n)
		last, entries := int64(-1), uint64(0)
		for _, c := range []struct {
			off  uint64
			data []byte
		}{{off1, d1}, {off2, d2}} {
			if c.off != entries || len(c.data) < 4 {
				t.Fatalf("accepted a chunk at offset %d (want %d) of %d bytes", c.off, entries, len(c.data))
			}
			cnt := int(binary.LittleEndian.Uint32(c.data))
			if len(c.data) != 4+8*cnt {
				t.Fatalf("accepted count %d in %d bytes", cnt, len(c.data))
			}
			for j := range cnt {
				i := int64(binary.LittleEndian.Uint32(c.data[4+4*j:]))
				if i <= last || i >= int64(n) {
					t.Fatalf("accepted index %d after %d in a range of %d", i, last, n)
				}
				want[i] = math.Float32frombits(binary.LittleEndian.Uint32(c.data[4+4*cnt+4*j:]))
				last = i
			}
			entries += uint64(cnt)
		}
		for i := range want {
			if math.Float32bits(dst[i]) != math.Float32bits(want[i]) {
				t.Fatalf("value %d decoded as %v, want %v", i, dst[i], want[i])
			}
		}
	})
}

// FuzzFP16Decoder feeds two arbitrary fp16 chunks into a range of n values: never a
// panic, and success means the chunks were contiguous, filled the range exactly and
// decode to the reference values.
func FuzzFP16Decoder(f *testing.F) {
	f.Add(uint8(3), uint64(0), []byte{0, 60, 0, 188}, uint64(2), []byte{1, 0})
	f.Add(uint8(2), uint64(0), []byte{0, 124, 0}, uint64(1), []byte{})
	f.Add(uint8(1), uint64(math.MaxUint64), []byte{0, 126}, uint64(0), []byte(nil))
	f.Fuzz(func(t *testing.T, n uint8, off1 uint64, d1 []byte, off2 uint64, d2 []byte) {
		dst := make([]float32, n)
		dec, err := newChunkDecoder(cohortv1.TensorEncoding_TENSOR_ENCODING_FP16, dst, false)
		if err != nil {
			t.Fatal(err)
		}
		if err = dec.add(off1, d1); err == nil {
			if err = dec.add(off2, d2); err == nil {
				err = dec.done()
			}
		}
		if err != nil {
			return
		}
		if len(d1)+len(d2) != 2*int(n) || off1 != 0 || off2 != uint64(len(d1)/2) || len(d1)%2 != 0 {
			t.Fatalf("accepted n=%d off1=%d len1=%d off2=%d len2=%d", n, off1, len(d1), off2, len(d2))
		}
		all := append(append([]byte(nil), d1...), d2...)
		for i := range dst {
			h := binary.LittleEndian.Uint16(all[2*i:])
			want := refHalfValue(h)
			if got := float64(dst[i]); got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
				t.Fatalf("half %#04x decoded as %v, want %v", h, got, want)
			}
		}
	})
}

// refHalfValue is a half's value by the definition (refHalves), with sign, Inf and NaN.
func refHalfValue(h uint16) float64 {
	mag := h & 0x7fff
	v := math.NaN()
	switch {
	case mag < 0x7c00:
		v = refHalves[mag]
	case mag == 0x7c00:
		v = math.Inf(1)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

// TestCompressedPushesApplyAsDecoded runs each compression end to end over real gRPC
// (sessions and per-call RPCs) against 2 loopback shards with sgd, and a second,
// uncompressed job that pushes, as float32, exactly the values the compressed worker's
// pushes decode to (fp16: the rounded gradient; top-k: the k largest of gradient plus
// residual, zeros elsewhere). The two jobs' parameters must stay bit-identical, and
// fp16 pulls must return the shard's values rounded to half.
func TestCompressedPushesApplyAsDecoded(t *testing.T) {
	const n = 5000
	for _, comp := range []Compression{{FP16: true}, {TopK: 0.01, ErrorFeedback: true}, {TopK: 0.05}} {
		for _, noSessions := range []bool{false, true} {
			srvs := make([]*Server, 2)
			addrs := make([]string, 2)
			for i := range srvs {
				srvs[i], addrs[i] = startServer(t, 4096)
			}
			opt := OptimizerConfig{Name: OptimizerSGD, LearningRate: 0.5}
			for _, job := range []string{"comp", "ref"} {
				addShards(t, srvs, ShardConfig{JobID: job, Generation: 1, Workers: 1, Optimizer: opt})
			}
			ctx := testCtx(t)
			cc := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "comp", Generation: 1, TotalParams: n, ChunkBytes: 1024, NoSessions: noSessions, Compression: comp})
			rc := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "ref", Generation: 1, TotalParams: n, ChunkBytes: 1024, NoSessions: noSessions})
			init := initialValues(n)
			for _, c := range []*Client{cc, rc} {
				if err := c.Init(ctx, init); err != nil {
					t.Fatal(err)
				}
			}
			params, exact := make([]float32, n), make([]float32, n)
			grad, decoded := make([]float32, n), make([]float32, n)
			for step := range int64(8) {
				if _, err := cc.Pull(ctx, step, params); err != nil {
					t.Fatal(err)
				}
				if _, err := rc.Pull(ctx, step, exact); err != nil {
					t.Fatal(err)
				}
				for i := range params {
					want := exact[i]
					if comp.FP16 {
						want = fp16ToFloat32(float32ToFP16(exact[i]))
					}
					if params[i] != want {
						t.Fatalf("%+v step %d: pulled %v at %d, want %v (shard value %v)", comp, step, params[i], i, want, exact[i])
					}
				}
				workerGrad(0, exact, grad)
				// What the compressed pushes will carry, shard by shard.
				for shard, r := range cc.Ranges() {
					g := grad[r.Offset:r.End()]
					body, settle := cc.preparePush(shard, g, 1)
					copy(decoded[r.Offset:r.End()], decodeBody(t, body, cc.chunk, len(g)))
					settle(false) // only looked at: the push below encodes again
				}
				if err := cc.Push(ctx, step, grad, 1); err != nil {
					t.Fatal(err)
				}
				if err := rc.Push(ctx, step, decoded, 1); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cc.Pull(ctx, 8, params); err != nil {
				t.Fatal(err)
			}
			// Compare the shards' float32 values through the uncompressed client.
			got := make([]float32, n)
			plain := newTestClient(t, ClientConfig{Addresses: addrs, JobID: "comp", Generation: 1, TotalParams: n})
			if _, err := plain.Pull(ctx, 8, got); err != nil {
				t.Fatal(err)
			}
			if _, err := rc.Pull(ctx, 8, exact); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, exact) {
				t.Fatalf("%+v (sessions off: %v): compressed job's parameters differ from the decoded-gradient reference", comp, noSessions)
			}
			if slices.Equal(got, init) {
				t.Fatalf("%+v: nothing was applied", comp)
			}
			tr := cc.Traffic()
			wantPull := int64(4 * n * 9)
			if comp.FP16 {
				wantPull /= 2
			}
			if tr.PullBytes != wantPull || tr.PullDenseBytes != 4*n*9 || tr.PushDenseBytes != 4*n*8 {
				t.Errorf("%+v: traffic %+v, want pulls %d wire of %d dense, pushes of %d dense", comp, tr, wantPull, 4*n*9, 4*n*8)
			}
		}
	}
}

// TestPullRefusesSparseAndUnknownEncodings: a pull may ask for float32 or fp16 only.
func TestPullRefusesSparseAndUnknownEncodings(t *testing.T) {
	srv, addr := startServer(t, 0)
	addShards(t, []*Server{srv}, ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: OptimizerSGD, LearningRate: 0.1}})
	ctx := testCtx(t)
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: 4})
	if err := c.Init(ctx, []float32{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	stub := rawStub(t, addr)
	for _, enc := range []cohortv1.TensorEncoding{cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE, 9} {
		stream, err := stub.Pull(ctx, &cohortv1.PullRequest{Ref: &cohortv1.ShardRef{JobId: "j", Generation: 1}, Encoding: enc})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, err, 3, "pull_request.encoding")
	}
	// And a push in an unknown encoding names its field.
	ps, err := stub.Push(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = ps.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{
		Ref: &cohortv1.ShardRef{JobId: "j", Generation: 1}, NumSamples: 1, Encoding: 42}}})
	_, err = finish(ps, err)
	wantCode(t, err, 3, "push_header.encoding")
	_ = context.Background
}

// TestErrorFeedbackAcrossGenerations runs top-k with error feedback against a real
// shard through a membership change: a push refused for its stale generation keeps the
// residual; after the client moves to the new generation the residual starts from zero,
// so the shard applies exactly the top-k of the new gradient alone (sgd, lr 1: the
// parameters drop by exactly the values sent).
func TestErrorFeedbackAcrossGenerations(t *testing.T) {
	const n = 100
	srv, addr := startServer(t, 0)
	addShards(t, []*Server{srv}, ShardConfig{JobID: "j", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: OptimizerSGD, LearningRate: 1}})
	ctx := testCtx(t)
	c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 1, TotalParams: n,
		Compression: Compression{TopK: 0.1, ErrorFeedback: true}})
	if err := c.Init(ctx, initialValues(n)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	grad := func() []float32 {
		g := make([]float32, n)
		for i := range g {
			g[i] = float32(rng.NormFloat64())
		}
		return g
	}
	if err := c.Push(ctx, 0, grad(), 8); err != nil {
		t.Fatal(err)
	}
	residual := slices.Clone(c.comp.shards[0].residual)
	if slices.Equal(residual, make([]float32, n)) {
		t.Fatal("no residual after a top-k push")
	}
	if err := srv.SetGeneration("j", 0, 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, 1, grad(), 8); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("push at the old generation: %v, want ErrStaleGeneration", err)
	}
	if !slices.Equal(c.comp.shards[0].residual, residual) {
		t.Fatal("a refused push changed the residual")
	}
	c.SetMembership(2, 0)
	before := make([]float32, n)
	if _, err := c.Pull(ctx, 1, before); err != nil {
		t.Fatal(err)
	}
	g := grad()
	if err := c.Push(ctx, 1, g, 8); err != nil {
		t.Fatal(err)
	}
	after := make([]float32, n)
	if _, err := c.Pull(ctx, 2, after); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(before)
	for _, i := range refTopK(g, topKCount(0.1, n)) {
		want[i] = before[i] - g[i]
	}
	if !slices.Equal(after, want) {
		t.Fatalf("after the new generation's first push the shard holds %v, want the top-k of its gradient alone applied: %v", after, want)
	}
}
