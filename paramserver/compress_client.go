package paramserver

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Traffic is the tensor bytes a Client moved since it was created: the chunk data of
// its accepted pushes and completed pulls as they crossed the wire (after
// compression), and the same tensors as float32 (before compression). Retried
// attempts are not counted; protocol framing is not included.
type Traffic struct {
	PushBytes, PushDenseBytes int64
	PullBytes, PullDenseBytes int64
}

// Sub returns t minus u, field by field (the traffic between two readings).
func (t Traffic) Sub(u Traffic) Traffic {
	return Traffic{
		PushBytes: t.PushBytes - u.PushBytes, PushDenseBytes: t.PushDenseBytes - u.PushDenseBytes,
		PullBytes: t.PullBytes - u.PullBytes, PullDenseBytes: t.PullDenseBytes - u.PullDenseBytes,
	}
}

type trafficCounters struct {
	push, pushDense, pull, pullDense atomic.Int64
}

// Traffic returns the bytes the Client has pushed and pulled so far.
func (c *Client) Traffic() Traffic {
	return Traffic{
		PushBytes: c.traffic.push.Load(), PushDenseBytes: c.traffic.pushDense.Load(),
		PullBytes: c.traffic.pull.Load(), PullDenseBytes: c.traffic.pullDense.Load(),
	}
}

// countPull records a completed pull of n values.
func (c *Client) countPull(n uint64) {
	per := int64(4)
	if c.pullEncoding() == cohortv1.TensorEncoding_TENSOR_ENCODING_FP16 {
		per = 2
	}
	c.traffic.pull.Add(per * int64(n))
	c.traffic.pullDense.Add(4 * int64(n))
}

// pullEncoding is the encoding the Client asks its pulls in.
func (c *Client) pullEncoding() cohortv1.TensorEncoding {
	if c.comp == nil {
		return cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32
	}
	return c.comp.cfg.pullEncoding()
}

// clientCompression is a Client's push compression: one compressor per shard.
type clientCompression struct {
	cfg    Compression
	shards []*shardCompressor
}

// newClientCompression returns nil when cfg compresses nothing.
func newClientCompression(cfg Compression, shards int) (*clientCompression, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.pushEncoding() == cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32 {
		return nil, nil
	}
	cc := &clientCompression{cfg: cfg}
	for range shards {
		cc.shards = append(cc.shards, &shardCompressor{})
	}
	return cc, nil
}

// shardCompressor is one shard's push encoder and error-feedback state. Its mutex is
// held from the encoding of a push until the push is settled, so pushes to one shard
// through a compressing Client go one at a time.
type shardCompressor struct {
	mu sync.Mutex
	// gen is the membership generation residual belongs to. A new generation starts
	// from a zero residual: the shards discard the step in progress, ranks and data
	// shards are renumbered, and the residual's gradient was computed for the old ones.
	// A new Client (a resumed task) starts from zero too.
	gen      uint64
	residual []float32 // what earlier pushes left out (nil: all zero)
	pending  []float32 // the residual once the push in flight is accepted
	body     pushBody
}

// preparePush encodes shard i's part of a push, grad (the shard's range of the
// gradient, the mean over numSamples rows). With error feedback the shard's residual
// is added first, and what the encoding leaves out becomes the residual to be. The
// caller must call settle exactly once with whether the shard accepted the push: an
// accepted push installs the new residual, a failed one keeps the old (the step's
// gradient is pushed again or dropped with its step), and settle counts the traffic.
//
// An empty batch (numSamples 0) carries no weight in the shard's average, so it is
// encoded without feedback and leaves the residual as it is.
func (c *Client) preparePush(i int, grad []float32, numSamples int64) (body *pushBody, settle func(ok bool)) {
	if c.comp == nil {
		body = &pushBody{enc: cohortv1.TensorEncoding_TENSOR_ENCODING_FLOAT32, dense: grad}
		return body, func(ok bool) {
			if ok {
				c.traffic.push.Add(int64(4 * len(grad)))
				c.traffic.pushDense.Add(int64(4 * len(grad)))
			}
		}
	}
	cfg := c.comp.cfg
	sc := c.comp.shards[i]
	sc.mu.Lock()
	if gen := c.gen.Load(); sc.gen != gen {
		clear(sc.residual)
		sc.gen = gen
	}
	n := len(grad)
	feedback := cfg.ErrorFeedback && numSamples > 0
	in := grad
	if feedback {
		if len(sc.residual) != n {
			sc.residual, sc.pending = make([]float32, n), make([]float32, n)
		}
		acc := sc.pending
		for j, g := range grad {
			acc[j] = g + sc.residual[j]
		}
		in = acc
	}
	body = &sc.body
	body.enc = cfg.pushEncoding()
	switch body.enc {
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FP16:
		body.half = grow(body.half, 2*n)
		encodeFP16(body.half, in)
		if feedback { // in is pending: keep what rounding left out
			decodeAndSubtract(in, body.half)
		}
	case cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE:
		body.indices = topKIndices(in, topKCount(cfg.TopK, n), body.indices)
		body.values = grow(body.values, len(body.indices))
		for j, idx := range body.indices {
			body.values[j] = in[idx]
			if feedback {
				in[idx] = 0 // sent: nothing of it left over
			}
		}
	}
	wire := int64(body.wireBytes(c.chunk))
	return body, func(ok bool) {
		if ok {
			if feedback {
				sc.residual, sc.pending = sc.pending, sc.residual
			}
			c.traffic.push.Add(wire)
			c.traffic.pushDense.Add(int64(4 * n))
		}
		sc.mu.Unlock()
	}
}

