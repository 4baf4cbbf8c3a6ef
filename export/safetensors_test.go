package export

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestSafetensorsGoldenLayout(t *testing.T) {
	tensors := []Tensor{
		{Name: "a", Shape: []int{2}, Data: []float32{1, -2}},
		{Name: "b", Shape: []int{}, Data: []float32{0.5}},
	}
	var got bytes.Buffer
	if err := WriteSafetensors(&got, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}

	// Build the expected file by hand from the format's definition.
	header := `{"__metadata__":{"format":"pt"},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"b":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}`
	if len(header) != 138 {
		t.Fatalf("test header is %d bytes, expected 138", len(header))
	}
	header += "      " // 138 -> 144, the next multiple of 8
	var want []byte
	want = append(want, 144, 0, 0, 0, 0, 0, 0, 0) // little-endian uint64 header length
	want = append(want, header...)
	want = append(want,
		0x00, 0x00, 0x80, 0x3f, // 1.0  = 0x3f800000
		0x00, 0x00, 0x00, 0xc0, // -2.0 = 0xc0000000
		0x00, 0x00, 0x00, 0x3f, // 0.5  = 0x3f000000
	)
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("layout mismatch\n got %q\nwant %q", got.Bytes(), want)
	}
}

func TestSafetensorsHeaderPadding(t *testing.T) {
	for nameLen := 1; nameLen <= 16; nameLen++ {
		var buf bytes.Buffer
		name := strings.Repeat("x", nameLen)
		if err := WriteSafetensors(&buf, []Tensor{{Name: name, Shape: []int{1}, Data: []float32{3}}}, nil); err != nil {
			t.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(buf.Bytes()[:8])
		if n%8 != 0 {
			t.Fatalf("name length %d: header length %d not a multiple of 8", nameLen, n)
		}
		if int(8+n+4) != buf.Len() {
			t.Fatalf("name length %d: file %d bytes, want %d", nameLen, buf.Len(), 8+n+4)
		}
		if !bytes.HasPrefix(buf.Bytes()[8:], []byte("{")) || bytes.Contains(buf.Bytes()[8:8+n], []byte("__metadata__")) {
			t.Fatalf("unexpected header %q", buf.Bytes()[8:8+n])
		}
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		tensors  []Tensor
		metadata map[string]string
	}{
		{"none", nil, nil},
		{"metadata only", nil, map[string]string{"job": "j1", "quote\"and\\slash": "ü\n"}},
		{"mlp", []Tensor{
			{Name: "layers.0.weight", Shape: []int{3, 2}, Data: []float32{1, 2, 3, 4, 5, 6}},
			{Name: "layers.0.bias", Shape: []int{3}, Data: []float32{-1, 0, 1}},
			{Name: "scalar", Shape: []int{}, Data: []float32{42}},
			{Name: "empty", Shape: []int{0, 5}, Data: []float32{}},
		}, map[string]string{"format": "pt", "step": "200"}},
		{"special values", []Tensor{
			{Name: "s", Shape: []int{6}, Data: []float32{
				float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
				math.SmallestNonzeroFloat32, math.MaxFloat32, float32(math.Copysign(0, -1)),
			}},
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteSafetensors(&buf, tc.tensors, tc.metadata); err != nil {
				t.Fatal(err)
			}
			got, md, err := ReadSafetensors(&buf)
			if err != nil {
				t.Fatalf("ReadSafetensors: %v", err)
			}
			if len(tc.metadata) == 0 {
				if md != nil {
					t.Fatalf("metadata = %v, want nil", md)
				}
			} else if !reflect.DeepEqual(md, tc.metadata) {
				t.Fatalf("metadata = %v, want %v", md, tc.metadata)
			}
			if len(got) != len(tc.tensors) {
				t.Fatalf("%d tensors, want %d", len(got), len(tc.tensors))
			}
			for i, w := range tc.tensors {
				g := got[i]
				if g.Name != w.Name || !reflect.DeepEqual(g.Shape, w.Shape) || len(g.Data) != len(w.Data) {
					t.Fatalf("tensor %d = %s %v (%d values), want %s %v (%d values)", i, g.Name, g.Shape, len(g.Data), w.Name, w.Shape, len(w.Data))
				}
				for j := range w.Data {
					if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
						t.Fatalf("tensor %q[%d] = %v, want %v (bitwise)", w.Name, j, g.Data[j], w.Data[j])
					}
				}
			}
		})
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	tests := []struct {
		name    string
		tensors []Tensor
		wantErr string
	}{
		{"shape mismatch", []Tensor{{Name: "w", Shape: []int{2, 2}, Data: []float32{1, 2, 3}}}, `tensor "w": shape [2 2] has 4 elements, data has 3`},
		{"duplicate", []Tensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}, {Name: "w", Shape: []int{1}, Data: []float32{1}}}, `tensor 1 "w": duplicate name`},
		{"empty name", []Tensor{{Shape: []int{1}, Data: []float32{1}}}, "empty name"},
		{"reserved name", []Tensor{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}}, "reserved"},
		{"negative dim", []Tensor{{Name: "w", Shape: []int{-1}, Data: nil}}, "negative"},
		{"overflowing shape", []Tensor{{Name: "w", Shape: []int{math.MaxInt / 2, 4}}}, "too many elements"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteSafetensors(&buf, tc.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tc.wantErr)
			}
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes before failing validation", buf.Len())
			}
		})
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteSafetensorsWriterError(t *testing.T) {
	boom := errors.New("disk full")
	err := WriteSafetensors(failWriter{boom}, []Tensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}}, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v, want wrapping %v", err, boom)
	}
}

