// Package tfevents writes and reads TensorBoard event files, so that a training job's
// per-epoch metrics can be browsed with `tensorboard --logdir`.
//
// An event file is a sequence of TFRecord records, each holding one serialized
// tensorflow.Event protocol buffer. The first event carries only the file version
// ("brain.Event:2"); every later one carries a step, a wall time and a Summary of scalar
// values. This package encodes those few messages by hand with protowire, so it needs no
// generated code and no TensorFlow.
//
// The writer buffers; the caller decides where the bytes go. The trainer keeps one
// Writer over a bytes.Buffer for the whole job and, after each epoch, stores the whole
// buffer as one object, so that readers always see a complete file:
//
//	var buf bytes.Buffer
//	w, err := tfevents.NewWriter(&buf, time.Now)
//	if err != nil {
//		return err
//	}
//	key := "jobs/" + jobID + "/tensorboard/" + tfevents.FileName(time.Now(), host)
//	for epoch := 1; epoch <= epochs; epoch++ {
//		// ... train one epoch ...
//		if err := w.Scalar("val_loss", int64(epoch), valLoss); err != nil {
//			return err
//		}
//		if err := w.Flush(); err != nil {
//			return err
//		}
//		if err := store.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
//			return err
//		}
//	}
//
// ReadEvents parses a file back, verifying every checksum; tests and tools use it.
package tfevents

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// FileVersion is the file_version string of the first event of every file this package
// writes; TensorBoard requires it.
const FileVersion = "brain.Event:2"

// Field numbers of tensorflow.Event, tensorflow.Summary and tensorflow.Summary.Value
// (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto).
const (
	eventWallTime    protowire.Number = 1 // double
	eventStep        protowire.Number = 2 // int64
	eventFileVersion protowire.Number = 3 // string (oneof what)
	eventSummary     protowire.Number = 5 // Summary (oneof what)

	summaryValue protowire.Number = 1 // repeated Summary.Value

	valueTag         protowire.Number = 1 // string
	valueSimpleValue protowire.Number = 2 // float (oneof value)
)

// TFRecord framing: an 8-byte length, a 4-byte masked CRC of the length, the data and a
// 4-byte masked CRC of the data.
const (
	headerLen = 8 + 4
	footerLen = 4
	// crcMaskDelta is the constant TFRecord adds to the rotated CRC.
	crcMaskDelta = 0xa282ead8
	// MaxRecordBytes bounds the data of one record ReadEvents accepts, so a corrupt or
	// hostile length cannot make it allocate without limit. Scalar events are tiny.
	MaxRecordBytes = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC returns the TFRecord-masked CRC32C of b.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return ((c >> 15) | (c << 17)) + crcMaskDelta
}

// ErrCorrupt is wrapped by ReadEvents errors for a record whose checksum or contents
// are wrong. A file that ends inside a record yields an error wrapping
// io.ErrUnexpectedEOF instead.
var ErrCorrupt = errors.New("tfevents: corrupt record")

// Event is one decoded event. The first event of a file has FileVersion set and no
// scalars; scalar events have Step and Scalars (tag -> value) set.
type Event struct {
	// WallTime is the time the event was written, in seconds since the Unix epoch.
	WallTime float64
	// Step is the training step (Cohort writes the epoch number).
	Step int64
	// FileVersion is set on the file-version event only.
	FileVersion string
	// Scalars holds the summary's simple values by tag; nil when there are none.
	Scalars map[string]float64
}

// Writer appends events to an event file. It buffers: call Flush to push what was
// written to the underlying io.Writer. A Writer is safe for concurrent use. After a
// write error every later call returns that error.
type Writer struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	now func() time.Time
	buf []byte // scratch for encoding one record
	err error  // sticky
}

