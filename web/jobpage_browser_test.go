package web

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/internal/testenv"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// logRecord is one task log line as the tasks write them: a JSON slog record.
func logRecord(task string, at time.Time, level, msg string, attrs ...any) LogLine {
	var b strings.Builder
	fmt.Fprintf(&b, `{"time":%q,"level":%q,"msg":%q`, at.UTC().Format(time.RFC3339Nano), level, msg)
	for i := 0; i+1 < len(attrs); i += 2 {
		switch v := attrs[i+1].(type) {
		case string:
			fmt.Fprintf(&b, `,%q:%q`, attrs[i], v)
		default:
			fmt.Fprintf(&b, `,%q:%v`, attrs[i], v)
		}
	}
	b.WriteString("}")
	return LogLine{Task: task, Generation: 1, Text: b.String()}
}

// succeededFixture is a finished attrition job: ten epochs, five scored checkpoints
// (the best at step 600, the latest at 1000), the logs of its four tasks.
func succeededFixture(d *detailSource, id string) {
	j := specJob(id, cohortv1.JobState_JOB_STATE_SUCCEEDED)
	start := time.Unix(0, j.StartTimeUnixNano).UTC()
	j.EndTimeUnixNano = start.Add(47 * time.Second).UnixNano()
	j.Progress = &cohortv1.JobProgress{Epoch: 10, TotalEpochs: 10, Step: 1000, TotalSteps: 1000, Loss: attritionEpoch(10).Scalars["loss"], SamplesPerSecond: 5500}
	last := attritionEpoch(10).Scalars
	j.Metrics = map[string]float64{"val_auc": 0.8219, "val_accuracy": last["val_accuracy"], "val_loss": last["val_loss"]}
	j.Checkpoint = "file:///var/lib/cohort/jobs/" + id + "/checkpoints/000000001000/manifest.json"
	j.Exports = []string{"file:///var/lib/cohort/jobs/" + id + "/export/onnx/", "file:///var/lib/cohort/jobs/" + id + "/export/model.safetensors"}
	j.Report = "file:///var/lib/cohort/jobs/" + id + "/audit/report.json"
	d.put(j)
	for e := 1; e <= 10; e++ {
		r := attritionEpoch(e)
		r.Scalars["val_auc"] = 0.84 - 0.2*math.Exp(-float64(e)/2.5) - 0.006*max(0, float64(e)-6)
		d.putEpochs(id, r)
	}
	var cks []CheckpointRecord
	for e := 2; e <= 10; e += 2 {
		m := attritionEpoch(e).Scalars
		auc := 0.84 - 0.2*math.Exp(-float64(e)/2.5) - 0.006*max(0, float64(e)-6)
		cks = append(cks, CheckpointRecord{
			URI:  fmt.Sprintf("file:///var/lib/cohort/jobs/%s/checkpoints/%012d/manifest.json", id, 100*e),
			Step: int64(100 * e), Epoch: int32(e), Generation: 1, Created: start.Add(time.Duration(4*e+1) * time.Second),
			SizeBytes: 54_312, Objects: 2, Score: &auc, ScoreMetric: "val_auc", ScoreMode: "max",
			Metrics: map[string]float64{"val_auc": auc, "val_accuracy": m["val_accuracy"], "val_loss": m["val_loss"]},
			Latest:  e == 10,
		})
	}
	d.putCheckpoints(id, cks...)
	for _, task := range []string{"ps-0", "ps-1", "worker-0", "worker-1"} {
		d.putLogs(id, logRecord(task, start.Add(100*time.Millisecond), "INFO", "task started", "job", id, "generation", 1))
	}
	for e := 1; e <= 10; e++ {
		r := attritionEpoch(e).Scalars
		d.putLogs(id, logRecord("worker-0", start.Add(time.Duration(4*e)*time.Second), "INFO", "epoch done",
			"epoch", e, "loss", fmt.Sprintf("%.4f", r["loss"]), "val_loss", fmt.Sprintf("%.4f", r["val_loss"])))
	}
	d.putLogs(id, logRecord("worker-1", start.Add(20*time.Second), "WARN", "slow pull", "shard", 1, "ms", 412),
		logRecord("worker-0", start.Add(46*time.Second), "INFO", "exported", "formats", "onnx,safetensors"),
		logRecord("worker-0", start.Add(47*time.Second), "INFO", "task finished", "state", "succeeded"))
}

