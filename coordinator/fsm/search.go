package fsm

import (
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/search"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// SubmitSearchResult is the response value of a search submit command.
type SubmitSearchResult struct {
	// Search is the stored search: the new one, or the earlier one with the same
	// idempotency key.
	Search  *cohortv1.Search
	Created bool
}

// StartTrialResult is the response value of a search start_trial command.
type StartTrialResult struct {
	// Job is the trial's job as stored; Created is false when the trial had been
	// started before (the command was a duplicate, say from a deposed leader).
	Job     *cohortv1.Job
	Created bool
}

// applySearch applies a SearchCommand. Response: *SubmitSearchResult (submit),
// *StartTrialResult (start_trial), or the stored *cohortv1.Search.
func applySearch(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSearch()
	switch op := c.GetOp().(type) {
	case *cohortv1.SearchCommand_Submit:
		return applySubmitSearch(txn, op.Submit, cmd.TimeUnixNano)
	case *cohortv1.SearchCommand_Cancel:
		return applyCancelSearch(txn, op.Cancel, cmd.TimeUnixNano)
	case *cohortv1.SearchCommand_StartTrial:
		return applyStartTrial(txn, op.StartTrial, cmd.TimeUnixNano)
	case *cohortv1.SearchCommand_Decision:
		return applySearchDecision(txn, op.Decision, cmd.TimeUnixNano)
	case *cohortv1.SearchCommand_Finish:
		return applyFinishSearch(txn, op.Finish, cmd.TimeUnixNano)
	default:
		return nil, fmt.Errorf("search: %w: no operation", ErrInvalidCommand)
	}
}

func applySubmitSearch(txn *state.Txn, in *cohortv1.Search, at int64) (any, error) {
	if in.GetId() == "" || len(in.Trials) == 0 {
		return nil, fmt.Errorf("submit search: %w: id and trials are required", ErrInvalidCommand)
	}
	if existing, err := txn.SearchByIdempotencyKey(nil, in.IdempotencyKey); err != nil {
		return nil, err
	} else if existing != nil {
		return &SubmitSearchResult{Search: existing}, nil
	}
	if existing, err := txn.SearchByID(nil, in.Id); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, fmt.Errorf("submit search: %w: search %q already exists", ErrInvalidCommand, in.Id)
	}
	seen := map[string]bool{}
	for i, t := range in.Trials {
		id := t.GetJob().GetId()
		if int(t.Index) != i || id == "" || seen[id] || t.Started {
			return nil, fmt.Errorf("submit search: %w: trial %d is malformed (index, job id or repeated job)", ErrInvalidCommand, i)
		}
		seen[id] = true
	}
	s := proto.Clone(in).(*cohortv1.Search)
	s.State = cohortv1.SearchState_SEARCH_STATE_RUNNING
	s.EndTimeUnixNano, s.BestJobId = 0, ""
	if s.SubmitTimeUnixNano == 0 {
		s.SubmitTimeUnixNano = at
	}
	if err := txn.UpsertSearch(s); err != nil {
		return nil, err
	}
	return &SubmitSearchResult{Search: s, Created: true}, nil
}

// storedSearch returns a clone of the stored search id, or ErrNotFound.
func storedSearch(txn *state.Txn, what, id string) (*cohortv1.Search, error) {
	s, err := txn.SearchByID(nil, id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%s: %w: search %q", what, ErrNotFound, id)
	}
	return proto.Clone(s).(*cohortv1.Search), nil
}

func trialOf(s *cohortv1.Search, what string, i int32) (*cohortv1.SearchTrial, error) {
	if i < 0 || int(i) >= len(s.Trials) {
		return nil, fmt.Errorf("%s: %w: search %q has no trial %d", what, ErrInvalidCommand, s.Id, i)
	}
	return s.Trials[i], nil
}

func applyCancelSearch(txn *state.Txn, op *cohortv1.CancelSearchOp, at int64) (any, error) {
	s, err := storedSearch(txn, "cancel search", op.GetSearchId())
	if err != nil {
		return nil, err
	}
	if s.State != cohortv1.SearchState_SEARCH_STATE_RUNNING {
		return s, nil
	}
	msg := "cancelled"
	if op.Reason != "" {
		msg += ": " + op.Reason
	}
	for _, t := range s.Trials {
		if !t.Started {
			continue
		}
		job, err := txn.JobByID(nil, t.Job.GetId())
		if err != nil {
			return nil, err
		}
		if job != nil && !state.JobTerminal(job.State) {
			if _, err := endJob(txn, job, cohortv1.JobState_JOB_STATE_CANCELLED, "cancelled: search "+s.Id+" "+msg, at, ""); err != nil {
				return nil, err
			}
		}
	}
	s.State, s.StatusMessage, s.EndTimeUnixNano = cohortv1.SearchState_SEARCH_STATE_CANCELLED, msg, at
	if err := txn.UpsertSearch(s); err != nil {
		return nil, err
	}
	return s, nil
}

