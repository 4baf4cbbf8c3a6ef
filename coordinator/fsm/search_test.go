package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func searchCmd(c *cohortv1.SearchCommand) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 500, Kind: &cohortv1.Command_Search{Search: c}}
}

func testSearch(n int) *cohortv1.Search {
	s := &cohortv1.Search{Id: "s1", Name: "s", Namespace: "default", IdempotencyKey: "sk", Algorithm: "asha", Metric: "val_auc",
		Maximize: true, MinEpochs: 1, MaxEpochs: 3, ReductionFactor: 3, ParallelTrials: 1}
	for i := range n {
		s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: int32(i), Job: &cohortv1.Job{
			Id: fmt.Sprintf("s1-t%d", i), Name: "s", Namespace: "default", WorkerCount: 2, ShardCount: 1}})
	}
	return s
}

func startTrialCmd(i int32) *cohortv1.Command {
	return searchCmd(&cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_StartTrial{StartTrial: &cohortv1.StartTrialOp{SearchId: "s1", Trial: i}}})
}

func TestSearchCommands(t *testing.T) {
	h := newHarness(t)
	res := h.mustApply(searchCmd(&cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Submit{Submit: testSearch(2)}})).(*SubmitSearchResult)
	if !res.Created || res.Search.State != cohortv1.SearchState_SEARCH_STATE_RUNNING || res.Search.SubmitTimeUnixNano != 500 {
		t.Fatalf("submit: %+v", res)
	}
	// The same idempotency key returns the first search.
	again := testSearch(2)
	again.Id = "s2"
	if r := h.mustApply(searchCmd(&cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Submit{Submit: again}})).(*SubmitSearchResult); r.Created || r.Search.Id != "s1" {
		t.Fatalf("resubmit: %+v", r)
	}

	// A trial starts once: a repeated start (a deposed leader's) creates nothing.
	st := h.mustApply(startTrialCmd(0)).(*StartTrialResult)
	if !st.Created || st.Job.State != cohortv1.JobState_JOB_STATE_PENDING || st.Job.SearchId != "s1" || st.Job.SubmitTimeUnixNano != 500 {
		t.Fatalf("start trial: %+v", st)
	}
	if st := h.mustApply(startTrialCmd(0)).(*StartTrialResult); st.Created {
		t.Fatal("trial 0 started twice")
	}
	if err, _ := h.apply(startTrialCmd(5)).(error); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("start of a trial that does not exist: %v", err)
	}

	// Per-epoch metrics of the trial's chief are recorded in the search.
	h.mustApply(planCmd("s1-t0", alloc("s1-t0", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1"),
		alloc("s1-t0", cohortv1.TaskKind_TASK_KIND_WORKER, 1, "n2"), alloc("s1-t0", cohortv1.TaskKind_TASK_KIND_PS_SHARD, 0, "p1")))
	for e := 1; e <= 2; e++ {
		h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "s1-t0-w0", Progress: &cohortv1.JobProgress{Epoch: int32(e)},
			Metrics: map[string]float64{"val_auc": 0.5 + float64(e)/10}}))
	}
	s, _ := h.f.State().SearchByID(nil, "s1")
	if len(s.Trials[0].Epochs) != 2 || s.Trials[0].Epochs[1].Metrics["val_auc"] != 0.7 || s.Trials[0].Epochs[0].RecordedIndex >= s.Trials[0].Epochs[1].RecordedIndex {
		t.Fatalf("recorded epochs: %v", s.Trials[0].Epochs)
	}

	// A stop decision ends the trial's job with the reason; a second decision at the
	// same rung changes nothing.
	stop := &cohortv1.RungDecision{Rung: 0, Epoch: 1, Value: 0.6, Reason: "below the cutoff"}
	dec := func(d *cohortv1.RungDecision) *cohortv1.Command {
		return searchCmd(&cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Decision{Decision: &cohortv1.DecisionOp{SearchId: "s1", Trial: 0, Decision: d}}})
	}
	h.mustApply(dec(stop))
	j := h.job("s1-t0")
	if j.State != cohortv1.JobState_JOB_STATE_CANCELLED || !bytes.Contains([]byte(j.StatusMessage), []byte("stopped by the search (ASHA) at rung 0, epoch 1: below the cutoff")) {
		t.Fatalf("stopped trial job: %s %q", j.State, j.StatusMessage)
	}
	if h.alloc("s1-t0-w0").State != cohortv1.TaskState_TASK_STATE_STOPPED {
		t.Fatal("the stopped trial's tasks still run")
	}
	h.mustApply(dec(&cohortv1.RungDecision{Rung: 0, Epoch: 1, Value: 0.6, Promoted: true}))
	s, _ = h.f.State().SearchByID(nil, "s1")
	if len(s.Trials[0].Decisions) != 1 || s.Trials[0].Decisions[0].Promoted {
		t.Fatalf("decisions: %v", s.Trials[0].Decisions)
	}

	// Cancelling the search cancels its running trials; no trial starts after it.
	h.mustApply(startTrialCmd(1))
	h.mustApply(searchCmd(&cohortv1.SearchCommand{Op: &cohortv1.SearchCommand_Cancel{Cancel: &cohortv1.CancelSearchOp{SearchId: "s1", Reason: "enough"}}}))
	if j := h.job("s1-t1"); j.State != cohortv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("trial 1 after cancel: %s", j.State)
	}
	s, _ = h.f.State().SearchByID(nil, "s1")
	if s.State != cohortv1.SearchState_SEARCH_STATE_CANCELLED || s.StatusMessage != "cancelled: enough" || s.EndTimeUnixNano != 500 {
		t.Fatalf("cancelled search: %s %q", s.State, s.StatusMessage)
	}

	// Searches survive a snapshot.
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := restored.SearchByID(nil, "s1")
	if !proto.Equal(got, s) {
		t.Fatalf("restored search differs:\n%v\n%v", got, s)
	}
}
