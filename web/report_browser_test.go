package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// hostileCategory is a sensitive-group category as user data may spell it.
const hostileCategory = "<img src=x onerror=alert(1)>"

// pageProblems collects what a tab reports that a correct page never causes:
// uncaught exceptions, console and browser-log errors (CSP violations among them),
// and JavaScript dialogs (an injected alert). Failed loads are no problem: the
// favicon and a job without a report answer 404.
type pageProblems struct {
	mu   sync.Mutex
	list []string
}

func (p *pageProblems) listen(ev any) {
	var s string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		s = "exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			s += " " + e.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		s = "console.error:"
		for _, a := range e.Args {
			s += " " + string(a.Value) + a.Description
		}
	case *log.EventEntryAdded:
		if e.Entry.Level != log.EntryLevelError || e.Entry.Source == log.EntrySourceNetwork {
			return
		}
		s = "log error: " + e.Entry.Text
	case *page.EventJavascriptDialogOpening:
		s = "dialog: " + e.Message
	default:
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, s)
}

func (p *pageProblems) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.list {
		t.Errorf("the page reported %s", s)
	}
}

// newTab opens a browser tab whose page errors (console errors, uncaught exceptions)
// fail the test at its end.
func newTab(t *testing.T, bctx context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(bctx)
	t.Cleanup(cancel)
	problems := &pageProblems{}
	if err := chromedp.Listen(tab, problems.listen); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { problems.check(t) })
	return tab
}

// openJobPage opens /jobs/{id} in a new tab 1280 px wide and waits until the report
// section settles (rendered, none or error); it returns the tab and that state.
func openJobPage(t *testing.T, bctx context.Context, base, id string) (context.Context, string) {
	t.Helper()
	tab := newTab(t, bctx)
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+"/jobs/"+id)); err != nil {
		t.Fatalf("open job %s: %v", id, err)
	}
	return tab, waitReport(t, tab)
}

