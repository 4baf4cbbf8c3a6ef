package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"
)

// Open Inference Protocol (KServe v2) tensor data types this server reads.
const (
	TypeBytes = "BYTES"
	TypeFP32  = "FP32"
	TypeFP64  = "FP64"
	TypeINT64 = "INT64"
	TypeINT32 = "INT32"
	TypeUINT8 = "UINT8"
)

// MaxTensorRank bounds the nesting of a tensor's data and the length of its shape.
const MaxTensorRank = 8

// InferRequest is the body of POST /v2/models/{name}/infer.
type InferRequest struct {
	ID         string                     `json:"id,omitempty"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
	Inputs     []RequestInput             `json:"inputs"`
	Outputs    []RequestOutput            `json:"outputs,omitempty"`
}

// RequestInput is one input tensor of a request; Data holds the raw JSON array (flat
// or nested row-major), decoded by Decode according to Datatype.
type RequestInput struct {
	Name       string                     `json:"name"`
	Shape      []int64                    `json:"shape"`
	Datatype   string                     `json:"datatype"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
	Data       json.RawMessage            `json:"data"`
}

// RequestOutput names an output the client wants.
type RequestOutput struct {
	Name       string                     `json:"name"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
}

// Tensor is a decoded input tensor: Numbers for numeric types, Strings for BYTES.
type Tensor struct {
	Name     string
	Shape    []int
	Datatype string
	Numbers  []float64
	Strings  []string
}

// InferResponse is the body of a successful inference.
type InferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version,omitempty"`
	ID           string           `json:"id,omitempty"`
	Outputs      []ResponseOutput `json:"outputs"`
}

// ResponseOutput is one output tensor: Data holds []float64 or []string, or is nil
// for an output sent in binary (see HeaderInferenceContentLength), whose Parameters
// then hold its binary_data_size.
type ResponseOutput struct {
	Name       string         `json:"name"`
	Shape      []int          `json:"shape"`
	Datatype   string         `json:"datatype"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       any            `json:"data,omitempty"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// TensorMetadata describes an input or output in the model metadata; -1 is a
// variable dimension (the batch).
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the body of GET /v2/models/{name}.
type ModelMetadata struct {
	Name       string            `json:"name"`
	Versions   []string          `json:"versions"`
	Platform   string            `json:"platform"`
	Inputs     []TensorMetadata  `json:"inputs"`
	Outputs    []TensorMetadata  `json:"outputs"`
	Parameters map[string]string `json:"parameters,omitempty"`
}

// DecodeRequest strictly decodes an inference request body and its tensors: unknown
// fields, trailing data, a missing or duplicate input name, a shape with a negative
// dimension or too many elements, data whose element count differs from the shape's,
// or values that do not fit the datatype are errors naming the input. maxElements
// bounds each tensor's element count.
func DecodeRequest(body []byte, maxElements int) (*InferRequest, []Tensor, error) {
	return decodeRequest(body, nil, maxElements)
}

// decodeRequest decodes the JSON part of a request; binary is the binary part of the
// binary tensor data extension (nil: none, no input may have binary_data_size).
func decodeRequest(body, binary []byte, maxElements int) (*InferRequest, []Tensor, error) {
	if req, ok := fastDecodeEnvelope(body); ok {
		if tensors, err := decodeInputs(req, binary, maxElements); err == nil {
			return req, tensors, nil
		}
	}
	// The reference decoder: for every request the fast one does not take, and for the
	// error message of every bad one.
	req, err := decodeEnvelope(body)
	if err != nil {
		return nil, nil, err
	}
	tensors, err := decodeInputs(req, binary, maxElements)
	if err != nil {
		return nil, nil, err
	}
	return req, tensors, nil
}

// decodeEnvelope decodes the request's JSON with encoding/json: unknown fields and
// trailing data are errors.
func decodeEnvelope(body []byte) (*InferRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var req InferRequest
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("request body: trailing data after the JSON object")
	}
	return &req, nil
}

