package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
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

// ResponseOutput is one output tensor: Data holds []float64 or []string.
type ResponseOutput struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Datatype string `json:"datatype"`
	Data     any    `json:"data"`
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
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var req InferRequest
	if err := dec.Decode(&req); err != nil {
		return nil, nil, fmt.Errorf("request body: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, errors.New("request body: trailing data after the JSON object")
	}
	if len(req.Inputs) == 0 {
		return nil, nil, errors.New("request body: no inputs")
	}
	seen := map[string]bool{}
	tensors := make([]Tensor, len(req.Inputs))
	for i, in := range req.Inputs {
		if in.Name == "" {
			return nil, nil, fmt.Errorf("inputs[%d]: name is missing", i)
		}
		if seen[in.Name] {
			return nil, nil, fmt.Errorf("input %q: given twice", in.Name)
		}
		seen[in.Name] = true
		t, err := decodeTensor(in, maxElements)
		if err != nil {
			return nil, nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		tensors[i] = t
	}
	return &req, tensors, nil
}

func decodeTensor(in RequestInput, maxElements int) (Tensor, error) {
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
	if len(in.Data) == 0 {
		return t, errors.New("data is missing")
	}
	var flat []json.RawMessage
	if err := flatten(in.Data, 0, n, &flat); err != nil {
		return t, fmt.Errorf("data: %w", err)
	}
	if len(flat) != n {
		return t, fmt.Errorf("data has %d elements, shape %v needs %d", len(flat), in.Shape, n)
	}
	if in.Datatype == TypeBytes {
		t.Strings = make([]string, n)
		for i, raw := range flat {
			if err := json.Unmarshal(raw, &t.Strings[i]); err != nil {
				return t, fmt.Errorf("data[%d]: BYTES elements must be strings, got %.40s", i, raw)
			}
		}
		return t, nil
	}
	t.Numbers = make([]float64, n)
	for i, raw := range flat {
		v, err := parseNumber(raw, in.Datatype)
		if err != nil {
			return t, fmt.Errorf("data[%d]: %w", i, err)
		}
		t.Numbers[i] = v
	}
	return t, nil
}

// flatten appends the leaves of a (possibly nested) JSON array to out, refusing more
// than limit leaves and nesting deeper than MaxTensorRank.
func flatten(raw json.RawMessage, depth, limit int, out *[]json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		if depth == 0 {
			return errors.New("not a JSON array")
		}
		if len(*out) >= limit {
			return fmt.Errorf("more elements than the shape's %d", limit)
		}
		*out = append(*out, raw)
		return nil
	}
	if depth >= MaxTensorRank {
		return fmt.Errorf("nested deeper than %d levels", MaxTensorRank)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return err
	}
	for _, it := range items {
		if err := flatten(it, depth+1, limit, out); err != nil {
			return err
		}
	}
	return nil
}

// parseNumber reads one numeric element of the datatype.
func parseNumber(raw json.RawMessage, datatype string) (float64, error) {
	var num json.Number
	if len(raw) > 0 && raw[0] == '"' {
		return 0, fmt.Errorf("%s elements must be numbers, got the string %.40s", datatype, raw)
	}
	if err := json.Unmarshal(raw, &num); err != nil {
		return 0, fmt.Errorf("%s elements must be numbers, got %.40s", datatype, raw)
	}
	switch datatype {
	case TypeINT64, TypeINT32, TypeUINT8:
		bits := map[string]int{TypeINT64: 64, TypeINT32: 32, TypeUINT8: 8}[datatype]
		var v float64
		if datatype == TypeUINT8 {
			u, err := strconv.ParseUint(num.String(), 10, bits)
			if err != nil {
				return 0, fmt.Errorf("%s is not a %s", num, datatype)
			}
			v = float64(u)
		} else {
			i, err := strconv.ParseInt(num.String(), 10, bits)
			if err != nil {
				return 0, fmt.Errorf("%s is not a %s", num, datatype)
			}
			v = float64(i)
		}
		return v, nil
	case TypeFP32:
		f, err := strconv.ParseFloat(num.String(), 32)
		if err != nil || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%s is not a finite %s", num, datatype)
		}
		return f, nil
	default:
		f, err := strconv.ParseFloat(num.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%s is not a finite %s", num, datatype)
		}
		return f, nil
	}
}
