package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/worker/data"
)

// binaryBody builds a request of the binary tensor data extension: each input's data
// (in the input's type) is sent as binary unless keepJSON names it; outputs are asked
// for by name with binary_data as given.
func binaryBody(t testing.TB, inputs []input, keepJSON map[string]bool, outputs map[string]bool) (body []byte, jsonLen int) {
	t.Helper()
	type binInput struct {
		Name       string         `json:"name"`
		Shape      []int          `json:"shape"`
		Datatype   string         `json:"datatype"`
		Parameters map[string]any `json:"parameters,omitempty"`
		Data       any            `json:"data,omitempty"`
	}
	var req struct {
		Inputs  []binInput       `json:"inputs"`
		Outputs []map[string]any `json:"outputs,omitempty"`
	}
	var raw []byte
	le := binary.LittleEndian
	for _, in := range inputs {
		bi := binInput{Name: in.Name, Shape: in.Shape, Datatype: in.Datatype}
		if keepJSON[in.Name] {
			bi.Data = in.Data
			req.Inputs = append(req.Inputs, bi)
			continue
		}
		start := len(raw)
		switch d := in.Data.(type) {
		case []string:
			for _, s := range d {
				raw = le.AppendUint32(raw, uint32(len(s)))
				raw = append(raw, s...)
			}
		case []float64:
			for _, v := range d {
				switch in.Datatype {
				case TypeFP64:
					raw = le.AppendUint64(raw, math.Float64bits(v))
				case TypeFP32:
					raw = le.AppendUint32(raw, math.Float32bits(float32(v)))
				case TypeINT64:
					raw = le.AppendUint64(raw, uint64(int64(v)))
				case TypeINT32:
					raw = le.AppendUint32(raw, uint32(int32(v)))
				case TypeUINT8:
					raw = append(raw, byte(v))
				}
			}
		case []int:
			for _, v := range d {
				raw = append(raw, byte(v))
			}
		default:
			t.Fatalf("input %s: data %T", in.Name, in.Data)
		}
		bi.Parameters = map[string]any{"binary_data_size": len(raw) - start}
		req.Inputs = append(req.Inputs, bi)
	}
	for name, b := range outputs {
		req.Outputs = append(req.Outputs, map[string]any{"name": name, "parameters": map[string]any{"binary_data": b}})
	}
	head, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return append(head, raw...), len(head)
}

// postBinary sends a binary-extension request and returns the answer.
func (f *fixture) postBinary(body []byte, jsonLen int) answer {
	r := httptest.NewRequest("POST", "/v2/models/test-model/infer", bytes.NewReader(body))
	r.Header.Set(HeaderInferenceContentLength, strconv.Itoa(jsonLen))
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, r)
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// decodeBinaryAnswer splits a binary answer and returns its outputs' values by name
// ([]float64 or []string), from JSON data or binary data alike.
func decodeBinaryAnswer(t *testing.T, a answer) map[string]any {
	t.Helper()
	if a.code != 200 {
		t.Fatalf("answer %d: %s", a.code, a.body)
	}
	jsonLen := len(a.body)
	if h := a.header.Get(HeaderInferenceContentLength); h != "" {
		var err error
		if jsonLen, err = strconv.Atoi(h); err != nil || jsonLen > len(a.body) {
			t.Fatalf("header %q for a body of %d bytes", h, len(a.body))
		}
	}
	var resp struct {
		Outputs []struct {
			Name       string          `json:"name"`
			Shape      []int           `json:"shape"`
			Datatype   string          `json:"datatype"`
			Parameters map[string]int  `json:"parameters"`
			Data       json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(a.body[:jsonLen], &resp); err != nil {
		t.Fatalf("JSON part %q: %v", a.body[:jsonLen], err)
	}
	raw := a.body[jsonLen:]
	out := map[string]any{}
	le := binary.LittleEndian
	for _, o := range resp.Outputs {
		size, isBin := o.Parameters["binary_data_size"]
		if !isBin {
			if o.Datatype == TypeBytes {
				var v []string
				if err := json.Unmarshal(o.Data, &v); err != nil {
					t.Fatal(err)
				}
				out[o.Name] = v
			} else {
				var v []float64
				if err := json.Unmarshal(o.Data, &v); err != nil {
					t.Fatal(err)
				}
				out[o.Name] = v
			}
			continue
		}
		if o.Data != nil {
			t.Fatalf("output %s: data and binary_data_size", o.Name)
		}
		if size > len(raw) {
			t.Fatalf("output %s: binary_data_size %d, %d bytes left", o.Name, size, len(raw))
		}
		part := raw[:size]
		raw = raw[size:]
		if o.Datatype == TypeBytes {
			var v []string
			for len(part) > 0 {
				l := int(le.Uint32(part))
				v = append(v, string(part[4:4+l]))
				part = part[4+l:]
			}
			out[o.Name] = v
			continue
		}
		v := make([]float64, size/8)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(part[8*i:]))
		}
		out[o.Name] = v
	}
	if len(raw) != 0 {
		t.Fatalf("%d bytes after the outputs' binary data", len(raw))
	}
	return out
}

