package paramserver

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Shard checkpoint format, version 1 (all integers little-endian):
//
//	magic        8 bytes  "COHORTCK"
//	version      uint32   1
//	header_len   uint32   length of the JSON header, at most maxHeaderBytes
//	header       JSON     checkpointHeader
//	params       range_length float32
//	state[i]     range_length float32, for i < state_count
//
// The object ends right after the last state vector; trailing bytes are an error. The
// manifest that points at the object carries its SHA-256.
const (
	checkpointMagic   = "COHORTCK"
	checkpointVersion = 1
	maxHeaderBytes    = 64 << 10
	// MaxShardParams bounds the values one shard may hold (4 GiB of float32).
	MaxShardParams = 1 << 30
)

// ErrBadCheckpoint is wrapped by every ReadShardCheckpoint decoding error.
var ErrBadCheckpoint = errors.New("paramserver: bad shard checkpoint")

// ShardCheckpoint is the decoded content of one shard checkpoint object.
type ShardCheckpoint struct {
	JobID string
	Shard int
	// Step is the shard version the values belong to.
	Step int64
	// Range is the shard's slice of the job's flat parameter space.
	Range Range
	// TotalParams and LayoutHash are the job's Init handshake values ("" / 0 when the
	// shard was never initialised through Init); a restored shard checks later Inits
	// against them.
	TotalParams uint64
	LayoutHash  string
	// Optimizer is the optimizer name, OptimizerStep its step count.
	Optimizer     string
	OptimizerStep int64
	// Params holds Range.Length values; State the optimizer's state vectors, each of
	// Range.Length values.
	Params []float32
	State  [][]float32
}

// checkpointHeader is the JSON header of the format.
type checkpointHeader struct {
	JobID         string `json:"job_id"`
	Shard         int    `json:"shard"`
	Step          int64  `json:"step"`
	RangeOffset   uint64 `json:"range_offset"`
	RangeLength   uint64 `json:"range_length"`
	TotalParams   uint64 `json:"total_params"`
	LayoutHash    string `json:"layout_hash"`
	Optimizer     string `json:"optimizer"`
	OptimizerStep int64  `json:"optimizer_step"`
	StateCount    int    `json:"state_count"`
}

// encodeShardCheckpoint serialises ck into one buffer. It is called under the shard's
// lock, so it is a handful of memory copies.
func encodeShardCheckpoint(ck *ShardCheckpoint) ([]byte, error) {
	hdr, err := json.Marshal(checkpointHeader{
		JobID: ck.JobID, Shard: ck.Shard, Step: ck.Step,
		RangeOffset: ck.Range.Offset, RangeLength: ck.Range.Length,
		TotalParams: ck.TotalParams, LayoutHash: ck.LayoutHash,
		Optimizer: ck.Optimizer, OptimizerStep: ck.OptimizerStep, StateCount: len(ck.State),
	})
	if err != nil {
		return nil, fmt.Errorf("paramserver: encode checkpoint header: %w", err)
	}
	if len(hdr) > maxHeaderBytes {
		return nil, fmt.Errorf("paramserver: checkpoint header of %d bytes exceeds %d", len(hdr), maxHeaderBytes)
	}
	n := len(ck.Params)
	size := 16 + len(hdr) + 4*n*(1+len(ck.State))
	buf := make([]byte, 0, size)
	buf = append(buf, checkpointMagic...)
	buf = binary.LittleEndian.AppendUint32(buf, checkpointVersion)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(hdr)))
	buf = append(buf, hdr...)
	var scratch []byte
	buf = append(buf, float32Bytes(ck.Params, &scratch)...)
	for i, s := range ck.State {
		if len(s) != n {
			return nil, fmt.Errorf("paramserver: checkpoint state vector %d has %d values, want %d", i, len(s), n)
		}
		buf = append(buf, float32Bytes(s, &scratch)...)
	}
	return buf, nil
}

