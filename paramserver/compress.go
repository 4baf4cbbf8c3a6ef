package paramserver

import (
	"encoding/binary"
	"fmt"
	"math"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Gradient compression
//
// A job's training.compression makes its workers send tensors in a smaller form
// (cohortv1.TensorEncoding); the shards decode them and apply the optimizer exactly as
// for float32 values, so the optimizer state and the checkpoints stay float32.
//
//   - FP16: pushes and pulls carry IEEE 754 binary16 values (2 bytes instead of 4),
//     rounded to nearest, ties to even; subnormals are kept, values beyond the half
//     range (|x| >= 65520) become ±Inf and NaN stays NaN, as the IEEE conversion does.
//   - SPARSE (top-k): a push carries only the k values of largest magnitude of each
//     shard's range (k = ceil(topK × range length)) as indices and float32 values;
//     the shard reads the others as 0. Pulls stay float32.
//
// With error feedback the worker keeps, per shard, what compression left out of each
// push (its residual: the input minus what was sent) and adds it to the next push's
// gradient, so no part of a gradient is lost, only delayed (client side:
// compress_client.go).

// Compression is a job's gradient compression (spec training.compression).
type Compression struct {
	// FP16 sends pushes and pulls as IEEE half-precision values.
	FP16 bool
	// TopK, in (0, 1], sends only that fraction of each shard's gradient values (those
	// of largest magnitude) on pushes; 0 is off.
	TopK float64
	// ErrorFeedback carries what compression left out of a push into the next one.
	ErrorFeedback bool
}

// Validate checks c: at most one of FP16 and TopK, TopK in (0, 1], and error feedback
// only with one of them.
func (c Compression) Validate() error {
	switch {
	case math.IsNaN(c.TopK) || c.TopK < 0 || c.TopK > 1:
		return fmt.Errorf("%w: compression topK %g must be in (0, 1]", ErrInvalidConfig, c.TopK)
	case c.FP16 && c.TopK > 0:
		return fmt.Errorf("%w: compression fp16 and topK cannot be combined", ErrInvalidConfig)
	case c.ErrorFeedback && !c.FP16 && c.TopK == 0:
		return fmt.Errorf("%w: compression errorFeedback needs fp16 or topK", ErrInvalidConfig)
	}
	return nil
}

// pushEncoding is the encoding of c's pushes.
func (c Compression) pushEncoding() cohortv1.TensorEncoding {
	switch {
	case c.FP16:
		return cohortv1.TensorEncoding_TENSOR_ENCODING_FP16
	case c.TopK > 0:
		return cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE
	}
	return cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32
}

// pullEncoding is the encoding c asks pulls in.
func (c Compression) pullEncoding() cohortv1.TensorEncoding {
	if c.FP16 {
		return cohortv1.TensorEncoding_TENSOR_ENCODING_FP16
	}
	return cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32
}

// topKCount is the number of values a top-k push of n values sends: ceil(ratio × n),
// at least 1 when n > 0 and at most n.
func topKCount(ratio float64, n int) int {
	if n == 0 {
		return 0
	}
	k := int(math.Ceil(ratio * float64(n)))
	return min(max(k, 1), n)
}

// float32ToFP16 converts f to the nearest IEEE 754 binary16 value (ties to even).
// Values too large for a half become ±Inf, too small ±0 or a subnormal; NaN stays a
// (quiet) NaN with its sign and the top bits of its payload. (The branch-light method
// of F. Giesen's float_to_half_fast3_rtne; TestFP16EncodeMatchesReference checks it
// against a search over every half.)
func float32ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	b &= 0x7fffffff
	switch {
	case b >= 0x47800000: // |f| >= 2^16, Inf or NaN
		if b > 0x7f800000 {
			return sign | 0x7e00 | uint16(b>>13)&0x3ff
		}
		return sign | 0x7c00
	case b < 0x38800000: // |f| < 2^-14, the smallest normal half: a subnormal or zero
		// Adding 0.5 leaves the value's bits below 2^-24 to the float32 addition's
		// own round to nearest even; what remains above 0.5 is the half's significand.
		v := math.Float32frombits(b) + 0.5
		return sign | uint16(math.Float32bits(v)-0x3f000000)
	}
	// A normal half (or a carry up to Inf): rebias the exponent from 127 to 15 and
	// round the 13 bits dropped to nearest even.
	b += 0xc8000fff + (b>>13)&1
	return sign | uint16(b>>13)
}

// fp16ToFloat32 converts an IEEE 754 binary16 value to float32 (exactly: every half
// is a float32).
func fp16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: normalise into a float32 normal.
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// decodeFP16 reads len(dst) little-endian halves from src.
func decodeFP16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = fp16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// topKIndices appends to idx (reset) the indices of the k values of vals with the
// largest magnitude, in increasing order, and returns it. Among values of equal
// magnitude at the threshold the lower indices are taken; NaN counts as larger than
// any number. It runs in O(n): a radix select on the magnitudes' bits (non-negative
// float32 bit patterns order as their values), then one pass to collect.
func topKIndices(vals []float32, k int, idx []uint32) []uint32 {
	idx = idx[:0]
	if k <= 0 {
		return idx
	}
	if k >= len(vals) {
		for i := range vals {
			idx = append(idx, uint32(i))
		}
		return idx
	}
	var prefix, mask uint32
	need := k // how many of the keys matching prefix are still to be taken
	for shift := 24; shift >= 0; shift -= 8 {
		var hist [256]int
		for _, v := range vals {
			if key := math.Float32bits(v) & 0x7fffffff; key&mask == prefix {
				hist[key>>shift&0xff]++
			}
		}
		for b := 255; b >= 0; b-- {
			if hist[b] >= need {
				prefix |= uint32(b) << shift
				break
			}
			need -= hist[b]
		}
		mask |= 0xff << shift
	}
	// prefix is now the k-th largest key; need is how many keys equal to it to take.
	for i, v := range vals {
		key := math.Float32bits(v) & 0x7fffffff
		if key > prefix {
			idx = append(idx, uint32(i))
		} else if key == prefix && need > 0 {
			idx = append(idx, uint32(i))
			need--
		}
	}
	return idx
}

