package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// The KServe v2 binary tensor data extension (as Triton defines it): a body is a JSON
// object of HeaderInferenceContentLength bytes followed by raw tensor data. An input
// with "parameters": {"binary_data_size": N} takes the next N bytes, in the order of
// the inputs: fixed-size elements little-endian, row-major; BYTES elements each a
// 4-byte little-endian length and the bytes. Outputs asked for with "parameters":
// {"binary_data": true} (or all outputs, with the request parameter
// "binary_data_output": true) are answered the same way: without "data", with their
// "binary_data_size", their bytes after the JSON part.
const (
	// HeaderInferenceContentLength is the length of a body's JSON part.
	HeaderInferenceContentLength = "Inference-Header-Content-Length"
	// ParamBinaryDataSize is an input's (and a binary output's) byte count.
	ParamBinaryDataSize = "binary_data_size"
	// ParamBinaryData asks for an output in binary.
	ParamBinaryData = "binary_data"
	// ParamBinaryDataOutput asks for every output in binary.
	ParamBinaryDataOutput = "binary_data_output"
)

// DecodeBinaryRequest decodes a body of the binary tensor data extension whose first
// jsonLen bytes are the JSON request: the inputs with binary_data_size take their data
// from the bytes after it, which they must use up exactly. Errors name the input, as
// DecodeRequest's do.
func DecodeBinaryRequest(body []byte, jsonLen, maxElements int) (*InferRequest, []Tensor, error) {
	if jsonLen < 0 || jsonLen > len(body) {
		return nil, nil, fmt.Errorf("header %s: %d is not within the body's %d bytes", HeaderInferenceContentLength, jsonLen, len(body))
	}
	return decodeRequest(body[:jsonLen], body[jsonLen:len(body):len(body)], maxElements)
}

// binaryDataSize reads an input's binary_data_size parameter.
func binaryDataSize(params map[string]json.RawMessage) (int, bool, error) {
	raw, ok := params[ParamBinaryDataSize]
	if !ok {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil || v < 0 || v > math.MaxInt32 {
		return 0, false, fmt.Errorf("parameters.binary_data_size %.40s: want a byte count (a non-negative integer)", raw)
	}
	return int(v), true, nil
}

// elementSize is the byte size of a fixed-size datatype (0 for BYTES).
func elementSize(datatype string) int {
	switch datatype {
	case TypeUINT8:
		return 1
	case TypeINT32, TypeFP32:
		return 4
	case TypeINT64, TypeFP64:
		return 8
	}
	return 0
}

// decodeBinaryTensor reads t's n elements from raw.
func decodeBinaryTensor(t Tensor, n int, raw []byte) (Tensor, error) {
	le := binary.LittleEndian
	if t.Datatype == TypeBytes {
		t.Strings = make([]string, n)
		off := 0
		for i := range n {
			if len(raw)-off < 4 {
				return t, fmt.Errorf("binary data: element %d: %d bytes left, its 4-byte length prefix does not fit (shape %v needs %d elements)", i, len(raw)-off, t.Shape, n)
			}
			l := int(le.Uint32(raw[off:]))
			off += 4
			if l > len(raw)-off {
				return t, fmt.Errorf("binary data: element %d: length %d exceeds the %d bytes left", i, l, len(raw)-off)
			}
			t.Strings[i] = string(raw[off : off+l])
			off += l
		}
		if off != len(raw) {
			return t, fmt.Errorf("binary_data_size %d: the %d elements of shape %v take %d bytes", len(raw), n, t.Shape, off)
		}
		return t, nil
	}
	size := elementSize(t.Datatype)
	if len(raw) != n*size {
		return t, fmt.Errorf("binary_data_size %d: shape %v of %s needs %d bytes", len(raw), t.Shape, t.Datatype, n*size)
	}
	t.Numbers = getFloats(n)
	switch t.Datatype {
	case TypeUINT8:
		for i, b := range raw {
			t.Numbers[i] = float64(b)
		}
	case TypeINT32:
		for i := range t.Numbers {
			t.Numbers[i] = float64(int32(le.Uint32(raw[4*i:])))
		}
	case TypeINT64:
		for i := range t.Numbers {
			t.Numbers[i] = float64(int64(le.Uint64(raw[8*i:])))
		}
	case TypeFP32:
		for i := range t.Numbers {
			v := float64(math.Float32frombits(le.Uint32(raw[4*i:])))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return t, fmt.Errorf("data[%d]: %v is not a finite FP32", i, v)
			}
			t.Numbers[i] = v
		}
	case TypeFP64:
		for i := range t.Numbers {
			v := math.Float64frombits(le.Uint64(raw[8*i:]))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return t, fmt.Errorf("data[%d]: %v is not a finite FP64", i, v)
			}
			t.Numbers[i] = v
		}
	default:
		return t, errors.New("datatype has no binary form")
	}
	return t, nil
}

// boolParam reads an optional boolean parameter.
func boolParam(params map[string]json.RawMessage, name string) (bool, error) {
	raw, ok := params[name]
	if !ok {
		return false, nil
	}
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("parameters.%s %.40s: want true or false", name, raw)
}

// binaryOutputs tells which of the answered outputs go in binary: those asked for
// with binary_data true, or all with the request's binary_data_output true.
func binaryOutputs(req *InferRequest, outs []ResponseOutput) (map[string]bool, error) {
	all, err := boolParam(req.Parameters, ParamBinaryDataOutput)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	bin := map[string]bool{}
	for _, o := range req.Outputs {
		b, err := boolParam(o.Parameters, ParamBinaryData)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", o.Name, err)
		}
		if _, given := o.Parameters[ParamBinaryData]; given {
			bin[o.Name] = b
		} else if all {
			bin[o.Name] = true
		}
	}
	if all && len(req.Outputs) == 0 {
		for _, o := range outs {
			bin[o.Name] = true
		}
	}
	for name, b := range bin {
		if !b {
			delete(bin, name)
		}
	}
	return bin, nil
}

// encodeBinaryOutputs moves the data of the binary outputs into one byte slice, in
// the order of outs, leaving binary_data_size in their parameters.
func encodeBinaryOutputs(outs []ResponseOutput, bin map[string]bool) []byte {
	var buf []byte
	le := binary.LittleEndian
	for i := range outs {
		o := &outs[i]
		if !bin[o.Name] {
			continue
		}
		start := len(buf)
		switch d := o.Data.(type) {
		case []float64:
			for _, v := range d {
				buf = le.AppendUint64(buf, math.Float64bits(v))
			}
		case []string:
			for _, v := range d {
				buf = le.AppendUint32(buf, uint32(len(v)))
				buf = append(buf, v...)
			}
		}
		o.Data = nil
		o.Parameters = map[string]any{ParamBinaryDataSize: len(buf) - start}
	}
	return buf
}
