package paramserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Sessions
//
// Opening a gRPC stream costs a round of HTTP/2 frames, a server goroutine and a few
// hundred allocations; a step of a small model (the attrition MLP has 5,249 parameters)
// spent most of its communication time on the four streams a worker opened per step.
// A Session is one long-lived stream per worker and shard that carries the worker's
// pushes and pulls one at a time. Clients fall back to the per-call Push and Pull RPCs
// when a session is busy (a concurrent call on the same Client) or the server has no
// Session method (an older server during a rolling upgrade).

// Session implements the session protocol (see cohortv1.ParameterServiceServer).
//
// A session that ends with an error (its stream broke: the worker's process or host
// died, or its link did) after at least one push is reported to
// ServerConfig.OnSessionLost, the fast sign of a dead worker (its coordinator
// confirms it by the worker node's heartbeats). A session the worker ends cleanly,
// or that breaks the protocol, is not.
func (s *Server) Session(stream cohortv1.ParameterService_SessionServer) (err error) {
	ctx := stream.Context()
	var pusher *cohortv1.PushHeader // the last push's header: who this session is
	protocol := false               // the session ended on a protocol violation
	defer func() {
		if err != nil && !protocol && pusher != nil && s.onSessionLost != nil {
			ref := pusher.GetRef()
			s.log.Info("worker session lost", "job", ref.GetJobId(), "shard", ref.GetShard(),
				"generation", ref.GetGeneration(), "rank", pusher.GetWorkerRank(), "err", err)
			go s.onSessionLost(ref.GetJobId(), ref.GetGeneration(), int(pusher.GetWorkerRank()))
		}
	}()
	// req is reused: before each receive it holds the pooled chunk again, so chunkCodec
	// decodes chunks into its capacity whatever the previous message was.
	chunk := &cohortv1.SessionRequest_Chunk{Chunk: getChunk()}
	defer func() { putChunk(chunk.Chunk) }()
	req := &cohortv1.SessionRequest{}
	recv := func() error {
		req.Part = chunk
		return stream.RecvMsg(req)
	}
	resp := &cohortv1.SessionResponse{}
	values := &cohortv1.SessionResponse_Values{}
	failed := func(err error) error {
		resp.Part = &cohortv1.SessionResponse_Failed{Failed: sessionFailure(status.Convert(err))}
		return stream.Send(resp)
	}
	for {
		if err := recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch p := req.GetPart().(type) {
		case *cohortv1.SessionRequest_Push:
			h := p.Push
			pusher = h
			ended, violated := false, false
			next := func() (*cohortv1.Chunk, error) {
				if err := recv(); err != nil {
					if errors.Is(err, io.EOF) { // the client closed mid-push
						return nil, fmt.Errorf("%w: session: stream closed inside a push", ErrInvalidArgument)
					}
					return nil, err
				}
				switch q := req.GetPart().(type) {
				case *cohortv1.SessionRequest_Chunk:
					return q.Chunk, nil
				case *cohortv1.SessionRequest_End:
					ended = true
					return nil, io.EOF
				}
				violated = true
				return nil, errSessionSequence
			}
			version, err := s.push(ctx, h, next)
			if err != nil {
				// Consume the rest of the push, so the next operation starts in step.
				for !ended && !violated {
					if _, derr := next(); derr != nil && !ended {
						return sessionBroken(derr)
					}
				}
				if violated {
					protocol = true
					return sessionBroken(errSessionSequence)
				}
				if err := failed(err); err != nil {
					return err
				}
				continue
			}
			resp.Part = &cohortv1.SessionResponse_Pushed{Pushed: &cohortv1.PushResponse{Step: version}}
			if err := stream.Send(resp); err != nil {
				return err
			}
		case *cohortv1.SessionRequest_Pull:
			var sendErr error
			err := s.pull(ctx, p.Pull, func(r *cohortv1.PullResponse) error {
				values.Values = r
				resp.Part = values
				sendErr = stream.Send(resp)
				return sendErr
			})
			switch {
			case sendErr != nil:
				return sendErr
			case err != nil:
				if err := failed(err); err != nil {
					return err
				}
				continue
			}
			resp.Part = &cohortv1.SessionResponse_Pulled{Pulled: &cohortv1.SessionEnd{}}
			if err := stream.Send(resp); err != nil {
				return err
			}
		default:
			protocol = true
			return sessionBroken(errSessionSequence)
		}
	}
}

