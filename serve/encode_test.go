package serve

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// checkAppendResponse fails when appendResponse takes resp and writes other bytes
// than encoding/json's Encoder.
func checkAppendResponse(t *testing.T, resp *InferResponse) bool {
	t.Helper()
	got, ok := appendResponse(nil, resp)
	if !ok {
		return false
	}
	var want bytes.Buffer
	if err := json.NewEncoder(&want).Encode(resp); err != nil {
		t.Fatalf("appendResponse took a response encoding/json refuses: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("appendResponse wrote\n%s\nencoding/json\n%s", got, want.Bytes())
	}
	return true
}

// TestAppendResponseMatchesEncodingJSON compares the response encoder with
// encoding/json on the outputs of each task, with floats of every magnitude
// (exponent forms included) and labels that need escaping.
func TestAppendResponseMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	floats := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			switch i % 5 {
			case 0:
				v[i] = rng.Float64()
			case 1:
				v[i] = float64(float32(rng.Float64()))
			case 2:
				v[i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30))
			case 3:
				v[i] = math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.IntN(2046)+1)<<52)
			default:
				v[i] = []float64{0, math.Copysign(0, -1), 1e21, 1e-6, 9.99999e-7, 1e20, 5e-324, math.MaxFloat64}[rng.IntN(8)]
			}
		}
		return v
	}
	labels := []string{"Yes", "No", "a<b", "R&D", "café", "tab\there", `quote"`, "\u2028", "\x7f", "", "back\\slash", string([]byte{0xff, 'x'})}
	for range 200 {
		n := rng.IntN(40) + 1
		lab := make([]string, n)
		for i := range lab {
			lab[i] = labels[rng.IntN(len(labels))]
		}
		for _, resp := range []InferResponse{
			{ModelName: "m", ModelVersion: "1", Outputs: []ResponseOutput{{Name: OutputPrediction, Shape: []int{n}, Datatype: TypeFP64, Data: floats(n)}}},
			{ModelName: "attrition<1>", ModelVersion: "1", ID: "req-1&2", Outputs: []ResponseOutput{
				{Name: OutputProbability, Shape: []int{n}, Datatype: TypeFP64, Data: floats(n)},
				{Name: OutputLabel, Shape: []int{n}, Datatype: TypeBytes, Data: lab}}},
			{ModelName: "cnn", Outputs: []ResponseOutput{{Name: OutputProbabilities, Shape: []int{n, 3}, Datatype: TypeFP64, Data: floats(3 * n)}}},
			{ModelName: "empty", Outputs: []ResponseOutput{}},
			{ModelName: "nodata", Outputs: []ResponseOutput{{Name: "x", Shape: []int{}, Datatype: TypeFP64}}},
		} {
			if !checkAppendResponse(t, &resp) {
				t.Fatalf("appendResponse refused %+v", resp)
			}
		}
	}
	// What it does not take, encoding/json encodes (or refuses, for NaN).
	for _, resp := range []InferResponse{
		{ModelName: "m"},
		{ModelName: "m", Outputs: []ResponseOutput{{Name: "p", Shape: []int{1}, Datatype: TypeFP64, Data: []float64{math.NaN()}}}},
		{ModelName: "m", Outputs: []ResponseOutput{{Name: "p", Datatype: TypeFP64, Data: []float64{1}}}},
		{ModelName: "m", Outputs: []ResponseOutput{{Name: "p", Shape: []int{1}, Datatype: TypeFP64, Parameters: map[string]any{"binary_data_size": 8}}}},
		{ModelName: "m", Outputs: []ResponseOutput{{Name: "p", Shape: []int{1}, Datatype: TypeFP64, Data: []float64(nil)}}},
	} {
		if checkAppendResponse(t, &resp) {
			t.Fatalf("appendResponse took %+v", resp)
		}
	}
}

// FuzzAppendResponse compares the response encoder with encoding/json on any float and
// strings.
func FuzzAppendResponse(f *testing.F) {
	f.Add(uint64(0x3ff0000000000000), "Yes", "id")
	f.Add(uint64(0x3eb0c6f7a0b5ed8d), "a<b&c", "")
	f.Add(uint64(0x7ff8000000000001), "\xff\u2028", "\"")
	f.Fuzz(func(t *testing.T, bits uint64, label, id string) {
		v := math.Float64frombits(bits)
		checkAppendResponse(t, &InferResponse{ModelName: label, ModelVersion: "1", ID: id, Outputs: []ResponseOutput{
			{Name: OutputProbability, Shape: []int{2}, Datatype: TypeFP64, Data: []float64{v, -v}},
			{Name: label, Shape: []int{2}, Datatype: TypeBytes, Data: []string{label, id}}}})
	})
}
