package multihost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// trainProbeName is the training probe's job: the campaign's attrition job with
// epochs enough to outlast the campaign, elastic (1-2 workers), checkpointing every 50
// steps. The campaign follows its progress to say how much training each fault costs.
const trainProbeName = "camp-train"

// trainSample is one poll of the training probe's status: its state and the chief's
// latest progress report (step, and when the chief measured it).
type trainSample struct {
	polled time.Time
	state  string
	step   int64
	at     time.Time
}

// startTrainProbe submits the training probe (through the history, like every
// submission) and waits until it trains.
func (k *campaign) startTrainProbe() {
	t, c := k.t, k.c
	var doc map[string]any
	if err := yaml.Unmarshal(c.spec, &doc); err != nil {
		t.Fatal(err)
	}
	doc["metadata"].(map[string]any)["name"] = trainProbeName
	spec := doc["spec"].(map[string]any)
	spec["training"].(map[string]any)["epochs"] = 100000 // the most a spec may ask
	spec["checkpoint"] = map[string]any{"everySteps": 50, "keep": 2}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "specs", trainProbeName+".yaml")
	err = os.WriteFile(path, b, 0o644)
	// One try: after an unknown outcome a retry could make a second job of the name.
	id, r := k.submitSpec(10, c.addrs, k.cfg.cliTimeout, trainProbeName, path, err)
	if id == "" {
		t.Fatalf("training probe: submit: %v", r.err)
	}
	k.trainID = id
	c.waitFor("the training probe training", 120*time.Second, func() error {
		state, p, err := c.jobProgress(id)
		if err != nil {
			return err
		}
		if state != "JOB_STATE_RUNNING" || p.step < 1 {
			return fmt.Errorf("%s at step %d", state, p.step)
		}
		return nil
	})
	c.netLog.printf("training probe %s running", id)
}

// trainSampler polls the training probe's progress every second.
func (k *campaign) trainSampler(ctx context.Context) {
	for ctx.Err() == nil {
		begin := time.Now()
		state, p, err := k.c.jobProgress(k.trainID)
		if err == nil {
			k.mu.Lock()
			k.trainSeen = append(k.trainSeen, trainSample{polled: begin, state: state, step: p.step, at: p.at})
			k.mu.Unlock()
		}
		pace(ctx, begin, time.Second)
	}
}

// stopTrainProbe follows the training probe until it reports progress 2 s after the
// last heal (at most 30 s: a fault's throughput is measured up to the first report
// after its heal), then stops following it and cancels it, so the campaign's jobs can
// all end.
func (k *campaign) stopTrainProbe() {
	if k.trainID == "" {
		return
	}
	c := k.c
	_ = poll(30*time.Second, func() error {
		k.mu.Lock()
		defer k.mu.Unlock()
		if n := len(k.trainSeen); n > 0 && k.trainSeen[n-1].at.After(k.ended.Add(2*time.Second)) {
			return nil
		}
		return fmt.Errorf("no report yet")
	})
	k.stopTrainSampler()
	state, _, err := c.jobProgress(k.trainID)
	if err == nil && state != "JOB_STATE_RUNNING" && state != "JOB_STATE_PENDING" {
		// It cannot end by itself in the campaign's time: a fault ended it.
		k.t.Errorf("the training probe %s is %s before the campaign cancelled it (its workers' and parameter servers' logs say why)", k.trainID, state)
		return
	}
	c.waitFor("the training probe cancelled", 60*time.Second, func() error {
		r := c.cli(k.cfg.cliTimeout, "job", "cancel", k.trainID, "--address", c.addrs)
		return r.err
	})
}

// trainReports are the distinct progress reports among samples (by report time),
// in order, without the zero step a requeued job shows before its first report.
func trainReports(samples []trainSample) []trainSample {
	var out []trainSample
	for _, s := range samples {
		if s.at.IsZero() || (s.step == 0 && len(out) > 0) {
			continue
		}
		if len(out) > 0 && s.at.Equal(out[len(out)-1].at) {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b trainSample) int { return a.at.Compare(b.at) })
	return out
}

