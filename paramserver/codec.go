package paramserver

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// chunkCodec is the gRPC codec of the parameter service. It marshals like gRPC's proto
// codec (into pooled buffers) and unmarshals every message like proto.Unmarshal, except
// the tensor-carrying ones (PullResponse, PushRequest, InitRequest, the session
// messages and the replication requests): their chunk bytes
// are decoded into the capacity the target message already holds instead of a fresh
// slice. Receivers that reuse one message across RecvMsg calls (Client.pullShard,
// Server.Push, Server.Init, a backup's Replicate and InstallReplica) therefore allocate nothing per chunk in steady state, where
// proto.Unmarshal allocates a copy of every chunk (about the tensor's size per step).
//
// The reuse changes one thing against proto.Unmarshal: a Chunk and its Data held from
// an earlier RecvMsg into the same message are overwritten. The codec is installed only
// on parameter-service connections (ServerOptions and NewClient), whose receivers copy
// each chunk into place before the next RecvMsg.
//
// Anything the fast decoder does not recognise exactly (an unknown field, a field seen
// twice, a wire type it does not expect) is decoded by proto.Unmarshal instead, so the
// result always equals proto.Unmarshal's (FuzzChunkCodecUnmarshal checks it).
type chunkCodec struct{}

// protoCodec is gRPC's registered proto codec, used for marshalling and for messages
// the fast path does not handle.
var protoCodec = encoding.GetCodecV2("proto")

func (chunkCodec) Name() string { return "proto" }

func (chunkCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (chunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *cohortv1.PullResponse, *cohortv1.PushRequest, *cohortv1.InitRequest,
		*cohortv1.SessionRequest, *cohortv1.SessionResponse,
		*cohortv1.ReplicateRequest, *cohortv1.InstallReplicaRequest:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return unmarshalChunkMessage(buf.ReadOnlyData(), m.(proto.Message))
	}
	return protoCodec.Unmarshal(data, v)
}

// unmarshalChunkMessage decodes b into m (one of the tensor-carrying messages), reusing
// m's chunk and its data capacity, or falls back to proto.Unmarshal.
func unmarshalChunkMessage(b []byte, m proto.Message) error {
	var ok bool
	switch m := m.(type) {
	case *cohortv1.PullResponse:
		ok = decodePullResponse(b, m)
	case *cohortv1.PushRequest:
		part, isChunk := m.GetPart().(*cohortv1.PushRequest_Chunk)
		if !isChunk {
			part = &cohortv1.PushRequest_Chunk{}
		}
		var got *cohortv1.Chunk // part.Chunk survives a message of another shape
		if got, ok = decodeChunkOneof(b, part.Chunk); ok {
			proto.Reset(m)
			part.Chunk = got
			m.Part = part // the oneof wrapper is reused too
		}
	case *cohortv1.InitRequest:
		part, isChunk := m.GetPart().(*cohortv1.InitRequest_Chunk)
		if !isChunk {
			part = &cohortv1.InitRequest_Chunk{}
		}
		var got *cohortv1.Chunk // part.Chunk survives a message of another shape
		if got, ok = decodeChunkOneof(b, part.Chunk); ok {
			proto.Reset(m)
			part.Chunk = got
			m.Part = part // the oneof wrapper is reused too
		}
	case *cohortv1.SessionRequest:
		part, isChunk := m.GetPart().(*cohortv1.SessionRequest_Chunk)
		if !isChunk {
			part = &cohortv1.SessionRequest_Chunk{}
		}
		var got *cohortv1.Chunk // part.Chunk survives a message of another shape
		if got, ok = decodeChunkOneof(b, part.Chunk); ok {
			proto.Reset(m)
			part.Chunk = got
			m.Part = part
		}
	case *cohortv1.ReplicateRequest:
		part, isChunk := m.GetPart().(*cohortv1.ReplicateRequest_Chunk)
		if !isChunk {
			part = &cohortv1.ReplicateRequest_Chunk{}
		}
		var got *cohortv1.Chunk // part.Chunk survives a message of another shape
		if got, ok = decodeChunkOneof(b, part.Chunk); ok {
			proto.Reset(m)
			part.Chunk = got
			m.Part = part
		}
	case *cohortv1.InstallReplicaRequest:
		part, isChunk := m.GetPart().(*cohortv1.InstallReplicaRequest_Chunk)
		if !isChunk {
			part = &cohortv1.InstallReplicaRequest_Chunk{}
		}
		var got *cohortv1.Chunk // part.Chunk survives a message of another shape
		if got, ok = decodeChunkOneof(b, part.Chunk); ok {
			proto.Reset(m)
			part.Chunk = got
			m.Part = part
		}
	case *cohortv1.SessionResponse:
		part, isValues := m.GetPart().(*cohortv1.SessionResponse_Values)
		if !isValues {
			part = &cohortv1.SessionResponse_Values{}
		}
		if part.Values == nil {
			part.Values = &cohortv1.PullResponse{}
		}
		if body, isOneof := oneofBody(b, 2); isOneof && decodePullResponse(body, part.Values) {
			ok = true
			proto.Reset(m)
			m.Part = part
		}
	}
	if ok {
		return nil
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("paramserver: decode %T: %w", m, err)
	}
	return nil
}

