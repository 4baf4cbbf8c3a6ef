package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/coordinator/search"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// searchMetrics are the search loop's Prometheus metrics.
type searchMetrics struct {
	trialsStarted prometheus.Counter
	decisions     *prometheus.CounterVec
	finished      *prometheus.CounterVec
}

func newSearchMetrics(reg prometheus.Registerer) (*searchMetrics, error) {
	m := &searchMetrics{
		trialsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_search_trials_started_total",
			Help: "Search trials whose jobs this leader submitted.",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_search_rung_decisions_total",
			Help: "ASHA rung decisions this leader recorded, by outcome (promoted, stopped).",
		}, []string{"outcome"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_searches_finished_total",
			Help: "Searches this leader ended, by state.",
		}, []string{"state"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.trialsStarted, m.decisions, m.finished} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("server: register search metrics: %w", err)
			}
		}
	}
	return m, nil
}

// startSearchLoop runs searchLoop until ctx ends; the returned channel closes when it
// has stopped.
func (s *Server) startSearchLoop(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.searchLoop(ctx)
	}()
	return done
}

// searchLoop drives every running search, on the leader only: it records ASHA's rung
// decisions (in the order Raft recorded the rung results), starts trials up to
// parallelTrials, and ends a search whose trials have all ended. Everything it decides
// is a function of the replicated state, proposed through Raft, and every proposal is
// idempotent in the FSM (a trial starts once, a rung is decided once), so a new leader
// picks up exactly where the old one stopped. It runs again when the searches or the
// jobs change, or after SchedulerRetryInterval when a proposal failed.
func (s *Server) searchLoop(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		failed := s.searchPass(ctx, ws)
		if ctx.Err() != nil {
			return
		}
		var wake <-chan time.Time
		stop := func() bool { return false }
		if failed {
			t := time.NewTimer(s.config.SchedulerRetryInterval)
			wake, stop = t.C, t.Stop
		}
		if !waitForChange(ctx, ws, wake, stop) {
			return
		}
	}
}

// searchPass takes one step of every running search; it reports whether a proposal
// failed.
func (s *Server) searchPass(ctx context.Context, ws memdb.WatchSet) (failed bool) {
	snap := s.State().Snapshot()
	searches, err := snap.Searches(ws)
	if err == nil {
		err = snap.WatchTable(ws, state.TableJobs)
	}
	if err != nil {
		s.logger.Error("search pass: read state", "err", err)
		return true
	}
	for _, sr := range searches {
		if sr.State != cohortv1.SearchState_SEARCH_STATE_RUNNING {
			continue
		}
		if err := s.stepSearch(ctx, snap, sr); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("search step failed; retrying", "search", sr.Id, "err", err)
			}
			failed = true
		}
	}
	return failed
}

// stepSearch proposes what one running search needs now: its next rung decision, or
// its next trials, or its end.
func (s *Server) stepSearch(ctx context.Context, snap *state.StateSnapshot, sr *cohortv1.Search) error {
	if p, ok := search.NextPending(sr); ok {
		d := search.DecidePending(sr, p)
		if _, err := s.applySearch(ctx, &cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Decision{
			Decision: &cohortv1.DecisionOp{SearchId: sr.Id, Trial: int32(p.Trial), Decision: d},
		}}); err != nil {
			return fmt.Errorf("record rung decision: %w", err)
		}
		outcome := "promoted"
		if !d.Promoted {
			outcome = "stopped"
		}
		if s.searchMetrics != nil {
			s.searchMetrics.decisions.WithLabelValues(outcome).Inc()
		}
		s.logger.Info("search rung decision", "search", sr.Id, "trial", p.Trial, "rung", p.Rung, "epoch", p.Epoch,
			"outcome", outcome, "reason", d.Reason)
		return nil // the next pass sees the decision and goes on
	}
	jobs := map[string]*cohortv1.Job{}
	active, ended := 0, 0
	for _, t := range sr.Trials {
		if !t.Started {
			continue
		}
		job, err := snap.JobByID(nil, t.Job.GetId())
		if err != nil {
			return err
		}
		jobs[t.Job.GetId()] = job
		if job == nil || state.JobTerminal(job.State) {
			ended++
		} else {
			active++
		}
	}
	for _, i := range search.Next(sr, active) {
		if _, err := s.applySearch(ctx, &cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_StartTrial{
			StartTrial: &cohortv1.StartTrialOp{SearchId: sr.Id, Trial: int32(i)},
		}}); err != nil {
			return fmt.Errorf("start trial %d: %w", i, err)
		}
		if s.searchMetrics != nil {
			s.searchMetrics.trialsStarted.Inc()
		}
		s.logger.Info("search trial started", "search", sr.Id, "trial", i, "job", sr.Trials[i].Job.GetId())
	}
	if ended < len(sr.Trials) {
		return nil
	}
	fin := finishOp(sr, jobs)
	if _, err := s.applySearch(ctx, &cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Finish{Finish: fin}}); err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	if s.searchMetrics != nil {
		s.searchMetrics.finished.WithLabelValues(search.StateWord(fin.State)).Inc()
	}
	s.logger.Info("search finished", "search", sr.Id, "state", search.StateWord(fin.State), "message", fin.Message)
	return nil
}

// finishOp is the end of a search whose trials have all ended: succeeded when a trial
// succeeded, with the best trial's job.
func finishOp(sr *cohortv1.Search, jobs map[string]*cohortv1.Job) *cohortv1.FinishSearchOp {
	counts := map[string]int{}
	for _, t := range sr.Trials {
		counts[search.TrialStatus(t, jobs[t.Job.GetId()])]++
	}
	var parts []string
	for _, w := range []string{"succeeded", "stopped", "failed", "cancelled"} {
		if counts[w] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[w], w))
		}
	}
	op := &cohortv1.FinishSearchOp{SearchId: sr.Id, State: cohortv1.SearchState_SEARCH_STATE_FAILED}
	msg := fmt.Sprintf("%d trials: %s", len(sr.Trials), strings.Join(parts, ", "))
	if counts["succeeded"] > 0 {
		op.State = cohortv1.SearchState_SEARCH_STATE_SUCCEEDED
	}
	if b := search.Best(sr, jobs); b >= 0 {
		t := sr.Trials[b]
		job := jobs[t.Job.GetId()]
		if job != nil && job.State == cohortv1.JobState_JOB_STATE_SUCCEEDED {
			op.BestJobId = job.Id
			if v, ok := job.Metrics[sr.Metric]; ok && !math.IsNaN(v) {
				msg += fmt.Sprintf("; best trial %d (job %s) %s %.4f", b, job.Id, sr.Metric, v)
			}
		}
	}
	if op.State == cohortv1.SearchState_SEARCH_STATE_FAILED {
		msg = "no trial succeeded; " + msg
	}
	op.Message = msg
	return op
}

// applySearch proposes a search command.
func (s *Server) applySearch(ctx context.Context, c *cohortv1.SearchCommand) (any, error) {
	out, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_Search{Search: c}})
	if err == nil {
		if e, ok := out.(error); ok {
			err = e
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil, err
	}
	return out, err
}
