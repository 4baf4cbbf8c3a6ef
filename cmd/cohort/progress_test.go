package main

import (
	"bytes"
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/internal/tfevents"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker"
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
	// 200 steps in 10 s, 700 left: 35 s. At 80 columns (the default) the compact form
	// fits every field in 79 columns.
	want := "\r\033[K[###.........] 30% ep 3/10 step 300/1000 ETA 0:35 5.0k/s loss 0.4000 auc 0.8000"
	if !strings.HasSuffix(out, want) || len(want)-len("\r\033[K") > 79 {
		t.Fatalf("live line missing or wrong:\n%q\nwant suffix\n%q", out, want)
	}
	before := strings.Count(out, "\n")
	p.update(progressJob(cohortv1.JobState_JOB_STATE_SUCCEEDED, 10, 1000))
	out = buf.String()
	if !strings.Contains(out, "100% ep 10/10") || strings.Count(out, "\n") < before+2 {
		t.Fatalf("final bar and state line missing:\n%q", out)
	}
	if !strings.HasSuffix(out, "job j1: succeeded\n") {
		t.Fatalf("output does not end with the final state:\n%q", out)
	}
}

// TestProgressBarFitsTheTerminal draws the same job at several widths: every live
// line fits in width-1 columns, the wide form has the long names, and fields are
// dropped from the end (metrics first), never cut.
func TestProgressBarFitsTheTerminal(t *testing.T) {
	j := progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 3, 300)
	j.Metrics["val_accuracy"] = 0.75
	j.Metrics["val_loss"] = 0.51
	for _, width := range []int{20, 40, 60, 80, 120, 200} {
		p := &progressPrinter{now: time.Now, width: func() int { return width }, lastEpoch: -1, lastStep: -1, firstStep: -1}
		line := p.bar(j, p.columns())
		if len(line) > width-1 {
			t.Errorf("width %d: %d columns: %q", width, len(line), line)
		}
		if !strings.HasPrefix(line, "[") || !strings.Contains(line, "30%") {
			t.Errorf("width %d: no bar or percent: %q", width, line)
		}
		if width >= 60 && !strings.Contains(line, "step 300/1000") {
			t.Errorf("width %d: no step: %q", width, line)
		}
		if width == 200 && !strings.Contains(line, "epoch 3/10") || width == 200 && !strings.Contains(line, "val_loss 0.5100") {
			t.Errorf("width 200: not the full form: %q", line)
		}
	}
	if got := (&progressPrinter{}).columns(); got != 80 {
		t.Errorf("unknown width: %d columns, want 80", got)
	}
}