// waitReport polls the report section's data-state until it is final.
func waitReport(t *testing.T, tab context.Context) string {
	t.Helper()
	state, err := chromedp.Run(tab, chromedp.Poll[string](
		`(() => { const s = document.getElementById("report").dataset.state;`+
			` return s === "rendered" || s === "none" || s === "error" ? s : false; })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			t.Fatal("the report section never settled")
		}
		t.Fatalf("poll the report section: %v", err)
	}
	return state
}

// evalJSON runs a script that returns a value and decodes it into T.
func evalJSON[T any](t *testing.T, tab context.Context, script string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](script))
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return v
}

// screenshot writes the whole page to $COHORT_WEB_SCREENSHOTS/name.png when that
// variable names a directory, for people to look at the layout.
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	dir := os.Getenv("COHORT_WEB_SCREENSHOTS")
	if dir == "" {
		return
	}
	// The viewport grows to the page's height (as --window-size would), so that the
	// capture holds the whole laid-out page.
	height, err := chromedp.Run(tab, chromedp.Evaluate[int64](`document.documentElement.scrollHeight`))
	if err != nil {
		t.Fatalf("page height: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1280, height)); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// cnnBlobs are the attribution peaks (x, y) of cnnReport's classes.
var cnnBlobs = [][2]int{{7, 7}, {20, 12}, {13, 22}}

// cnnReport is a CNN report with a 28x28 attribution map per class, each a blob
// around its class's point of cnnBlobs.
func cnnReport(t *testing.T) []byte {
	t.Helper()
	const h, w = 28, 28
	var classes []map[string]any
	for k, c := range cnnBlobs {
		m := make([]float64, h*w)
		for y := range h {
			for x := range w {
				d2 := float64((x-c[0])*(x-c[0]) + (y-c[1])*(y-c[1]))
				m[y*w+x] = 0.002 * math.Exp(-d2/8)
			}
		}
		classes = append(classes, map[string]any{"class": k, "label": fmt.Sprint("digit ", k), "images": 10 + k, "mean_abs": m})
	}
	data, err := json.Marshal(map[string]any{
		"format_version": 1, "job_id": "cnn-1", "name": "digits-cnn", "task": "multiclass_classification",
		"model": map[string]any{"kind": "cnn", "step": 900}, "split": "validation", "rows": 300,
		"classes": []string{"digit 0", "digit 1", "digit 2"},
		"metrics": map[string]any{
			"val_accuracy": map[string]any{"value": 0.91, "ci95": []float64{0.88, 0.94}},
			"val_loss":     map[string]any{"value": 0.29, "ci95": []float64{0.24, 0.35}},
		},
		"bootstrap": map[string]any{"resamples": 1000, "seed": 1},
		"confusion": map[string]any{"labels": []string{"digit 0", "digit 1", "digit 2"},
			"matrix": [][]int{{95, 3, 2}, {4, 90, 6}, {1, 11, 88}}},
		"attribution": map[string]any{"method": "integrated_gradients", "baseline": "all-zero image", "steps": 32,
			"channels": 1, "height": h, "width": w, "classes": classes},
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// lstmReport is a regression LSTM report: scoring rates only, importances by lag.
const lstmReport = `{"format_version": 1, "job_id": "lstm-1", "name": "tenure-lstm", "task": "regression",
 "model": {"kind": "lstm", "step": 400}, "split": "test", "rows": 500,
 "metrics": {"test_rmse": {"value": 1.92, "ci95": [1.81, 2.05]}, "test_mae": {"value": 1.41, "ci95": [1.33, 1.50]}},
 "audit": {"split": "test", "sensitive": ["Gender"], "min_group_fraction": 0.02,
  "groups": [
   {"attribute": "Gender", "category": "Female", "count": 210, "fraction": 0.42, "mean_label": 6.1, "mean_prediction": 5.8, "score_rate": 0.47, "score_impact_ratio": 0.887, "excluded": false},
   {"attribute": "Gender", "category": "Male", "count": 290, "fraction": 0.58, "mean_label": 6.4, "mean_prediction": 6.3, "score_rate": 0.53, "score_impact_ratio": 1, "excluded": false}],
  "gate": {"passed": true}},
 "importance_metric": "rmse",
 "importance": [{"feature": "Salary", "mean": 0.41, "std": 0.03}, {"feature": "Level", "mean": 0.22, "std": 0.02}, {"feature": "Team", "mean": 0.05, "std": 0.01}],
 "importance_by_lag": [{"feature": "lag 1", "mean": 0.35, "std": 0.02}, {"feature": "lag 2", "mean": 0.12, "std": 0.01},
  {"feature": "lag 3", "mean": 0.04, "std": 0.01}, {"feature": "lag 4", "mean": 0.01, "std": 0.005}],
 "explain": {"permutation": {"repeats": 5, "seed": 1}}}`

// binaryFacts is what the binary job's page shows, read from its DOM.
type binaryFacts struct {
	Verdict     string   `json:"verdict"`
	GateClass   string   `json:"gateClass"`
	Reasons     []string `json:"reasons"`
	Override    string   `json:"override"`
	Metrics     []string `json:"metrics"`
	Head        []string `json:"head"`
	Female      []string `json:"female"`
	FemaleLow   []string `json:"femaleLow"`
	Male        []string `json:"male"`
	MaleLow     []string `json:"maleLow"`
	Missing     []string `json:"missing"`
	Hostile     []string `json:"hostile"`
	HostileRow  string   `json:"hostileRow"`
	Images      int      `json:"images"`
	Bars        int      `json:"bars"`
	BarFeatures []string `json:"barFeatures"`
	ErrorBars   int      `json:"errorBars"`
	Points      []string `json:"points"`
	Caption     string   `json:"caption"`
	Confusion   []string `json:"confusion"`
	Notes       []string `json:"notes"`
}

const binaryFactsScript = `(() => {
  const q = (s) => document.querySelector(s), qa = (s, r) => [...(r || document).querySelectorAll(s)];
  const text = (e) => e ? e.textContent : "";
  const rows = qa("#report-fairness tbody tr");
  const row = (a, c) => rows.find((tr) => tr.dataset.attribute === a && tr.dataset.category === c);
  const cells = (tr) => tr ? qa("td", tr).map(text) : [];
  const low = (tr) => tr ? qa("td.low-ratio", tr).map((td) => td.dataset.key) : [];
  const hostile = row("MaritalStatus", "` + hostileCategory + `");
  return {
    verdict: text(q("#report-gate .gate-verdict")), gateClass: q("#report-gate").getAttribute("class"),
    reasons: qa("#report-gate .gate-reasons li").map(text), override: text(q("#report-gate .gate-override")),
    metrics: qa("#report-metrics tbody tr").map((tr) => qa("th, td", tr).map(text).join(" | ")),
    head: qa("#report-fairness thead th").map(text),
    female: cells(row("Gender", "Female")), femaleLow: low(row("Gender", "Female")),
    male: cells(row("Gender", "Male")), maleLow: low(row("Gender", "Male")),
    missing: cells(row("Gender", "")), hostile: cells(hostile),
    hostileRow: hostile ? hostile.getAttribute("class") : "",
    images: qa("#report img").length,
    bars: Number(q("#importance-chart").dataset.bars),
    barFeatures: qa("#importance-chart rect.imp-bar").map((r) => r.dataset.feature),
    errorBars: qa("#importance-chart line.imp-err").length,
    points: qa("#calibration-chart circle.cal-point").map((c) => c.dataset.count),
    caption: text(q("#calibration-caption")),
    confusion: qa("#report-confusion tbody td").map(text),
    notes: qa("#report-notes li").map(text),
  };
})()`

// TestJobPageRendersReport serves finished jobs with fixture reports to headless
// Chromium and checks what the job page's script draws from them.
func TestJobPageRendersReport(t *testing.T) {
	bctx := testenv.Browser(t)
	binary, err := os.ReadFile("testdata/report_binary.json")
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.put(finishedJob("bin-1", "attrition-mlp"))
	f.putReport("bin-1", binary)
	f.put(finishedJob("cnn-1", "digits-cnn"))
	f.putReport("cnn-1", cnnReport(t))
	f.put(finishedJob("lstm-1", "tenure-lstm"))
	f.putReport("lstm-1", []byte(lstmReport))
	f.put(finishedJob("none-1", "mlp"))
	srv := newServer(t, f)

	t.Run("binary with a failing gate", func(t *testing.T) {
		tab, state := openJobPage(t, bctx, srv.URL, "bin-1")
		if state != "rendered" {
			t.Fatalf("report state %q", state)
		}
		screenshot(t, tab, "report-binary")
		got := evalJSON[binaryFacts](t, tab, binaryFactsScript)

		if got.Verdict != "EXPORT BLOCKED" || !strings.Contains(got.GateClass, "gate-blocked") || !strings.Contains(got.GateClass, "gate-overridden") {
			t.Errorf("gate %q (class %q), want EXPORT BLOCKED, overridden", got.Verdict, got.GateClass)
		}
		wantReasons := []string{"impact ratio 0.71 for Gender=Female < 0.8", "impact ratio 0.35 for MaritalStatus=Divorced < 0.8",
			"scoring impact ratio 0.72 for Gender=Female < 0.8"}
		if !slices.Equal(got.Reasons, wantReasons) {
			t.Errorf("gate reasons %q, want %q", got.Reasons, wantReasons)
		}
		if want := "Overridden by alice on 2026-12-07 10:00 UTC: reviewed by HR legal: the Divorced group has no positives"; got.Override != want {
			t.Errorf("override %q, want %q", got.Override, want)
		}
		wantMetrics := []string{"val_accuracy | 0.8667 | [0.8383, 0.8933]", "val_auc | 0.8012 | [0.7521, 0.8493]", "val_loss | 0.3412 | [0.3011, 0.3897]"}
		if !slices.Equal(got.Metrics, wantMetrics) {
			t.Errorf("metrics %q, want %q", got.Metrics, wantMetrics)
		}
		wantHead := []string{"Attribute", "Category", "Count", "Fraction", "Base rate", "Selection rate", "Impact ratio",
			"TPR", "FPR", "Scoring rate", "Scoring impact ratio", "Excluded"}
		if !slices.Equal(got.Head, wantHead) {
			t.Fatalf("fairness columns %q, want %q", got.Head, wantHead)
		}
		wantFemale := []string{"Gender", "Female", "236", "39.3%", "0.153", "0.076", "0.712", "0.389", "0.020", "0.420", "0.724", "no"}
		if !slices.Equal(got.Female, wantFemale) {
			t.Errorf("Gender=Female row %q, want %q", got.Female, wantFemale)
		}
		if !slices.Equal(got.FemaleLow, []string{"impact_ratio", "score_impact_ratio"}) || len(got.MaleLow) != 0 {
			t.Errorf("highlighted ratios: Female %q, Male %q; want both of Female's, none of Male's", got.FemaleLow, got.MaleLow)
		}
		wantMissing := []string{"Gender", "(missing)", "3", "0.5%", "—", "—", "—", "—", "—", "—", "—", "yes: category unknown: counted apart, not in the ratios"}
		if !slices.Equal(got.Missing, wantMissing) {
			t.Errorf("missing-category row %q, want %q", got.Missing, wantMissing)
		}
		// The hostile category is text in its cell; no element came of it.
		if len(got.Hostile) < 2 || got.Hostile[1] != hostileCategory || got.Images != 0 {
			t.Errorf("hostile category row %q with %d <img> in the report, want the category as text and none", got.Hostile, got.Images)
		}
		if !strings.Contains(got.HostileRow, "excluded") || got.Hostile[len(got.Hostile)-1] != "yes: 1.3% of rows < minGroupFraction 2%" {
			t.Errorf("hostile category row %q (class %q), want excluded with its reason", got.Hostile, got.HostileRow)
		}
		// 25 importances: the top 20 are drawn, the largest first, each with its std.
		if got.Bars != 20 || len(got.BarFeatures) != 20 || got.BarFeatures[0] != "OverTime" || got.BarFeatures[19] != "Department=Research & Development" {
			t.Errorf("importance bars %d: %q, want the top 20 from OverTime", got.Bars, got.BarFeatures)
		}
		if got.ErrorBars != 3*20 {
			t.Errorf("%d error-bar lines, want 3 per bar", got.ErrorBars)
		}
		// Nine non-empty bins of ten.
		if want := []string{"310", "96", "58", "41", "30", "22", "18", "12", "13"}; !slices.Equal(got.Points, want) {
			t.Errorf("calibration points %q, want %q", got.Points, want)
		}
		if !strings.HasPrefix(got.Caption, "ECE 0.031 ") {
			t.Errorf("calibration caption %q", got.Caption)
		}
		if !slices.Equal(got.Confusion, []string{"480", "20", "60", "40"}) {
			t.Errorf("confusion cells %q", got.Confusion)
		}
		if len(got.Notes) != 2 || got.Notes[0] != "Age: binned at [30 40 50]" {
			t.Errorf("audit notes %q", got.Notes)
		}
	})

	t.Run("CNN attribution", func(t *testing.T) {
		tab, state := openJobPage(t, bctx, srv.URL, "cnn-1")
		if state != "rendered" {
			t.Fatalf("report state %q", state)
		}
		screenshot(t, tab, "report-cnn")
		type canvasFacts struct {
			Class   string `json:"class"`
			W       int    `json:"w"`
			H       int    `json:"h"`
			Dark    int    `json:"dark"`
			PeakX   int    `json:"peakX"`
			PeakY   int    `json:"peakY"`
			Caption string `json:"caption"`
		}
		got := evalJSON[struct {
			Canvases []canvasFacts `json:"canvases"`
			Fairness string        `json:"fairness"`
			Gate     int           `json:"gate"`
		}](t, tab, `(() => ({
		  canvases: [...document.querySelectorAll("#report-attribution figure.attr-class")].map((fig) => {
		    const c = fig.querySelector("canvas.attr-map");
		    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		    let dark = 0, peak = 0, least = 256;
		    for (let i = 0; i < d.length; i += 4) {
		      if (d[i + 1] < 128) dark++;
		      if (d[i + 1] < least) { least = d[i + 1]; peak = i / 4; }
		    }
		    return { class: c.dataset.class, w: c.width, h: c.height, dark, peakX: peak % c.width,
		      peakY: Math.floor(peak / c.width), caption: fig.querySelector("figcaption").textContent };
		  }),
		  fairness: document.querySelector("#report-fairness") ? "table" : "",
		  gate: document.querySelectorAll("#report-gate").length,
		}))()`)
		if len(got.Canvases) != len(cnnBlobs) {
			t.Fatalf("%d attribution maps, want %d", len(got.Canvases), len(cnnBlobs))
		}
		for k, c := range got.Canvases {
			if c.Class != fmt.Sprint(k) || c.W != 28 || c.H != 28 || c.Caption != fmt.Sprintf("digit %d · %d images", k, 10+k) {
				t.Errorf("map %d: %+v, want class %d, 28x28", k, c, k)
			}
			// A blob: some pixels dark, most not, the darkest at the class's peak.
			if c.Dark == 0 || c.Dark > 100 || c.PeakX != cnnBlobs[k][0] || c.PeakY != cnnBlobs[k][1] {
				t.Errorf("map %d: %d dark pixels, darkest at (%d, %d); want a blob at %v", k, c.Dark, c.PeakX, c.PeakY, cnnBlobs[k])
			}
		}
		if got.Fairness != "" || got.Gate != 0 {
			t.Errorf("a report without an audit shows a fairness table (%q) or a gate (%d)", got.Fairness, got.Gate)
		}
	})

	t.Run("LSTM regression", func(t *testing.T) {
		tab, state := openJobPage(t, bctx, srv.URL, "lstm-1")
		if state != "rendered" {
			t.Fatalf("report state %q", state)
		}
		screenshot(t, tab, "report-lstm")
		got := evalJSON[struct {
			Verdict  string   `json:"verdict"`
			Head     []string `json:"head"`
			Lags     []string `json:"lags"`
			Features int      `json:"features"`
			Charts   int      `json:"charts"`
		}](t, tab, `(() => ({
		  verdict: document.querySelector("#report-gate .gate-verdict").textContent,
		  head: [...document.querySelectorAll("#report-fairness thead th")].map((th) => th.textContent),
		  lags: [...document.querySelectorAll("#importance-lag-chart rect.imp-bar")].map((r) => r.dataset.feature),
		  features: document.querySelectorAll("#importance-chart rect.imp-bar").length,
		  charts: document.querySelectorAll("#calibration-chart, #report-confusion").length,
		}))()`)
		if got.Verdict != "PASSED" {
			t.Errorf("gate %q, want PASSED", got.Verdict)
		}
		wantHead := []string{"Attribute", "Category", "Count", "Fraction", "Mean label", "Mean prediction", "Scoring rate", "Scoring impact ratio", "Excluded"}
		if !slices.Equal(got.Head, wantHead) {
			t.Errorf("fairness columns %q, want %q", got.Head, wantHead)
		}
		if !slices.Equal(got.Lags, []string{"lag 1", "lag 2", "lag 3", "lag 4"}) || got.Features != 3 {
			t.Errorf("lag bars %q, feature bars %d; want 4 lags and 3 features", got.Lags, got.Features)
		}
		if got.Charts != 0 {
			t.Errorf("a regression report shows %d calibration or confusion figures", got.Charts)
		}
	})

	t.Run("no report", func(t *testing.T) {
		tab, state := openJobPage(t, bctx, srv.URL, "none-1")
		if state != "none" {
			t.Fatalf("report state %q, want none", state)
		}
		msg, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById("report-status").textContent`))
		if err != nil || msg != "This job has no report." {
			t.Errorf("status %q (%v)", msg, err)
		}
	})

	t.Run("job ends while the page is open", func(t *testing.T) {
		f.put(runningJob("live-1", 4, 0.4))
		tab, cancel := chromedp.NewContext(bctx)
		t.Cleanup(cancel)
		// Wait until the page has drawn the running job's curve: its event stream is open.
		if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/jobs/live-1")); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(tab, chromedp.Poll[bool](`document.querySelector("#loss-chart").dataset.points === "1"`,
			chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("the running job's curve: %v", err)
		}
		state, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById("report").dataset.state`))
		if err != nil || state != "waiting" {
			t.Fatalf("report state of a running job %q (%v), want waiting", state, err)
		}
		f.putReport("live-1", binary)
		f.put(finishedJob("live-1", "mlp"))
		if state := waitReport(t, tab); state != "rendered" {
			t.Fatalf("report state %q after the job ended, want rendered", state)
		}
	})
}
