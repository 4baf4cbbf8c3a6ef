package web

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// searchFake is a fakeSource that also serves one search.
type searchFake struct {
	*fakeSource
	s    *cohortv1.Search
	jobs []*cohortv1.Job
}

func (f *searchFake) ListSearches(context.Context) ([]*cohortv1.Search, error) {
	return []*cohortv1.Search{f.s}, nil
}

func (f *searchFake) GetSearch(_ context.Context, id string) (*cohortv1.GetSearchResponse, error) {
	if id != f.s.Id {
		return nil, fmt.Errorf("search %s: %w", id, ErrNotFound)
	}
	return &cohortv1.GetSearchResponse{Search: f.s, Jobs: f.jobs, BestTrial: 1}, nil
}

func TestSearchPage(t *testing.T) {
	s := &cohortv1.Search{Id: "as-1", Name: "as", Namespace: "default", State: cohortv1.SearchState_SEARCH_STATE_RUNNING,
		Algorithm: "asha", Metric: "val_auc", Maximize: true, MinEpochs: 1, MaxEpochs: 3, ReductionFactor: 3}
	var jobs []*cohortv1.Job
	for i, vals := range [][]float64{{0.70, 0.72}, {0.75, 0.80, 0.83}, {0.60}} {
		tr := &cohortv1.SearchTrial{Index: int32(i), Started: true, Job: &cohortv1.Job{Id: fmt.Sprintf("as-1-t%d", i)},
			Parameters: map[string]string{"training.optimizer.learningRate": "0.00123456", "model.mlp.hidden": "[8]"}}
		for e, v := range vals {
			tr.Epochs = append(tr.Epochs, &cohortv1.TrialEpoch{Epoch: int32(e + 1), Metrics: map[string]float64{"val_auc": v}})
		}
		st := cohortv1.JobState_JOB_STATE_RUNNING
		if i == 2 {
			tr.Decisions = []*cohortv1.RungDecision{{Rung: 0, Epoch: 1, Value: 0.6, Reason: "below"}}
			st = cohortv1.JobState_JOB_STATE_CANCELLED
		}
		s.Trials = append(s.Trials, tr)
		jobs = append(jobs, &cohortv1.Job{Id: tr.Job.Id, State: st, StatusMessage: "stopped by the search (ASHA) at rung 0, epoch 1: below"})
	}
	s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: 3, Job: &cohortv1.Job{Id: "as-1-t3"}, Parameters: map[string]string{"x": "<script>"}})
	srv := newServer(t, &searchFake{fakeSource: newFake(), s: s, jobs: jobs})

	code, _, body := get(t, srv.URL+"/searches/as-1")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	for _, want := range []string{
		`data-trial="2" data-status="stopped"`, "rung 0 (epoch 1): stopped", `data-trial="3" data-status="waiting"`,
		"learningRate=0.001235", "BEST", "trial 1 (<a href=\"/jobs/as-1-t1\">as-1-t1</a>) val_auc 0.8300", // best so far
		"<td class=\"n\">0.8300</td>", "<polyline", "rungs at epochs [1] of 3",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("search page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") && !strings.Contains(body, "&lt;script&gt;") {
		t.Error("a parameter value is not escaped")
	}
	// The epoch table has one column per epoch and "—" where a trial reported none.
	if n := strings.Count(body, `<tr data-trial="0"><td class="n">0</td>`); n != 1 {
		t.Errorf("epoch table row of trial 0 appears %d times", n)
	}
	code, _, body = get(t, srv.URL+"/searches")
	if code != http.StatusOK || !strings.Contains(body, `href="/searches/as-1"`) || !strings.Contains(body, "3/4") {
		t.Fatalf("searches page %d: %s", code, body)
	}
	if code, _, _ := get(t, srv.URL+"/searches/nope"); code != http.StatusNotFound {
		t.Fatalf("unknown search: status %d", code)
	}
}
