package fsm

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Errors of a ResumeJob command; they leave the state unchanged.
var (
	// ErrNotResumable marks a resume of a job that is pending, running or succeeded:
	// only a cancelled or failed job can be resumed.
	ErrNotResumable = errors.New("job cannot be resumed")
	// ErrNoCheckpoint marks a resume of a job that never committed a checkpoint: there is
	// nothing to continue from.
	ErrNoCheckpoint = errors.New("job has no committed checkpoint")
	// ErrGateNotOverridable marks an override of a job that has not succeeded or whose
	// export gate did not fail.
	ErrGateNotOverridable = errors.New("job's export gate cannot be overridden")
)

// applyResumeJob sends a cancelled or failed job back to pending so that it is placed
// again and continues from its checkpoint pointer: its generation is bumped (a task of
// the ended run cannot write into the resumed one), its end time, exports and pending
// reasons are cleared, it is placed again with workers.count workers, and its restart
// budget is granted again (a job that failed because the budget was spent could not
// otherwise lose another node). Its allocations are all terminal already (ending a job
// stops them). A command whose idempotency key is the job's resume_key (the same resume
// applied again: a retry whose first try committed) changes nothing. Response: the
// stored *cohortv1.Job.
func applyResumeJob(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetResumeJob()
	if c.GetJobId() == "" {
		return nil, fmt.Errorf("resume job: %w: job id is required", ErrInvalidCommand)
	}
	stored, err := txn.JobByID(nil, c.GetJobId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("resume job: %w: job %q", ErrNotFound, c.GetJobId())
	}
	if k := c.GetIdempotencyKey(); k != "" && k == stored.ResumeKey {
		return stored, nil
	}
	switch stored.State {
	case cohortv1.JobState_JOB_STATE_CANCELLED, cohortv1.JobState_JOB_STATE_FAILED:
	default:
		return nil, fmt.Errorf("resume job: %w: job %q is %s; only a cancelled or failed job can be resumed",
			ErrNotResumable, stored.Id, jobStateWord(stored.State))
	}
	if stored.Checkpoint == "" {
		return nil, fmt.Errorf("resume job: %w: job %q is %s before its first checkpoint; submit its spec again to start over",
			ErrNoCheckpoint, stored.Id, jobStateWord(stored.State))
	}
	reason := "resumed from " + stored.Checkpoint
	if c.GetReason() != "" {
		reason = "resumed (" + c.GetReason() + ") from " + stored.Checkpoint
	}
	job := proto.Clone(stored).(*cohortv1.Job)
	job.State = cohortv1.JobState_JOB_STATE_PENDING
	job.Generation = max(job.Generation, 1) + 1
	job.ActiveWorkers = 0
	job.EndTimeUnixNano = 0
	job.Exports = nil
	job.Report, job.Gate = "", nil
	job.ExportedFrom = nil
	job.Restarts = 0
	job.ResumeKey = c.GetIdempotencyKey()
	job.StatusMessage = reason
	job.PendingReasons = []string{reason}
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	return job, nil
}

// jobStateWord is a job state in messages ("running", "succeeded").
func jobStateWord(s cohortv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}
