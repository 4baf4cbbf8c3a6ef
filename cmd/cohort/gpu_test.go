package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"

	"github.com/cohort-dev/cohort/internal/testenv"
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

// emulatedCUDA builds gpuemu's emulated stack (two fake GPUs whose kernels run on the
// CPU) and points this process's GPU discovery and loading at it.
func emulatedCUDA(t *testing.T) {
	t.Helper()
	if err := gpuemu.Available(); err != nil {
		t.Fatalf("the GPU path's tests need gcc and g++ (make deps installs them): %v", err)
	}
	dir := t.TempDir()
	if _, err := gpu.BuildEmulated(dir); err != nil {
		t.Fatal(err)
	}
	t.Setenv(gpu.LibraryPathEnv, dir)
}

// TestBenchComputeOnGPU runs `cohort bench compute --device gpu` on the emulated GPU,
// with and without dropout, and refuses a GPU the host lacks and an unknown device.
func TestBenchComputeOnGPU(t *testing.T) {
	emulatedCUDA(t)
	spec := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(spec, exampleSpec(t), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "bench", "compute", "--job", spec, "--steps", "3", "--device", "gpu", "--gpu", "1", "-o", "json")
	if err != nil {
		t.Fatalf("bench compute --device gpu: %v\n%s", err, out)
	}
	var res struct {
		Device      string  `json:"device"`
		SamplesPerS float64 `json:"samples_per_s"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if res.Device != "gpu 1 (Emulated GPU 1)" || !(res.SamplesPerS > 0) {
		t.Fatalf("device %q, samples/s %v", res.Device, res.SamplesPerS)
	}
	dropout := filepath.Join(t.TempDir(), "dropout.yaml")
	if err := os.WriteFile(dropout, exampleSpec(t, "activation: relu", "activation: relu, dropout: 0.2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "bench", "compute", "--job", dropout, "--steps", "2", "--device", "gpu"); err != nil {
		t.Fatalf("a model with dropout on --device gpu: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "bench", "compute", "--job", spec, "--device", "gpu", "--gpu", "5"); err == nil || !strings.Contains(err.Error(), "GPU 5") {
		t.Fatalf("--gpu 5 on a 2-GPU host: %v", err)
	}
	if _, err := runCLI(t, "bench", "compute", "--job", spec, "--device", "tpu"); err == nil || !strings.Contains(err.Error(), "--device") {
		t.Fatalf("--device tpu: %v", err)
	}
}

// TestJobPlacedWithGPUsTrainsOnTheGPU runs the example job with gpus: 1 on a dev
// cluster whose worker offers the emulated GPUs it discovers, as `cohort worker --gpus`
// does: the coordinator places the task on a GPU, the worker trains on it, and the
// job succeeds with a model that learned.
func TestJobPlacedWithGPUsTrainsOnTheGPU(t *testing.T) {
	emulatedCUDA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	var logs testenv.Buffer
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 1, PS: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Mutate: func(cfg *node.Config) { cfg.Workers[0].GPUs = node.GPUsAuto }})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	spec := exampleSpec(t, "epochs: 30", "epochs: 3", "count: 2, min: 1, max: 4, gpus: 0", "count: 1, min: 1, max: 1, gpus: 1")
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s\n%s", stateName(job.GetState()), job.GetStatusMessage(), logs.String())
	}
	if l := logs.String(); !strings.Contains(l, `msg="training on the GPU"`) || !strings.Contains(l, `device="gpu 0 (Emulated GPU 0)"`) {
		t.Fatalf("the worker did not train on the GPU; logs:\n%s", logs.String())
	}
	if auc := job.GetMetrics()["val_auc"]; !(auc > 0.6) {
		t.Fatalf("val_auc %v after 3 epochs on the GPU", auc)
	}
}