// decodeInputs checks the request's inputs and decodes their tensors.
func decodeInputs(req *InferRequest, binary []byte, maxElements int) ([]Tensor, error) {
	if len(req.Inputs) == 0 {
		return nil, errors.New("request body: no inputs")
	}
	seen := map[string]bool{}
	tensors := make([]Tensor, len(req.Inputs))
	off := 0 // the binary data consumed
	for i, in := range req.Inputs {
		if in.Name == "" {
			return nil, fmt.Errorf("inputs[%d]: name is missing", i)
		}
		if seen[in.Name] {
			return nil, fmt.Errorf("input %q: given twice", in.Name)
		}
		seen[in.Name] = true
		size, isBinary, err := binaryDataSize(in.Parameters)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		var raw []byte
		if isBinary {
			switch {
			case binary == nil:
				return nil, fmt.Errorf("input %q: parameters.binary_data_size needs the %s header (the length of the JSON part)", in.Name, HeaderInferenceContentLength)
			case len(in.Data) > 0:
				return nil, fmt.Errorf("input %q: both data and parameters.binary_data_size given", in.Name)
			case size > len(binary)-off:
				return nil, fmt.Errorf("input %q: binary_data_size %d exceeds the %d bytes of binary data left", in.Name, size, len(binary)-off)
			}
			raw = binary[off : off+size]
			off += size
		}
		t, err := decodeTensor(in, raw, isBinary, maxElements)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		tensors[i] = t
	}
	if off != len(binary) {
		return nil, fmt.Errorf("request body: %d bytes of binary data after the JSON part, the inputs' binary_data_size add up to %d", len(binary), off)
	}
	return tensors, nil
}

func decodeTensor(in RequestInput, binary []byte, isBinary bool, maxElements int) (Tensor, error) {
	t := Tensor{Name: in.Name, Datatype: in.Datatype}
	if len(in.Shape) == 0 || len(in.Shape) > MaxTensorRank {
		return t, fmt.Errorf("shape %v: want 1 to %d dimensions", in.Shape, MaxTensorRank)
	}
	n := 1
	for _, d := range in.Shape {
		if d < 0 {
			return t, fmt.Errorf("shape %v: negative dimension", in.Shape)
		}
		if d > int64(maxElements) || (d > 0 && n > maxElements/int(d)) {
			return t, fmt.Errorf("shape %v: more than %d elements", in.Shape, maxElements)
		}
		n *= int(d)
		t.Shape = append(t.Shape, int(d))
	}
	switch in.Datatype {
	case TypeBytes, TypeFP32, TypeFP64, TypeINT64, TypeINT32, TypeUINT8:
	case "":
		return t, errors.New("datatype is missing")
	default:
		return t, fmt.Errorf("datatype %q is not supported (use BYTES, FP32, FP64, INT64, INT32 or UINT8)", in.Datatype)
	}
	if isBinary {
		return decodeBinaryTensor(t, n, binary)
	}
	if len(in.Data) == 0 {
		return t, errors.New("data is missing")
	}
	var interned map[string]string // a column's values repeat: one string each
	if in.Datatype == TypeBytes {
		t.Strings = make([]string, n)
		interned = map[string]string{}
	} else {
		t.Numbers = getFloats(n)
		if fastNumbers(in.Data, t.Numbers, in.Datatype) {
			return t, nil
		}
	}
	count, err := walkArray(in.Data, n, func(i int, raw []byte) error {
		if t.Strings != nil {
			if s, ok := interned[string(raw)]; ok {
				t.Strings[i] = s
				return nil
			}
			s, err := parseString(raw)
			if err != nil {
				return fmt.Errorf("data[%d]: BYTES elements must be strings, got %.40s", i, raw)
			}
			if len(interned) < 4096 {
				interned[string(raw)] = s
			}
			t.Strings[i] = s
			return nil
		}
		v, err := parseNumber(raw, in.Datatype)
		if err != nil {
			return fmt.Errorf("data[%d]: %w", i, err)
		}
		t.Numbers[i] = v
		return nil
	})
	if err != nil {
		if errors.Is(err, errTooMany) || errors.Is(err, errArray) {
			return t, fmt.Errorf("data: %w", err)
		}
		return t, err
	}
	if count != n {
		return t, fmt.Errorf("data has %d elements, shape %v needs %d", count, in.Shape, n)
	}
	return t, nil
}

// parseNumber reads one numeric element (a JSON number) of the datatype.
func parseNumber(raw []byte, datatype string) (float64, error) {
	if len(raw) > 0 && raw[0] == '"' {
		return 0, fmt.Errorf("%s elements must be numbers, got the string %.40s", datatype, raw)
	}
	if !isJSONNumber(raw) {
		return 0, fmt.Errorf("%s elements must be numbers, got %.40s", datatype, raw)
	}
	num := unsafe.String(unsafe.SliceData(raw), len(raw)) // read only while raw lives
	switch datatype {
	case TypeINT64, TypeINT32:
		bits := 64
		if datatype == TypeINT32 {
			bits = 32
		}
		i, err := strconv.ParseInt(num, 10, bits)
		if err != nil {
			return 0, fmt.Errorf("%s is not a %s", raw, datatype)
		}
		return float64(i), nil
	case TypeUINT8:
		u, err := strconv.ParseUint(num, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("%s is not a %s", raw, datatype)
		}
		return float64(u), nil
	case TypeFP32:
		f, err := strconv.ParseFloat(num, 32)
		if err != nil || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%s is not a finite %s", raw, datatype)
		}
		return f, nil
	default:
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%s is not a finite %s", raw, datatype)
		}
		return f, nil
	}
}

