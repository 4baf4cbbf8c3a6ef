package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

// TestObserveEarlyStopping runs the decision over scripted metric sequences: the epoch
// training stops after (0: it runs to the end) and the best epoch then.
func TestObserveEarlyStopping(t *testing.T) {
	nan := math.NaN()
	es := func(mode string, patience int, minDelta float64, start int) jobs.EarlyStopping {
		return jobs.EarlyStopping{Monitor: "m", Mode: mode, Patience: patience, MinDelta: minDelta, StartEpoch: start}
	}
	for _, tc := range []struct {
		name      string
		cfg       jobs.EarlyStopping
		values    []float64 // epoch 1, 2, ...
		total     int       // spec.training.epochs (0: len(values)+10)
		stopAfter int
		bestEpoch int
		reason    string
	}{
		{"max: no improvement for patience epochs", es("max", 2, 0, 0), []float64{0.5, 0.6, 0.7, 0.69, 0.7, 0.65, 0.9}, 0, 5, 3,
			"m did not improve for 2 epochs (best 0.7 at epoch 3)"},
		{"an equal value is no improvement", es("max", 1, 0, 0), []float64{0.5, 0.5}, 0, 2, 1, ""},
		{"minDelta: small gains do not count, a larger one resets", es("max", 3, 0.001, 0), []float64{0.5, 0.6, 0.6005, 0.6009, 0.602, 0.6025, 0.6021}, 0, 0, 5, ""},
		{"minDelta: small gains run out the patience", es("max", 3, 0.001, 0), []float64{0.5, 0.6, 0.6005, 0.6009, 0.601}, 0, 5, 2,
			"m did not improve by more than 0.001 for 3 epochs (best 0.6 at epoch 2)"},
		{"min: a loss going up", es("min", 2, 0, 0), []float64{1.0, 0.8, 0.85, 0.9, 0.7}, 0, 4, 2, ""},
		{"min: minDelta", es("min", 1, 0.05, 0), []float64{1.0, 0.96}, 0, 2, 1, ""},
		{"startEpoch: warm-up epochs are not watched", es("max", 2, 0, 2), []float64{0.9, 0.1, 0.5, 0.4, 0.3}, 0, 5, 3, ""},
		{"without the warm-up it stops early", es("max", 2, 0, 0), []float64{0.9, 0.1, 0.5, 0.4, 0.3}, 0, 3, 1, ""},
		{"patience 0: the first epoch that does not improve", es("max", 0, 0, 0), []float64{0.5, 0.6, 0.55}, 0, 3, 2,
			"m did not improve for 1 epoch (best 0.6 at epoch 2)"},
		{"patience 0: improving every epoch never stops", es("max", 0, 0, 0), []float64{0.1, 0.2, 0.3}, 0, 0, 3, ""},
		{"NaN is no improvement", es("max", 2, 0, 0), []float64{0.5, nan, nan, 0.9}, 0, 3, 1, ""},
		{"never finite", es("min", 1, 0, 0), []float64{nan, nan}, 0, 1, 0, "m was not finite for 1 epoch"},
		{"the last epoch is no early stop", es("max", 3, 0, 0), []float64{0.5, 0.4, 0.3, 0.2}, 4, 0, 1, ""},
		{"the epoch before the last is", es("max", 2, 0, 0), []float64{0.5, 0.4, 0.3, 0.2}, 4, 3, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := tc.total
			if total == 0 {
				total = len(tc.values) + 10
			}
			var st storage.EarlyStoppingState
			stopAfter := 0
			for i, v := range tc.values {
				var stop bool
				st, stop = observeEarlyStopping(tc.cfg, st, i+1, total, v)
				if st.Epoch != i+1 {
					t.Fatalf("state epoch %d after epoch %d", st.Epoch, i+1)
				}
				if stop {
					stopAfter = i + 1
					break
				}
			}
			if stopAfter != tc.stopAfter || st.BestEpoch != tc.bestEpoch {
				t.Fatalf("stops after epoch %d with best epoch %d (state %+v), want %d and %d", stopAfter, st.BestEpoch, st, tc.stopAfter, tc.bestEpoch)
			}
			if tc.reason != "" {
				if got := stopReason(tc.cfg, st); got != tc.reason {
					t.Errorf("reason %q, want %q", got, tc.reason)
				}
			}
		})
	}
}