// decodePullResponse decodes the common shape of a PullResponse (step, then one
// chunk) into m. It reports false, leaving m in an unspecified state, when b has any
// other shape.
func decodePullResponse(b []byte, m *cohortv1.PullResponse) bool {
	var (
		step, enc                  uint64
		haveStep, haveChk, haveEnc bool
		chunk                      = m.GetChunk()
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && !haveStep:
			if step, n = protowire.ConsumeVarint(b); n < 0 {
				return false
			}
			haveStep = true
		case num == 2 && typ == protowire.BytesType && !haveChk:
			var body []byte
			if body, n = protowire.ConsumeBytes(b); n < 0 {
				return false
			}
			var ok bool
			if chunk, ok = decodeChunk(body, chunk); !ok {
				return false
			}
			haveChk = true
		case num == 120 && typ == protowire.VarintType && !haveEnc:
			// encoding (compress.go): set on compressed pulls.
			if enc, n = protowire.ConsumeVarint(b); n < 0 {
				return false
			}
			haveEnc = true
		default:
			return false
		}
		b = b[n:]
	}
	proto.Reset(m)
	m.Step = int64(step)
	m.Encoding = cohortv1.TensorEncoding(int32(enc))
	if haveChk {
		m.Chunk = chunk
	}
	return true
}

// oneofBody returns the body of b when b is exactly one length-delimited field num.
func oneofBody(b []byte, num protowire.Number) ([]byte, bool) {
	n, typ, tagLen := protowire.ConsumeTag(b)
	if tagLen < 0 || n != num || typ != protowire.BytesType {
		return nil, false
	}
	body, m := protowire.ConsumeBytes(b[tagLen:])
	if m < 0 || tagLen+m != len(b) {
		return nil, false
	}
	return body, true
}

// decodeChunkOneof decodes a PushRequest, InitRequest, SessionRequest or replication
// request holding exactly one chunk
// (field 2), reusing reuse when it is not nil. It reports false for any other shape,
// headers included (they come once per stream and go through proto.Unmarshal).
func decodeChunkOneof(b []byte, reuse *cohortv1.Chunk) (*cohortv1.Chunk, bool) {
	body, ok := oneofBody(b, 2)
	if !ok {
		return nil, false
	}
	return decodeChunk(body, reuse)
}

// decodeChunk decodes a Chunk (offset, data) into reuse (or a new Chunk), copying the
// data into reuse.Data's capacity when it is large enough.
func decodeChunk(b []byte, reuse *cohortv1.Chunk) (*cohortv1.Chunk, bool) {
	var (
		offset            uint64
		data              []byte
		haveOff, haveData bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && !haveOff:
			if offset, n = protowire.ConsumeVarint(b); n < 0 {
				return nil, false
			}
			haveOff = true
		case num == 2 && typ == protowire.BytesType && !haveData:
			if data, n = protowire.ConsumeBytes(b); n < 0 {
				return nil, false
			}
			haveData = true
		default:
			return nil, false
		}
		b = b[n:]
	}
	var keep []byte
	if reuse == nil {
		reuse = &cohortv1.Chunk{}
	} else {
		keep = reuse.Data[:0]
		proto.Reset(reuse)
	}
	reuse.Offset = offset
	if len(data) > 0 {
		// proto.Unmarshal leaves an empty bytes field nil; so does this.
		reuse.Data = append(keep, data...)
	}
	return reuse, true
}

// chunkPool holds Chunks whose Data capacity receivers reuse across streams: a stream
// starts its receive message with a pooled chunk, so even its first chunk is decoded
// into existing capacity.
var chunkPool = sync.Pool{New: func() any { return new(cohortv1.Chunk) }}

// getChunk returns a pooled Chunk; putChunk returns it once no chunk data from it is
// referenced any more.
func getChunk() *cohortv1.Chunk { return chunkPool.Get().(*cohortv1.Chunk) }

func putChunk(c *cohortv1.Chunk) {
	if c != nil && cap(c.Data) <= MaxMessageBytes {
		chunkPool.Put(c)
	}
}
