package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker"
)

// TestExportChoosesCheckpoint trains the example job for 3 epochs, then drives the CLI:
// `checkpoint list` shows every epoch end's score and marks the best, which is the
// checkpoint the job exported (its result names its step and epoch, and its metrics are
// that checkpoint's); `cohort export` exports it by default and with --checkpoint best,
// the job record's with --checkpoint latest, and any listed step by number, each bit for
// bit; a bad --checkpoint exits 2 naming the flag.
func TestExportChoosesCheckpoint(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	job, c := runJob(t, exampleSpec(t, "epochs: 30", "epochs: 3"), 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	addr := []string{"--address", c.GRPCAddr}

	out, err := runCLI(t, append(addr, "checkpoint", "list", job.GetId(), "-o", "json")...)
	if err != nil {
		t.Fatalf("checkpoint list: %v", err)
	}
	var rows []checkpointRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("checkpoint list -o json: %v\n%s", err, out)
	}
	var best *checkpointRow
	scored := 0
	for i, r := range rows {
		if r.Score != nil {
			scored++
			if r.Score.Metric != "val_auc" || r.Score.Mode != "max" || r.StepInEpoch != 0 {
				t.Errorf("row %+v: want val_auc scores on epoch ends only", r)
			}
			if best == nil || r.Score.Value > best.Score.Value {
				best = &rows[i]
			}
		}
	}
	if scored != 3 || best == nil {
		t.Fatalf("rows %+v: want the 3 epoch ends scored (keep 3)", rows)
	}
	for _, r := range rows {
		if r.Best != (r.Step == best.Step) {
			t.Errorf("row of step %d marked best=%v; the best score is step %d's", r.Step, r.Best, best.Step)
		}
	}
	e := job.GetExportedFrom()
	if e.GetStep() != best.Step || int(e.GetEpoch()) != best.Epoch || e.GetCheckpoint() != best.URI || e.GetScore() != best.Score.Value {
		t.Fatalf("job exported %v, want the best checkpoint %+v", e, best)
	}
	if m := job.GetMetrics(); m["val_auc"] != best.Score.Value {
		t.Errorf("job metrics %v: val_auc is not the exported checkpoint's %v", m, best.Score.Value)
	}
	res := resultOf(job)
	if res.ExportedStep == nil || *res.ExportedStep != best.Step || res.ExportedEpoch == nil || int(*res.ExportedEpoch) != best.Epoch {
		t.Fatalf("result line %+v, want exported_step %d exported_epoch %d", res, best.Step, best.Epoch)
	}
	text, err := runCLI(t, append(addr, "checkpoint", "list", job.GetId())...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "SCORE") || !strings.Contains(text, "BEST") || !strings.Contains(text, fmt.Sprintf("val_auc %.4f", best.Score.Value)) {
		t.Errorf("checkpoint list:\n%s", text)
	}
	status, err := runCLI(t, append(addr, "job", "status", job.GetId())...)
	if err != nil || !strings.Contains(status, fmt.Sprintf("exported: step %d (epoch %d)", best.Step, best.Epoch)) {
		t.Errorf("job status (%v):\n%s", err, status)
	}

	// Each choice exports its checkpoint's parameters exactly.
	other := rows[0]
	if other.Best {
		other = rows[1]
	}
	for _, tc := range []struct {
		name   string
		args   []string
		want   checkpointRow
		best   bool
		report bool
	}{
		{"default", nil, *best, true, true},
		{"best", []string{"--checkpoint", "best"}, *best, true, true},
		{"latest", []string{"--checkpoint", "latest"}, rows[len(rows)-1], rows[len(rows)-1].Best, rows[len(rows)-1].Best},
		{"step", []string{"--checkpoint", strconv.FormatInt(other.Step, 10)}, other, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out, err := runCLI(t, append(append(addr, "export", job.GetId(), "--format", "safetensors", "--out", dir, "-o", "json"), tc.args...)...)
			if err != nil {
				t.Fatalf("export: %v", err)
			}
			var res exportResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if res.Checkpoint != tc.want.URI || res.Step != tc.want.Step || res.Epoch != tc.want.Epoch || res.Best != tc.best {
				t.Fatalf("exported %+v, want step %d (%s), best %v", res, tc.want.Step, tc.want.URI, tc.best)
			}
			if _, err := os.Stat(filepath.Join(dir, "report.json")); (err == nil) != tc.report {
				t.Errorf("report.json in the export: %v, want %v (it describes the job's exported checkpoint only)", err == nil, tc.report)
			}
			b, _, err := worker.CheckpointBundle(context.Background(), tc.want.URI, storage.S3Config{})
			if err != nil {
				t.Fatal(err)
			}
			fh, err := os.Open(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			got, meta, err := export.ReadSafetensors(fh)
			fh.Close()
			if err != nil {
				t.Fatal(err)
			}
			for i, ts := range got {
				if !equalBits(ts.Data, b.Tensors[i].Data) {
					t.Fatalf("tensor %s differs from the checkpoint of step %d", ts.Name, tc.want.Step)
				}
			}
			if meta["cohort.step"] != strconv.FormatInt(tc.want.Step, 10) {
				t.Errorf("metadata step %q, want %d", meta["cohort.step"], tc.want.Step)
			}
		})
	}
	// The job's own export is the best checkpoint, bit for bit.
	chief, _ := readExport(t, c, job.GetExports()[0])
	b, _, err := worker.CheckpointBundle(context.Background(), best.URI, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range chief {
		if !equalBits(ts.Data, b.Tensors[i].Data) {
			t.Fatalf("the job's export: tensor %s differs from the best checkpoint", ts.Name)
		}
	}

	var steps []string
	for _, r := range rows {
		steps = append(steps, strconv.FormatInt(r.Step, 10))
	}
	for _, tc := range []struct{ value, want string }{
		{"worst", `--checkpoint: "worst" is not best, latest or a step number`},
		{"-3", `--checkpoint: "-3" is not best, latest or a step number`},
		{"99999", "--checkpoint 99999: job " + job.GetId() + " has no committed checkpoint of that step; it has " + strings.Join(steps, ", ")},
	} {
		t.Run("bad "+tc.value, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			_, err := runCLI(t, append(addr, "export", job.GetId(), "--format", "onnx", "--out", dir, "--checkpoint", tc.value)...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want exit status 2 with %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("bad input created %s", dir)
			}
		})
	}
}