// TestBinaryTensorData sends the same rows as JSON and through the binary extension
// (all inputs binary, some binary, outputs binary or not) and checks the answers are
// equal, for a tabular model (FP64, INT64 and BYTES inputs) and an image model (UINT8
// and FP32 inputs, multiclass outputs).
func TestBinaryTensorData(t *testing.T) {
	t.Run("tabular", func(t *testing.T) {
		f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
		rows := []int{3, 1, 4, 1, 5, 9, 2, 6}
		var inputs []input
		for _, c := range pre.Columns {
			ci := tbl.ColumnIndex(c.Name)
			if c.Kind == data.KindCategorical {
				vals := make([]string, len(rows))
				for i, r := range rows {
					vals[i] = tbl.Rows[r][ci]
				}
				inputs = append(inputs, input{c.Name, []int{len(rows)}, TypeBytes, vals})
				continue
			}
			vals := make([]float64, len(rows))
			dt := TypeINT64
			for i, r := range rows {
				vals[i], _ = strconv.ParseFloat(tbl.Rows[r][ci], 64)
				if vals[i] != math.Trunc(vals[i]) {
					dt = TypeFP64
				}
			}
			inputs = append(inputs, input{c.Name, []int{len(rows)}, dt, vals})
		}
		want := decodeBinaryAnswer(t, f.post(inferReq{Inputs: inputs}))
		for _, tc := range []struct {
			name    string
			keep    map[string]bool
			outputs map[string]bool
		}{
			{"all-binary", nil, map[string]bool{OutputProbability: true, OutputLabel: true}},
			{"mixed-inputs", map[string]bool{inputs[0].Name: true, inputs[3].Name: true}, map[string]bool{OutputProbability: true, OutputLabel: false}},
			{"json-outputs", nil, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, n := binaryBody(t, inputs, tc.keep, tc.outputs)
				a := f.postBinary(body, n)
				got := decodeBinaryAnswer(t, a)
				for name, isBin := range tc.outputs {
					if got := binarySize(t, a, name) >= 0; got != isBin {
						t.Fatalf("output %s: binary %v, asked %v: %q", name, got, isBin, a.body)
					}
				}
				assertClose(t, got[OutputProbability].([]float64), want[OutputProbability].([]float64))
				if !equalStrings(got[OutputLabel].([]string), want[OutputLabel].([]string)) {
					t.Fatalf("labels %v, want %v", got[OutputLabel], want[OutputLabel])
				}
			})
		}
	})
	t.Run("image", func(t *testing.T) {
		f := cnnFixture(t)
		const n = 5
		rng := rand.New(rand.NewPCG(3, 3))
		pix := make([]float64, n*56)
		for i := range pix {
			pix[i] = float64(rng.IntN(256))
		}
		want := decodeBinaryAnswer(t, f.post(inferReq{Inputs: []input{{ImageInput, []int{n, 1, 8, 7}, TypeUINT8, pix}}}))
		for _, dt := range []string{TypeUINT8, TypeFP32, TypeFP64, TypeINT32} {
			body, jl := binaryBody(t, []input{{ImageInput, []int{n, 1, 8, 7}, dt, pix}}, nil, nil)
			// The request parameter asks for every output in binary.
			var req map[string]any
			if err := json.Unmarshal(body[:jl], &req); err != nil {
				t.Fatal(err)
			}
			req["parameters"] = map[string]any{"binary_data_output": true}
			head, _ := json.Marshal(req)
			a := f.postBinary(append(head, body[jl:]...), len(head))
			if a.header.Get("Content-Type") != "application/octet-stream" || strings.Contains(string(a.body), `"data"`) {
				t.Fatalf("%s: not a binary answer: %v %q", dt, a.header, a.body)
			}
			got := decodeBinaryAnswer(t, a)
			assertClose(t, got[OutputProbabilities].([]float64), want[OutputProbabilities].([]float64))
			if !equalStrings(got[OutputLabel].([]string), want[OutputLabel].([]string)) {
				t.Fatalf("%s: labels %v, want %v", dt, got[OutputLabel], want[OutputLabel])
			}
		}
	})
}