// trainRate is the training probe's steps per second between the last report at or
// before from and the first at or after to (forward steps only: a rewind to a
// checkpoint is steps lost, not negative throughput); -1 without such reports.
func trainRate(reports []trainSample, from, to time.Time) float64 {
	i := -1
	for j, r := range reports {
		if !r.at.After(from) {
			i = j
		}
	}
	if i < 0 {
		return -1
	}
	var fwd int64
	for j := i + 1; j < len(reports); j++ {
		fwd += max(0, reports[j].step-reports[j-1].step)
		if !reports[j].at.Before(to) {
			return float64(fwd) / reports[j].at.Sub(reports[i].at).Seconds()
		}
	}
	return -1
}

// stepsLost sums the rewinds of the probe's progress among reports between from and
// to: the steps it had done and had to do again from a checkpoint.
func stepsLost(reports []trainSample, from, to time.Time) int64 {
	var lost, peak int64
	for _, r := range reports {
		if r.at.After(to) {
			break
		}
		if !r.at.Before(from) && r.step < peak {
			lost += peak - r.step
			peak = r.step
		}
		peak = max(peak, r.step)
	}
	return lost
}

// trainFigures fills each fault's training-probe figures: throughput before it (over
// the fault-free time since the previous fault was whole, at most 30 s; the rate
// before the first fault when that time held too few reports), during it (the
// injection to the heal) and the steps lost (the injection until 10 s after the
// cluster was whole). Call with k.mu held.
func (k *campaign) trainFigures() {
	if k.trainID == "" {
		return
	}
	reports := trainReports(k.trainSeen)
	var baseline float64 = -1
	if len(k.faults) > 0 && len(reports) > 0 {
		baseline = trainRate(reports, reports[0].at, k.faults[0].injected)
	}
	prevWhole := k.began
	for _, f := range k.faults {
		whole := f.healed.Add(time.Duration(f.AfterHealMS) * time.Millisecond)
		from := prevWhole
		if f.injected.Sub(from) > 30*time.Second {
			from = f.injected.Add(-30 * time.Second)
		}
		if len(reports) > 0 && from.Before(reports[0].at) {
			from = reports[0].at // the probe's first report: the rate needs one at or before from
		}
		f.TrainBefore = -1
		if n := countIn(reports, from, f.injected); n >= 2 {
			f.TrainBefore = trainRate(reports, from, f.injected)
		} else {
			f.TrainBefore = baseline
		}
		f.TrainDuring = trainRate(reports, f.injected, f.healed)
		f.StepsLost = stepsLost(reports, f.injected, whole.Add(10*time.Second))
		prevWhole = whole
	}
}

func countIn(reports []trainSample, from, to time.Time) int {
	n := 0
	for _, r := range reports {
		if !r.at.Before(from) && !r.at.After(to) {
			n++
		}
	}
	return n
}

func TestTrainProbeFigures(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// 10 steps/s for 10 s; rewound at 12 s from step 120 to the checkpoint at 100;
	// 5 steps/s afterwards. Polls repeat reports; a requeued job shows step 0 once.
	var samples []trainSample
	for s := 0; s <= 10; s += 2 {
		r := trainSample{step: int64(10 * s), at: at(float64(s))}
		samples = append(samples, r, r)
	}
	samples = append(samples, trainSample{step: 120, at: at(12)}, trainSample{step: 0, at: at(13)},
		trainSample{step: 100, at: at(14)}, trainSample{step: 110, at: at(16)}, trainSample{step: 120, at: at(18)})
	reports := trainReports(samples)
	if len(reports) != 10 {
		t.Fatalf("%d distinct reports, want 10 (6 before the rewind, no zero step): %+v", len(reports), reports)
	}
	if got := trainRate(reports, at(0), at(10)); got != 10 {
		t.Errorf("rate over 0-10 s = %v, want 10 steps/s", got)
	}
	// From the report at 12 s to the one at 18 s: 0 (rewind) + 10 + 10 forward in 6 s.
	if got := trainRate(reports, at(12), at(17)); got != 20.0/6 {
		t.Errorf("rate over 12-17 s = %v, want %v", got, 20.0/6)
	}
	if got := trainRate(reports, at(12), at(30)); got != -1 {
		t.Errorf("rate up to after the last report = %v, want -1", got)
	}
	if got := stepsLost(reports, at(11), at(20)); got != 20 {
		t.Errorf("steps lost = %d, want 20 (120 done, resumed from 100)", got)
	}
	if got := stepsLost(reports, at(0), at(11)); got != 0 {
		t.Errorf("steps lost before the rewind = %d, want 0", got)
	}
}