// TestDevRunStopsEarly runs `cohort dev --run -o json` on the example job with early
// stopping that no epoch after the first can satisfy (an AUC gain of more than 1), so it
// stops after epoch 2 of 30: the last stdout line is the result object, whose message
// says why and where training stopped, whose exported_step and exported_epoch name the
// best-scored checkpoint in the store, and whose metrics are that checkpoint's.
func TestDevRunStopsEarly(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	dir := t.TempDir()
	spec := exampleSpec(t, "    seed: 42\n", "    seed: 42\n    earlyStopping: {monitor: val_auc, patience: 1, minDelta: 1}\n")
	specPath := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	out, err := execCLI(context.Background(), "dev", "--run", specPath, "--data-dir", dataDir, "--data-root", repoPath(t, "jobs/data"), "-o", "json", "--log-level", "error")
	if err != nil {
		t.Fatalf("dev --run: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	var res jobResult
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		t.Fatalf("last stdout line %q: %v", last, err)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(last), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["exported_step"]; !ok {
		t.Fatalf("result line lacks exported_step: %s", last)
	}
	if _, ok := raw["exported_epoch"]; !ok {
		t.Fatalf("result line lacks exported_epoch: %s", last)
	}
	var stopStep int64
	if _, err := fmt.Sscanf(res.Message[strings.Index(res.Message, "stopped early")+len("stopped early"):], " after epoch 2 (step %d):", &stopStep); err != nil ||
		res.Status != "succeeded" || !strings.Contains(res.Message, "): val_auc did not improve by more than 1 for 1 epoch (best ") {
		t.Fatalf("result %+v (%v): want it stopped early after epoch 2 with the reason", res, err)
	}
	store, err := storage.NewLocal(filepath.Join(dataDir, "storage"))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := storage.ListCheckpoints(context.Background(), store, res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	best := storage.BestCheckpoints(infos, 1)
	if len(best) != 1 || *res.ExportedStep != best[0].Step || int(*res.ExportedEpoch) != best[0].Score.Epoch || res.ExportedCheckpoint != best[0].URI {
		t.Fatalf("exported step %v epoch %v (%s), want the best-scored checkpoint %+v", *res.ExportedStep, *res.ExportedEpoch, res.ExportedCheckpoint, best)
	}
	if res.Metrics["val_auc"] != best[0].Score.Value {
		t.Errorf("result val_auc %v, the exported checkpoint's score %v", res.Metrics["val_auc"], best[0].Score.Value)
	}
	if newest := infos[len(infos)-1]; newest.Step != stopStep || newest.Score == nil || newest.Score.Epoch != 2 {
		t.Errorf("newest checkpoint %+v, want the stop epoch's (2, step %d): nothing after the stop", newest, stopStep)
	}
}

// equalBits reports whether a and b hold bit-identical values.
func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