// earlySpec is resumeSpec for epochs epochs with extra lines in training (after the seed)
// and the given checkpoint settings.
func earlySpec(t *testing.T, c *testCluster, epochs int, training, checkpoint string) []byte {
	t.Helper()
	spec := string(c.spec)
	for old, repl := range map[string]string{
		"    epochs: 3\n": fmt.Sprintf("    epochs: %d\n", epochs),
		"    seed: 11\n":  "    seed: 11\n" + training,
		"  checkpoint: {everySteps: 4, keep: 2}\n": "  checkpoint: " + checkpoint + "\n",
	} {
		if !strings.Contains(spec, old) {
			t.Fatalf("resumeSpec lacks %q", old)
		}
		spec = strings.Replace(spec, old, repl, 1)
	}
	if _, err := jobs.Parse([]byte(spec)); err != nil {
		t.Fatalf("spec: %v\n%s", err, spec)
	}
	return []byte(spec)
}

// epochLog records, from the chief's reports, every epoch's validation metrics by the
// step they were evaluated at, the checkpoints reported and the early-stop decision.
type epochLog struct {
	mu        sync.Mutex
	metrics   map[int64]map[string]float64 // step -> metrics
	epochOf   map[int64]int
	pointer   string
	earlyStop *cohortv1.EarlyStop
}

func newEpochLog() *epochLog {
	return &epochLog{metrics: map[int64]map[string]float64{}, epochOf: map[int64]int{}}
}

func (l *epochLog) observe(rep *cohortv1.TaskReport) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := rep.GetProgress(); p != nil && len(rep.GetMetrics()) > 0 {
		l.metrics[p.GetStep()] = rep.GetMetrics()
		l.epochOf[p.GetStep()] = int(p.GetEpoch())
	}
	if rep.GetCheckpoint() != "" {
		l.pointer = rep.GetCheckpoint()
	}
	if rep.GetEarlyStop() != nil {
		l.earlyStop = rep.GetEarlyStop()
	}
}

// series returns metric at every epoch end reported, in step order.
func (l *epochLog) series(metric string) (steps []int64, values []float64) {
	for step := range l.metrics {
		steps = append(steps, step)
	}
	slices.Sort(steps)
	for _, s := range steps {
		values = append(values, l.metrics[s][metric])
	}
	return steps, values
}

// bestSteps ranks the reported epoch ends by metric in mode's direction (ties: the
// earlier step first) and returns the first k steps.
func (l *epochLog) bestSteps(metric, mode string, k int) []int64 {
	steps, values := l.series(metric)
	idx := make([]int, len(steps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		va, vb := values[a], values[b]
		if mode == jobs.ModeMin {
			va, vb = -va, -vb
		}
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	var out []int64
	for _, i := range idx[:min(k, len(idx))] {
		out = append(out, steps[i])
	}
	return out
}

// exportedParams reads the job's exported model.safetensors back as one flat vector.
func exportedParams(t *testing.T, store storage.Blob, jobID string) ([]float32, map[string]string) {
	t.Helper()
	rc, err := store.Get(context.Background(), ExportPrefix(jobID)+"model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tensors, meta, err := export.ReadSafetensors(rc)
	if err != nil {
		t.Fatal(err)
	}
	var flat []float32
	for _, ts := range tensors {
		flat = append(flat, ts.Data...)
	}
	return flat, meta
}

// checkpointParams reads a committed checkpoint's parameters.
func checkpointParams(t *testing.T, store storage.Blob, uri string) (*storage.Manifest, []float32) {
	t.Helper()
	man, err := storage.OpenCheckpoint(context.Background(), store, uri)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := paramserver.LoadShardRange(context.Background(), store, man, 0, paramserver.Range{Length: man.TotalParams})
	if err != nil {
		t.Fatal(err)
	}
	return man, ck.Params
}

// sameParams fails unless a and b are bit-identical.
func sameParams(t *testing.T, what string, a, b []float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d parameters vs %d", what, len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: parameter %d differs: %v vs %v", what, i, a[i], b[i])
		}
	}
}

// committedSteps lists the steps of the job's committed checkpoints.
func committedSteps(t *testing.T, store storage.Blob, jobID string) []int64 {
	t.Helper()
	infos, err := storage.ListCheckpoints(context.Background(), store, jobID)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, in := range infos {
		steps = append(steps, in.Step)
	}
	return steps
}

