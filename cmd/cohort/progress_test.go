package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func progressJob(state cohortv1.JobState, epoch int32, step int64) *cohortv1.Job {
	return &cohortv1.Job{Id: "j1", State: state, Metrics: map[string]float64{"val_auc": 0.8},
		Progress: &cohortv1.JobProgress{Epoch: epoch, TotalEpochs: 10, Step: step, TotalSteps: 1000, SamplesPerSecond: 5000, Loss: 0.4}}
}

func TestProgressBarOnTerminal(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	p := &progressPrinter{w: &buf, tty: true, now: func() time.Time { return clock }, lastEpoch: -1, lastStep: -1, firstStep: -1}
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 1, 100))
	clock = clock.Add(10 * time.Second)
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 3, 300))
	out := buf.String()
	// 200 steps in 10 s, 700 left: 35 s.
	if !strings.Contains(out, "\r\033[K[#######.................]  30% epoch 3/10 step 300/1000 5000 samples/s loss 0.4000 val_auc 0.8000 ETA 0:35") {
		t.Fatalf("live line missing or wrong:\n%q", out)
	}
	before := strings.Count(out, "\n")
	p.update(progressJob(cohortv1.JobState_JOB_STATE_SUCCEEDED, 10, 1000))
	out = buf.String()
	if !strings.Contains(out, "100% epoch 10/10") || strings.Count(out, "\n") < before+2 {
		t.Fatalf("final bar and state line missing:\n%q", out)
	}
	if !strings.HasSuffix(out, "job j1: succeeded\n") {
		t.Fatalf("output does not end with the final state:\n%q", out)
	}
}

func TestProgressLinesWhenNotTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressPrinter(&buf)
	if p.tty {
		t.Fatal("a buffer is not a terminal")
	}
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 1, 100))
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 1, 100)) // no change: nothing new
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 2, 200))
	out := buf.String()
	if strings.Contains(out, "\r") || strings.Count(out, "epoch ") != 2 || !strings.HasPrefix(out, "job j1: running\n") {
		t.Fatalf("plain output:\n%q", out)
	}
}

func TestFormatETA(t *testing.T) {
	for d, want := range map[time.Duration]string{35 * time.Second: "0:35", 61 * time.Minute: "1:01:00", 0: "0:00"} {
		if got := formatETA(d); got != want {
			t.Errorf("formatETA(%v) = %s, want %s", d, got, want)
		}
	}
}
