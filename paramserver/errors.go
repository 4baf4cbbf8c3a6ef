package paramserver

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned (wrapped) by the Server's methods; the gRPC handlers map them to
// status codes through statusCodes.
var (
	// ErrUnknownShard: no such job or shard on this server (NotFound).
	ErrUnknownShard = errors.New("unknown shard")
	// ErrStaleGeneration: the request's generation is not the shard's (FailedPrecondition).
	ErrStaleGeneration = errors.New("stale generation")
	// ErrNotInitialised: the shard has not received its initial values (FailedPrecondition).
	ErrNotInitialised = errors.New("not initialised")
	// ErrWrongStep: the request's step does not fit the shard's version (FailedPrecondition).
	ErrWrongStep = errors.New("wrong step")
	// ErrLayoutMismatch: an Init disagrees with the shard's range, total or layout hash
	// (FailedPrecondition).
	ErrLayoutMismatch = errors.New("layout mismatch")
	// ErrNoStore: a checkpoint was requested from a shard without a Store (FailedPrecondition).
	ErrNoStore = errors.New("no checkpoint store configured")
	// ErrDuplicatePush: this rank already pushed this step (AlreadyExists).
	ErrDuplicatePush = errors.New("duplicate push")
	// ErrShardRemoved: the shard was removed or replaced while the call waited (Aborted).
	ErrShardRemoved = errors.New("shard removed")
	// ErrInvalidArgument: a malformed request (InvalidArgument).
	ErrInvalidArgument = errors.New("invalid argument")
)

// statusCodes is the one table from errors to gRPC status codes.
var statusCodes = []struct {
	err  error
	code codes.Code
}{
	{ErrUnknownShard, codes.NotFound},
	{ErrStaleGeneration, codes.FailedPrecondition},
	{ErrNotInitialised, codes.FailedPrecondition},
	{ErrWrongStep, codes.FailedPrecondition},
	{ErrLayoutMismatch, codes.FailedPrecondition},
	{ErrNoStore, codes.FailedPrecondition},
	{ErrDuplicatePush, codes.AlreadyExists},
	{ErrShardRemoved, codes.Aborted},
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrInvalidConfig, codes.InvalidArgument},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus converts an error from the shard layer into a gRPC status error. Errors that
// already carry a status keep it; unknown errors become Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range statusCodes {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// IsTooStale reports whether a Push error says the gradient was computed against a
// version more than the bounded mode's staleness old: the worker should pull again and
// recompute it.
func IsTooStale(err error) bool {
	return err != nil && status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), tooStaleText)
}

// tooStaleText is in the message of every too-stale refusal.
const tooStaleText = "is too stale"

// isNotInitialised reports whether a status error from a server says the shard has not
// been initialised yet (FailedPrecondition whose message names ErrNotInitialised).
func isNotInitialised(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), ErrNotInitialised.Error())
}
