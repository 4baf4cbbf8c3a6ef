package main

import (
	"encoding/json"
	"math"
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
	// The arithmetic rate is the MLP's FLOPs per row (modeldef's TrainFLOPs of the
	// example's inputs, hidden 64-32, 1 output) times samples/s.
	sps, _ := res["samples_per_s"].(float64)
	if g, _ := res["gflops_per_s"].(float64); !(g > 0) || g != res["gflops_per_s_per_core"] {
		t.Errorf("gflops_per_s = %v, per core %v; want equal and > 0 at 1 thread", res["gflops_per_s"], res["gflops_per_s_per_core"])
	} else if perRow := g * 1e9 / sps; perRow < 2*(2*40*64+3*64*32+3*32) || perRow > 2*(2*80*64+3*64*32+3*32) {
		t.Errorf("gflops_per_s %v at %v samples/s is %v FLOPs per row, not the MLP's", g, sps, perRow)
	}
	// The fractions are of the measured peak where the FMA loop ran, else the nominal.
	peak, ok := res["measured_peak_gflops_per_core"].(float64)
	if !ok {
		peak, ok = res["peak_gflops_per_core"].(float64)
	}
	if ok {
		if f, _ := res["peak_fraction"].(float64); math.Abs(f-res["gflops_per_s_per_core"].(float64)/peak) > 1e-9 {
			t.Errorf("peak_fraction %v, want gflops_per_s_per_core / the peak (%v)", f, peak)
		}
		if f, _ := res["cpu_peak_fraction"].(float64); math.Abs(f-res["gflops_per_cpu_s"].(float64)/peak) > 1e-9 {
			t.Errorf("cpu_peak_fraction %v, want gflops_per_cpu_s / the peak (%v)", f, peak)
		}
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
