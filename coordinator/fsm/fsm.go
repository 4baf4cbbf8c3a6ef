// Package fsm is the coordinator's raft.FSM: it decodes each committed Raft entry (a
// cohortv1.Command) and applies it to the state store in one transaction at the entry's
// index. Apply is deterministic: time comes from the command, IDs from the proposer.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Errors returned (as Apply response values) by commands that cannot be applied. They
// leave the state unchanged.
var (
	// ErrInvalidCommand marks a command that is well-formed protobuf but lacks a
	// required field or contradicts itself.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrNotFound marks a command about a job or node that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotPending marks a plan for a job that is no longer pending.
	ErrNotPending = errors.New("job is not pending")
	// ErrTerminal marks a change requested of a job in a terminal state.
	ErrTerminal = errors.New("job is in a terminal state")
	// ErrStaleGeneration marks a membership change planned against an older generation
	// of the job than the stored one.
	ErrStaleGeneration = errors.New("stale job generation")
)

// SubmitJobResult is the response value of a SubmitJob command.
type SubmitJobResult struct {
	// Job is the stored job: the new one, or the earlier job with the same idempotency key.
	Job *cohortv1.Job
	// Created is false when the idempotency key matched an existing job.
	Created bool
}

// CancelJobResult is the response value of a CancelJob command.
type CancelJobResult struct {
	// Job is the stored job after the command.
	Job *cohortv1.Job
	// Cancelled is true when this command moved the job to CANCELLED; false when the job
	// was already terminal.
	Cancelled bool
}

// UpdateTasksResult is the response value of an UpdateTasks command.
type UpdateTasksResult struct {
	// StaleCheckpoints lists the checkpoint pointers refused because their report came
	// from another membership generation than the job's current one.
	StaleCheckpoints []StaleCheckpoint
}

// StaleCheckpoint is one refused checkpoint report.
type StaleCheckpoint struct {
	JobID, AllocationID string
	// Generation is the report's, JobGeneration the job's.
	Generation, JobGeneration uint64
	Checkpoint                string
}

// Config configures an FSM.
type Config struct {
	// Logger receives the FSM's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry, when set, receives the FSM's Prometheus metrics.
	Registry prometheus.Registerer
}

// FSM is the coordinator's raft.FSM.
type FSM struct {
	state atomic.Pointer[state.Store]
	// applied is the index of the newest command entry applied (0 after a restore until
	// the next one).
	applied atomic.Uint64
	logger  *slog.Logger

	applyDuration *prometheus.HistogramVec
	restores      prometheus.Counter
	// skipped counts the entries that could not be decoded (see Apply); lastSkipped is
	// the index of the newest one (0: none).
	skipped     prometheus.Counter
	lastSkipped atomic.Uint64
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM over an empty state store.
func New(cfg Config) (*FSM, error) {
	store, err := state.NewStore()
	if err != nil {
		return nil, fmt.Errorf("fsm: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	f := &FSM{
		logger: logger.With("component", "fsm"),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cohort_fsm_apply_duration_seconds",
			Help:    "Time to apply one committed Raft command to the state store, by command kind.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}, []string{"kind"}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_fsm_restores_total",
			Help: "Snapshot restores applied to the state store.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_fsm_undecodable_entries_total",
			Help: "Committed Raft entries that could not be decoded and were skipped, the same on every replica.",
		}),
	}
	f.state.Store(store)
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{f.applyDuration, f.restores, f.skipped} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("fsm: register metrics: %w", err)
			}
		}
	}
	return f, nil
}

// State returns the current state store. Restore swaps in a new store (and abandons the
// old one), so long-lived readers must call State again when the old store's AbandonCh
// closes.
func (f *FSM) State() *state.Store { return f.state.Load() }

// DecodeCommand decodes a Raft entry's data into a Command. A command of a kind this
// version does not know (an empty oneof) is an error too.
func DecodeCommand(data []byte) (*cohortv1.Command, error) {
	cmd := &cohortv1.Command{}
	if err := proto.Unmarshal(data, cmd); err != nil {
		return nil, fmt.Errorf("fsm: decode command: %w: %w", ErrInvalidCommand, err)
	}
	if cmd.Kind == nil {
		return nil, fmt.Errorf("fsm: decode command: %w: unknown or missing kind", ErrInvalidCommand)
	}
	return cmd, nil
}