// decodeAndSubtract subtracts from acc the halves in half that encode it, leaving in
// acc what the rounding (or saturation) left out. The subtraction is exact for every
// finite value of acc below 2^28 in magnitude, so sent + residual == acc.
func decodeAndSubtract(acc []float32, half []byte) {
	var sent [1]float32
	for j := range acc {
		decodeFP16(sent[:], half[2*j:2*j+2])
		acc[j] -= sent[0]
	}
}

// grow returns s resized to n, reusing its capacity.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// pushBody is one shard's push, encoded: its encoding and what its chunks carry.
type pushBody struct {
	enc     cohortv1.TensorEncoding
	dense   []float32 // FLOAT32: the values
	half    []byte    // FP16: 2 little-endian bytes per value
	indices []uint32  // SPARSE: the entries, indices increasing
	values  []float32
	scratch []byte
}

// sparsePerChunk is the number of SPARSE entries in a chunk of per float32 values'
// size.
func sparsePerChunk(per int) int { return max((4*per-4)/8, 1) }

// wireBytes is the chunk data the body sends with per float32 values' worth of bytes
// per chunk.
func (b *pushBody) wireBytes(per int) int {
	switch b.enc {
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FP16:
		return len(b.half)
	case cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE:
		n := len(b.indices)
		chunks := (n + sparsePerChunk(per) - 1) / sparsePerChunk(per)
		return 4*chunks + 8*n
	}
	return 4 * len(b.dense)
}

// send streams the body as chunks of about per float32 values' size through send.
// The chunk and its data are reused between calls.
func (b *pushBody) send(per int, send func(*cohortv1.Chunk) error) error {
	chunk := &cohortv1.Chunk{}
	switch b.enc {
	case cohortv1.TensorEncoding_TENSOR_ENCODING_FP16:
		step := 4 * per // bytes: 2*per values
		for off := 0; off < len(b.half); off += step {
			end := min(off+step, len(b.half))
			chunk.Offset, chunk.Data = uint64(off/2), b.half[off:end]
			if err := send(chunk); err != nil {
				return err
			}
		}
	case cohortv1.TensorEncoding_TENSOR_ENCODING_SPARSE:
		step := sparsePerChunk(per)
		for off := 0; off < len(b.indices); off += step {
			end := min(off+step, len(b.indices))
			b.scratch = appendSparseChunk(b.scratch[:0], b.indices[off:end], b.values[off:end])
			chunk.Offset, chunk.Data = uint64(off), b.scratch
			if err := send(chunk); err != nil {
				return err
			}
		}
	default:
		for off := 0; off < len(b.dense); off += per {
			end := min(off+per, len(b.dense))
			chunk.Offset, chunk.Data = uint64(off), float32Bytes(b.dense[off:end], &b.scratch)
			if err := send(chunk); err != nil {
				return err
			}
		}
	}
	return nil
}

// encodeFP16 writes src as little-endian halves into dst (len 2×len(src)), each
// rounded to nearest even (float32ToFP16), except that a finite value beyond the half
// range saturates at ±65504 instead of becoming ±Inf: one large gradient or parameter
// must not turn a worker's or a shard's values into Inf. ±Inf and NaN stay as they are.
func encodeFP16(dst []byte, src []float32) {
	for i, v := range src {
		h := float32ToFP16(v)
		if h&0x7fff == 0x7c00 && math.Float32bits(v)&0x7fffffff < 0x7f800000 {
			h = h&0x8000 | 0x7bff // finite beyond the half range: saturate
		}
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// checkPullEncoding is the pull's check that the server answered in the encoding
// asked for (a server that predates compression answers float32 without saying so).
func checkPullEncoding(want, got cohortv1.TensorEncoding) error {
	if want != got {
		return fmt.Errorf("%w: pull asked for %v values, the server sent %v", ErrInvalidArgument, want, got)
	}
	return nil
}