// errSessionSequence: a session message arrived where the protocol has no place for it.
var errSessionSequence = fmt.Errorf("%w: session: expected a push or a pull, then a push's chunks and its end", ErrInvalidArgument)

// sessionBroken ends a session whose stream cannot continue in step.
func sessionBroken(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return toStatus(err)
}

// sessionFailure is the `failed` answer of st, details included. SessionFailure
// declares google.rpc.Status's fields 1 (code) and 2 (message) and not yet its field 3
// (details), so the details (the error kind's ErrorInfo) travel as that field among
// the message's unknown fields: a peer that does not know them ignores them, and
// failureStatus reads them back. Declaring `repeated google.protobuf.Any details = 3`
// in SessionFailure later keeps the wire format.
func sessionFailure(st *status.Status) *cohortv1.SessionFailure {
	f := &cohortv1.SessionFailure{Code: int32(st.Code()), Message: st.Message()}
	if details := st.Proto().GetDetails(); len(details) > 0 {
		if b, err := proto.Marshal(&spb.Status{Details: details}); err == nil {
			f.ProtoReflect().SetUnknown(b)
		}
	}
	return f
}

// failureStatus is the status of a `failed` answer, with the details sessionFailure
// put among its unknown fields (none from a server that sends none).
func failureStatus(f *cohortv1.SessionFailure) *status.Status {
	p := &spb.Status{}
	if u := f.ProtoReflect().GetUnknown(); len(u) > 0 {
		if err := proto.Unmarshal(u, p); err != nil {
			p = &spb.Status{}
		}
	}
	p.Code, p.Message = f.GetCode(), f.GetMessage()
	return status.FromProto(p)
}

// errNoSession: the server does not implement Session; use the per-call RPCs.
var errNoSession = errors.New("paramserver: server has no session support")

// session is a Client's long-lived Session stream to one shard. Its mutex is held for
// the whole of an operation; callers that find it held use the per-call RPCs instead.
type session struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingClient[cohortv1.SessionRequest, cohortv1.SessionResponse]
	cancel context.CancelFunc
	off    bool // the server has no Session method

	req    cohortv1.SessionRequest
	values cohortv1.SessionResponse_Values // reused, holding a pooled chunk
	resp   cohortv1.SessionResponse
}

// open starts the stream if there is none; base bounds its life (the Client's).
func (ss *session) open(base context.Context, stub cohortv1.ParameterServiceClient) error {
	if ss.stream != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(base)
	stream, err := stub.Session(ctx)
	if err != nil {
		cancel()
		return err
	}
	ss.stream, ss.cancel = stream, cancel
	if ss.values.Values == nil {
		ss.values.Values = &cohortv1.PullResponse{Chunk: getChunk()}
	}
	return nil
}

// finish ends an idle session's stream cleanly: it half-closes it, so the server sees
// the worker end it (not a broken session, which it reports as a possibly dead worker),
// and waits up to d for the server's end before cancelling it. A session busy with an
// operation is only cancelled.
func (ss *session) finish(d time.Duration) {
	if !ss.mu.TryLock() {
		return // Close's cancellation ends the operation and its stream
	}
	defer ss.mu.Unlock()
	if ss.stream == nil {
		return
	}
	if err := ss.stream.CloseSend(); err == nil {
		done := make(chan struct{})
		go func(stream cohortv1.ParameterService_SessionClient) {
			defer close(done)
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		}(ss.stream)
		select {
		case <-done:
		case <-time.After(d):
		}
	}
	ss.close()
}