// failedFixture is an attrition job that failed at its first step: a wrong label.
func failedFixture(d *detailSource, id string) {
	j := specJob(id, cohortv1.JobState_JOB_STATE_FAILED)
	start := time.Unix(0, j.StartTimeUnixNano).UTC()
	j.EndTimeUnixNano = start.Add(2 * time.Second).UnixNano()
	j.StatusMessage = `worker-0: data: label column "attrition" not found in file:///data/attrition.csv (did you mean "Attrition"?)`
	d.put(j)
	d.putLogs(id, logRecord("ps-0", start.Add(100*time.Millisecond), "INFO", "task started", "job", id),
		logRecord("worker-0", start.Add(200*time.Millisecond), "INFO", "task started", "job", id),
		logRecord("worker-0", start.Add(1500*time.Millisecond), "ERROR", "training failed", "err", `data: label column "attrition" not found in file:///data/attrition.csv (did you mean "Attrition"?)`))
}

// jobPageFacts is what the job page shows, read from its DOM.
type jobPageFacts struct {
	Text         string            `json:"text"`
	Failure      bool              `json:"failure"`
	FailureWhen  string            `json:"failureWhen"`
	FailureMsg   string            `json:"failureMsg"`
	LossRow      bool              `json:"lossRow"`
	SpsRow       bool              `json:"spsRow"`
	NoProgress   string            `json:"noProgress"`
	Duration     string            `json:"duration"`
	Started      string            `json:"started"`
	Ended        string            `json:"ended"`
	SpecGroups   []string          `json:"specGroups"`
	SpecNames    []string          `json:"specNames"`
	Hyper        map[string]string `json:"hyper"`
	YAML         string            `json:"yaml"`
	EpochRows    int               `json:"epochRows"`
	EpochHead    []string          `json:"epochHead"`
	EpochEmpty   string            `json:"epochEmpty"`
	BestCells    []string          `json:"bestCells"`
	Checkpoints  []string          `json:"checkpoints"`
	CkptHead     []string          `json:"ckptHead"`
	CkptEmpty    string            `json:"ckptEmpty"`
	LossPoints   int               `json:"lossPoints"`
	MetricPoints int               `json:"metricPoints"`
	LossEmpty    string            `json:"lossEmpty"`
	MetricEmpty  string            `json:"metricEmpty"`
	LossX        string            `json:"lossX"`
	LossY        string            `json:"lossY"`
	LossDots     []float64         `json:"lossDots"`
	LogLines     int               `json:"logLines"`
	LogTasks     []string          `json:"logTasks"`
	LogState     string            `json:"logState"`
	LogStatus    string            `json:"logStatus"`
	Report       string            `json:"report"`
}

