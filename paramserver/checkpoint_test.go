package paramserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func sampleCheckpoint() *ShardCheckpoint {
	return &ShardCheckpoint{
		JobID: "job-1", Shard: 2, Step: 17, Range: Range{Offset: 10, Length: 3},
		TotalParams: 20, LayoutHash: "abc",
		Optimizer: "adam", OptimizerStep: 17,
		Params: []float32{1, 2, 3},
		State:  [][]float32{{0.1, 0.2, 0.3}, {4, 5, 6}},
	}
}

func TestCheckpointEncodeDecode(t *testing.T) {
	for _, ck := range []*ShardCheckpoint{
		sampleCheckpoint(),
		{JobID: "j", Shard: 0, Range: Range{0, 2}, Optimizer: "momentum", Params: []float32{1, 2}, State: [][]float32{{3, 4}}},
		{JobID: "j", Shard: 1, Range: Range{5, 0}, Optimizer: "sgd", Params: []float32{}},
	} {
		data, err := encodeShardCheckpoint(ck)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadShardCheckpoint(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, ck) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, ck)
		}
	}
}

func TestReadShardCheckpointRejects(t *testing.T) {
	good, err := encodeShardCheckpoint(sampleCheckpoint())
	if err != nil {
		t.Fatal(err)
	}
	withHeader := func(hdr string) []byte {
		b := append([]byte("COHORTCK"), 1, 0, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(hdr)))
		return append(b, hdr...)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"bad version", mutate(func(b []byte) []byte { b[8] = 2; return b })},
		{"huge header", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 1<<30); return b })},
		{"truncated params", good[:len(good)-30]},
		{"truncated last value", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"bad json", withHeader(`{"job_id":`)},
		{"unknown field", withHeader(`{"job_id":"j","optimizer":"sgd","extra":1}`)},
		{"unknown optimizer", withHeader(`{"job_id":"j","optimizer":"rmsprop"}`)},
		{"state count mismatch", withHeader(`{"job_id":"j","optimizer":"adam","state_count":1}`)},
		{"no job", withHeader(`{"optimizer":"sgd"}`)},
		{"range beyond total", withHeader(`{"job_id":"j","optimizer":"sgd","range_offset":5,"range_length":6,"total_params":10}`)},
		{"range too long", withHeader(`{"job_id":"j","optimizer":"sgd","range_length":9999999999}`)},
		{"lying length", withHeader(`{"job_id":"j","optimizer":"sgd","range_length":1000000}`)},
		{"negative step", withHeader(`{"job_id":"j","optimizer":"sgd","step":-1}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadShardCheckpoint(bytes.NewReader(tc.data)); !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("err = %v, want ErrBadCheckpoint", err)
			}
		})
	}
}

// FuzzReadShardCheckpoint: the decoder must never panic, and whatever it accepts must be
// internally consistent and encodable again.
func FuzzReadShardCheckpoint(f *testing.F) {
	for _, ck := range []*ShardCheckpoint{sampleCheckpoint(),
		{JobID: "j", Range: Range{0, 1}, Optimizer: "sgd", Params: []float32{1}}} {
		data, err := encodeShardCheckpoint(ck)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("COHORTCK\x01\x00\x00\x00\x02\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := ReadShardCheckpoint(bytes.NewReader(data))
		if err != nil {
			return
		}
		if uint64(len(ck.Params)) != ck.Range.Length || len(ck.State) != stateCount(ck.Optimizer) {
			t.Fatalf("accepted inconsistent checkpoint %+v", ck)
		}
		if _, err := encodeShardCheckpoint(ck); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
