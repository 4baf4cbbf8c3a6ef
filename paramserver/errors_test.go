package paramserver

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// overSession sends st as a session's `failed` answer through the codec and returns
// the status the client reads from it.
func overSession(t *testing.T, st *status.Status) *status.Status {
	t.Helper()
	b, err := chunkCodec{}.Marshal(&cohortv1.SessionResponse{Part: &cohortv1.SessionResponse_Failed{Failed: sessionFailure(st)}})
	if err != nil {
		t.Fatal(err)
	}
	var resp cohortv1.SessionResponse
	if err := (chunkCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b.Materialize())}, &resp); err != nil {
		t.Fatal(err)
	}
	return failureStatus(resp.GetFailed())
}

// TestErrorKindsCrossTheWire: every error kind the server sends comes back, through a
// per-call RPC's status or a session's `failed` answer, as an error wrapping its
// sentinel (and no other kind's), with its code and text.
func TestErrorKindsCrossTheWire(t *testing.T) {
	for _, k := range errorKinds {
		if k.reason == "" {
			continue
		}
		t.Run(k.reason, func(t *testing.T) {
			orig := fmt.Errorf("%w: job j shard 0: stale generation 1 not initialised", k.err) // text of other kinds too
			sent := toStatus(orig)
			paths := map[string]error{
				"rpc":     FromStatus(sent),
				"session": FromStatus(overSession(t, status.Convert(sent)).Err()),
				"wrapped": FromStatus(fmt.Errorf("shard 0: %w", sent)),
			}
			for path, got := range paths {
				if !errors.Is(got, k.err) {
					t.Errorf("%s: errors.Is(%v, %v) = false", path, got, k.err)
				}
				for _, o := range errorKinds {
					if o.err != k.err && errors.Is(got, o.err) && !errors.Is(k.err, o.err) {
						t.Errorf("%s: %v is also %v", path, got, o.err)
					}
				}
				if st := status.Convert(got); st.Code() != k.code || st.Message() != orig.Error() && path != "wrapped" {
					t.Errorf("%s: status %v %q, want %v %q", path, st.Code(), st.Message(), k.code, orig.Error())
				}
			}
			if got := paths["rpc"].Error(); got != sent.Error() {
				t.Errorf("decoded text %q, want the status's %q", got, sent.Error())
			}
		})
	}
}

// TestErrorsFromOlderServers: a status without ErrorInfo is recognised by its code, or
// where several kinds share the code by the kind's text.
func TestErrorsFromOlderServers(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		msg  string
		want error // nil: no kind
	}{
		{codes.NotFound, `unknown shard: job "j" shard 0`, ErrUnknownShard},
		{codes.AlreadyExists, "duplicate push: job j shard 0: rank 0 already pushed step 0", ErrDuplicatePush},
		{codes.Aborted, "shard removed: job j shard 0", ErrShardRemoved},
		{codes.FailedPrecondition, "stale generation: job j shard 0: stale generation 1 (current 2)", ErrStaleGeneration},
		{codes.FailedPrecondition, "not initialised: job j shard 0 is not initialised", ErrNotInitialised},
		{codes.FailedPrecondition, "wrong step: job j shard 0: gradient of step 1 is too stale (shard at step 5, oldest accepted 3)", ErrTooStale},
		{codes.FailedPrecondition, "wrong step: job j shard 0: push for step 4, shard is at step 0", ErrWrongStep},
		{codes.InvalidArgument, "paramserver: invalid config: workers 0 must be at least 1", ErrInvalidConfig},
		{codes.FailedPrecondition, "something else", nil},
		{codes.Unavailable, "stale generation", nil},
		{codes.Internal, "not initialised", nil},
	} {
		st := status.New(tc.code, tc.msg)
		for path, err := range map[string]error{"rpc": st.Err(), "session": overSession(t, st).Err()} {
			got := FromStatus(err)
			var decoded *remoteError
			if isKind := errors.As(got, &decoded); isKind != (tc.want != nil) || tc.want != nil && !errors.Is(got, tc.want) {
				t.Errorf("%s: %v %q decoded as %v, want kind %v", path, tc.code, tc.msg, got, tc.want)
			}
		}
	}
}