const jobPageFactsScript = `(() => {
  const q = (s) => document.querySelector(s), qa = (s, r) => [...(r || document).querySelectorAll(s)];
  const text = (e) => e ? e.textContent : "";
  const vis = (e) => !!e && e.offsetParent !== null;
  return {
    text: document.body.innerText,
    failure: vis(q("#job-failure")), failureWhen: text(q("#job-failure-when")), failureMsg: text(q("#job-failure-message")),
    lossRow: vis(q("#row-loss")), spsRow: vis(q("#row-sps")), noProgress: vis(q("#row-noprogress")) ? text(q("#job-noprogress")) : "",
    duration: text(q("#job-duration")), started: text(q("#job-started")), ended: text(q("#job-ended")),
    specGroups: qa("table.spec-group").map((t) => t.dataset.group),
    specNames: qa("table.spec-group tbody tr").map((tr) => tr.dataset.name),
    hyper: Object.fromEntries(qa('table.spec-group[data-group="Hyperparameters"] tbody tr').map((tr) => [tr.dataset.name, text(tr.querySelector("td"))])),
    yaml: text(q("#spec-yaml")),
    epochRows: Number(q("#epoch-table").dataset.rows), epochHead: qa("#epoch-table thead th").map(text),
    epochEmpty: text(q("#epoch-table td.empty")),
    bestCells: qa("#epoch-table td.best").map((td) => td.parentElement.dataset.epoch + ":" + (td.dataset.metric || "loss")),
    checkpoints: qa("#checkpoint-table tbody tr[data-step]").map((tr) => tr.dataset.step + ":" + qa(".mark", tr).map(text).join(",")),
    ckptHead: qa("#checkpoint-table thead th").map(text), ckptEmpty: text(q("#checkpoint-table td.empty")),
    lossPoints: Number(q("#loss-chart").dataset.points), metricPoints: Number(q("#metric-chart").dataset.points),
    lossEmpty: text(q("#loss-chart text.empty")), metricEmpty: text(q("#metric-chart text.empty")),
    lossX: q("#loss-chart").dataset.xDomain || "", lossY: q("#loss-chart").dataset.yDomain || "",
    lossDots: qa("#loss-chart circle").map((c) => Number(c.getAttribute("cx"))),
    logLines: Number(q("#log-view").dataset.lines),
    logTasks: [...new Set(qa("#log-view .logline").filter((l) => !l.hidden).map((l) => l.dataset.task))].sort(),
    logState: q("#logs").dataset.state, logStatus: text(q("#log-status")),
    report: q("#report").dataset.state,
  };
})()`

// openJob opens a job page at 1140x900 and waits until its tables are loaded, its log
// view has connected and (for an ended job) its report has settled.
func openJob(t *testing.T, bctx context.Context, base, id string) context.Context {
	t.Helper()
	tab := newTab(t, bctx)
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1140, 900), chromedp.Navigate(base+"/jobs/"+id)); err != nil {
		t.Fatalf("open job %s: %v", id, err)
	}
	waitFor(t, tab, "the page to load", `(() => {
	  const loading = [...document.querySelectorAll("#epoch-table td, #checkpoint-table td")].some((td) => td.textContent === "Loading…");
	  const logs = document.getElementById("logs").dataset.state;
	  const report = document.getElementById("report").dataset.state;
	  return !loading && (logs === "live" || logs === "ended" || logs === "unavailable") && report !== "loading";
	})()`)
	return tab
}

