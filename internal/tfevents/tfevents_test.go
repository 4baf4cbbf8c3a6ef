package tfevents

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fixedClock returns a clock that yields the given times in turn, then the last one.
func fixedClock(ts ...time.Time) func() time.Time {
	return func() time.Time {
		t := ts[0]
		if len(ts) > 1 {
			ts = ts[1:]
		}
		return t
	}
}

func TestMaskedCRCKnownValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
	}{
		// crc32c("") = 0, so its mask is the delta itself.
		{"", 0xa282ead8},
		// crc32c("123456789") = 0xe3069283, the CRC-32C check value; rotated right by 15
		// and offset by the delta.
		{"123456789", 0xc78ab0e5},
		// The length field of a 24-byte record (the file-version event): every event
		// file TensorFlow writes starts with 18 00.. a3 7f 4b 22.
		{"\x18\x00\x00\x00\x00\x00\x00\x00", 0x224b7fa3},
	} {
		if got := maskedCRC([]byte(tc.in)); got != tc.want {
			t.Errorf("maskedCRC(%q) = %#08x, want %#08x", tc.in, got, tc.want)
		}
	}
}

// TestGoldenFraming checks the exact bytes of a file-version record and a scalar
// record, computed independently (bitwise CRC-32C, hand-encoded protobuf).
func TestGoldenFraming(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, fixedClock(time.Unix(1, 5e8), time.Unix(2, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scalar("loss", 3, 0.25); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "" +
		// length 24, masked crc of the length
		"1800000000000000" + "a37f4b22" +
		// wall_time 1.5 (field 1, fixed64), file_version "brain.Event:2" (field 3)
		"09000000000000f83f" + "1a0d627261696e2e4576656e743a32" +
		// masked crc of the data
		"2a28646c" +
		// length 26
		"1a00000000000000" + "129bd82d" +
		// wall_time 2.0, step 3 (field 2, varint), summary (field 5) {value {tag "loss", simple_value 0.25}}
		"0900000000000000401003" + "2a0d0a0b0a046c6f7373150000803e" +
		"8ab69fa4"
	if got := hex.EncodeToString(buf.Bytes()); got != want {
		t.Errorf("event file bytes:\n got %s\nwant %s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	start := time.Unix(1_700_000_000, 250_000_000)
	clock := fixedClock(start, start.Add(time.Second), start.Add(2*time.Second), start.Add(3*time.Second), start.Add(4*time.Second))
	var buf bytes.Buffer
	w, err := NewWriter(&buf, clock)
	if err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		tag   string
		step  int64
		value float64
	}{
		{"val_loss", 1, 0.6931},
		{"val_auc", 1, 0},  // a zero value must still be written (oneof member)
		{"val_loss", 0, 1}, // step 0 is omitted on the wire and reads back as 0
		{"train/loss", -7, math.Inf(1)},
	}
	for _, s := range writes {
		if err := w.Scalar(s.tag, s.step, s.value); err != nil {
			t.Fatal(err)
		}
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes reached the io.Writer before Flush", buf.Len())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEvents(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{WallTime: 1_700_000_000.25, FileVersion: FileVersion}}
	for i, s := range writes {
		want = append(want, Event{
			WallTime: 1_700_000_000.25 + float64(i+1),
			Step:     s.step,
			Scalars:  map[string]float64{s.tag: float64(float32(s.value))},
		})
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadEvents:\n got %+v\nwant %+v", got, want)
	}
}

func TestReadEventsEmpty(t *testing.T) {
	evs, err := ReadEvents(bytes.NewReader(nil))
	if err != nil || len(evs) != 0 {
		t.Fatalf("ReadEvents(empty) = %v, %v; want no events, no error", evs, err)
	}
}

// twoRecords returns an event file of a file-version record and one scalar record,
// and the offset of the second record.
func twoRecords(t *testing.T) ([]byte, int) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, fixedClock(time.Unix(10, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	second := buf.Len()
	if err := w.Scalar("val_accuracy", 5, 0.875); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), second
}

func TestReadEventsErrors(t *testing.T) {
	file, second := twoRecords(t)
	secondLen := int(binary.LittleEndian.Uint64(file[second:]))
	at := strconv.Itoa(second)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(file))
	}
	for _, tc := range []struct {
		name      string
		in        []byte
		wantIs    error
		wantMsg   []string
		wantCount int // events decoded before the error
	}{
		{
			name:      "length crc",
			in:        mutate(func(b []byte) []byte { b[second+8] ^= 0xff; return b }),
			wantIs:    ErrCorrupt,
			wantMsg:   []string{"record at offset " + at, "length checksum"},
			wantCount: 1,
		},
		{
			name:      "length itself",
			in:        mutate(func(b []byte) []byte { b[second]++; return b }),
			wantIs:    ErrCorrupt,
			wantMsg:   []string{"offset " + at, "length checksum"},
			wantCount: 1,
		},
		{
			name:      "data crc",
			in:        mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x01; return b }),
			wantIs:    ErrCorrupt,
			wantMsg:   []string{"offset " + at, "data checksum"},
			wantCount: 1,
		},
		{
			name:      "data byte",
			in:        mutate(func(b []byte) []byte { b[second+headerLen+3] ^= 0x40; return b }),
			wantIs:    ErrCorrupt,
			wantMsg:   []string{"offset " + at, "data checksum"},
			wantCount: 1,
		},
		{
			name:    "first record",
			in:      mutate(func(b []byte) []byte { b[9] ^= 0x01; return b }),
			wantIs:  ErrCorrupt,
			wantMsg: []string{"offset 0", "length checksum"},
		},
		{
			name:      "truncated header",
			in:        file[:second+5],
			wantIs:    io.ErrUnexpectedEOF,
			wantMsg:   []string{"offset " + at, "header"},
			wantCount: 1,
		},
		{
			name:      "truncated data",
			in:        file[:second+headerLen+secondLen-1],
			wantIs:    io.ErrUnexpectedEOF,
			wantMsg:   []string{"offset " + at, "data (", "of " + strconv.Itoa(secondLen) + " bytes"},
			wantCount: 1,
		},
		{
			name:      "truncated data crc",
			in:        file[:len(file)-2],
			wantIs:    io.ErrUnexpectedEOF,
			wantMsg:   []string{"offset " + at, "data checksum"},
			wantCount: 1,
		},
		{
			name:    "oversized length",
			in:      record(make([]byte, 0), MaxRecordBytes+1),
			wantIs:  ErrCorrupt,
			wantMsg: []string{"offset 0", "exceeds"},
		},
		{
			name:    "undecodable event",
			in:      record([]byte{0x0a, 0x05, 'x'}, -1), // field 1 as bytes, length past the end
			wantIs:  ErrCorrupt,
			wantMsg: []string{"offset 0", "event:"},
		},
		{
			name:    "wrong wire type",
			in:      record([]byte{0x08, 0x01}, -1), // wall_time as a varint
			wantIs:  ErrCorrupt,
			wantMsg: []string{"wall_time", "wire type"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := ReadEvents(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want one wrapping %v", err, tc.wantIs)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("err = %q, want it to mention %q", err, m)
				}
			}
			if len(evs) != tc.wantCount {
				t.Errorf("got %d events before the error, want %d", len(evs), tc.wantCount)
			}
		})
	}
}