// TestErrorInfoDecidesTheKind: with an ErrorInfo of this domain the text is not read;
// a reason this client does not know is no kind. Other domains' details are ignored.
func TestErrorInfoDecidesTheKind(t *testing.T) {
	with := func(info *errdetails.ErrorInfo) error {
		st, err := status.New(codes.FailedPrecondition, "stale generation: from a newer server").WithDetails(info)
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	if got := FromStatus(with(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: "SOMETHING_NEW"})); errors.Is(got, ErrStaleGeneration) {
		t.Errorf("unknown reason decoded as %v", got)
	}
	if got := FromStatus(with(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: "NOT_INITIALISED"})); !errors.Is(got, ErrNotInitialised) || errors.Is(got, ErrStaleGeneration) {
		t.Errorf("reason NOT_INITIALISED decoded as %v", got)
	}
	if got := FromStatus(with(&errdetails.ErrorInfo{Domain: "example.com", Reason: "NOT_INITIALISED"})); !errors.Is(got, ErrStaleGeneration) {
		t.Errorf("another domain's reason: decoded as %v, want the text's kind", got)
	}
	if got := FromStatus(nil); got != nil {
		t.Errorf("FromStatus(nil) = %v", got)
	}
	plain := errors.New("stale generation")
	if got := FromStatus(plain); got != plain {
		t.Errorf("FromStatus(non-status) = %v", got)
	}
}

// TestClientReturnsErrorKinds: the Client's refusals match their kinds with
// errors.Is, through sessions and through the per-call RPCs alike.
func TestClientReturnsErrorKinds(t *testing.T) {
	for _, noSessions := range []bool{false, true} {
		t.Run(fmt.Sprintf("noSessions=%v", noSessions), func(t *testing.T) {
			ctx := testCtx(t)
			srv, addr := startServer(t, 0)
			if err := srv.AddShard(ShardConfig{JobID: "b", Generation: 1, Workers: 2, Mode: ModeBounded, Staleness: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
				t.Fatal(err)
			}
			cl := func(rank int) *Client {
				return newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "b", Generation: 1, Rank: rank, TotalParams: 1, Mode: ModeBounded, NoSessions: noSessions})
			}
			w0, w1 := cl(0), cl(1)
			if err := w0.Init(ctx, []float32{0}); err != nil {
				t.Fatal(err)
			}
			for step := int64(0); step < 3; step++ {
				if err := w0.Push(ctx, step, []float32{1}, 1); err != nil {
					t.Fatal(err)
				}
			}
			err := w1.Push(ctx, 0, []float32{1}, 1)
			if !IsTooStale(err) || !errors.Is(err, ErrWrongStep) || errors.Is(err, ErrStaleGeneration) {
				t.Errorf("too stale push: %v", err)
			}
			wantCode(t, err, codes.FailedPrecondition, "gradient of step 0 is too stale")
			w1.SetMembership(0, 1)
			err = w1.Push(ctx, 3, []float32{1}, 1)
			if !errors.Is(err, ErrStaleGeneration) || IsTooStale(err) {
				t.Errorf("stale generation push: %v", err)
			}
			wantCode(t, err, codes.FailedPrecondition, "stale generation 0 (current 1)")
			if _, err := w1.Pull(ctx, 0, make([]float32, 1)); !errors.Is(err, ErrStaleGeneration) {
				t.Errorf("stale generation pull: %v", err)
			}
			if _, err := w0.Checkpoint(ctx, 3, storage.CheckpointPrefix("b", 3)); !errors.Is(err, ErrNoStore) {
				t.Errorf("checkpoint without a store: %v", err)
			}
		})
	}
}
func TestIsTooStale(t *testing.T) {
	refusal := fmt.Errorf("%w: gradient of step 1 is %w", ErrWrongStep, ErrTooStale)
	for _, err := range []error{
		refusal, // in the server
		fmt.Errorf("push: %w", toStatus(refusal)),               // as a status, decoded by IsTooStale
		fmt.Errorf("push: %w", FromStatus(toStatus(refusal))),   // decoded by the client
		status.Error(codes.FailedPrecondition, refusal.Error()), // from a server without ErrorInfo
	} {
		if !IsTooStale(err) {
			t.Errorf("IsTooStale(%v) = false", err)
		}
	}
	for _, err := range []error{nil, toStatus(fmt.Errorf("%w: push for step 4", ErrWrongStep)), errors.New("plain too stale")} {
		if IsTooStale(err) {
			t.Errorf("IsTooStale(%v) = true", err)
		}
	}
}