// waitFor polls a script until it returns true.
func waitFor(t *testing.T, tab context.Context, what, script string) {
	t.Helper()
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](script,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			t.Fatalf("waiting for %s: timed out", what)
		}
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// docScreenshot writes the page from its top to the bottom of the element bottom as
// $COHORT_WEB_SCREENSHOTS/name.png, when that variable names a directory: small
// images for the docs (docs/screenshots).
func docScreenshot(t *testing.T, tab context.Context, name, bottom string) {
	t.Helper()
	dir := os.Getenv("COHORT_WEB_SCREENSHOTS")
	if dir == "" {
		return
	}
	h, err := chromedp.Run(tab, chromedp.Evaluate[float64](`(() => { const r = document.querySelector("`+bottom+`").getBoundingClientRect();`+
		` return Math.ceil(r.bottom + window.scrollY + 12); })()`))
	if err != nil {
		t.Fatalf("screenshot height: %v", err)
	}
	// The viewport ends at the element, so that a capture of it is the top of the page.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1140, int64(h))); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestJobPageInBrowser opens the page of a succeeded, a failed and a running job in
// headless Chromium and checks what it shows: the spec with the hyperparameters
// first, the per-epoch table, the checkpoints with LATEST and BEST, the task logs with
// their filter, the times, padded chart axes and, for a failed job, its failure and no
// zero metrics.
func TestJobPageInBrowser(t *testing.T) {
	bctx := testenv.Browser(t)
	binary, err := os.ReadFile("testdata/report_binary.json")
	if err != nil {
		t.Fatal(err)
	}
	d := newDetailSource()
	succeededFixture(d, "attrition-mlp-5f2c9a1e")
	d.putReport("attrition-mlp-5f2c9a1e", binary)
	failedFixture(d, "attrition-mlp-0b7d3e42")
	srv := newServer(t, d)
	facts := func(tab context.Context) jobPageFacts {
		t.Helper()
		return evalJSON[jobPageFacts](t, tab, jobPageFactsScript)
	}

	t.Run("succeeded", func(t *testing.T) {
		tab := openJob(t, bctx, srv.URL, "attrition-mlp-5f2c9a1e")
		docScreenshot(t, tab, "job-page-succeeded", "#checkpoints")
		got := facts(tab)
		if got.Failure || got.Report != "rendered" {
			t.Errorf("failure banner %v, report %q; want none, rendered", got.Failure, got.Report)
		}
		if got.Duration != "47s" || got.Started != "2026-03-02 09:00:05 UTC (after 3s queued)" || got.Ended != "2026-03-02 09:00:52 UTC" {
			t.Errorf("times: started %q, ended %q, duration %q", got.Started, got.Ended, got.Duration)
		}
		if !got.LossRow || !got.SpsRow || got.NoProgress != "" {
			t.Errorf("loss row %v, samples/s row %v, no-progress %q", got.LossRow, got.SpsRow, got.NoProgress)
		}
		if len(got.SpecGroups) == 0 || got.SpecGroups[0] != "Hyperparameters" {
			t.Errorf("spec groups %q, want the hyperparameters first", got.SpecGroups)
		}
		wantFirst := []string{"Task", "Model", "Optimizer", "Learning rate", "Batch size", "Epochs", "Consistency"}
		if len(got.SpecNames) < len(wantFirst) || !slices.Equal(got.SpecNames[:len(wantFirst)], wantFirst) || !slices.Contains(got.SpecNames, "Workers") {
			t.Errorf("spec rows %q, want %q first and the resources", got.SpecNames, wantFirst)
		}
		if got.Hyper["Learning rate"] != "0.001" || got.Hyper["Batch size"] != "32 per worker" || got.Hyper["Model"] != "MLP, hidden 64-32, relu, dropout 0.1" {
			t.Errorf("hyperparameters %v", got.Hyper)
		}
		if !strings.Contains(got.YAML, "learningRate: 0.001") {
			t.Errorf("the submitted YAML is missing: %q", got.YAML)
		}
		wantHead := []string{"Epoch", "Step", "Finished", "Train loss", "val_loss", "val_accuracy", "val_auc", "Samples/s", "Learning rate"}
		if got.EpochRows != 10 || !slices.Equal(got.EpochHead, wantHead) {
			t.Errorf("epoch table: %d rows, columns %q; want 10, %q", got.EpochRows, got.EpochHead, wantHead)
		}
		if !slices.Contains(got.BestCells, "6:val_auc") || !slices.Contains(got.BestCells, "10:loss") {
			t.Errorf("best cells %q, want val_auc at epoch 6 and the loss at 10", got.BestCells)
		}
		if want := []string{"200:", "400:", "600:BEST", "800:", "1000:LATEST"}; !slices.Equal(got.Checkpoints, want) {
			t.Errorf("checkpoints %q, want %q", got.Checkpoints, want)
		}
		if !slices.Contains(got.CkptHead, "Scoreval_auc, max") || !slices.Contains(got.CkptHead, "Size") || !slices.Contains(got.CkptHead, "Created") {
			t.Errorf("checkpoint columns %q", got.CkptHead)
		}
		if got.LossPoints != 10 || got.MetricPoints != 10 {
			t.Errorf("charts: %d loss points, %d metric points; want 10 each", got.LossPoints, got.MetricPoints)
		}
		if got.LogState != "ended" || got.LogLines != 17 || !slices.Equal(got.LogTasks, []string{"ps-0", "ps-1", "worker-0", "worker-1"}) {
			t.Errorf("logs: %s (%q), %d lines of %q", got.LogState, got.LogStatus, got.LogLines, got.LogTasks)
		}

		// The task filter asks for one task's lines; the text filter hides lines.
		evalJSON[bool](t, tab, `(() => { const s = document.getElementById("log-task"); s.value = "worker-1";`+
			` return s.dispatchEvent(new Event("change")); })()`)
		waitFor(t, tab, "worker-1's lines", `document.getElementById("logs").dataset.state === "ended" && document.getElementById("log-view").dataset.lines === "2"`)
		if got := facts(tab); !slices.Equal(got.LogTasks, []string{"worker-1"}) {
			t.Errorf("log tasks with the worker-1 filter %q", got.LogTasks)
		}
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.CSS("#log-filter"), "slow pull")); err != nil {
			t.Fatal(err)
		}
		visible := evalJSON[int](t, tab, `[...document.querySelectorAll("#log-view .logline")].filter((l) => !l.hidden).length`)
		if visible != 1 {
			t.Errorf("%d lines match 'slow pull', want 1", visible)
		}
	})

	t.Run("failed", func(t *testing.T) {
		tab := openJob(t, bctx, srv.URL, "attrition-mlp-0b7d3e42")
		docScreenshot(t, tab, "job-page-failed", "#logs")
		got := facts(tab)
		if !got.Failure || !strings.Contains(got.FailureMsg, `label column "attrition" not found`) || got.FailureWhen != "before its first progress report, after 2s" {
			t.Errorf("failure banner %v: %q %q", got.Failure, got.FailureWhen, got.FailureMsg)
		}
		for _, bad := range []string{"0.0000", "Samples/s", "waiting for the first epoch", "epoch 0/"} {
			if strings.Contains(got.Text, bad) {
				t.Errorf("the failed job's page shows %q", bad)
			}
		}
		if got.LossRow || got.SpsRow || got.NoProgress != "none: the job failed before its first progress report" {
			t.Errorf("loss row %v, samples/s row %v, progress %q", got.LossRow, got.SpsRow, got.NoProgress)
		}
		if got.Duration != "2s" || got.Ended != "2026-03-02 09:00:07 UTC" {
			t.Errorf("duration %q, ended %q", got.Duration, got.Ended)
		}
		if got.Hyper["Learning rate"] != "0.001" {
			t.Errorf("a failed job's spec: %v", got.Hyper)
		}
		if got.EpochRows != 0 || got.EpochEmpty != "No epoch finished before the job failed." ||
			got.CkptEmpty != "No checkpoint was committed before the job failed." {
			t.Errorf("tables: %d epochs %q, checkpoints %q", got.EpochRows, got.EpochEmpty, got.CkptEmpty)
		}
		if got.LossPoints != 0 || got.LossEmpty != "No progress was reported before the job failed." || got.MetricEmpty != "No epoch finished before the job failed." {
			t.Errorf("charts: %d points, %q, %q", got.LossPoints, got.LossEmpty, got.MetricEmpty)
		}
		if got.LogState != "ended" || got.LogLines != 3 || !strings.Contains(got.Text, "training failed") {
			t.Errorf("logs %s: %d lines", got.LogState, got.LogLines)
		}
		if got.Report != "none" {
			t.Errorf("report state %q, want none", got.Report)
		}
	})

	t.Run("running", func(t *testing.T) {
		id := "attrition-mlp-9c41d2aa"
		j := specJob(id, cohortv1.JobState_JOB_STATE_RUNNING)
		j.SubmitTimeUnixNano, j.StartTimeUnixNano = time.Now().Add(-8*time.Second).UnixNano(), time.Now().Add(-5*time.Second).UnixNano()
		first := attritionEpoch(1)
		j.Progress = &cohortv1.JobProgress{Epoch: 1, TotalEpochs: 10, Step: 100, TotalSteps: 1000, Loss: first.Scalars["loss"], SamplesPerSecond: 5230}
		j.Metrics = map[string]float64{"val_loss": first.Scalars["val_loss"], "val_auc": first.Scalars["val_auc"]}
		d.put(j)
		d.putEpochs(id, first)
		d.putLogs(id, logRecord("worker-0", time.Now(), "INFO", "task started"))
		tab := openJob(t, bctx, srv.URL, id)
		got := facts(tab)
		if got.Failure || got.Report != "waiting" || got.Ended != "—" || got.Duration == "—" || got.Duration == "" {
			t.Errorf("running: failure %v, report %q, ended %q, duration %q", got.Failure, got.Report, got.Ended, got.Duration)
		}
		if got.EpochRows != 1 || got.LogState != "live" || got.LogLines != 1 {
			t.Errorf("running: %d epoch rows, logs %s with %d lines", got.EpochRows, got.LogState, got.LogLines)
		}
		// One point: a dot inside padded axes, not a line along an edge.
		var x0, x1, y0, y1 float64
		if _, err := fmt.Sscanf(got.LossX+" "+got.LossY, "%g,%g %g,%g", &x0, &x1, &y0, &y1); err != nil {
			t.Fatalf("loss chart domains %q %q: %v", got.LossX, got.LossY, err)
		}
		loss := first.Scalars["loss"]
		if got.LossPoints != 1 || !(x0 < 100 && 100 < x1) || !(y0 < loss && loss < y1) || y1-y0 > 1 {
			t.Errorf("single point at (100, %.3f): domains x [%g, %g], y [%g, %g], %d points", loss, x0, x1, y0, y1, got.LossPoints)
		}
		if len(got.LossDots) != 2 || got.LossDots[0] < 120 || got.LossDots[0] > 330 { // the plot spans x 52..408
			t.Errorf("loss dots at x %v, want the point and val_loss's inside the plot", got.LossDots)
		}

		// The next epoch and new log lines arrive while the page is open.
		second := attritionEpoch(2)
		d.putEpochs(id, second)
		next := proto.Clone(j).(*cohortv1.Job)
		next.Progress = &cohortv1.JobProgress{Epoch: 2, TotalEpochs: 10, Step: 200, TotalSteps: 1000, Loss: second.Scalars["loss"], SamplesPerSecond: 5260}
		next.ModifyIndex++
		d.put(next)
		d.putLogs(id, logRecord("worker-1", time.Now(), "INFO", "epoch done", "epoch", 2))
		waitFor(t, tab, "the second epoch", `document.getElementById("epoch-table").dataset.rows === "2" && document.getElementById("loss-chart").dataset.points === "2"`)
		waitFor(t, tab, "the new log line", `document.getElementById("log-view").dataset.lines === "2"`)

		// It fails: the page turns to the failure, keeping the epochs it had.
		failed := proto.Clone(next).(*cohortv1.Job)
		failed.State, failed.StatusMessage, failed.ModifyIndex = cohortv1.JobState_JOB_STATE_FAILED, "worker-1: node lost", next.ModifyIndex+1
		failed.EndTimeUnixNano = time.Now().UnixNano()
		d.put(failed)
		waitFor(t, tab, "the failure", `!document.getElementById("job-failure").hidden && document.getElementById("logs").dataset.state === "ended"`)
		got = facts(tab)
		if !strings.HasPrefix(got.FailureWhen, "at epoch 3 of 10 (step 200)") || got.FailureMsg != "worker-1: node lost" || got.EpochRows != 2 {
			t.Errorf("failed while open: %q %q, %d epochs", got.FailureWhen, got.FailureMsg, got.EpochRows)
		}
	})

	t.Run("jobs list keeps its filter", func(t *testing.T) {
		tab := newTab(t, bctx)
		if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/jobs?state=succeeded")); err != nil {
			t.Fatal(err)
		}
		// The list refreshes every 2 s through /api/jobs with the same query: wait for one.
		waitFor(t, tab, "a refresh of the list", `Number(document.body.dataset.refreshes || 0) >= 1`)
		rows := evalJSON[[]string](t, tab, `[...document.querySelectorAll("#jobs tbody tr")].map((tr) => tr.dataset.state + " " + tr.children[5].textContent)`)
		if !slices.Equal(rows, []string{"succeeded 47s"}) {
			t.Errorf("rows %q, want the succeeded job with its duration", rows)
		}
	})
}
