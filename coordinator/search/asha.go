// Package search holds the pure decision logic of hyperparameter searches: ASHA's rungs
// and promotions, the pending rung results of a search, and its best trial. It does no
// I/O; the leader's search loop (coordinator/server) proposes what it decides through
// Raft.
package search

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Rungs returns ASHA's rung epochs: minEpochs * rf^k for k = 0, 1, ... below maxEpochs
// (a trial that reaches maxEpochs has finished; there is nothing left to decide).
func Rungs(minEpochs, maxEpochs, rf int) []int {
	if minEpochs < 1 || rf < 2 {
		return nil
	}
	var out []int
	for e := minEpochs; e < maxEpochs; e *= rf {
		out = append(out, e)
	}
	return out
}

// RungOf returns the rung index of epoch (-1 when epoch is no rung).
func RungOf(rungs []int, epoch int) int {
	return slices.Index(rungs, epoch)
}

// Quantile is the q-quantile (0..1) of values by linear interpolation between the
// closest ranks (numpy's default percentile). values must not be empty.
func Quantile(values []float64, q float64) float64 {
	v := slices.Clone(values)
	slices.Sort(v)
	pos := q * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return v[lo] + (v[hi]-v[lo])*(pos-float64(lo))
}

// Decide is ASHA's rung rule (asynchronous successive halving, Li et al. 2018, in the
// form Ray Tune's AsyncHyperBandScheduler uses): a trial reaching a rung with value is
// promoted (continues) when it is in the top 1/rf of the results recorded at that rung
// before it, that is when it is at least as good as their (1 - 1/rf) quantile; the
// first result at a rung has nothing to compare with and is promoted. recorded are the
// earlier results at the rung; maximize says which direction is better. It returns the
// cutoff too (ok false: there was none).
func Decide(recorded []float64, value float64, rf int, maximize bool) (promote bool, cutoff float64, ok bool) {
	if len(recorded) == 0 {
		return true, 0, false
	}
	if math.IsNaN(value) {
		return false, 0, false
	}
	if maximize {
		cutoff = Quantile(recorded, 1-1/float64(rf))
		return value >= cutoff, cutoff, true
	}
	// For a metric to minimise, the top 1/rf are the lowest values.
	cutoff = Quantile(recorded, 1/float64(rf))
	return value <= cutoff, cutoff, true
}

// Pending is a rung result the search has not decided yet.
type Pending struct {
	Trial, Rung, Epoch int
	Value              float64
	// Missing is set when the trial's report at the rung epoch lacks the objective.
	Missing bool
	// RecordedIndex is the Raft index that recorded the epoch.
	RecordedIndex uint64
}

// NextPending returns the rung result of s to decide first: the earliest recorded (by
// Raft index, then trial) epoch that is at a rung and has no decision at that rung yet,
// of a trial that has not been stopped. ok is false when there is none (or s is not an
// ASHA search).
func NextPending(s *cohortv1.Search) (p Pending, ok bool) {
	if s.GetAlgorithm() != "asha" {
		return p, false
	}
	rungs := Rungs(int(s.MinEpochs), int(s.MaxEpochs), int(s.ReductionFactor))
	for _, t := range s.Trials {
		if Stopped(t) != nil {
			continue
		}
		for _, e := range t.Epochs {
			r := RungOf(rungs, int(e.Epoch))
			if r < 0 || decided(t, r) {
				continue
			}
			v, has := e.Metrics[s.Metric]
			cand := Pending{Trial: int(t.Index), Rung: r, Epoch: int(e.Epoch), Value: v, Missing: !has, RecordedIndex: e.RecordedIndex}
			if !ok || cand.RecordedIndex < p.RecordedIndex || (cand.RecordedIndex == p.RecordedIndex && cand.Trial < p.Trial) {
				p, ok = cand, true
			}
		}
	}
	return p, ok
}

func decided(t *cohortv1.SearchTrial, rung int) bool {
	return slices.ContainsFunc(t.Decisions, func(d *cohortv1.RungDecision) bool { return int(d.Rung) == rung })
}

// RungValues returns the results recorded (decided) at rung, in trial order.
func RungValues(s *cohortv1.Search, rung int) []float64 {
	var out []float64
	for _, t := range s.Trials {
		for _, d := range t.Decisions {
			if int(d.Rung) == rung && !math.IsNaN(d.Value) && d.Reason != missingReason {
				out = append(out, d.Value)
			}
		}
	}
	return out
}

const missingReason = "objective not reported"

