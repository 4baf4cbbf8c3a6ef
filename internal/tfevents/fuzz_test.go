package tfevents

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"
	"time"
)

// FuzzReadEvents checks that ReadEvents never panics, fails only with ErrCorrupt or
// io.ErrUnexpectedEOF, and that whatever it accepts survives a write/read round trip.
// More seeds live in testdata/fuzz/FuzzReadEvents.
func FuzzReadEvents(f *testing.F) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, func() time.Time { return time.Unix(1_700_000_000, 0) })
	if err != nil {
		f.Fatal(err)
	}
	_ = w.Flush()
	f.Add(bytes.Clone(buf.Bytes()))
	_ = w.Scalar("val_loss", 1, 0.5)
	_ = w.Scalar("val_auc", 2, math.NaN())
	_ = w.Flush()
	f.Add(bytes.Clone(buf.Bytes()))
	f.Add([]byte{})
	f.Add(buf.Bytes()[:len(buf.Bytes())-3])
	f.Add(record([]byte{0x2a, 0x03, 0x0a, 0x01, 0x00}, -1))

	f.Fuzz(func(t *testing.T, in []byte) {
		evs, err := ReadEvents(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error wraps neither ErrCorrupt nor io.ErrUnexpectedEOF: %v", err)
			}
			return
		}
		// Re-encode what was read and read it again: the events must be identical.
		var out []byte
		for _, ev := range evs {
			var sc []scalar
			for tag, v := range ev.Scalars {
				sc = append(sc, scalar{tag, float32(v)})
			}
			out = append(out, record(appendEvent(nil, ev.WallTime, ev.Step, ev.FileVersion, sc), -1)...)
		}
		again, err := ReadEvents(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-encoded events do not read back: %v", err)
		}
		if len(again) != len(evs) {
			t.Fatalf("read back %d events, want %d", len(again), len(evs))
		}
		for i := range evs {
			if !sameEvent(evs[i], again[i]) {
				t.Fatalf("event %d: read back %+v, want %+v", i, again[i], evs[i])
			}
		}
	})
}

// sameEvent compares events bit for bit, so NaNs compare equal to themselves.
func sameEvent(a, b Event) bool {
	if math.Float64bits(a.WallTime) != math.Float64bits(b.WallTime) || a.Step != b.Step ||
		a.FileVersion != b.FileVersion || len(a.Scalars) != len(b.Scalars) {
		return false
	}
	for k, v := range a.Scalars {
		w, ok := b.Scalars[k]
		if !ok || math.Float64bits(v) != math.Float64bits(w) {
			return false
		}
	}
	return true
}