// The early-stopping job of the end-to-end tests: 10 epochs of 6 steps, with a learning
// rate high enough for this small data set to overfit after a few epochs, so that
// early stopping ends training and the best epoch is not the last one evaluated. What
// the rule decides is computed by the test from the metrics the chief reported.
const (
	earlyEpochs     = 10
	earlyTraining   = "    earlyStopping: {monitor: val_auc, mode: max, patience: 2, minDelta: 0.001, startEpoch: 1}\n"
	earlyCheckpoint = "{everySteps: 4, keep: 1, keepBest: 1}"
	earlyRate       = "learningRate: 0.03"
	stepsPerEpoch   = 6
)

// earlyJobSpec is the early-stopping job's spec.
func earlyJobSpec(t *testing.T, c *testCluster) []byte {
	t.Helper()
	spec := earlySpec(t, c, earlyEpochs, earlyTraining, earlyCheckpoint)
	return []byte(strings.Replace(string(spec), "learningRate: 0.01", earlyRate, 1))
}

// expectedStop is the epoch the early-stopping rule of earlyTraining stops after (0:
// none) and its best epoch then, computed here from the reported values on the rule's
// own terms: from the first monitored epoch on, patience epochs in a row that do not
// beat the best by more than minDelta.
func expectedStop(values []float64, startEpoch, patience int, minDelta float64) (stop, bestEpoch int) {
	best, wait := 0.0, 0
	for i, v := range values {
		epoch := i + 1
		if epoch <= startEpoch {
			continue
		}
		if bestEpoch == 0 || v > best+minDelta {
			best, bestEpoch, wait = v, epoch, 0
			continue
		}
		if wait++; wait >= patience {
			return epoch, bestEpoch
		}
	}
	return 0, bestEpoch
}