// TestProgressETAFromTheFirstReport: the first progress report already gives an ETA,
// from the steps done since the job started, and a report older than the one shown
// does not move the bar back.
func TestProgressETAFromTheFirstReport(t *testing.T) {
	var buf bytes.Buffer
	p := &progressPrinter{w: &buf, tty: true, now: time.Now, lastEpoch: -1, lastStep: -1, firstStep: -1}
	j := progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 0, 50)
	j.StartTimeUnixNano = time.Unix(100, 0).UnixNano()
	j.Progress.TimeUnixNano = time.Unix(105, 0).UnixNano() // 50 steps in 5 s, 950 left
	p.update(j)
	if !strings.Contains(buf.String(), "ETA 1:35") {
		t.Fatalf("no ETA from the first report: %q", buf.String())
	}
	old := progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 0, 40)
	buf.Reset()
	p.update(old)
	if buf.Len() != 0 {
		t.Fatalf("an older report redrew the bar: %q", buf.String())
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
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 1, 150)) // within the epoch: a line
	p.update(progressJob(cohortv1.JobState_JOB_STATE_RUNNING, 2, 200))
	out := buf.String()
	if strings.Contains(out, "\r") || strings.Count(out, "epoch ") != 3 || !strings.HasPrefix(out, "job j1: running\n") ||
		!strings.Contains(out, "step 150/1000") {
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

// TestChiefReportsProgressWithinEpochs runs the example job on a dev cluster whose
// chief reports every 4 steps: several in-epoch reports arrive before the first epoch
// ends, their steps rise, each carries the loss of its interval, and every checkpoint
// report carries progress at the checkpoint's step (progress is never behind it).
func TestChiefReportsProgressWithinEpochs(t *testing.T) {
	var mu sync.Mutex
	var reports []*cohortv1.TaskReport
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t),
		Observer: func(r *cohortv1.TaskReport) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, proto.Clone(r).(*cohortv1.TaskReport))
		},
		Mutate: func(cfg *node.Config) {
			for i := range cfg.Workers {
				cfg.Workers[i].ProgressInterval, cfg.Workers[i].ProgressEverySteps = -1, 4
			}
		}})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cohortv1.NewJobServiceClient(conn)
	spec := exampleSpec(t, "epochs: 30", "epochs: 2", "everySteps: 200", "everySteps: 30")
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	final, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil || final.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v, %v", final, err)
	}
	mu.Lock()
	defer mu.Unlock()
	var interimBeforeEpoch, checkpoints int
	lastStep := int64(-1)
	epochEnded := false
	for _, r := range reports {
		p := r.GetProgress()
		switch {
		case r.GetInterim():
			if p.GetStep() <= lastStep || p.GetIntervalRows() <= 0 || !(p.GetIntervalLoss() > 0) {
				t.Fatalf("interim report after step %d: %v", lastStep, p)
			}
			if p.GetEpochTotalRows() <= 0 || p.GetEpochRows() <= 0 || p.GetEpochRows() > p.GetEpochTotalRows() || p.GetTotalSteps() <= p.GetStep() {
				t.Fatalf("interim report without sane epoch position: %v", p)
			}
			lastStep = p.GetStep()
			if !epochEnded {
				interimBeforeEpoch++
			}
		case r.GetCheckpoint() != "":
			checkpoints++
			if p == nil || !strings.HasSuffix(r.GetCheckpoint(), storage.ManifestKey(r.GetJobId(), p.GetStep())) {
				t.Fatalf("checkpoint report %s carries progress %v", r.GetCheckpoint(), p)
			}
		case p != nil && p.GetEpoch() >= 1:
			epochEnded = true
		}
	}
	t.Logf("%d reports: %d in-epoch before the first epoch ended (last interim step %d), %d checkpoints", len(reports), interimBeforeEpoch, lastStep, checkpoints)
	if interimBeforeEpoch < 3 || checkpoints == 0 {
		t.Fatalf("%d in-epoch reports before the first epoch ended, %d checkpoint reports; want >= 3 and > 0", interimBeforeEpoch, checkpoints)
	}

	// TensorBoard gets the same points: the "train" run holds interval_loss at the
	// global step of every report that has one.
	wantLoss := map[int64]float64{}
	for _, r := range reports {
		// In-epoch, epoch-end and checkpoint reports carry the loss of their interval;
		// the epoch end's checkpoint repeats the interval the epoch end closed.
		if p := r.GetProgress(); p.GetIntervalRows() > 0 {
			if prev, dup := wantLoss[p.GetStep()]; dup && prev != p.GetIntervalLoss() {
				t.Fatalf("two reports with different interval losses at step %d: %v and %v", p.GetStep(), prev, p.GetIntervalLoss())
			}
			wantLoss[p.GetStep()] = p.GetIntervalLoss()
		}
	}
	prefix := worker.TensorBoardPrefix(final.GetId()) + worker.TensorBoardTrainRun
	objs, err := c.Store.List(ctx, prefix)
	if err != nil || len(objs) != 1 {
		t.Fatalf("event files under %s: %v, %v", prefix, objs, err)
	}
	rc, err := c.Store.Get(ctx, objs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	events, err := tfevents.ReadEvents(rc)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]float64{}
	for _, ev := range events {
		if v, ok := ev.Scalars["interval_loss"]; ok {
			got[ev.Step] = v
		}
	}
	if len(got) != len(wantLoss) {
		t.Fatalf("TensorBoard has %d interval losses, the reports %d", len(got), len(wantLoss))
	}
	for step, want := range wantLoss {
		if math.Abs(got[step]-want) > 1e-6*math.Max(1, want) {
			t.Fatalf("TensorBoard interval_loss at step %d = %v, reported %v", step, got[step], want)
		}
	}
}