// binarySize returns an output's binary_data_size in the answer, or -1.
func binarySize(t *testing.T, a answer, name string) int {
	t.Helper()
	jsonLen := len(a.body)
	if h := a.header.Get(HeaderInferenceContentLength); h != "" {
		jsonLen, _ = strconv.Atoi(h)
	}
	var resp struct {
		Outputs []struct {
			Name       string         `json:"name"`
			Parameters map[string]int `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(a.body[:jsonLen], &resp); err != nil {
		t.Fatal(err)
	}
	for _, o := range resp.Outputs {
		if size, ok := o.Parameters["binary_data_size"]; o.Name == name && ok {
			return size
		}
	}
	return -1
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBinaryBadInput checks that malformed binary requests get 400 naming the input
// (or the header) at fault, and that the server goes on serving.
func TestBinaryBadInput(t *testing.T) {
	f := cnnFixture(t)
	pix := make([]int, 2*56)
	good, goodLen := binaryBody(t, []input{{ImageInput, []int{2, 1, 8, 7}, TypeUINT8, pix}}, nil, nil)
	// withBin is a JSON part and binary data, with the JSON part's length.
	withBin := func(j string, bin ...byte) ([]byte, string) {
		return append([]byte(j), bin...), strconv.Itoa(len(j))
	}
	fp32 := func(vals ...float32) []byte {
		var b []byte
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	cases := []struct {
		name    string
		body    []byte
		jsonLen string
		want    string
	}{
		{"trailing bytes", append(append([]byte(nil), good...), 1, 2), strconv.Itoa(goodLen), "binary data after the JSON part"},
		{"short data", good[:len(good)-1], strconv.Itoa(goodLen), `input \"image\": binary_data_size 112 exceeds the 111 bytes`},
	}
	add := func(name string, body []byte, jsonLen, want string) {
		cases = append(cases, struct {
			name    string
			body    []byte
			jsonLen string
			want    string
		}{name, body, jsonLen, want})
	}
	b, l := withBin(`{"inputs":[{"name":"image","shape":[2,1,8,7],"datatype":"UINT8","parameters":{"binary_data_size":3}}]}`, 1, 2, 3)
	add("size not the shape's", b, l, `input \"image\": binary_data_size 3: shape [2 1 8 7] of UINT8 needs 112 bytes`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1,1,8,7],"datatype":"UINT8","parameters":{"binary_data_size":"56"}}]}`)
	add("size not a number", b, l, `input \"image\": parameters.binary_data_size \"56\": want a byte count`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1,1,1,1],"datatype":"UINT8","data":[1],"parameters":{"binary_data_size":1}}]}`, 1)
	add("data and binary", b, l, `input \"image\": both data and parameters.binary_data_size`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1,1,1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`, fp32(1, float32(math.NaN()))...)
	add("NaN FP32", b, l, `input \"image\": data[1]: NaN is not a finite FP32`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1,1,1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`, fp32(1, 2)...)
	add("shape", b, l, `input \"image\": shape [1 1 1 2]: want [N, 1, 8, 7]`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`, 1, 0, 0, 0, 'a', 9)
	add("BYTES length prefix cut", b, l, `input \"image\": binary data: element 1: 1 bytes left`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`, 9, 0, 0, 0, 'a', 'b')
	add("BYTES length past the data", b, l, `input \"image\": binary data: element 0: length 9 exceeds the 2 bytes left`)
	b, l = withBin(`{"inputs":[{"name":"image","shape":[1,1,8,7],"datatype":"UINT8","parameters":{"binary_data_size":-1}}]}`)
	add("negative size", b, l, `input \"image\": parameters.binary_data_size -1: want a byte count`)
	add("no header", []byte(`{"inputs":[{"name":"image","shape":[1,1,8,7],"datatype":"UINT8","parameters":{"binary_data_size":56}}]}`), "", `input \"image\": parameters.binary_data_size needs the Inference-Header-Content-Length header`)
	add("header not a number", good, "ten", "header Inference-Header-Content-Length")
	add("header past the body", good, strconv.Itoa(len(good)+1), "header Inference-Header-Content-Length")
	// A JSON part asking for an output with a non-boolean binary_data.
	var req map[string]any
	if err := json.Unmarshal(good[:goodLen], &req); err != nil {
		t.Fatal(err)
	}
	req["outputs"] = []any{map[string]any{"name": "label", "parameters": map[string]any{"binary_data": "yes"}}}
	h, _ := json.Marshal(req)
	add("binary_data not a bool", append(h, good[goodLen:]...), strconv.Itoa(len(h)), `output \"label\": parameters.binary_data \"yes\": want true or false`)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v2/models/test-model/infer", bytes.NewReader(c.body))
			if c.jsonLen != "" {
				r.Header.Set(HeaderInferenceContentLength, c.jsonLen)
			}
			rec := httptest.NewRecorder()
			f.srv.ServeHTTP(rec, r)
			if rec.Code != 400 || !strings.Contains(rec.Body.String(), c.want) {
				t.Fatalf("%d %s, want 400 with %s", rec.Code, rec.Body, c.want)
			}
		})
	}
	if a := f.postBinary(good, goodLen); a.code != 200 {
		t.Fatalf("good request after the bad ones: %d %s", a.code, a.body)
	}
}