// checkEarlyStopped checks a finished early-stopped run: where every rank stopped, what
// was evaluated, which checkpoint was exported (the best reported, kept by retention
// with keep 1), that the export, the report and the result describe exactly its
// parameters, and that the checkpoint listing marks it BEST.
func checkEarlyStopped(t *testing.T, c *testCluster, jobID string, log *epochLog, res *Result, all []*Result) {
	t.Helper()
	steps, aucs := log.series("val_auc")
	stop, esBest := expectedStop(aucs, 1, 2, 0.001)
	if stop == 0 || stop != len(aucs) || stop >= earlyEpochs {
		t.Fatalf("reported epochs %v (val_auc %v): the rule stops after epoch %d; want it to stop early, after the last reported one", steps, aucs, stop)
	}
	stopStep := steps[len(steps)-1]
	if stopStep != int64(stop*stepsPerEpoch) {
		t.Fatalf("epoch %d evaluated at step %d, want %d", stop, stopStep, stop*stepsPerEpoch)
	}
	es := res.EarlyStop
	if es == nil || int(es.GetEpoch()) != stop || es.GetStep() != stopStep || es.GetMonitor() != "val_auc" || int(es.GetBestEpoch()) != esBest ||
		es.GetBest() != aucs[esBest-1] || !strings.Contains(es.GetReason(), "val_auc did not improve by more than 0.001 for 2 epochs (best ") {
		t.Fatalf("early stop %v, want after epoch %d at step %d, best epoch %d", es, stop, stopStep, esBest)
	}
	for r, rr := range all {
		if rr == nil || rr.LastStep != stopStep+1 {
			t.Fatalf("rank %d ended at %v, want step %d like every rank", r, rr, stopStep+1)
		}
	}
	best := log.bestSteps("val_auc", jobs.ModeMax, 1)[0]
	if best == stopStep {
		t.Logf("the best epoch is the last one evaluated (val_auc %v): the test shows less than it could", aucs)
	}
	ef := res.ExportedFrom
	if ef.GetStep() != best || int(ef.GetEpoch()) != log.epochOf[best] || ef.GetMetric() != "val_auc" || ef.GetScore() != log.metrics[best]["val_auc"] {
		t.Fatalf("exported from %v, want step %d (epoch %d, val_auc %v): the best reported", ef, best, log.epochOf[best], log.metrics[best]["val_auc"])
	}
	if res.Metrics["val_auc"] != log.metrics[best]["val_auc"] || res.Metrics["val_loss"] != log.metrics[best]["val_loss"] {
		t.Errorf("result metrics %v, want those reported at step %d: %v", res.Metrics, best, log.metrics[best])
	}
	// The export is the best checkpoint, bit for bit.
	man, ckpt := checkpointParams(t, c.store, ef.GetCheckpoint())
	if man.Step != best || man.Score == nil || man.Score.Value != ef.GetScore() {
		t.Fatalf("exported checkpoint manifest: step %d score %+v", man.Step, man.Score)
	}
	flat, meta := exportedParams(t, c.store, jobID)
	sameParams(t, "export vs best checkpoint", flat, ckpt)
	if meta["cohort.step"] != fmt.Sprint(best) {
		t.Errorf("export metadata step %q, want %d", meta["cohort.step"], best)
	}
	// The report describes the exported parameters.
	rc, err := c.store.Get(context.Background(), storage.ReportKey(jobID))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.DecodeReport(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Model.Step != best || rep.Model.Checkpoint != ef.GetCheckpoint() || rep.Metrics["val_auc"].Value != res.Metrics["val_auc"] {
		t.Errorf("report model %+v val_auc %v, want step %d and val_auc %v", rep.Model, rep.Metrics["val_auc"], best, res.Metrics["val_auc"])
	}
	// Nothing was checkpointed after the stop; the best survived retention (keep 1).
	infos, err := storage.ListCheckpoints(context.Background(), c.store, jobID)
	if err != nil {
		t.Fatal(err)
	}
	var bestMarked []int64
	for _, in := range infos {
		if in.Step > stopStep {
			t.Errorf("checkpoint at step %d, after the stop at %d", in.Step, stopStep)
		}
		if in.Best {
			bestMarked = append(bestMarked, in.Step)
		}
	}
	if fmt.Sprint(bestMarked) != fmt.Sprint([]int64{best}) {
		t.Errorf("listing marks %v best, want [%d] (checkpoints %v)", bestMarked, best, committedSteps(t, c.store, jobID))
	}
	if rec, err := readStopRecord(context.Background(), c.store, jobID); err != nil || rec == nil || rec.StopStep != stopStep+1 {
		t.Errorf("stop record %+v, %v", rec, err)
	}
}

// TestEarlyStoppingEndToEnd trains with early stopping on real parameter servers: every
// rank stops at the same step after the epoch the rule names, the best checkpoint is
// exported bit for bit, and the result, report and listing describe it.
func TestEarlyStoppingEndToEnd(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("early")
	job.SpecYaml = earlyJobSpec(t, c)
	log := newEpochLog()
	var all []*Result
	res, err := c.run(job, runOpts{results: &all, onReport: func(rep *cohortv1.TaskReport, _ func()) { log.observe(rep) }})
	if err != nil {
		t.Fatal(err)
	}
	checkEarlyStopped(t, c, job.GetId(), log, res, all)
	if log.earlyStop == nil || log.earlyStop.GetEpoch() != res.EarlyStop.GetEpoch() {
		t.Errorf("the decision was reported as %v while running", log.earlyStop)
	}
}

// TestEarlyStoppingSurvivesResume stops an early-stopping job right after the decision
// (the tasks killed before the export), and once more between the checkpoint of the stop
// epoch and the decision's record (a crash there), and places it again each time from
// the job record's checkpoint: the resumed run stops at the same step and exports the
// same parameters, bit for bit, as an uninterrupted run.
func TestEarlyStoppingSurvivesResume(t *testing.T) {
	fault := &storagetest.FaultBlob{Blob: mustLocal(t)}
	c := newTestCluster(t, fault)
	straight := c.job("early-straight")
	straight.SpecYaml = earlyJobSpec(t, c)
	want, err := c.run(straight, runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	wantParams, _ := exportedParams(t, c.store, straight.GetId())

	errCrash := errors.New("injected crash")
	for _, tc := range []struct {
		name       string
		crashWrite bool // fail the record's write instead of stopping after it
	}{
		{"after_the_decision", false},
		{"before_the_decision_is_stored", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := c.job("early-" + strings.ReplaceAll(tc.name, "_", "-"))
			job.SpecYaml = straight.SpecYaml
			log := newEpochLog()
			if tc.crashWrite {
				fault.SetBeforeWrite(func(op, key string) error {
					if op == storagetest.OpPutIfAbsent && key == EarlyStopKey(job.GetId()) {
						return errCrash
					}
					return nil
				})
			}
			_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
				log.observe(rep)
				if rep.GetEarlyStop() != nil {
					cancel()
				}
			}})
			fault.SetBeforeWrite(nil)
			switch {
			case tc.crashWrite && (err == nil || !errors.Is(err, errCrash)):
				t.Fatalf("first run: %v, want the injected crash", err)
			case !tc.crashWrite && !errors.Is(err, errStopped):
				t.Fatalf("first run: %v, want it stopped after the decision", err)
			}
			if got, want := checkpointStep(t, log.pointer), want.EarlyStop.GetStep(); got != want {
				t.Fatalf("job record points at step %d, want the stop epoch's checkpoint at %d", got, want)
			}
			resumed := job
			resumed.Checkpoint, resumed.Generation = log.pointer, 2
			var all []*Result
			res, err := c.run(resumed, runOpts{results: &all, onReport: func(rep *cohortv1.TaskReport, _ func()) { log.observe(rep) }})
			if err != nil {
				t.Fatalf("resumed run: %v", err)
			}
			checkEarlyStopped(t, c, job.GetId(), log, res, all)
			if res.EarlyStop.GetStep() != want.EarlyStop.GetStep() || res.ExportedFrom.GetStep() != want.ExportedFrom.GetStep() {
				t.Errorf("resumed run stopped at %v exporting %v; the uninterrupted one at %v exporting %v",
					res.EarlyStop, res.ExportedFrom, want.EarlyStop, want.ExportedFrom)
			}
			got, _ := exportedParams(t, c.store, job.GetId())
			sameParams(t, "resumed export vs uninterrupted export", got, wantParams)
		})
	}
}