func applyStartTrial(txn *state.Txn, op *cohortv1.StartTrialOp, at int64) (any, error) {
	s, err := storedSearch(txn, "start trial", op.GetSearchId())
	if err != nil {
		return nil, err
	}
	t, err := trialOf(s, "start trial", op.Trial)
	if err != nil {
		return nil, err
	}
	existing, err := txn.JobByID(nil, t.Job.GetId())
	if err != nil {
		return nil, err
	}
	if t.Started || existing != nil {
		return &StartTrialResult{Job: existing}, nil
	}
	if s.State != cohortv1.SearchState_SEARCH_STATE_RUNNING {
		return nil, fmt.Errorf("start trial: %w: search %q is %s", ErrTerminal, s.Id, search.StateWord(s.State))
	}
	job := proto.Clone(t.Job).(*cohortv1.Job)
	job.State = cohortv1.JobState_JOB_STATE_PENDING
	job.SubmitTimeUnixNano, job.StartTimeUnixNano, job.EndTimeUnixNano = at, 0, 0
	job.SearchId, job.SearchTrial = s.Id, t.Index
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	t.Started = true
	if err := txn.UpsertSearch(s); err != nil {
		return nil, err
	}
	return &StartTrialResult{Job: job, Created: true}, nil
}

func applySearchDecision(txn *state.Txn, op *cohortv1.DecisionOp, at int64) (any, error) {
	s, err := storedSearch(txn, "search decision", op.GetSearchId())
	if err != nil {
		return nil, err
	}
	t, err := trialOf(s, "search decision", op.Trial)
	if err != nil {
		return nil, err
	}
	d := op.GetDecision()
	if d == nil {
		return nil, fmt.Errorf("search decision: %w: no decision", ErrInvalidCommand)
	}
	// One decision per trial and rung: a repeat (a deposed leader's) changes nothing,
	// and so does any decision after the trial was stopped.
	if search.Stopped(t) != nil || slices.ContainsFunc(t.Decisions, func(x *cohortv1.RungDecision) bool { return x.Rung == d.Rung }) {
		return s, nil
	}
	t.Decisions = append(t.Decisions, proto.Clone(d).(*cohortv1.RungDecision))
	if !d.Promoted && t.Started {
		job, err := txn.JobByID(nil, t.Job.GetId())
		if err != nil {
			return nil, err
		}
		if job != nil && !state.JobTerminal(job.State) {
			if _, err := endJob(txn, job, cohortv1.JobState_JOB_STATE_CANCELLED, search.StopMessage(d), at, ""); err != nil {
				return nil, err
			}
		}
	}
	if err := txn.UpsertSearch(s); err != nil {
		return nil, err
	}
	return s, nil
}

func applyFinishSearch(txn *state.Txn, op *cohortv1.FinishSearchOp, at int64) (any, error) {
	s, err := storedSearch(txn, "finish search", op.GetSearchId())
	if err != nil {
		return nil, err
	}
	if s.State != cohortv1.SearchState_SEARCH_STATE_RUNNING {
		return s, nil
	}
	switch op.State {
	case cohortv1.SearchState_SEARCH_STATE_SUCCEEDED, cohortv1.SearchState_SEARCH_STATE_FAILED:
	default:
		return nil, fmt.Errorf("finish search: %w: state %s", ErrInvalidCommand, op.State)
	}
	s.State, s.StatusMessage, s.BestJobId, s.EndTimeUnixNano = op.State, op.Message, op.BestJobId, at
	if err := txn.UpsertSearch(s); err != nil {
		return nil, err
	}
	return s, nil
}

// recordSearchEpoch records the per-epoch validation metrics of a search trial's
// report in its search (applyTaskReport calls it for every report of a live job).
func recordSearchEpoch(txn *state.Txn, job *cohortv1.Job, r *cohortv1.TaskReport) error {
	if job.GetSearchId() == "" || r.GetProgress() == nil || len(r.Metrics) == 0 || r.ExportedFrom != nil || r.Progress.Epoch <= 0 {
		return nil
	}
	stored, err := txn.SearchByID(nil, job.SearchId)
	if err != nil || stored == nil {
		return err
	}
	if int(job.SearchTrial) >= len(stored.Trials) || stored.Trials[job.SearchTrial].GetJob().GetId() != job.Id {
		return nil
	}
	s := proto.Clone(stored).(*cohortv1.Search)
	t := s.Trials[job.SearchTrial]
	e := &cohortv1.TrialEpoch{Epoch: r.Progress.Epoch, Metrics: maps.Clone(r.Metrics), RecordedIndex: txn.Index()}
	i, found := slices.BinarySearchFunc(t.Epochs, e.Epoch, func(x *cohortv1.TrialEpoch, ep int32) int { return int(x.Epoch - ep) })
	if found {
		if maps.Equal(t.Epochs[i].Metrics, e.Metrics) {
			return nil
		}
		e.RecordedIndex = t.Epochs[i].RecordedIndex // a re-run epoch keeps its place in the decision order
		t.Epochs[i] = e
	} else {
		t.Epochs = slices.Insert(t.Epochs, i, e)
	}
	return txn.UpsertSearch(s)
}
