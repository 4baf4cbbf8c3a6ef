package serve

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
)

// appendResponse appends resp as encoding/json's Encoder writes it (HTML escaping on,
// a newline at the end), byte for byte, without reflection: strconv.AppendFloat into
// one buffer for the outputs' numbers. It handles the common form only: outputs with
// a shape, no parameters and []float64 (finite) or []string data; for anything else it
// reports false and the caller encodes with encoding/json, the reference
// (TestAppendResponseMatchesEncodingJSON and FuzzAppendResponse check).
func appendResponse(b []byte, resp *InferResponse) ([]byte, bool) {
	if resp.Outputs == nil {
		return b, false
	}
	b = append(b, `{"model_name":`...)
	b = appendJSONString(b, resp.ModelName)
	if resp.ModelVersion != "" {
		b = append(b, `,"model_version":`...)
		b = appendJSONString(b, resp.ModelVersion)
	}
	if resp.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, resp.ID)
	}
	b = append(b, `,"outputs":[`...)
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if o.Shape == nil || o.Parameters != nil {
			return b, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendJSONString(b, o.Name)
		b = append(b, `,"shape":[`...)
		for j, d := range o.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(d), 10)
		}
		b = append(b, `],"datatype":`...)
		b = appendJSONString(b, o.Datatype)
		switch d := o.Data.(type) {
		case nil:
		case []float64:
			if d == nil {
				return b, false
			}
			b = append(b, `,"data":[`...)
			for j, v := range d {
				if j > 0 {
					b = append(b, ',')
				}
				var ok bool
				if b, ok = appendJSONFloat(b, v); !ok {
					return b, false
				}
			}
			b = append(b, ']')
		case []string:
			if d == nil {
				return b, false
			}
			b = append(b, `,"data":[`...)
			for j, v := range d {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, v)
			}
			b = append(b, ']')
		default:
			return b, false
		}
		b = append(b, '}')
	}
	return append(b, "]}\n"...), true
}

// appendJSONFloat appends v as encoding/json writes a float64; it reports false for
// NaN and infinities, which encoding/json refuses.
func appendJSONFloat(b []byte, v float64) ([]byte, bool) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

// appendJSONString appends s quoted as encoding/json writes it: printable ASCII
// other than the quote, backslash and HTML's <, > and & directly, anything else
// through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// responseBuffers pools the buffers writeResponse encodes into (*[]byte).
var responseBuffers sync.Pool

// writeResponse writes a successful inference's JSON answer: appendResponse's
// encoding, else encoding/json's.
func writeResponse(w http.ResponseWriter, resp *InferResponse) {
	bp, _ := responseBuffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer responseBuffers.Put(bp)
	b, ok := appendResponse((*bp)[:0], resp)
	*bp = b[:0]
	if !ok {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