// record frames data as a valid TFRecord; a non-negative length overrides the length
// field (its checksum stays valid).
func record(data []byte, length int64) []byte {
	if length < 0 {
		length = int64(len(data))
	}
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(length))
	b = binary.LittleEndian.AppendUint32(b, maskedCRC(b[:8]))
	b = append(b, data...)
	return binary.LittleEndian.AppendUint32(b, maskedCRC(data))
}

func TestReadEventsSkipsUnknownAndNonScalar(t *testing.T) {
	// An event with an unknown field (9, varint), and a summary holding an image-like
	// value (tag, field 4 bytes, no simple_value) next to a scalar.
	data := []byte{
		0x48, 0x07, // field 9 varint 7
		0x10, 0x02, // step 2
		0x2a, 0x00, // summary, length set below
		0x0a, 0x06, 0x0a, 0x01, 'i', 0x22, 0x01, 0x00, // value{tag "i", image {0}}
		0x0a, 0x08, 0x0a, 0x01, 's', 0x15, 0x00, 0x00, 0x80, 0x3f, // value{tag "s", simple_value 1}
	}
	data[5] = byte(len(data) - 6)
	evs, err := ReadEvents(bytes.NewReader(record(data, -1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{Step: 2, Scalars: map[string]float64{"s": 1}}}
	if !reflect.DeepEqual(evs, want) {
		t.Errorf("got %+v, want %+v", evs, want)
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterErrorsAreSticky(t *testing.T) {
	w, err := NewWriter(&failWriter{}, nil)
	if err != nil {
		t.Fatal(err) // buffered: nothing has reached the writer yet
	}
	err = w.Flush()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Flush = %v, want the write error", err)
	}
	if err2 := w.Scalar("x", 1, 1); !errors.Is(err2, err) && err2.Error() != err.Error() {
		t.Errorf("Scalar after a failed flush = %v, want %v", err2, err)
	}
	if err2 := w.Flush(); err2 == nil {
		t.Error("second Flush succeeded after a failed one")
	}
}

func TestWriterValidation(t *testing.T) {
	if _, err := NewWriter(nil, nil); err == nil {
		t.Error("NewWriter(nil) succeeded")
	}
	w, err := NewWriter(io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scalar("", 1, 1); err == nil || !strings.Contains(err.Error(), "empty tag") {
		t.Errorf("Scalar with an empty tag = %v, want an error", err)
	}
}

func TestFileName(t *testing.T) {
	now := time.Unix(1_700_000_123, 999_000_000)
	for _, tc := range []struct{ host, want string }{
		{"worker-1", "events.out.tfevents.1700000123.worker-1"},
		{"a/b\\c", "events.out.tfevents.1700000123.a_b_c"},
		{"", "events.out.tfevents.1700000123.localhost"},
	} {
		if got := FileName(now, tc.host); got != tc.want {
			t.Errorf("FileName(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestWriterConcurrent(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 50
	done := make(chan error, goroutines)
	for g := range goroutines {
		go func() {
			var err error
			for i := range each {
				if err = w.Scalar("g"+strconv.Itoa(g), int64(i+1), float64(i)); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range goroutines {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(&buf)
	if err != nil {
		t.Fatalf("interleaved writes corrupted the file: %v", err)
	}
	if len(evs) != 1+goroutines*each {
		t.Fatalf("read %d events, want %d", len(evs), 1+goroutines*each)
	}
}