// Apply applies one committed log entry. Its response value is a result (see the
// applyX functions), nil, or an error when the command could not be applied (state
// unchanged).
//
// An entry that cannot be decoded (garbage, or a command kind this version does not
// know) is skipped with an error log, counted in cohort_fsm_undecodable_entries_total
// and remembered (LastUndecodable), and Apply answers ErrInvalidCommand. It used to
// panic, and since a committed entry is applied again at every start, one forged or
// corrupt entry bricked the voter for good (security issue #16). Skipping is the same
// on every replica of this version, so they stay in agreement; a replica older than a
// command's kind skips what newer ones apply, which the error log and the metric make
// loud: upgrade every voter before using a new kind, as before.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	defer f.applied.Store(l.Index)
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		f.skipped.Inc()
		f.lastSkipped.Store(l.Index)
		f.logger.Error("committed raft entry cannot be decoded: skipped, the state is unchanged (a forged or corrupt entry, or a command of a newer version)",
			"index", l.Index, "term", l.Term, "bytes", len(l.Data), "err", err)
		return fmt.Errorf("fsm: raft entry %d skipped: %w", l.Index, err)
	}
	return f.applyCommand(l.Index, cmd)
}

// LastUndecodable returns the index of the newest committed entry Apply skipped because
// it could not be decoded, or 0.
func (f *FSM) LastUndecodable() uint64 { return f.lastSkipped.Load() }

// applyFunc applies one command kind inside txn.
type applyFunc func(txn *state.Txn, cmd *cohortv1.Command) (any, error)

// kindField is the Command.kind oneof.
var kindField = (&cohortv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")

// CommandKind returns the name of a command's kind ("submit_job", ...), or "" when none
// is set.
func CommandKind(cmd *cohortv1.Command) string {
	fd := cmd.ProtoReflect().WhichOneof(kindField)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// appliers is the one dispatch table: Command.kind field name -> apply function. Command
// kinds are append-only; a kind missing here panics in Apply.
var appliers = map[protoreflect.Name]applyFunc{
	"submit_job":    applySubmitJob,
	"cancel_job":    applyCancelJob,
	"register_node": applyRegisterNode,
	"commit_plan":   applyCommitPlan,
	"update_tasks":  applyUpdateTasks,
	"node_status":   applyNodeStatus,

	"register_coordinator": applyRegisterCoordinator,
	"set_quota":            applySetQuota,
	"set_queue":            applySetQueue,
	"preempt_jobs":         applyPreemptJobs,
	"drain_node":           applyDrainNode,
	"set_node_eligibility": applySetNodeEligibility,
	"resize_job":           applyResizeJob,
	"resume_job":           applyResumeJob,
	"override_gate":        applyOverrideGate,
	"apply_plan":           applyApplyPlan,
	"search":               applySearch,
	"create_token":         applyCreateToken,
	"revoke_token":         applyRevokeToken,
	"set_gossip_keyring":   applySetGossipKeyring,
	"set_cluster_ca":       applySetClusterCA,
	"set_cluster_id":       applySetClusterID,
	"place_backups":        applyPlaceBackups,
}

// applyCommand applies a decoded command in one transaction at index.
func (f *FSM) applyCommand(index uint64, cmd *cohortv1.Command) any {
	kind := CommandKind(cmd)
	apply, ok := appliers[protoreflect.Name(kind)]
	if !ok {
		panic(fmt.Sprintf("fsm: no apply function for command kind %q at index %d", kind, index))
	}
	start := time.Now()
	defer func() { f.applyDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds()) }()

	txn := f.State().WriteTxn(index)
	resp, err := apply(txn, cmd)
	if err != nil {
		txn.Abort()
		f.logger.Debug("command not applied", "index", index, "kind", kind, "err", err)
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("fsm: commit %s at %d: %w", kind, index, err)
	}
	if r, ok := resp.(*UpdateTasksResult); ok {
		for _, ref := range r.StaleCheckpoints {
			f.logger.Warn("checkpoint report from a stale generation refused: the job keeps its checkpoint",
				"index", index, "job_id", ref.JobID, "allocation_id", ref.AllocationID,
				"report_generation", ref.Generation, "job_generation", ref.JobGeneration, "checkpoint", ref.Checkpoint)
		}
	}
	return resp
}

// AppliedIndex returns the Raft index of the newest command entry this FSM has applied.
// It is 0 after a snapshot restore until the next command: entries of other types
// (configuration, barriers, no-ops) and restores do not move it, so a reader waiting
// for index N must fall back to a raft barrier when AppliedIndex stays below N.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Snapshot captures an immutable view of the state; Persist writes it.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.State().Snapshot()}, nil
}

// Restore replaces the state with a persisted snapshot. The new store is built aside
// and swapped in; the old one is abandoned so its watchers re-read.
func (f *FSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	store, err := ReadSnapshot(r)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	old := f.state.Swap(store)
	f.applied.Store(0)
	old.Abandon()
	f.restores.Inc()
	f.logger.Info("state restored from snapshot", "index", store.LatestIndex())
	return nil
}