// appendSparseChunk appends the SPARSE chunk data of the entries (indices[i],
// values[i]) to dst.
func appendSparseChunk(dst []byte, indices []uint32, values []float32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(indices)))
	for _, i := range indices {
		dst = binary.LittleEndian.AppendUint32(dst, i)
	}
	for _, v := range values {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// chunkDecoder places the chunks of one tensor transfer, of one encoding, into a
// float32 destination. Implementations decode outside input: they never panic, never
// write outside the destination and allocate nothing.
type chunkDecoder interface {
	// add decodes one chunk (its offset and data) into place.
	add(offset uint64, data []byte) error
	// done reports an error unless the transfer is complete.
	done() error
}

// newChunkDecoder returns the decoder of enc into dst. allowSparse is false for
// transfers that must be dense (pulls).
func newChunkDecoder(enc cohortv1.TensorEncoding, dst []float32, allowSparse bool) (chunkDecoder, error) {
	switch enc {
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32:
		return &assembler{dst: dst}, nil
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FP16:
		return &assembler{dst: dst, fp16: true}, nil
	case cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE:
		if allowSparse {
			clear(dst) // values the push does not name are 0
			return &sparseAssembler{dst: dst, last: -1}, nil
		}
	}
	return nil, fmt.Errorf("%w: encoding %v (%d) is not supported here", ErrInvalidArgument, enc, int32(enc))
}

// sparseAssembler scatters SPARSE chunks into dst (zeroed by newChunkDecoder): offset
// counts the entries of earlier chunks; indices must be in the range and strictly
// increasing over the whole push, so each value is set at most once.
type sparseAssembler struct {
	dst     []float32
	entries uint64 // entries received so far
	last    int64  // the last index set (-1: none)
}

func (a *sparseAssembler) add(offset uint64, data []byte) error {
	if offset != a.entries {
		return fmt.Errorf("%w: chunk.offset %d, want %d (the entries of earlier sparse chunks)", ErrInvalidArgument, offset, a.entries)
	}
	if len(data) < 4 {
		return fmt.Errorf("%w: chunk.data: sparse chunk of %d bytes has no entry count", ErrInvalidArgument, len(data))
	}
	count := uint64(binary.LittleEndian.Uint32(data))
	// Check the count against what is there and what can fit before touching anything.
	if want := 4 + 8*count; uint64(len(data)) != want {
		return fmt.Errorf("%w: chunk.data: sparse count %d needs %d bytes, chunk has %d", ErrInvalidArgument, count, want, len(data))
	}
	if room := uint64(len(a.dst)) - uint64(a.last+1); count > room {
		return fmt.Errorf("%w: chunk.data: sparse count %d exceeds the %d values left in the range of %d after index %d", ErrInvalidArgument, count, room, len(a.dst), a.last)
	}
	idx, vals := data[4:4+4*count], data[4+4*count:]
	for j := range count {
		i := int64(binary.LittleEndian.Uint32(idx[4*j:]))
		switch {
		case i >= int64(len(a.dst)):
			return fmt.Errorf("%w: chunk.data: sparse index %d is outside the range length %d", ErrInvalidArgument, i, len(a.dst))
		case i <= a.last:
			return fmt.Errorf("%w: chunk.data: sparse index %d after index %d (indices must increase)", ErrInvalidArgument, i, a.last)
		}
		a.dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(vals[4*j:]))
		a.last = i
	}
	a.entries += count
	return nil
}

func (a *sparseAssembler) done() error { return nil }

// pullChunkValues checks a pull's requested encoding and returns how many values each of
// its chunks carries, so that a chunk's bytes stay about chunkBytes.
func pullChunkValues(enc cohortv1.TensorEncoding, chunkBytes int) (int, error) {
	switch enc {
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32:
		return chunkValues(chunkBytes), nil
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FP16:
		return max(chunkBytes/2, 1), nil
	}
	return 0, fmt.Errorf("%w: pull_request.encoding %v (%d): pulls are float32 or fp16", ErrInvalidArgument, enc, int32(enc))
}

// encodeValues returns vals in enc (FLOAT32 or FP16) for a pull chunk; the result
// aliases vals (float32 on little-endian hosts) or scratch.
func encodeValues(enc cohortv1.TensorEncoding, vals []float32, scratch *[]byte) []byte {
	if enc != cohortv1.TensorEncoding_TENSOR_ENCODING_FP16 {
		return float32Bytes(vals, scratch)
	}
	n := 2 * len(vals)
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	b := (*scratch)[:n]
	encodeFP16(b, vals)
	return b
}
