package search

import (
	"math"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func TestRungs(t *testing.T) {
	for _, tc := range []struct {
		min, max, rf int
		want         []int
	}{
		{3, 30, 3, []int{3, 9, 27}},
		{1, 9, 3, []int{1, 3}},
		{1, 10, 2, []int{1, 2, 4, 8}},
		{2, 2, 3, nil},
		{5, 4, 3, nil},
	} {
		got := Rungs(tc.min, tc.max, tc.rf)
		if len(got) != len(tc.want) {
			t.Fatalf("Rungs(%d, %d, %d) = %v, want %v", tc.min, tc.max, tc.rf, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("Rungs(%d, %d, %d) = %v, want %v", tc.min, tc.max, tc.rf, got, tc.want)
			}
		}
	}
}

// TestDecideMatchesHandTable checks the rung rule against decisions computed by hand:
// the cutoff is the (1 - 1/rf) quantile (linear interpolation) of the results recorded
// at the rung before the trial's (for min: the 1/rf quantile).
func TestDecideMatchesHandTable(t *testing.T) {
	type step struct {
		value      float64
		promote    bool
		cutoff     float64
		haveCutoff bool
	}
	for _, tc := range []struct {
		name     string
		rf       int
		maximize bool
		steps    []step
	}{
		{"max rf3", 3, true, []step{
			{0.70, true, 0, false},                // first result: nothing to compare with
			{0.65, false, 0.70, true},             // q(2/3) of [0.70]
			{0.80, true, 0.65 + 0.05*2/3., true},  // [0.65 0.70]: pos 2/3
			{0.69, false, 0.70 + 0.10/3, true},    // [0.65 0.70 0.80]: pos 4/3
			{0.75, true, 0.70, true},              // [0.65 0.69 0.70 0.80]: pos 2
			{0.70, false, 0.70 + 0.05*2/3., true}, // [0.65 0.69 0.70 0.75 0.80]: pos 8/3
		}},
		{"min rf2", 2, false, []step{
			{0.50, true, 0, false},
			{0.40, true, 0.50, true},   // q(1/2) of [0.50]
			{0.60, false, 0.45, true},  // [0.40 0.50]
			{0.45, true, 0.50, true},   // [0.40 0.50 0.60]
			{0.55, false, 0.475, true}, // [0.40 0.45 0.50 0.60]: pos 1.5
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recorded []float64
			for i, s := range tc.steps {
				promote, cutoff, ok := Decide(recorded, s.value, tc.rf, tc.maximize)
				if ok != s.haveCutoff || math.Abs(cutoff-s.cutoff) > 1e-9 {
					t.Fatalf("step %d: cutoff %v (%v), want %v (%v)", i, cutoff, ok, s.cutoff, s.haveCutoff)
				}
				if promote != s.promote {
					t.Fatalf("step %d (value %v, recorded %v): promote = %v, want %v", i, s.value, recorded, promote, s.promote)
				}
				recorded = append(recorded, s.value)
			}
		})
	}
}

// TestNextPendingOrdersByRaftIndex replays an ASHA search's rung results in the order
// Raft recorded them and checks every decision against the hand table.
func TestNextPendingOrdersByRaftIndex(t *testing.T) {
	s := &cohortv1.Search{Id: "s", Algorithm: "asha", Metric: "val_auc", Maximize: true, MinEpochs: 1, MaxEpochs: 9, ReductionFactor: 3}
	// trial -> (epoch, value, raft index)
	type rep struct {
		trial, epoch int
		v            float64
		idx          uint64
	}
	reports := []rep{
		{0, 1, 0.70, 10}, {1, 1, 0.65, 11}, {0, 2, 0.71, 12}, {2, 1, 0.80, 13},
		{3, 1, 0.69, 14}, {0, 3, 0.74, 15}, {2, 2, 0.81, 16}, {2, 3, 0.82, 17},
	}
	for i := range 4 {
		s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: int32(i), Started: true, Job: &cohortv1.Job{Id: string(rune('a' + i))}})
	}
	for _, r := range reports {
		tr := s.Trials[r.trial]
		tr.Epochs = append(tr.Epochs, &cohortv1.TrialEpoch{Epoch: int32(r.epoch), Metrics: map[string]float64{"val_auc": r.v}, RecordedIndex: r.idx})
	}
	type dec struct {
		trial, rung int
		promoted    bool
	}
	want := []dec{{0, 0, true}, {1, 0, false}, {2, 0, true}, {3, 0, false}, {0, 1, true}, {2, 1, true}}
	var got []dec
	for {
		p, ok := NextPending(s)
		if !ok {
			break
		}
		d := DecidePending(s, p)
		s.Trials[p.Trial].Decisions = append(s.Trials[p.Trial].Decisions, d)
		got = append(got, dec{p.Trial, p.Rung, d.Promoted})
		if len(got) > 20 {
			t.Fatal("NextPending does not converge")
		}
	}
	if len(got) != len(want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("decision %d = %+v, want %+v (all: %v)", i, got[i], want[i], got)
		}
	}
	// Rung 1 (epoch 3): trial 0 first (0.74, promoted), trial 2 second with 0.82 >= 0.74.
	if c := s.Trials[2].Decisions[1]; !c.HasCutoff || c.Cutoff != 0.74 {
		t.Fatalf("trial 2 rung 1 cutoff = %v (%v), want 0.74", c.Cutoff, c.HasCutoff)
	}
	if st := Stopped(s.Trials[1]); st == nil || st.Rung != 0 {
		t.Fatalf("trial 1 not stopped at rung 0: %v", st)
	}
}

func TestBestPrefersSucceededTrials(t *testing.T) {
	s := &cohortv1.Search{Metric: "val_loss", Maximize: false}
	for i := range 3 {
		s.Trials = append(s.Trials, &cohortv1.SearchTrial{Index: int32(i), Started: true, Job: &cohortv1.Job{Id: string(rune('a' + i))}})
	}
	s.Trials[0].Epochs = []*cohortv1.TrialEpoch{{Epoch: 1, Metrics: map[string]float64{"val_loss": 0.1}}}
	s.Trials[1].Epochs = []*cohortv1.TrialEpoch{{Epoch: 1, Metrics: map[string]float64{"val_loss": 0.5}}}
	jobs := map[string]*cohortv1.Job{
		"a": {Id: "a", State: cohortv1.JobState_JOB_STATE_CANCELLED},
		"b": {Id: "b", State: cohortv1.JobState_JOB_STATE_RUNNING},
	}
	if b := Best(s, jobs); b != 0 {
		t.Fatalf("best so far = %d, want 0", b)
	}
	jobs["b"] = &cohortv1.Job{Id: "b", State: cohortv1.JobState_JOB_STATE_SUCCEEDED, Metrics: map[string]float64{"val_loss": 0.3}}
	jobs["c"] = &cohortv1.Job{Id: "c", State: cohortv1.JobState_JOB_STATE_SUCCEEDED, Metrics: map[string]float64{"val_loss": 0.2}}
	if b := Best(s, jobs); b != 2 {
		t.Fatalf("best = %d, want 2 (the succeeded trial with the lowest val_loss)", b)
	}
}