// FuzzDecodeBinaryRequest feeds arbitrary bodies and JSON lengths to the binary
// decoder: it must return tensors whose element counts match their shapes and hold
// finite numbers, or an error, and never panic.
func FuzzDecodeBinaryRequest(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"image","shape":[1,2],"datatype":"UINT8","parameters":{"binary_data_size":2}}]}`+"\x07\xff"), 96)
	f.Add([]byte(`{"inputs":[{"name":"Dept","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}},{"name":"Age","shape":[1],"datatype":"FP64","data":[3]}]}`+"\x05\x00\x00\x00Sales\x04\x00\x00\x00HR"), 141)
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"label","parameters":{"binary_data":true}}]}`+"\x00\x00\x80\x3f\x00\x00\xc0\x7f"), 140)
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","parameters":{"binary_data_size":8}}]}`+"\x01\x00\x00\x00\x00\x00\x00\x80"), 87)
	f.Fuzz(func(t *testing.T, body []byte, jsonLen int) {
		_, tensors, err := DecodeBinaryRequest(body, jsonLen, 1<<16)
		if err != nil {
			return
		}
		for _, tn := range tensors {
			n := 1
			for _, d := range tn.Shape {
				n *= d
			}
			if len(tn.Numbers)+len(tn.Strings) != n || (tn.Numbers != nil) == (tn.Strings != nil) {
				t.Fatalf("tensor %q shape %v with %d numbers and %d strings", tn.Name, tn.Shape, len(tn.Numbers), len(tn.Strings))
			}
			for _, v := range tn.Numbers {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("tensor %q holds %v", tn.Name, v)
				}
			}
		}
	})
}