// file assembles a safetensors stream from a raw header (padded here) and data.
func file(header string, data []byte) []byte {
	for len(header)%8 != 0 {
		header += " "
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func TestReadSafetensorsRejects(t *testing.T) {
	four := []byte{0, 0, 128, 63}
	tests := []struct {
		name    string
		input   []byte
		wantErr string
	}{
		{"empty", nil, "read header length"},
		{"short length", []byte{1, 2, 3}, "read header length"},
		{"header too large", binary.LittleEndian.AppendUint64(nil, MaxSafetensorsHeader+1), "exceeds the limit"},
		{"huge length", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "exceeds the limit"},
		{"truncated header", append(binary.LittleEndian.AppendUint64(nil, 64), `{"a":`...), "read header of 64 bytes"},
		{"not an object", file(`[1,2]`, nil), "not a JSON object"},
		{"bad json", file(`{"a":{"dtype":"F32",}}`, nil), `header entry "a"`},
		{"trailing json", file(`{}{}`, nil), "trailing data"},
		{"dtype", file(`{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, four), `dtype "F16" is not supported`},
		{"unknown field", file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, four), `unknown field "x"`},
		{"missing shape", file(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, four), "missing shape"},
		{"negative dim", file(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, four), "negative"},
		{"offsets count", file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, four), "data_offsets has 1 values"},
		{"offsets reversed", file(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, nil), "end before begin"},
		{"offsets vs shape", file(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, four), "span 4 bytes, shape [2] needs 8"},
		{"gap", file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, append(four, four...)), "expected to start at 0"},
		{"overlap", file(`{"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, four), `"w": data_offsets [0,4]: expected to start at 4`},
		{"huge offsets", file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}`, four), "span"},
		{"data truncated", file(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, four), "4 of 8 bytes present"},
		{"huge shape, no data", file(`{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}`, four), "4 of 4000000000 bytes present"},
		{"trailing data", file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, append(four, 9)), "trailing bytes"},
		{"duplicate tensor", file(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, nil), `duplicate entry "w"`},
		{"empty name", file(`{"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, nil), "empty name"},
		{"metadata not strings", file(`{"__metadata__":{"a":1}}`, nil), "value is not a string"},
		{"metadata not object", file(`{"__metadata__":"x"}`, nil), "not an object of strings"},
		{"metadata duplicate key", file(`{"__metadata__":{"a":"1","a":"2"}}`, nil), `duplicate key "a"`},
		{"duplicate metadata", file(`{"__metadata__":{},"__metadata__":{}}`, nil), "duplicate entry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tensors, md, err := ReadSafetensors(bytes.NewReader(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tc.wantErr)
			}
			if tensors != nil || md != nil {
				t.Fatal("results returned together with an error")
			}
		})
	}
}

func FuzzReadSafetensors(f *testing.F) {
	var good bytes.Buffer
	_ = WriteSafetensors(&good, []Tensor{
		{Name: "w", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}},
		{Name: "b", Shape: []int{}, Data: []float32{5}},
	}, map[string]string{"k": "v"})
	f.Add(good.Bytes())
	f.Add(file(`{}`, nil))
	f.Add(file(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 128, 63}))
	f.Add(file(`{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(file(`{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}`, nil))
	f.Add(binary.LittleEndian.AppendUint64(nil, math.MaxUint64))
	f.Fuzz(func(t *testing.T, data []byte) {
		tensors, md, err := ReadSafetensors(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever decodes re-encodes and decodes to the same tensors.
		var buf bytes.Buffer
		if err := WriteSafetensors(&buf, tensors, md); err != nil {
			t.Fatalf("re-encode of decoded tensors: %v", err)
		}
		again, md2, err := ReadSafetensors(&buf)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(again) != len(tensors) || len(md2) != len(md) {
			t.Fatalf("round trip changed counts: %d/%d tensors, %d/%d metadata", len(again), len(tensors), len(md2), len(md))
		}
		var total int
		for i := range tensors {
			total += 4 * len(tensors[i].Data)
			if again[i].Name != tensors[i].Name || !reflect.DeepEqual(again[i].Shape, tensors[i].Shape) {
				t.Fatalf("tensor %d changed: %s %v -> %s %v", i, tensors[i].Name, tensors[i].Shape, again[i].Name, again[i].Shape)
			}
			for j := range tensors[i].Data {
				if math.Float32bits(again[i].Data[j]) != math.Float32bits(tensors[i].Data[j]) {
					t.Fatalf("tensor %q value %d changed", tensors[i].Name, j)
				}
			}
		}
		if total > len(data) {
			t.Fatalf("decoded %d data bytes from a %d-byte input", total, len(data))
		}
	})
}
