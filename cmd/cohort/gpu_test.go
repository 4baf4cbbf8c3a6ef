package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
)

// On a machine without the NVIDIA libraries, `cohort gpu info` reports 0 usable GPUs and
// why; with --require it fails. (Where a GPU exists the same test sees usable > 0 and
// checks that the reason is empty.)
func TestGPUInfo(t *testing.T) {
	t.Setenv("COHORT_CUDA_LIBRARY_PATH", t.TempDir())
	runGPU := func(args ...string) (string, error) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"gpu", "info"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	out, err := runGPU("-o", "json")
	if err != nil {
		t.Fatalf("gpu info -o json: %v", err)
	}
	var info struct {
		Usable  int               `json:"usable"`
		Devices []json.RawMessage `json:"devices"`
		Reason  string            `json:"reason"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("output %q is not JSON: %v", out, err)
	}
	if info.Usable == 0 && !strings.Contains(info.Reason, "gpu:") {
		t.Fatalf("0 usable GPUs without a reason: %s", out)
	}
	if info.Usable > 0 && info.Reason != "" {
		t.Fatalf("usable GPUs and a reason: %s", out)
	}
	table, err := runGPU()
	if err != nil || !strings.Contains(table, "usable GPUs: ") {
		t.Fatalf("gpu info: %v\n%s", err, table)
	}
	if info.Usable == 0 {
		if _, err := runGPU("--require"); err == nil {
			t.Fatal("gpu info --require succeeded without a usable GPU")
		}
	}
	if _, err := runGPU("-o", "xml"); err == nil {
		t.Fatal("gpu info -o xml accepted")
	}
}

// With a stand-in NVML (built from internal/gpu's test fakes) but no compute libraries,
// the devices are listed and still not offered, and the reason names libcuda.
func TestGPUInfoListsDevicesButNotUsableWithoutCompute(t *testing.T) {
	if err := gpuemu.Available(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	dir := t.TempDir()
	if err := gpuemu.BuildLibrary(dir, gpuemu.NVML); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COHORT_CUDA_LIBRARY_PATH", dir)
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"gpu", "info"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Fake GPU 0", "Fake GPU 1", "16384 MiB", "driver 580.65.06 (CUDA 13.0)", "usable GPUs: 0", "reason: gpu: libcuda not found"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
