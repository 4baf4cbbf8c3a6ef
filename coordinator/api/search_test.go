package api

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func expandTwo(spec []byte) (*cohortv1.Search, error) {
	if strings.HasPrefix(string(spec), "bad") {
		return nil, errors.New("spec.maxTrials (line 9): must be 1..1000, got 0")
	}
	s := &cohortv1.Search{Name: "s", Namespace: "default", Algorithm: "random", Metric: "val_auc", Maximize: true, ParallelTrials: 1}
	for i := range 2 {
		s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: int32(i), Parameters: map[string]string{"lr": "0.1"},
			Job: &cohortv1.Job{SpecYaml: []byte("trial")}})
	}
	return s, nil
}

// TestSubmitSearch: the handler admits every trial as a job (IDs fixed from the
// search's), a retry with the key returns the first search, a bad spec is
// InvalidArgument with the parser's message, and cancel and get answer.
func TestSubmitSearch(t *testing.T) {
	b := newBackend(t)
	svc := NewSearchService(b, SearchConfig{Config: Config{ParseSpec: parseOK}, ExpandSearch: expandTwo})
	ctx := context.Background()
	resp, err := svc.SubmitSearch(ctx, &cohortv1.SubmitSearchRequest{SpecYaml: []byte("ok"), IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetSearch()
	if !resp.Created || s.State != cohortv1.SearchState_SEARCH_STATE_RUNNING || len(s.Trials) != 2 || !strings.HasPrefix(s.Id, "s-") {
		t.Fatalf("search %+v", s)
	}
	for i, tr := range s.Trials {
		j := tr.GetJob()
		if j.Id != s.Id+"-t"+string(rune('0'+i)) || j.SearchId != s.Id || j.IdempotencyKey != "k1/trial/"+string(rune('0'+i)) || j.WorkerCount != 1 || tr.Started {
			t.Fatalf("trial %d job %+v", i, j)
		}
	}
	again, err := svc.SubmitSearch(ctx, &cohortv1.SubmitSearchRequest{SpecYaml: []byte("ok"), IdempotencyKey: "k1"})
	if err != nil || again.Created || again.GetSearch().Id != s.Id {
		t.Fatalf("retry: %v %+v", err, again)
	}
	_, err = svc.SubmitSearch(ctx, &cohortv1.SubmitSearchRequest{SpecYaml: []byte("bad")})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "invalid search spec") || !strings.Contains(err.Error(), "spec.maxTrials") {
		t.Fatalf("bad spec: %v", err)
	}
	got, err := svc.GetSearch(ctx, &cohortv1.GetSearchRequest{Id: s.Id})
	if err != nil || got.BestTrial != -1 || len(got.Jobs) != 0 {
		t.Fatalf("get: %v %+v", err, got)
	}
	if _, err := svc.GetSearch(ctx, &cohortv1.GetSearchRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get unknown: %v", err)
	}
	c, err := svc.CancelSearch(ctx, &cohortv1.CancelSearchRequest{Id: s.Id, Reason: "r"})
	if err != nil || c.GetSearch().State != cohortv1.SearchState_SEARCH_STATE_CANCELLED {
		t.Fatalf("cancel: %v %+v", err, c)
	}
	list, err := svc.ListSearches(ctx, &cohortv1.ListSearchesRequest{Namespace: "other"})
	if err != nil || len(list.Searches) != 0 {
		t.Fatalf("list other namespace: %v %+v", err, list)
	}
}