// close ends the stream; the next operation opens a new one.
func (ss *session) close() {
	if ss.cancel != nil {
		ss.cancel()
	}
	ss.stream, ss.cancel = nil, nil
}

// do runs op on the open stream, ending the stream when ctx ends first or op fails
// other than by a refusal. A stream the server does not implement turns sessions off.
func (ss *session) do(ctx context.Context, base context.Context, stub cohortv1.ParameterServiceClient, op func() error) error {
	if err := ss.open(base, stub); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, ss.cancel)
	err := op()
	if !stop() { // ctx ended during op: the stream was cancelled under it
		ss.close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
	}
	var refused *sessionRefusal
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return refused.err // the stream stays usable
	case status.Code(err) == codes.Unimplemented:
		ss.close()
		ss.off = true
		return errNoSession
	}
	ss.close()
	return err
}

// sessionRefusal carries an operation's `failed` answer: a status error as the per-call
// RPC would have returned it, on a stream that stays in step.
type sessionRefusal struct{ err error }

func (r *sessionRefusal) Error() string { return r.err.Error() }

// recv receives the next response; a `failed` answer becomes a *sessionRefusal.
func (ss *session) recv() (*cohortv1.SessionResponse, error) {
	ss.resp.Part = &ss.values
	if err := ss.stream.RecvMsg(&ss.resp); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, status.Error(codes.Unavailable, "paramserver: session ended by the server")
		}
		return nil, err
	}
	if f := ss.resp.GetFailed(); f != nil {
		return nil, &sessionRefusal{err: failureStatus(f).Err()}
	}
	return &ss.resp, nil
}

// send sends one request; io.EOF (the server ended the stream) becomes the status the
// stream ended with.
func (ss *session) send(m *cohortv1.SessionRequest) error {
	if err := ss.stream.Send(m); err != nil {
		if errors.Is(err, io.EOF) {
			_, err = ss.stream.Recv()
			if err == nil || errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "paramserver: session ended by the server")
			}
		}
		return err
	}
	return nil
}

// push sends one push (header, chunks, end) and waits for its answer.
func (ss *session) push(h *cohortv1.PushHeader, body *pushBody, per int) (int64, error) {
	ss.req.Part = &cohortv1.SessionRequest_Push{Push: h}
	if err := ss.send(&ss.req); err != nil {
		return 0, err
	}
	part := &cohortv1.SessionRequest_Chunk{}
	ss.req.Part = part
	if err := body.send(per, func(ch *cohortv1.Chunk) error {
		part.Chunk = ch
		return ss.send(&ss.req)
	}); err != nil {
		return 0, err
	}
	ss.req.Part = &cohortv1.SessionRequest_End{End: &cohortv1.SessionEnd{}}
	if err := ss.send(&ss.req); err != nil {
		return 0, err
	}
	resp, err := ss.recv()
	if err != nil {
		return 0, err
	}
	pushed := resp.GetPushed()
	if pushed == nil {
		return 0, fmt.Errorf("%w: session: push answered with %T", ErrInvalidArgument, resp.GetPart())
	}
	return pushed.GetStep(), nil
}

// pull sends one pull and assembles its values into dst, returning their version.
func (ss *session) pull(req *cohortv1.PullRequest, dst []float32) (int64, error) {
	ss.req.Part = &cohortv1.SessionRequest_Pull{Pull: req}
	if err := ss.send(&ss.req); err != nil {
		return 0, err
	}
	pa, err := newPullAssembler(dst, req.GetEncoding())
	if err != nil {
		return 0, err
	}
	for {
		resp, err := ss.recv()
		if err != nil {
			return 0, err
		}
		if resp.GetPulled() != nil {
			return pa.done()
		}
		v := resp.GetValues()
		if v == nil {
			return 0, fmt.Errorf("%w: session: pull answered with %T", ErrInvalidArgument, resp.GetPart())
		}
		if err := pa.add(v); err != nil {
			return 0, err
		}
	}
}
