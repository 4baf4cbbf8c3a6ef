package paramserver

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// codecSeeds are encodings of every tensor-carrying message shape, plus headers.
func codecSeeds(t testing.TB) [][]byte {
	t.Helper()
	msgs := []proto.Message{
		&cohortv1.PullResponse{Step: 7, Chunk: &cohortv1.Chunk{Offset: 3, Data: []byte{1, 2, 3, 4}}},
		&cohortv1.PullResponse{Step: -1},
		&cohortv1.PullResponse{Chunk: &cohortv1.Chunk{}},
		&cohortv1.PullResponse{Step: 9, Chunk: &cohortv1.Chunk{Data: []byte{0, 60}}, Encoding: cohortv1.TensorEncoding_TENSOR_ENCODING_FP16},
		&cohortv1.PullResponse{Encoding: cohortv1.TensorEncoding(-7)},
		&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 1 << 40, Data: bytes.Repeat([]byte{9}, 64)}}},
		&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{Ref: &cohortv1.ShardRef{JobId: "j", Generation: 2}, Step: 5, NumSamples: 64}}},
		&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Chunk{Chunk: &cohortv1.Chunk{Data: []byte{0, 0, 128, 63}}}},
		&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Header{Header: &cohortv1.InitHeader{RangeLength: 10, TotalParams: 20}}},
		&cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 5, Data: []byte{0, 0, 128, 63}}}},
		&cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Header{Header: &cohortv1.ReplicateHeader{Ref: &cohortv1.ShardRef{JobId: "j"}, Version: 3, NumSamples: 8, WorkerRank: 1, Step: 2}}},
		&cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Chunk{Chunk: &cohortv1.Chunk{Data: []byte{1, 2, 3, 4}}}},
		&cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Header{Header: &cohortv1.InstallReplicaHeader{Version: 4, RangeLength: 10, Optimizer: "adam", StateVectors: 2}}},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Shapes only proto.Unmarshal handles: a repeated chunk (merged), an unknown field.
	out = append(out, append(append([]byte{}, out[0]...), out[0][2:]...))
	out = append(out, append(append([]byte{}, out[0]...), 0x18, 0x01))
	return out
}

// FuzzChunkCodecUnmarshal decodes arbitrary bytes as each tensor-carrying message with
// chunkCodec, into a fresh message and into one holding a stale chunk, and checks the
// result equals proto.Unmarshal's (or both fail).
func FuzzChunkCodecUnmarshal(f *testing.F) {
	for _, b := range codecSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fresh := range []func() proto.Message{
			func() proto.Message { return new(cohortv1.PullResponse) },
			func() proto.Message { return new(cohortv1.PushRequest) },
			func() proto.Message { return new(cohortv1.InitRequest) },
			func() proto.Message { return new(cohortv1.ReplicateRequest) },
			func() proto.Message { return new(cohortv1.InstallReplicaRequest) },
		} {
			want := fresh()
			wantErr := proto.Unmarshal(b, want)
			for _, got := range []proto.Message{fresh(), staleMessage(fresh())} {
				err := chunkCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
				if (err != nil) != (wantErr != nil) {
					t.Fatalf("%T: codec error %v, proto.Unmarshal error %v", got, err, wantErr)
				}
				if err == nil && !proto.Equal(got, want) {
					t.Fatalf("%T: codec decoded %v, proto.Unmarshal %v", got, got, want)
				}
			}
		}
	})
}

// staleMessage fills m with a chunk from an earlier receive, as a reused message holds.
func staleMessage(m proto.Message) proto.Message {
	old := &cohortv1.Chunk{Offset: 99, Data: make([]byte, 8, 1024)}
	switch m := m.(type) {
	case *cohortv1.PullResponse:
		m.Step, m.Chunk = 42, old
	case *cohortv1.PushRequest:
		m.Part = &cohortv1.PushRequest_Chunk{Chunk: old}
	case *cohortv1.InitRequest:
		m.Part = &cohortv1.InitRequest_Chunk{Chunk: old}
	case *cohortv1.ReplicateRequest:
		m.Part = &cohortv1.ReplicateRequest_Chunk{Chunk: old}
	case *cohortv1.InstallReplicaRequest:
		m.Part = &cohortv1.InstallReplicaRequest_Chunk{Chunk: old}
	}
	return m
}

// TestChunkCodecReusesCapacity checks the point of the codec: decoding a chunk into a
// message that already holds enough capacity allocates nothing and keeps the backing
// array, for each tensor-carrying message.
func TestChunkCodecReusesCapacity(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3, 4}, 4096)
	for _, tc := range []struct {
		name string
		msg  proto.Message
		dst  proto.Message
		get  func(proto.Message) *cohortv1.Chunk
	}{
		{"pull", &cohortv1.PullResponse{Step: 3, Chunk: &cohortv1.Chunk{Offset: 8, Data: data}},
			&cohortv1.PullResponse{Chunk: &cohortv1.Chunk{Data: make([]byte, 0, len(data))}},
			func(m proto.Message) *cohortv1.Chunk { return m.(*cohortv1.PullResponse).GetChunk() }},
		{"push", &cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 8, Data: data}}},
			&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: &cohortv1.Chunk{Data: make([]byte, 0, len(data))}}},
			func(m proto.Message) *cohortv1.Chunk { return m.(*cohortv1.PushRequest).GetChunk() }},
		{"init", &cohortv1.InitRequest{Part: &cohortv1.InitRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 8, Data: data}}},
			&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Chunk{Chunk: &cohortv1.Chunk{Data: make([]byte, 0, len(data))}}},
			func(m proto.Message) *cohortv1.Chunk { return m.(*cohortv1.InitRequest).GetChunk() }},
		{"replicate", &cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 8, Data: data}}},
			&cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Chunk{Chunk: &cohortv1.Chunk{Data: make([]byte, 0, len(data))}}},
			func(m proto.Message) *cohortv1.Chunk { return m.(*cohortv1.ReplicateRequest).GetChunk() }},
		{"install_replica", &cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Chunk{Chunk: &cohortv1.Chunk{Offset: 8, Data: data}}},
			&cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Chunk{Chunk: &cohortv1.Chunk{Data: make([]byte, 0, len(data))}}},
			func(m proto.Message) *cohortv1.Chunk { return m.(*cohortv1.InstallReplicaRequest).GetChunk() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			in := mem.BufferSlice{mem.SliceBuffer(wire)}
			backing := &tc.get(tc.dst).Data[:1][0]
			allocs := testing.AllocsPerRun(50, func() {
				if err := (chunkCodec{}).Unmarshal(in, tc.dst); err != nil {
					t.Fatal(err)
				}
			})
			c := tc.get(tc.dst)
			if !bytes.Equal(c.GetData(), data) || c.GetOffset() != 8 {
				t.Fatalf("decoded offset %d and %d bytes, want offset 8 and the %d sent", c.GetOffset(), len(c.GetData()), len(data))
			}
			if &c.Data[0] != backing {
				t.Error("chunk data moved to a new backing array")
			}
			if allocs != 0 {
				t.Errorf("%v allocations per decode, want 0", allocs)
			}
		})
	}
}
