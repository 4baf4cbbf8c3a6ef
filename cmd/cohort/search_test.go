package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/jobs"
)

// tinySearch is a small ASHA search of the attrition data: 4 trials of at most 3
// epochs (one rung, at epoch 1), 2 at a time, one worker and one shard each.
func tinySearch(t *testing.T, dir string) string {
	t.Helper()
	spec := `apiVersion: cohort.dev/v1
kind: Search
metadata: {name: tiny-search}
spec:
  template:
    task: binary_classification
    model: {mlp: {hidden: [8]}}
    data:
      format: csv
      train: file://` + repoPath(t, "jobs/data/attrition-sample.csv") + `
      validation: {fraction: 0.2, seed: 42, stratify: true}
      label: Attrition
      positive: "Yes"
    training: {epochs: 3, batchSize: 64, optimizer: {name: adam, learningRate: 0.001}, seed: 1}
    resources:
      workers: {count: 1, cpu: "1", memory: 512Mi}
      parameterServers: {shards: 1}
    export: {formats: [safetensors]}
  parameters:
    training.optimizer.learningRate: {logUniform: [0.0001, 0.05]}
    model.mlp.hidden: {choice: [[8], [16, 8]]}
  objective: {metric: val_auc, mode: max}
  algorithm: {asha: {minEpochs: 1, maxEpochs: 3, reductionFactor: 3}}
  maxTrials: 4
  parallelTrials: 2
  seed: 7
`
	p := filepath.Join(dir, "search.yaml")
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevRunSearch runs a small Search end to end with `cohort dev --run -o json` and
// checks its result line: the trials carry the parameters the seed draws, every trial
// ended as ASHA decided, and best is the succeeded trial with the highest val_auc,
// whose exports exist.
func TestDevRunSearch(t *testing.T) {
	dir := t.TempDir()
	specPath := tinySearch(t, dir)
	var out bytes.Buffer
	stdout = &out
	t.Cleanup(func() { stdout = os.Stdout })
	run := newRootCmd()
	run.SetArgs([]string{"dev", "--run", specPath, "--data-dir", filepath.Join(dir, "data"), "--data-root", repoPath(t, "jobs/data"),
		"-o", "json", "--log-level", "error", "--workers", "2", "--ps", "2"})
	if err := run.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("dev --run: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res searchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last stdout line %q is not the result object: %v", lines[len(lines)-1], err)
	}
	// The contract's keys are on the line.
	var keys map[string]json.RawMessage
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &keys)
	for _, k := range []string{"search_id", "status", "trials", "best", "exports"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("result line has no %q", k)
		}
	}
	if res.Status != "succeeded" || res.SearchID == "" || len(res.Trials) != 4 || res.Best == nil {
		t.Fatalf("result %+v", res)
	}
	raw, _ := os.ReadFile(specPath)
	plan, err := jobs.ExpandSearch(raw)
	if err != nil {
		t.Fatal(err)
	}
	bestVal, bestTrial := -1.0, -1
	for i, tr := range res.Trials {
		for k, v := range plan.Trials[i].Parameters {
			if string(tr.Parameters[k]) != v {
				t.Errorf("trial %d %s = %s, the seed draws %s", i, k, tr.Parameters[k], v)
			}
		}
		switch tr.Status {
		case "succeeded":
			if tr.Epochs != 3 || len(tr.Rungs) != 1 || !tr.Rungs[0].Promoted || tr.Objective == nil {
				t.Errorf("succeeded trial %d: %+v", i, tr)
			}
			if *tr.Objective > bestVal {
				bestVal, bestTrial = *tr.Objective, i
			}
		case "stopped":
			if len(tr.Rungs) != 1 || tr.Rungs[0].Promoted || tr.Rungs[0].Epoch != 1 || !strings.Contains(tr.Message, "stopped by the search (ASHA) at rung 0") {
				t.Errorf("stopped trial %d: %+v", i, tr)
			}
		default:
			t.Errorf("trial %d ended %s: %s", i, tr.Status, tr.Message)
		}
	}
	if !res.Trials[0].Rungs[0].Promoted {
		t.Error("the first result at a rung must be promoted")
	}
	if res.Best.Trial != bestTrial || res.Best.JobID != res.Trials[bestTrial].JobID || res.Best.Metrics["val_auc"] != bestVal {
		t.Fatalf("best %+v, want trial %d with val_auc %v", res.Best, bestTrial, bestVal)
	}
	if len(res.Exports) != 1 {
		t.Fatalf("exports %v", res.Exports)
	}
	for _, e := range res.Exports {
		if _, err := os.Stat(strings.TrimPrefix(e, "file://")); err != nil {
			t.Errorf("export %s: %v", e, err)
		}
	}
}

// TestDevRunSearchBadInput: a Search spec with a mistake exits 2 naming the field.
func TestDevRunSearchBadInput(t *testing.T) {
	dir := t.TempDir()
	specPath := tinySearch(t, dir)
	raw, _ := os.ReadFile(specPath)
	for _, tc := range []struct{ old, new, want string }{
		{"model.mlp.hidden:", "model.mlp.hiden:", "spec.parameters.model.mlp.hiden"},
		{"reductionFactor: 3", "reductionFactor: 1", "spec.algorithm.asha.reductionFactor"},
		{"maxTrials: 4", "maxTrials: 0", "spec.maxTrials"},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(raw), tc.old, tc.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		root := newRootCmd()
		root.SetArgs([]string{"dev", "--run", p, "--data-dir", filepath.Join(dir, "data"), "-o", "json"})
		err := root.ExecuteContext(context.Background())
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want exit 2 naming %s", tc.new, err, tc.want)
		}
	}
}