// DecidePending decides p against the results recorded in s: the decision to record.
func DecidePending(s *cohortv1.Search, p Pending) *cohortv1.RungDecision {
	d := &cohortv1.RungDecision{Rung: int32(p.Rung), Epoch: int32(p.Epoch), Value: p.Value}
	if p.Missing {
		d.Value = math.NaN()
		d.Reason = missingReason
		return d
	}
	promote, cutoff, has := Decide(RungValues(s, p.Rung), p.Value, int(s.ReductionFactor), s.Maximize)
	d.Promoted, d.Cutoff, d.HasCutoff = promote, cutoff, has
	word := "at least"
	if !s.Maximize {
		word = "at most"
	}
	switch {
	case !has:
		d.Reason = fmt.Sprintf("first result at rung %d (epoch %d): promoted", p.Rung, p.Epoch)
	case promote:
		d.Reason = fmt.Sprintf("%s %.4f at epoch %d is %s the rung-%d cutoff %.4f (top 1/%d): promoted", s.Metric, p.Value, p.Epoch, word, p.Rung, cutoff, s.ReductionFactor)
	default:
		d.Reason = fmt.Sprintf("%s %.4f at epoch %d is not %s the rung-%d cutoff %.4f (top 1/%d)", s.Metric, p.Value, p.Epoch, word, p.Rung, cutoff, s.ReductionFactor)
	}
	return d
}

// Stopped returns the decision that stopped t, or nil.
func Stopped(t *cohortv1.SearchTrial) *cohortv1.RungDecision {
	for _, d := range t.Decisions {
		if !d.Promoted {
			return d
		}
	}
	return nil
}

// StopMessage is the status message of a trial job a decision stopped.
func StopMessage(d *cohortv1.RungDecision) string {
	return fmt.Sprintf("stopped by the search (ASHA) at rung %d, epoch %d: %s", d.Rung, d.Epoch, d.Reason)
}

// TrialStatus is a trial's status word: waiting (not started), stopped (its job ended
// by an ASHA decision), or its job's state (pending, running, succeeded, failed,
// cancelled). A trial that finished before a stop decision reached it succeeded.
func TrialStatus(t *cohortv1.SearchTrial, job *cohortv1.Job) string {
	if !t.Started || job == nil {
		return "waiting"
	}
	if Stopped(t) != nil && job.GetState() == cohortv1.JobState_JOB_STATE_CANCELLED {
		return "stopped"
	}
	return strings.ToLower(strings.TrimPrefix(job.GetState().String(), "JOB_STATE_"))
}

// StateWord is a search state's word (running, succeeded, failed, cancelled).
func StateWord(st cohortv1.SearchState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "SEARCH_STATE_"))
}

// TrialValue is a trial's objective: its job's final metric when the job succeeded
// (the metrics of the checkpoint it exported), else the best value it reported at an
// epoch. ok is false when it has none.
func TrialValue(s *cohortv1.Search, t *cohortv1.SearchTrial, job *cohortv1.Job) (v float64, final, ok bool) {
	if job != nil && job.State == cohortv1.JobState_JOB_STATE_SUCCEEDED {
		if x, has := job.Metrics[s.Metric]; has && !math.IsNaN(x) {
			return x, true, true
		}
	}
	for _, e := range t.Epochs {
		x, has := e.Metrics[s.Metric]
		if !has || math.IsNaN(x) {
			continue
		}
		if !ok || better(s.Maximize, x, v) {
			v, ok = x, true
		}
	}
	return v, false, ok
}

func better(maximize bool, a, b float64) bool {
	if maximize {
		return a > b
	}
	return a < b
}

// Best returns the index of s's best trial: among the trials whose job succeeded the
// one with the best final objective (the search's result, whose exports a user takes);
// while none has, the best value any trial reported so far. -1 when no trial has a
// value. jobs maps job IDs to the trials' jobs.
func Best(s *cohortv1.Search, jobs map[string]*cohortv1.Job) int {
	best, bestFinal := -1, false
	var bestV float64
	for _, t := range s.Trials {
		job := jobs[t.GetJob().GetId()]
		v, final, ok := TrialValue(s, t, job)
		if !ok {
			continue
		}
		switch {
		case best < 0, final && !bestFinal, final == bestFinal && better(s.Maximize, v, bestV):
			best, bestV, bestFinal = int(t.Index), v, final
		}
	}
	return best
}

// Next returns the indexes of the trials to start now so that at most
// parallel_trials run: the lowest not yet started. active counts the started trials
// whose jobs have not ended.
func Next(s *cohortv1.Search, active int) []int {
	var out []int
	for _, t := range s.Trials {
		if active+len(out) >= int(max(s.ParallelTrials, 1)) {
			break
		}
		if !t.Started {
			out = append(out, int(t.Index))
		}
	}
	return out
}

// SortTrials orders trials by index.
func SortTrials(ts []*cohortv1.SearchTrial) {
	slices.SortFunc(ts, func(a, b *cohortv1.SearchTrial) int { return cmp.Compare(a.Index, b.Index) })
}