// TestKeepBestSurvivesRetentionAndResume trains without early stopping, scored by
// val_loss, with keep 1 and keepBest 2, stops the job inside epoch 4 and resumes it:
// after each run the two best-scored epoch ends the chief reported are still committed
// (whatever retention did in between), nothing else is kept but the newest and the
// protected ones, and the job exports the best of all epochs, bit for bit.
func TestKeepBestSurvivesRetentionAndResume(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("keep-best")
	job.SpecYaml = earlySpec(t, c, 5, "", "{everySteps: 4, keep: 1, scoreBy: {metric: val_loss, mode: min}, keepBest: 2}")
	log := newEpochLog()
	const stopAt = 20 // inside epoch 4
	_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
		log.observe(rep)
		if rep.GetCheckpoint() != "" && checkpointStep(t, rep.GetCheckpoint()) == stopAt {
			cancel()
		}
	}})
	if !errors.Is(err, errStopped) {
		t.Fatalf("first run: %v", err)
	}
	checkKept := func(pointerStep, newest int64, protected ...int64) []int64 {
		t.Helper()
		best := log.bestSteps("val_loss", jobs.ModeMin, 2)
		kept := committedSteps(t, c.store, job.GetId())
		for _, b := range best {
			if !slices.Contains(kept, b) {
				t.Fatalf("best-scored checkpoint of step %d deleted: committed %v, best %v", b, kept, best)
			}
		}
		allowed := append(append(slices.Clone(best), newest, pointerStep), protected...)
		for _, k := range kept {
			if !slices.Contains(allowed, k) {
				t.Errorf("checkpoint %d kept: not among the best %v, the newest %d or the protected %v", k, best, newest, protected)
			}
		}
		return best
	}
	if steps, _ := log.series("val_loss"); fmt.Sprint(steps) != "[6 12 18]" {
		t.Fatalf("first run evaluated at steps %v", steps)
	}
	checkKept(checkpointStep(t, log.pointer), stopAt, 16)

	resumed := job
	resumed.Checkpoint, resumed.Generation = log.pointer, 2
	res, err := c.run(resumed, runOpts{onReport: func(rep *cohortv1.TaskReport, _ func()) { log.observe(rep) }})
	if err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	if steps, _ := log.series("val_loss"); fmt.Sprint(steps) != "[6 12 18 24 30]" {
		t.Fatalf("evaluated at steps %v", steps)
	}
	best := checkKept(stopAt, 30, 28)
	if res.ExportedFrom.GetStep() != best[0] || res.ExportedFrom.GetMetric() != "val_loss" || res.ExportedFrom.GetMode() != "min" ||
		res.Metrics["val_loss"] != log.metrics[best[0]]["val_loss"] {
		t.Fatalf("exported from %v with val_loss %v, want step %d with %v", res.ExportedFrom, res.Metrics["val_loss"], best[0], log.metrics[best[0]]["val_loss"])
	}
	if res.EarlyStop != nil || res.Checkpoint == res.ExportedFrom.GetCheckpoint() && best[0] != 30 {
		t.Errorf("result %+v", res)
	}
	_, ckpt := checkpointParams(t, c.store, res.ExportedFrom.GetCheckpoint())
	flat, _ := exportedParams(t, c.store, job.GetId())
	sameParams(t, "export vs best checkpoint", flat, ckpt)
}
