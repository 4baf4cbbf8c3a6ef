// Package export writes trained models in serving formats. This file implements the
// safetensors format (https://github.com/huggingface/safetensors) for float32 tensors:
//
//	8 bytes   N, the header length, unsigned little-endian
//	N bytes   JSON header, padded with spaces to a multiple of 8:
//	          {"__metadata__":{"k":"v",...},
//	           "<name>":{"dtype":"F32","shape":[d0,d1,...],"data_offsets":[begin,end]}, ...}
//	rest      the tensors' raw little-endian bytes; offsets are relative to the start of
//	          this region, and the tensors cover it without gaps or overlaps
package export

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"

	"github.com/cohort-dev/cohort/modeldef"
)

// MaxSafetensorsHeader is the largest JSON header ReadSafetensors accepts (100 MiB).
const MaxSafetensorsHeader = 100 << 20

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// dtypeF32 is the only dtype this package writes and reads.
const dtypeF32 = "F32"

// Tensor is a named float32 tensor in row-major order (modeldef.Tensor, which
// CheckWeights takes).
type Tensor = modeldef.Tensor

// numElements returns the product of shape, or an error for a negative dimension or an
// overflowing product.
func numElements(shape []int) (int, error) {
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape[%d] = %d: negative", i, d)
		}
		if d != 0 && n > math.MaxInt/4/d {
			return 0, fmt.Errorf("shape %v: too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// WriteSafetensors writes tensors, in the given order, and metadata (may be nil) to w
// in the safetensors format. Names must be non-empty, unique and not "__metadata__";
// each tensor's shape product must equal len(Data) (an empty shape is a scalar).
func WriteSafetensors(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			hdr.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sep()
		writeJSONString(&hdr, metadataKey)
		hdr.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				hdr.WriteByte(',')
			}
			writeJSONString(&hdr, k)
			hdr.WriteByte(':')
			writeJSONString(&hdr, metadata[k])
		}
		hdr.WriteByte('}')
	}
	seen := make(map[string]int, len(tensors))
	var offset uint64
	for i, t := range tensors {
		switch {
		case t.Name == "":
			return fmt.Errorf("safetensors: tensor %d: empty name", i)
		case t.Name == metadataKey:
			return fmt.Errorf("safetensors: tensor %d: name %q is reserved", i, t.Name)
		}
		if j, dup := seen[t.Name]; dup {
			return fmt.Errorf("safetensors: tensor %d %q: duplicate name (also tensor %d)", i, t.Name, j)
		}
		seen[t.Name] = i
		n, err := numElements(t.Shape)
		if err != nil {
			return fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
		}
		if n != len(t.Data) {
			return fmt.Errorf("safetensors: tensor %q: shape %v has %d elements, data has %d", t.Name, t.Shape, n, len(t.Data))
		}
		end := offset + 4*uint64(n)
		sep()
		writeJSONString(&hdr, t.Name)
		hdr.WriteString(`:{"dtype":"F32","shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				hdr.WriteByte(',')
			}
			hdr.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&hdr, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	if hdr.Len() > MaxSafetensorsHeader {
		return fmt.Errorf("safetensors: header of %d bytes exceeds the limit of %d", hdr.Len(), MaxSafetensorsHeader)
	}

	bw := bufio.NewWriterSize(w, 64<<10)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
	if _, err := bw.Write(lenBuf[:]); err != nil {
		return fmt.Errorf("safetensors: write header length: %w", err)
	}
	if _, err := bw.Write(hdr.Bytes()); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	var b [4]byte
	for _, t := range tensors {
		for _, v := range t.Data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			if _, err := bw.Write(b[:]); err != nil {
				return fmt.Errorf("safetensors: write tensor %q: %w", t.Name, err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// writeJSONString appends s as a JSON string literal.
func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// tensorHeader is one tensor's entry in the JSON header.
type tensorHeader struct {
	Dtype       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// headerEntry is a decoded tensor entry with its element count.
type headerEntry struct {
	name       string
	shape      []int
	begin, end uint64
	elements   int
}

// ReadSafetensors strictly decodes a safetensors stream of F32 tensors. It refuses a
// header over MaxSafetensorsHeader, malformed or duplicate header entries, any dtype
// other than F32, offsets that disagree with the shape, tensors that do not cover the
// data region exactly, and bytes missing from or trailing after the data region.
// Tensors are returned in header order; metadata is nil when the file has none.
func ReadSafetensors(r io.Reader) (tensors []Tensor, metadata map[string]string, err error) {
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, nil, fmt.Errorf("safetensors: read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxSafetensorsHeader {
		return nil, nil, fmt.Errorf("safetensors: header length %d exceeds the limit of %d", n, MaxSafetensorsHeader)
	}
	if n < 2 {
		return nil, nil, fmt.Errorf("safetensors: header length %d: too short for a JSON object", n)
	}
	// Grow with the data actually present rather than trusting n for the allocation.
	var hdr bytes.Buffer
	if _, err := io.CopyN(&hdr, r, int64(n)); err != nil {
		return nil, nil, fmt.Errorf("safetensors: read header of %d bytes: %w", n, err)
	}
	entries, metadata, err := parseHeader(hdr.Bytes())
	if err != nil {
		return nil, nil, err
	}

	// The tensors must tile the data region [0, total) exactly.
	byOffset := make([]*headerEntry, len(entries))
	for i := range entries {
		byOffset[i] = &entries[i]
	}
	sort.SliceStable(byOffset, func(a, b int) bool { return byOffset[a].begin < byOffset[b].begin })
	var total uint64
	for _, e := range byOffset {
		if e.begin != total {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d,%d]: expected to start at %d (gap or overlap)", e.name, e.begin, e.end, total)
		}
		total = e.end
	}

	var data bytes.Buffer
	if got, err := io.CopyN(&data, r, int64(total)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("safetensors: data region: %d of %d bytes present", got, total)
		}
		return nil, nil, fmt.Errorf("safetensors: read data region: %w", err)
	}
	var extra [1]byte
	if k, err := io.ReadFull(r, extra[:]); k > 0 {
		return nil, nil, fmt.Errorf("safetensors: trailing bytes after the %d-byte data region", total)
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("safetensors: read after data region: %w", err)
	}
	raw := data.Bytes()
	tensors = make([]Tensor, len(entries))
	for i, e := range entries {
		vals := make([]float32, e.elements)
		src := raw[e.begin:e.end]
		for j := range vals {
			vals[j] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*j:]))
		}
		tensors[i] = Tensor{Name: e.name, Shape: e.shape, Data: vals}
	}
	return tensors, metadata, nil
}

// parseHeader decodes the JSON header, keeping entry order and refusing duplicates.
func parseHeader(hdr []byte) ([]headerEntry, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("safetensors: header: not a JSON object")
	}
	var (
		entries  []headerEntry
		metadata map[string]string
		seen     = map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: header: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, errors.New("safetensors: header: object key is not a string")
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("safetensors: header: duplicate entry %q", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("safetensors: header entry %q: %w", name, err)
		}
		if name == metadataKey {
			metadata, err = parseMetadata(raw)
			if err != nil {
				return nil, nil, err
			}
			continue
		}
		e, err := parseTensorHeader(name, raw)
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, fmt.Errorf("safetensors: header: %w", err)
	}
	// Only the space padding may follow the object.
	for _, c := range hdr[dec.InputOffset():] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return nil, nil, errors.New("safetensors: header: trailing data after the JSON object")
		}
	}
	return entries, metadata, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("safetensors: header entry %q: not an object of strings", metadataKey)
	}
	md := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header entry %q: %w", metadataKey, err)
		}
		k, _ := tok.(string)
		if _, dup := md[k]; dup {
			return nil, fmt.Errorf("safetensors: header entry %q: duplicate key %q", metadataKey, k)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header entry %q, key %q: %w", metadataKey, k, err)
		}
		v, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("safetensors: header entry %q, key %q: value is not a string", metadataKey, k)
		}
		md[k] = v
	}
	return md, nil
}

func parseTensorHeader(name string, raw json.RawMessage) (headerEntry, error) {
	if name == "" {
		return headerEntry{}, errors.New("safetensors: header: tensor with an empty name")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var th tensorHeader
	if err := dec.Decode(&th); err != nil {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: header: %w", name, err)
	}
	if th.Dtype != dtypeF32 {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: dtype %q is not supported (only %s)", name, th.Dtype, dtypeF32)
	}
	if th.Shape == nil {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: missing shape", name)
	}
	elems, err := numElements(th.Shape)
	if err != nil {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	if len(th.DataOffsets) != 2 {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: data_offsets has %d values, want 2", name, len(th.DataOffsets))
	}
	begin, end := th.DataOffsets[0], th.DataOffsets[1]
	if end < begin {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: data_offsets [%d,%d]: end before begin", name, begin, end)
	}
	if end-begin != 4*uint64(elems) {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: data_offsets [%d,%d] span %d bytes, shape %v needs %d", name, begin, end, end-begin, th.Shape, 4*uint64(elems))
	}
	if end > math.MaxInt64 {
		return headerEntry{}, fmt.Errorf("safetensors: tensor %q: data_offsets [%d,%d]: out of range", name, begin, end)
	}
	return headerEntry{name: name, shape: th.Shape, begin: begin, end: end, elements: elems}, nil
}