// isJSONNumber tells whether b is a number in JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	return i == len(b)
}

// parseString decodes one JSON string element: printable ASCII with the common
// escapes directly, anything else (other bytes, surrogate pairs) through
// encoding/json, which checks UTF-8.
func parseString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", errors.New("not a string")
	}
	inner := raw[1 : len(raw)-1]
	plain := true
	for _, c := range inner {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(inner), nil
	}
	if s, ok := unescapeASCII(inner); ok {
		return s, nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// unescapeASCII decodes a string body of printable ASCII with the escapes \" \\ \/ \b
// \f \n \r \t and \uXXXX below U+0080 (what encoders write for "&", "<", ">"); it
// reports false for anything else.
func unescapeASCII(b []byte) (string, bool) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"' || c < 0x20 || c >= 0x80:
			return "", false
		case c != '\\':
			out = append(out, c)
			continue
		}
		i++
		if i >= len(b) {
			return "", false
		}
		switch b[i] {
		case '"', '\\', '/':
			out = append(out, b[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(b) {
				return "", false
			}
			v, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 16)
			if err != nil || v >= 0x80 {
				return "", false
			}
			out = append(out, byte(v))
			i += 4
		default:
			return "", false
		}
	}
	return string(out), true
}

var (
	errTooMany = errors.New("more elements than the shape's")
	errArray   = errors.New("malformed array")
)

// walkArray calls leaf for each leaf of the (possibly nested, at most MaxTensorRank
// deep) JSON array raw, in order, and returns their count; more than limit leaves is
// an error.
func walkArray(raw []byte, limit int, leaf func(i int, v []byte) error) (int, error) {
	w := arrayWalker{b: raw, limit: limit, leaf: leaf}
	w.space()
	if w.i >= len(w.b) || w.b[w.i] != '[' {
		return 0, errors.New("not a JSON array")
	}
	if err := w.array(1); err != nil {
		return w.n, err
	}
	w.space()
	if w.i != len(w.b) {
		return w.n, fmt.Errorf("%w: data after the array", errArray)
	}
	return w.n, nil
}

type arrayWalker struct {
	b     []byte
	i     int
	n     int
	limit int
	leaf  func(i int, v []byte) error
}

func (w *arrayWalker) space() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// array walks the array at w.i, the depth-th level.
func (w *arrayWalker) array(depth int) error {
	if depth > MaxTensorRank {
		return fmt.Errorf("nested deeper than %d levels", MaxTensorRank)
	}
	w.i++ // '['
	w.space()
	if w.i < len(w.b) && w.b[w.i] == ']' {
		w.i++
		return nil
	}
	for {
		w.space()
		if w.i >= len(w.b) {
			return fmt.Errorf("%w: unexpected end", errArray)
		}
		if w.b[w.i] == '[' {
			if err := w.array(depth + 1); err != nil {
				return err
			}
		} else {
			start := w.i
			if err := w.skipValue(); err != nil {
				return err
			}
			if w.n >= w.limit {
				return fmt.Errorf("%w %d", errTooMany, w.limit)
			}
			if err := w.leaf(w.n, w.b[start:w.i]); err != nil {
				return err
			}
			w.n++
		}
		w.space()
		if w.i >= len(w.b) {
			return fmt.Errorf("%w: unexpected end", errArray)
		}
		switch w.b[w.i] {
		case ',':
			w.i++
		case ']':
			w.i++
			return nil
		default:
			return fmt.Errorf("%w: unexpected %q", errArray, w.b[w.i])
		}
	}
}

// skipValue moves past one scalar, string or object at w.i.
func (w *arrayWalker) skipValue() error {
	nest := 0
	for w.i < len(w.b) {
		c := w.b[w.i]
		switch {
		case c == '"':
			w.i++
			for w.i < len(w.b) && w.b[w.i] != '"' {
				if w.b[w.i] == '\\' {
					w.i++
				}
				w.i++
			}
			if w.i >= len(w.b) {
				return fmt.Errorf("%w: unterminated string", errArray)
			}
			w.i++
		case c == '{' || (c == '[' && nest > 0):
			nest++
			w.i++
		case c == '}' || (c == ']' && nest > 0):
			nest--
			w.i++
			if nest < 0 {
				return fmt.Errorf("%w: unexpected %q", errArray, c)
			}
		case nest == 0 && (c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return nil
		default:
			w.i++
		}
		if nest == 0 && w.i > 0 && (w.b[w.i-1] == '"' || w.b[w.i-1] == '}') {
			return nil
		}
	}
	if nest != 0 {
		return fmt.Errorf("%w: unexpected end", errArray)
	}
	return nil
}