// ReadShardCheckpoint decodes one shard checkpoint object. It verifies the magic, the
// format version, the header and every length, refuses trailing bytes, and never
// allocates much more than the input's actual size, whatever the header claims.
func ReadShardCheckpoint(r io.Reader) (*ShardCheckpoint, error) {
	var pre [16]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: read preamble: %w", ErrBadCheckpoint, err)
	}
	if string(pre[:8]) != checkpointMagic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrBadCheckpoint, pre[:8])
	}
	if v := binary.LittleEndian.Uint32(pre[8:12]); v != checkpointVersion {
		return nil, fmt.Errorf("%w: unsupported format version %d (want %d)", ErrBadCheckpoint, v, checkpointVersion)
	}
	hl := binary.LittleEndian.Uint32(pre[12:16])
	if hl > maxHeaderBytes {
		return nil, fmt.Errorf("%w: header length %d exceeds %d", ErrBadCheckpoint, hl, maxHeaderBytes)
	}
	raw := make([]byte, hl)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("%w: read header: %w", ErrBadCheckpoint, err)
	}
	var h checkpointHeader
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrBadCheckpoint, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after header JSON", ErrBadCheckpoint)
	}
	switch want := stateCount(h.Optimizer); {
	case want < 0:
		return nil, fmt.Errorf("%w: unknown optimizer %q", ErrBadCheckpoint, h.Optimizer)
	case h.StateCount != want:
		return nil, fmt.Errorf("%w: %s keeps %d state vectors, header says %d", ErrBadCheckpoint, h.Optimizer, want, h.StateCount)
	}
	switch {
	case h.JobID == "":
		return nil, fmt.Errorf("%w: empty job id", ErrBadCheckpoint)
	case h.Shard < 0:
		return nil, fmt.Errorf("%w: negative shard %d", ErrBadCheckpoint, h.Shard)
	case h.Step < 0 || h.OptimizerStep < 0:
		return nil, fmt.Errorf("%w: negative step %d or optimizer step %d", ErrBadCheckpoint, h.Step, h.OptimizerStep)
	case h.RangeLength > MaxShardParams:
		return nil, fmt.Errorf("%w: range length %d exceeds %d", ErrBadCheckpoint, h.RangeLength, MaxShardParams)
	case h.RangeOffset > ^uint64(0)-h.RangeLength:
		return nil, fmt.Errorf("%w: range [%d,+%d) overflows", ErrBadCheckpoint, h.RangeOffset, h.RangeLength)
	case h.TotalParams != 0 && h.RangeOffset+h.RangeLength > h.TotalParams:
		return nil, fmt.Errorf("%w: range [%d,%d) exceeds total %d", ErrBadCheckpoint, h.RangeOffset, h.RangeOffset+h.RangeLength, h.TotalParams)
	}
	ck := &ShardCheckpoint{
		JobID: h.JobID, Shard: h.Shard, Step: h.Step,
		Range:       Range{Offset: h.RangeOffset, Length: h.RangeLength},
		TotalParams: h.TotalParams, LayoutHash: h.LayoutHash,
		Optimizer: h.Optimizer, OptimizerStep: h.OptimizerStep,
	}
	var err error
	if ck.Params, err = readFloat32s(r, h.RangeLength); err != nil {
		return nil, fmt.Errorf("%w: params: %w", ErrBadCheckpoint, err)
	}
	for i := 0; i < h.StateCount; i++ {
		s, err := readFloat32s(r, h.RangeLength)
		if err != nil {
			return nil, fmt.Errorf("%w: state vector %d: %w", ErrBadCheckpoint, i, err)
		}
		ck.State = append(ck.State, s)
	}
	var one [1]byte
	if n, _ := io.ReadFull(r, one[:]); n != 0 {
		return nil, fmt.Errorf("%w: trailing bytes after the last state vector", ErrBadCheckpoint)
	}
	return ck, nil
}

// readFloat32s reads exactly n little-endian float32 values, growing the result as data
// arrives so that a lying length cannot force a huge allocation.
func readFloat32s(r io.Reader, n uint64) ([]float32, error) {
	const step = 1 << 16 // values per read
	out := make([]float32, 0, min(n, step))
	buf := make([]byte, 4*min(n, step))
	for uint64(len(out)) < n {
		k := min(n-uint64(len(out)), step)
		b := buf[:4*k]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("after %d of %d values: %w", len(out), n, err)
		}
		start := len(out)
		out = append(out, make([]float32, k)...)
		putFloat32s(out[start:], b)
	}
	return out, nil
}
