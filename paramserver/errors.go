package paramserver

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned (wrapped) by the Server's methods. The gRPC handlers send each as a
// status through errorKinds: the kind's code, the error's text as the message, and an
// errdetails.ErrorInfo that names the kind (ErrorDomain and the kind's reason).
// FromStatus turns such a status back into an error wrapping the same sentinel, so
// that errors.Is(err, ErrStaleGeneration) holds on a client as on the server.
var (
	// ErrUnknownShard: no such job or shard on this server (NotFound).
	ErrUnknownShard = errors.New("unknown shard")
	// ErrStaleGeneration: the request's generation is not the shard's (FailedPrecondition).
	ErrStaleGeneration = errors.New("stale generation")
	// ErrNotInitialised: the shard has not received its initial values (FailedPrecondition).
	ErrNotInitialised = errors.New("not initialised")
	// ErrWrongStep: the request's step does not fit the shard's version (FailedPrecondition).
	ErrWrongStep = errors.New("wrong step")
	// ErrTooStale: a bounded-mode push whose gradient was computed against a version more
	// than the staleness bound old (FailedPrecondition). It is an ErrWrongStep too.
	ErrTooStale error = &narrowerError{text: "too stale", broader: ErrWrongStep}
	// ErrLayoutMismatch: an Init disagrees with the shard's range, total or layout hash
	// (FailedPrecondition).
	ErrLayoutMismatch = errors.New("layout mismatch")
	// ErrNoStore: a checkpoint was requested from a shard without a Store (FailedPrecondition).
	ErrNoStore = errors.New("no checkpoint store configured")
	// ErrStorageFull: the shard's checkpoint write failed because its store has no
	// room (storage.IsFull; ResourceExhausted). Nothing was committed; the store's
	// older checkpoints are untouched.
	ErrStorageFull = errors.New("checkpoint storage is full")
	// ErrDuplicatePush: this rank already pushed this step (AlreadyExists).
	ErrDuplicatePush = errors.New("duplicate push")
	// ErrShardRemoved: the shard was removed or replaced while the call waited (Aborted).
	ErrShardRemoved = errors.New("shard removed")
	// ErrInvalidArgument: a malformed request (InvalidArgument).
	ErrInvalidArgument = errors.New("invalid argument")
)

// narrowerError is an error kind that is a case of a broader one: errors.Is matches
// both.
type narrowerError struct {
	text    string
	broader error
}

func (e *narrowerError) Error() string { return e.text }
func (e *narrowerError) Unwrap() error { return e.broader }

// ErrorDomain is the Domain of the errdetails.ErrorInfo a parameter server attaches to
// the status of a refused call; its Reason names the error kind.
const ErrorDomain = "paramserver.cohort.dev"

// errorKind is one row of errorKinds.
type errorKind struct {
	err  error
	code codes.Code
	// reason names the kind on the wire (ErrorInfo.Reason); a wire contract, never
	// reused for another kind. Empty for the context errors, which the code says.
	reason string
}

// errorKinds is the one table of the parameter service's errors: their status codes
// and wire reasons. A kind that is a case of another (ErrTooStale) comes before it.
var errorKinds = []errorKind{
	{ErrUnknownShard, codes.NotFound, "UNKNOWN_SHARD"},
	{ErrStaleGeneration, codes.FailedPrecondition, "STALE_GENERATION"},
	{ErrNotInitialised, codes.FailedPrecondition, "NOT_INITIALISED"},
	{ErrTooStale, codes.FailedPrecondition, "TOO_STALE"},
	{ErrWrongStep, codes.FailedPrecondition, "WRONG_STEP"},
	{ErrLayoutMismatch, codes.FailedPrecondition, "LAYOUT_MISMATCH"},
	{ErrNoStore, codes.FailedPrecondition, "NO_STORE"},
	{ErrStorageFull, codes.ResourceExhausted, "STORAGE_FULL"},
	{ErrDuplicatePush, codes.AlreadyExists, "DUPLICATE_PUSH"},
	{ErrShardRemoved, codes.Aborted, "SHARD_REMOVED"},
	{ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{ErrNotJobWorker, codes.PermissionDenied, "NOT_JOB_WORKER"},
	{ErrNotPrimary, codes.Unavailable, "NOT_PRIMARY"},
	{ErrNotBackup, codes.FailedPrecondition, "NOT_BACKUP"},
	{ErrInvalidConfig, codes.InvalidArgument, "INVALID_CONFIG"},
	{context.Canceled, codes.Canceled, ""},
	{context.DeadlineExceeded, codes.DeadlineExceeded, ""},
}

// toStatus converts an error from the shard layer into a gRPC status error carrying its
// kind (see errorKinds). Errors that already carry a status keep it; unknown errors
// become Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			st := status.New(k.code, err.Error())
			if k.reason != "" {
				if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: k.reason, Domain: ErrorDomain}); derr == nil {
					st = d
				}
			}
			return st.Err()
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// FromStatus decodes an error returned by a parameter server: when its gRPC status
// names one of this package's error kinds, the result wraps that kind's sentinel (for
// errors.Is) and keeps err's text, code and details; any other error comes back as it
// is. The Client's methods return decoded errors already; FromStatus is for the
// errors of direct RPCs.
//
// The kind is the status's ErrorInfo reason. A status without an ErrorInfo comes from
// a server older than them; its kind is then the one errorKinds has for its code, or,
// where several kinds share the code, the one whose text the message holds, as clients
// recognised them before.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	var decoded *remoteError
	if errors.As(err, &decoded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	kind := kindOf(st)
	if kind == nil {
		return err
	}
	return &remoteError{err: err, st: st, kind: kind}
}

// kindOf returns the sentinel of the error kind st names, or nil.
func kindOf(st *status.Status) error {
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != ErrorDomain {
			continue
		}
		for _, k := range errorKinds {
			if k.reason != "" && k.reason == info.GetReason() {
				return k.err
			}
		}
		return nil // a kind newer than this client
	}
	return legacyKindOf(st)
}

// legacyKindOf recognises the kind of a status without ErrorInfo (a server from before
// them): by its code where one kind has it, else by the kind's text in the message.
func legacyKindOf(st *status.Status) error {
	if st.Code() == codes.Unavailable {
		// The transport's own code (a server down); only ErrorInfo names NOT_PRIMARY.
		return nil
	}
	var kinds []error
	for _, k := range errorKinds {
		if k.reason != "" && k.code == st.Code() {
			kinds = append(kinds, k.err)
		}
	}
	if len(kinds) == 1 {
		return kinds[0]
	}
	for _, kind := range kinds {
		if strings.Contains(st.Message(), kind.Error()) {
			return kind
		}
	}
	return nil
}

// remoteError is an error a parameter server returned, decoded by FromStatus: its text
// and status are the server's, and it wraps the sentinel of its kind.
type remoteError struct {
	err  error // as received
	st   *status.Status
	kind error
}

func (e *remoteError) Error() string { return e.err.Error() }

func (e *remoteError) Unwrap() []error { return []error{e.err, e.kind} }

// GRPCStatus lets status.FromError and status.Code read the server's status.
func (e *remoteError) GRPCStatus() *status.Status { return e.st }

// IsTooStale reports whether a Push error says the gradient was computed against a
// version more than the bounded mode's staleness old (ErrTooStale): the worker should
// pull again and recompute it.
func IsTooStale(err error) bool {
	return errors.Is(FromStatus(err), ErrTooStale)
}