// NewWriter returns a Writer over w that stamps events with now (time.Now when nil). It
// writes the file-version event at once (buffered; see Flush).
func NewWriter(w io.Writer, now func() time.Time) (*Writer, error) {
	if w == nil {
		return nil, errors.New("tfevents: new writer: nil io.Writer")
	}
	if now == nil {
		now = time.Now
	}
	ew := &Writer{bw: bufio.NewWriter(w), now: now}
	ew.mu.Lock()
	defer ew.mu.Unlock()
	data := appendEvent(nil, wallTime(now()), 0, FileVersion, nil)
	if err := ew.writeRecord(data); err != nil {
		return nil, fmt.Errorf("tfevents: write file version event: %w", err)
	}
	return ew, nil
}

// Scalar appends one event holding a single scalar summary value. TensorBoard stores
// simple values as float32, so value is rounded to the nearest float32.
func (w *Writer) Scalar(tag string, step int64, value float64) error {
	if tag == "" {
		return errors.New("tfevents: scalar: empty tag")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	data := appendEvent(w.buf[:0], wallTime(w.now()), step, "", []scalar{{tag, float32(value)}})
	w.buf = data
	if err := w.writeRecord(data); err != nil {
		return fmt.Errorf("tfevents: scalar %q at step %d: %w", tag, step, err)
	}
	return nil
}

// Flush writes any buffered events to the underlying io.Writer.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("tfevents: flush: %w", err)
		return w.err
	}
	return nil
}

// writeRecord frames data as one TFRecord. The caller holds w.mu.
func (w *Writer) writeRecord(data []byte) error {
	if w.err != nil {
		return w.err
	}
	var hdr [headerLen]byte
	binary.LittleEndian.PutUint64(hdr[:8], uint64(len(data)))
	binary.LittleEndian.PutUint32(hdr[8:], maskedCRC(hdr[:8]))
	var ftr [footerLen]byte
	binary.LittleEndian.PutUint32(ftr[:], maskedCRC(data))
	for _, b := range [][]byte{hdr[:], data, ftr[:]} {
		if _, err := w.bw.Write(b); err != nil {
			w.err = fmt.Errorf("tfevents: write record: %w", err)
			return w.err
		}
	}
	return nil
}

// FileName returns the conventional name of an event file created at now on host:
// "events.out.tfevents.<unix seconds>.<host>". TensorBoard only looks at files whose
// names contain "tfevents". Path separators in host become '_' so the name stays one
// path element; an empty host becomes "localhost".
func FileName(now time.Time, host string) string {
	host = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, host)
	if host == "" {
		host = "localhost"
	}
	return "events.out.tfevents." + strconv.FormatInt(now.Unix(), 10) + "." + host
}

// wallTime converts t to fractional Unix seconds.
func wallTime(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

type scalar struct {
	tag   string
	value float32
}

// appendEvent appends the encoding of a tensorflow.Event to b. Zero step and empty
// fileVersion are omitted, as proto3 does; a scalar value is always written because
// simple_value is a oneof member.
func appendEvent(b []byte, wall float64, step int64, fileVersion string, scalars []scalar) []byte {
	b = protowire.AppendTag(b, eventWallTime, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(wall))
	if step != 0 {
		b = protowire.AppendTag(b, eventStep, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(step))
	}
	if fileVersion != "" {
		b = protowire.AppendTag(b, eventFileVersion, protowire.BytesType)
		b = protowire.AppendString(b, fileVersion)
	}
	if len(scalars) > 0 {
		var sum []byte
		for _, s := range scalars {
			var v []byte
			v = protowire.AppendTag(v, valueTag, protowire.BytesType)
			v = protowire.AppendString(v, s.tag)
			v = protowire.AppendTag(v, valueSimpleValue, protowire.Fixed32Type)
			v = protowire.AppendFixed32(v, math.Float32bits(s.value))
			sum = protowire.AppendTag(sum, summaryValue, protowire.BytesType)
			sum = protowire.AppendBytes(sum, v)
		}
		b = protowire.AppendTag(b, eventSummary, protowire.BytesType)
		b = protowire.AppendBytes(b, sum)
	}
	return b
}
