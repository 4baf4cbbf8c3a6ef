package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohort-dev/cohort/internal/hrdata"
	"github.com/cohort-dev/cohort/internal/testenv"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestWebJobPageShowsProgressWithinEpochs trains a job whose first epoch takes seconds
// (200,000 generated employees, batch 8: 10,000 steps) on a dev cluster whose chief reports every
// 250 ms, and opens its page in headless Chromium: the loss chart draws at least three
// points (each report's interval loss) while the page still shows epoch 0, before any
// validation point; the task table shows each running task's CPU and memory; and the
// cluster page shows the nodes' use and fresh heartbeats. With COHORT_WEB_SCREENSHOTS
// set it saves the running job's page and the node table there.
func TestWebJobPageShowsProgressWithinEpochs(t *testing.T) {
	testenv.RequireBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	// 200,000 rows: an epoch lasts about 6 s on an idle machine (60,000 rows, 1.5 s
	// when this test was written, became about 2 s once training got faster, too short
	// for the page to draw three points before the epoch ended) and far longer under
	// the race detector; the chief reports every 100 steps (at most every 100 ms) or
	// 250 ms.
	csv := filepath.Join(t.TempDir(), "attrition-200k.csv")
	f, err := os.Create(csv)
	if err != nil {
		t.Fatal(err)
	}
	if err := hrdata.GenerateAttrition(f, hrdata.AttritionConfig{Rows: 200_000, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t),
		Mutate: func(cfg *node.Config) {
			cfg.HeartbeatInterval = 250 * time.Millisecond
			for i := range cfg.Workers {
				cfg.Workers[i].ProgressInterval = 250 * time.Millisecond
				cfg.Workers[i].ProgressEverySteps = 100
			}
		}})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	spec := exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+csv,
		"epochs: 30", "epochs: 2", "batchSize: 32", "batchSize: 8")
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := resp.GetJob().GetId()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_, _ = client.CancelJob(cctx, &cohortv1.CancelJobRequest{Id: id, Reason: "test over"})
	})

	bctx := testenv.Browser(t)
	tab, tabCancel := chromedp.NewContext(bctx)
	t.Cleanup(tabCancel)
	base := "http://" + c.HTTPAddr
	octx, ocancel := context.WithTimeout(tab, time.Minute)
	defer ocancel()
	if err := chromedp.Do(octx, chromedp.EmulateViewport(1140, 900), chromedp.Navigate(base+"/jobs/"+id),
		chromedp.WaitVisible(chromedp.CSS("#loss-chart"))); err != nil {
		t.Fatalf("open the job page: %v", err)
	}
	poll := func(what, script string, timeout time.Duration) {
		t.Helper()
		// The page polls with its own timeout; the Go side bounds the call as well, so
		// that a renderer that stops answering fails the test instead of hanging it.
		pctx, pcancel := context.WithTimeout(tab, timeout+15*time.Second)
		defer pcancel()
		if _, err := chromedp.Run(pctx, chromedp.Poll[bool](script,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
			j, _ := client.GetJob(context.Background(), &cohortv1.GetJobRequest{Id: id})
			dctx, dcancel := context.WithTimeout(tab, 5*time.Second)
			state, derr := chromedp.Run(dctx, chromedp.Evaluate[string](`JSON.stringify({points: document.querySelector("#loss-chart").dataset.points,
			  progress: document.querySelector("#job-progress").textContent, metric: document.querySelector("#metric-chart").dataset.points})`))
			dcancel()
			t.Logf("page state: %s (%v)", state, derr)
			if errors.Is(err, chromedp.ErrPollingTimeout) {
				t.Fatalf("waiting for %s: timed out; job %s, progress %v", what, j.GetJob().GetState(), j.GetJob().GetProgress())
			}
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	// Checked in one evaluation: the page's latest progress is still in the first epoch
	// (so every point drawn came from it) and the loss chart has three interval points.
	// The page answers "late" (truthy: the poll ends) once the first epoch ended first.
	pctx, pcancel := context.WithTimeout(tab, 3*time.Minute)
	got, err := chromedp.Run(pctx, chromedp.Poll[string](`(() => {
	  const chart = document.querySelector("#loss-chart");
	  const progress = document.querySelector("#job-progress").textContent;
	  const metrics = Number(document.querySelector("#metric-chart").dataset.points);
	  if (/^epoch [1-9]/.test(progress)) return "late: " + chart.dataset.points + " points, " + progress;
	  return progress.startsWith("epoch 0/") && Number(chart.dataset.points) >= 3 && chart.dataset.interval === "true" && metrics === 0 ? "ok" : "";
	})()`, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(150*time.Second)))
	pcancel()
	if err != nil || got != "ok" {
		j, _ := client.GetJob(context.Background(), &cohortv1.GetJobRequest{Id: id})
		t.Fatalf("three loss points within the first epoch: %q, %v; job progress %v", got, err, j.GetJob().GetProgress())
	}

	// Per-task CPU and memory, from the nodes' heartbeats.
	poll("task usage", `(() => {
	  const rows = [...document.querySelectorAll("#task-table tbody tr")];
	  const used = rows.filter((r) => r.dataset.usage === "true" && /cores/.test(r.textContent) && /[KMG]iB/.test(r.textContent));
	  return used.some((r) => r.dataset.task === "worker 0") && used.some((r) => r.dataset.task === "ps 0");
	})()`, 30*time.Second)

	// After the first epoch: a validation point per epoch, the loss points keep coming.
	poll("the first epoch's validation point", `Number(document.querySelector("#metric-chart").dataset.points) >= 1 &&
	  Number(document.querySelector("#loss-chart").dataset.points) >= 6`, 120*time.Second)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#loss-smooth"))); err != nil {
		t.Fatal(err)
	}
	poll("the smoothed loss", `document.querySelector('#loss-chart polyline[data-series="loss (smoothed)"]') !== null`, 10*time.Second)
	e2eScreenshot(t, tab, "job-page-running", "#resources")

	// The cluster page: every node with its use and a heartbeat seconds old.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1140, 900), chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	poll("node usage", `(() => {
	  const rows = [...document.querySelectorAll("#nodes tbody tr")];
	  return rows.length === 4 && rows.every((r) => /cores/.test(r.querySelector(".node-cpu").textContent) &&
	    /[KMG]iB/.test(r.querySelector(".node-mem").textContent) && /^\d+s ago$/.test(r.querySelector(".node-beat").textContent));
	})()`, 30*time.Second)
	e2eScreenshot(t, tab, "cluster-nodes", "#nodes")
}

// e2eScreenshot writes the page from its top to the bottom of the element bottom as
// $COHORT_WEB_SCREENSHOTS/name.png when that variable names a directory (the
// screenshots of docs/screenshots).
func e2eScreenshot(t *testing.T, tab context.Context, name, bottom string) {
	t.Helper()
	dir := os.Getenv("COHORT_WEB_SCREENSHOTS")
	if dir == "" {
		return
	}
	h, err := chromedp.Run(tab, chromedp.Evaluate[float64](`(() => { window.scrollTo(0, 0); const r = document.querySelector("`+bottom+`").getBoundingClientRect();`+
		` return Math.ceil(r.bottom + window.scrollY + 12); })()`))
	if err != nil {
		t.Fatalf("screenshot height: %v", err)
	}
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
