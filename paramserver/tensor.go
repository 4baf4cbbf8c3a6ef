package paramserver

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// hostLittleEndian reports whether float32 values are stored little-endian in memory,
// in which case tensors are sent and received as zero-copy byte views.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float32Bytes returns the little-endian bytes of f. On little-endian hosts the result
// is a zero-copy view of f's backing array (valid while f is); otherwise the values are
// encoded into scratch (grown when too small) and the result aliases scratch.
func float32Bytes(f []float32, scratch *[]byte) []byte {
	if len(f) == 0 {
		return nil
	}
	if hostLittleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), len(f)*4)
	}
	n := len(f) * 4
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	b := (*scratch)[:n]
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[i*4:], math.Float32bits(v))
	}
	return b
}

// putFloat32s decodes little-endian float32 bytes into dst; len(b) must be 4*len(dst).
func putFloat32s(dst []float32, b []byte) {
	if len(dst) == 0 {
		return
	}
	if hostLittleEndian {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)*4), b)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[i*4:]))
	}
}

// chunkValues converts a chunk size in bytes into a whole number of float32 values
// (at least one).
func chunkValues(chunkBytes int) int {
	if v := chunkBytes / 4; v > 0 {
		return v
	}
	return 1
}

// assembler places the chunks of one tensor transfer into dst. Chunks must arrive in
// order and be contiguous: offset (in values, relative to dst) must equal the number of
// values received so far and data must be a whole number of values that fits: float32
// values, or FP16 ones (2 bytes each) when fp16 is set. It decodes outside input and
// never panics or writes outside dst.
type assembler struct {
	dst  []float32
	next uint64
	fp16 bool
}

// add decodes one chunk into place.
func (a *assembler) add(offset uint64, data []byte) error {
	width, what := uint64(4), "float32"
	if a.fp16 {
		width, what = 2, "fp16"
	}
	if uint64(len(data))%width != 0 {
		return fmt.Errorf("%w: chunk.data: %s chunk of %d bytes is not a whole number of %d-byte values", ErrInvalidArgument, what, len(data), width)
	}
	if offset != a.next {
		return fmt.Errorf("%w: chunk.offset %d, want %d (chunks must be contiguous and in order)", ErrInvalidArgument, offset, a.next)
	}
	n := uint64(len(data)) / width
	if n > uint64(len(a.dst))-a.next {
		return fmt.Errorf("%w: chunk.data: %s chunk [%d,%d) exceeds the range length %d", ErrInvalidArgument, what, offset, offset+n, len(a.dst))
	}
	if a.fp16 {
		decodeFP16(a.dst[a.next:a.next+n], data)
	} else {
		putFloat32s(a.dst[a.next:a.next+n], data)
	}
	a.next += n
	return nil
}

// done reports an error unless the whole of dst has been received.
func (a *assembler) done() error {
	if a.next != uint64(len(a.dst)) {
		return fmt.Errorf("%w: received %d of %d values", ErrInvalidArgument, a.next, len(a.dst))
	}
	return nil
}
