// Package api holds the coordinator's gRPC handlers (JobService for users,
// AgentService for node agents). They are thin: validate the request, convert it,
// call the Backend, and map errors to status codes through one table.
//
// Any coordinator accepts every call. Writes (and the agent's heartbeats) that reach a
// follower are forwarded, whole, to the leader through Config.Forwarder. Reads are
// consistent: the leader confirms its leadership with a quorum and waits until its
// state holds every committed write before it reads (followers forward the read),
// unless the caller sets the StaleReadHeader metadata to read a follower's local
// state. The watch streams are served from any coordinator's local (replicated) state,
// so node agents do not depend on the leader for them.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Backend is what the handlers need of a coordinator; *server.Server satisfies it.
type Backend interface {
	// Apply proposes a command through Raft and returns the FSM's response value.
	Apply(ctx context.Context, cmd *cohortv1.Command) (any, error)
	// State returns the current state store.
	State() *state.Store
	// Heartbeat records a node agent's heartbeat.
	Heartbeat(nodeID string, gen uint64) error
	// ConsistentRead returns once the local state holds every write committed before the
	// call; on a follower it returns an error wrapping server.ErrNotLeader.
	ConsistentRead(ctx context.Context) error
}

var _ Backend = (*server.Server)(nil)

// Config configures the handlers.
type Config struct {
	// ParseSpec parses and validates a job spec (YAML) into a job template with
	// Namespace, Name, Priority, Queue, WorkerCount, ShardCount, WorkerResources and
	// ShardResources set. Its error message is returned to the user verbatim. Required
	// by SubmitJob.
	ParseSpec func(spec []byte) (*cohortv1.Job, error)
	// MaxSpecBytes bounds a submitted spec; 0 means DefaultMaxSpecBytes.
	MaxSpecBytes int
	// Logger receives handler logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for submit times and drain deadlines; nil means the backend's
	// clock when it has one (a *server.Server: its Config.Clock), else time.Now.
	Now func() time.Time
	// Forwarder, when set, lets a follower forward leader-only calls to the leader;
	// without it such calls fail with Unavailable on a follower.
	Forwarder Forwarder
	// ForwardTimeout bounds how long one call keeps retrying to reach a leader; 0
	// means DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// ForwardAttemptTimeout bounds one forwarded attempt (it is also abandoned when the
	// leader changes); 0 means DefaultForwardAttemptTimeout.
	ForwardAttemptTimeout time.Duration
	// NoLeaderTimeout is how long a leader-only call waits while no leader is known
	// before it fails with Unavailable; 0 means DefaultNoLeaderTimeout.
	NoLeaderTimeout time.Duration
	// LeaderUnreachableTimeout is how long a call keeps failing to reach the same
	// leader before it fails with Unavailable; 0 means DefaultLeaderUnreachableTimeout.
	LeaderUnreachableTimeout time.Duration
	// LeaderPollInterval is how often a forwarded attempt checks that its leader is
	// still the leader; 0 means 50ms.
	LeaderPollInterval time.Duration
	// FollowerWait bounds how long a watch on a follower waits for an object that is
	// not (yet) in its local state before answering NotFound; 0 means 2s.
	FollowerWait time.Duration
	// Logs is the store the node agents write task logs to (see internal/tasklog);
	// without it JobLogs is FailedPrecondition.
	Logs tasklog.Store
	// LogPollInterval is how often a followed JobLogs lists new segments; 0 means 1s.
	LogPollInterval time.Duration
	// Preflight, when set, checks a submitted or planned job's data where the
	// coordinator can read it (see Preflight); nil: no data is checked.
	Preflight *Preflight
	// RefuseWithoutNodes refuses a submission (without wait_for_capacity) while no node
	// at all has registered, as a job that cannot fit is refused, and makes a dry run
	// say so; false accepts such a job to wait for nodes (a cluster still starting).
	RefuseWithoutNodes bool
	// LogFollowGrace bounds how long a followed JobLogs waits, after the job ended, for
	// the final segments of its tasks; 0 means 15s.
	LogFollowGrace time.Duration
}

// DefaultMaxSpecBytes is the default limit on a submitted spec.
const DefaultMaxSpecBytes = server.DefaultMaxSpecBytes

// Limits on request fields.
const (
	maxIdempotencyKeyLen = 256
	maxIDLen             = 256
	maxReportsPerCall    = 1024
	maxReasonLen         = 1024
)

// withBackendClock sets Now from b's clock when Now is unset and b has one, so the
// deadlines the handlers compute run on the coordinator's clock.
func (c Config) withBackendClock(b any) Config {
	if clock, ok := b.(interface{ Now() time.Time }); ok && c.Now == nil {
		c.Now = clock.Now
	}
	return c
}

func (c Config) withDefaults() Config {
	if c.MaxSpecBytes <= 0 {
		c.MaxSpecBytes = DefaultMaxSpecBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = DefaultForwardTimeout
	}
	if c.ForwardAttemptTimeout <= 0 {
		c.ForwardAttemptTimeout = DefaultForwardAttemptTimeout
	}
	if c.LeaderUnreachableTimeout <= 0 {
		c.LeaderUnreachableTimeout = DefaultLeaderUnreachableTimeout
	}
	if c.NoLeaderTimeout <= 0 {
		c.NoLeaderTimeout = DefaultNoLeaderTimeout
	}
	if c.LeaderPollInterval <= 0 {
		c.LeaderPollInterval = 50 * time.Millisecond
	}
	if c.FollowerWait <= 0 {
		c.FollowerWait = 2 * time.Second
	}
	if c.LogPollInterval <= 0 {
		c.LogPollInterval = time.Second
	}
	if c.LogFollowGrace <= 0 {
		c.LogFollowGrace = 15 * time.Second
	}
	return c
}

// ErrInvalidArgument marks a request the handlers refuse before calling the backend.
var ErrInvalidArgument = errors.New("invalid argument")

// ErrFailedPrecondition marks a request the cluster's state cannot answer yet (a job
// without a report).
var ErrFailedPrecondition = errors.New("failed precondition")

// errorCodes is the one table from error to gRPC status code; the first match wins.
var errorCodes = []struct {
	target error
	code   codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{server.ErrRefused, codes.InvalidArgument},
	{fsm.ErrInvalidCommand, codes.InvalidArgument},
	{fsm.ErrBadSnapshot, codes.InvalidArgument},
	{server.ErrInvalidPeer, codes.InvalidArgument},
	{server.ErrDuplicatePeer, codes.AlreadyExists},
	{server.ErrUnknownPeer, codes.NotFound},
	{server.ErrLastVoter, codes.FailedPrecondition},
	{fsm.ErrNotFound, codes.NotFound},
	{server.ErrNotLeader, codes.Unavailable},
	{server.ErrShutdown, codes.Unavailable},
	{fsm.ErrTerminal, codes.FailedPrecondition},
	{fsm.ErrNotPending, codes.FailedPrecondition},
	{fsm.ErrNotResumable, codes.FailedPrecondition},
	{fsm.ErrNoCheckpoint, codes.FailedPrecondition},
	{fsm.ErrGateNotOverridable, codes.FailedPrecondition},
	{errNoLogStore, codes.FailedPrecondition},
	{errNoReportStore, codes.FailedPrecondition},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{server.ErrStaleRegistration, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus maps an error to a gRPC status error carrying the error's full message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.target) {
			return status.Error(e.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// jobIDUnsafe matches characters an ID derived from a name does not keep.
var jobIDUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b)
}