// TestSearchVerbs drives a cluster with the search verbs: submit --wait, status, list,
// export-best (the best trial's model), and cancel of a second search.
func TestSearchVerbs(t *testing.T) {
	c, _, _ := startCluster(t, 2, 2)
	dir := t.TempDir()
	specPath := tinySearch(t, dir)
	addr := []string{"--address", c.GRPCAddr}

	out, err := runCLI(t, append(addr, "search", "submit", specPath, "--wait", "-o", "json")...)
	if err != nil {
		t.Fatalf("search submit --wait: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res searchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.Status != "succeeded" || res.Best == nil {
		t.Fatalf("result %q: %v", lines[len(lines)-1], err)
	}

	out, err = runCLI(t, append(addr, "search", "status", res.SearchID, "-o", "json")...)
	var status searchResult
	if err != nil || json.Unmarshal([]byte(out), &status) != nil || status.Best == nil || status.Best.JobID != res.Best.JobID || len(status.Trials) != 4 {
		t.Fatalf("search status: %v\n%s", err, out)
	}
	out, err = runCLI(t, append(addr, "search", "status", res.SearchID)...)
	if err != nil || !strings.Contains(out, "BEST") || !strings.Contains(out, res.Best.JobID) {
		t.Fatalf("search status (table): %v\n%s", err, out)
	}

	exportDir := filepath.Join(dir, "best")
	if out, err := runCLI(t, append(addr, "search", "export-best", res.SearchID, "--format", "safetensors", "--out", exportDir)...); err != nil {
		t.Fatalf("search export-best: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(exportDir, "model.safetensors")); err != nil {
		t.Fatalf("export-best wrote no model: %v", err)
	}

	raw, _ := os.ReadFile(specPath)
	second := filepath.Join(dir, "second.yaml")
	if err := os.WriteFile(second, []byte(strings.Replace(string(raw), "name: tiny-search", "name: second-search", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, append(addr, "search", "submit", second, "-o", "json")...)
	var sub struct {
		SearchID string `json:"search_id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &sub) != nil || sub.SearchID == "" {
		t.Fatalf("search submit: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append(addr, "search", "cancel", sub.SearchID, "--reason", "enough")...); err != nil || !strings.Contains(out, "cancelled") {
		t.Fatalf("search cancel: %v\n%s", err, out)
	}
	out, err = runCLI(t, append(addr, "search", "status", sub.SearchID, "-o", "json")...)
	if err != nil || json.Unmarshal([]byte(out), &status) != nil || status.Status != "cancelled" {
		t.Fatalf("status after cancel: %v\n%s", err, out)
	}
	for _, tr := range status.Trials {
		if tr.Status != "waiting" && tr.Status != "cancelled" && tr.Status != "succeeded" && tr.Status != "stopped" {
			t.Errorf("trial %d of a cancelled search is %s", tr.Index, tr.Status)
		}
	}
	out, err = runCLI(t, append(addr, "search", "list", "-o", "json")...)
	if err != nil || !strings.Contains(out, res.SearchID) || !strings.Contains(out, sub.SearchID) {
		t.Fatalf("search list: %v\n%s", err, out)
	}
	if _, err := runCLI(t, append(addr, "search", "status", "no-such-search")...); err == nil {
		t.Fatal("status of an unknown search succeeded")
	}
}

// TestDevRunSearchReproducible runs the same Search twice (one trial at a time, so the
// rung results arrive in the same order): the same seed draws the same trials, and ASHA
// takes the same decisions on the same values.
func TestDevRunSearchReproducible(t *testing.T) {
	runOnce := func() searchResult {
		dir := t.TempDir()
		specPath := tinySearch(t, dir)
		raw, _ := os.ReadFile(specPath)
		if err := os.WriteFile(specPath, []byte(strings.Replace(string(raw), "parallelTrials: 2", "parallelTrials: 1", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runCLI(t, "dev", "--run", specPath, "--data-dir", filepath.Join(dir, "data"), "--data-root", repoPath(t, "jobs/data"),
			"-o", "json", "--log-level", "error")
		if err != nil {
			t.Fatalf("dev --run: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var res searchResult
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := runOnce(), runOnce()
	if len(a.Trials) != len(b.Trials) {
		t.Fatalf("%d vs %d trials", len(a.Trials), len(b.Trials))
	}
	for i := range a.Trials {
		ta, tb := a.Trials[i], b.Trials[i]
		pa, _ := json.Marshal(ta.Parameters)
		pb, _ := json.Marshal(tb.Parameters)
		if string(pa) != string(pb) || ta.Status != tb.Status || len(ta.Rungs) != len(tb.Rungs) {
			t.Fatalf("trial %d differs:\n%+v\n%+v", i, ta, tb)
		}
		for k := range ta.Rungs {
			if ta.Rungs[k] != tb.Rungs[k] {
				t.Fatalf("trial %d rung decision %d differs:\n%+v\n%+v", i, k, ta.Rungs[k], tb.Rungs[k])
			}
		}
	}
	if a.Best.Trial != b.Best.Trial {
		t.Fatalf("best trial %d vs %d", a.Best.Trial, b.Best.Trial)
	}
}
