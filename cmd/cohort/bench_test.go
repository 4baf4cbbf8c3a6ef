package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestBenchCompute runs `cohort bench compute` for 3 steps of the attrition example and
// checks the JSON fields (no timing assertions).
func TestBenchCompute(t *testing.T) {
	spec := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(spec, exampleSpec(t), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "bench", "compute", "--job", spec, "--steps", "3", "-o", "json")
	if err != nil {
		t.Fatalf("bench compute: %v\n%s", err, out)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"model", "batch", "steps", "samples_per_s", "step_ms_p50", "alloc_bytes_per_step", "threads"} {
		if _, ok := res[k]; !ok {
			t.Errorf("output has no %q: %s", k, out)
		}
	}
	if res["model"] != "attrition-mlp" || res["batch"] != 32.0 || res["steps"] != 3.0 {
		t.Errorf("model, batch, steps = %v, %v, %v; want attrition-mlp, 32, 3", res["model"], res["batch"], res["steps"])
	}
	for _, k := range []string{"samples_per_s", "step_ms_p50"} {
		if v, _ := res[k].(float64); !(v > 0) {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	if v, _ := res["threads"].(float64); v != 1 {
		t.Errorf("threads = %v, want 1 (the example's worker CPU request)", res["threads"])
	}
	if _, err := runCLI(t, "bench", "compute", "--job", spec, "--steps", "0"); err == nil {
		t.Error("--steps 0 accepted")
	}
	if _, err := runCLI(t, "bench", "compute", "--job", spec, "--steps", "1", "--threads", "-1"); err == nil {
		t.Error("--threads -1 accepted")
	}
	out, err = runCLI(t, "bench", "compute", "--job", spec, "--steps", "2", "--threads", "2", "-o", "json")
	if err != nil {
		t.Fatalf("bench compute --threads 2: %v\n%s", err, out)
	}
}
