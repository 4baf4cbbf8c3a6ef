package tfevents

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ReadEvents reads every event of an event file from r, verifying the length and data
// checksums of each record. An error names the byte offset of the record at fault and
// wraps ErrCorrupt (bad checksum, oversized length, undecodable event) or
// io.ErrUnexpectedEOF (the file ends inside a record). An empty input yields no events
// and no error. Unknown event and summary fields are skipped; summary values that are
// not simple values (images, histograms, tensors) are ignored.
func ReadEvents(r io.Reader) ([]Event, error) {
	var (
		events []Event
		off    int64
		hdr    [headerLen]byte
		ftr    [footerLen]byte
	)
	for {
		n, err := io.ReadFull(r, hdr[:])
		if errors.Is(err, io.EOF) && n == 0 {
			return events, nil
		}
		if err != nil {
			return events, recordErr(off, "header", readErr(err))
		}
		if got, want := binary.LittleEndian.Uint32(hdr[8:]), maskedCRC(hdr[:8]); got != want {
			return events, recordErr(off, fmt.Sprintf("length checksum %#08x, want %#08x", got, want), ErrCorrupt)
		}
		size := binary.LittleEndian.Uint64(hdr[:8])
		if size > MaxRecordBytes {
			return events, recordErr(off, fmt.Sprintf("length %d exceeds the %d-byte limit", size, MaxRecordBytes), ErrCorrupt)
		}
		// Grow as bytes arrive rather than trusting the length up front.
		var data bytes.Buffer
		if _, err := io.CopyN(&data, r, int64(size)); err != nil {
			return events, recordErr(off, fmt.Sprintf("data (%d of %d bytes)", data.Len(), size), readErr(err))
		}
		if _, err := io.ReadFull(r, ftr[:]); err != nil {
			return events, recordErr(off, "data checksum", readErr(err))
		}
		if got, want := binary.LittleEndian.Uint32(ftr[:]), maskedCRC(data.Bytes()); got != want {
			return events, recordErr(off, fmt.Sprintf("data checksum %#08x, want %#08x", got, want), ErrCorrupt)
		}
		ev, err := decodeEvent(data.Bytes())
		if err != nil {
			return events, recordErr(off, "event: "+err.Error(), ErrCorrupt)
		}
		events = append(events, ev)
		off += headerLen + int64(size) + footerLen
	}
}

// readErr turns an EOF inside a record into io.ErrUnexpectedEOF.
func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// recordErr describes a problem with the record starting at byte offset off.
func recordErr(off int64, what string, err error) error {
	return fmt.Errorf("tfevents: record at offset %d: %s: %w", off, what, err)
}

// decodeEvent decodes a serialized tensorflow.Event.
func decodeEvent(b []byte) (Event, error) {
	var ev Event
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case eventWallTime:
			if typ != protowire.Fixed64Type {
				return wireTypeErr("wall_time", typ)
			}
			ev.WallTime = math.Float64frombits(x)
		case eventStep:
			if typ != protowire.VarintType {
				return wireTypeErr("step", typ)
			}
			ev.Step = int64(x)
		case eventFileVersion:
			if typ != protowire.BytesType {
				return wireTypeErr("file_version", typ)
			}
			ev.FileVersion = string(v)
		case eventSummary:
			if typ != protowire.BytesType {
				return wireTypeErr("summary", typ)
			}
			return decodeSummary(v, &ev)
		}
		return nil
	})
	return ev, err
}

// decodeSummary adds the simple values of a serialized tensorflow.Summary to ev.
func decodeSummary(b []byte, ev *Event) error {
	return walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != summaryValue {
			return nil
		}
		if typ != protowire.BytesType {
			return wireTypeErr("summary.value", typ)
		}
		var (
			tag      string
			value    float32
			hasValue bool
		)
		err := walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
			switch num {
			case valueTag:
				if typ != protowire.BytesType {
					return wireTypeErr("summary.value.tag", typ)
				}
				tag = string(v)
			case valueSimpleValue:
				if typ != protowire.Fixed32Type {
					return wireTypeErr("summary.value.simple_value", typ)
				}
				value, hasValue = math.Float32frombits(uint32(x)), true
			}
			return nil
		})
		if err != nil {
			return err
		}
		if hasValue {
			if ev.Scalars == nil {
				ev.Scalars = make(map[string]float64)
			}
			ev.Scalars[tag] = float64(value)
		}
		return nil
	})
}

// walkFields calls fn for each field of the message b: v holds a bytes field's
// contents, x a varint or fixed field's value. Groups are skipped.
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func wireTypeErr(field string, typ protowire.Type) error {
	return fmt.Errorf("field %s: unexpected wire type %d", field, typ)
}
