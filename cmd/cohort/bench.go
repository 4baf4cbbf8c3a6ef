package main

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/internal/cpupeak"
	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/worker"
	"github.com/cohort-dev/cohort/worker/model"
)

func init() { registerCommand(newBenchCmd) }

// benchResult is the output of `cohort bench compute`.
type benchResult struct {
	Model             string  `json:"model"`
	Batch             int     `json:"batch"`
	Steps             int     `json:"steps"`
	SamplesPerS       float64 `json:"samples_per_s"`
	StepMsP50         float64 `json:"step_ms_p50"`
	AllocBytesPerStep float64 `json:"alloc_bytes_per_step"`
	// CPUMsPerStep is the process's CPU time (user and system) per timed step: on a
	// machine shared with other work it varies far less than the wall time, and at one
	// thread it is the work of a step.
	CPUMsPerStep float64 `json:"cpu_ms_per_step"`
	Threads      int     `json:"threads"`
	// Device is where the steps ran: "cpu", or "gpu N (name)".
	Device string `json:"device"`
	// GFLOPs is the step's arithmetic rate: the model's matrix-product FLOPs per row
	// (forward and backward) times samples_per_s; GFLOPsPerCore divides it by threads.
	GFLOPs        float64 `json:"gflops_per_s"`
	GFLOPsPerCore float64 `json:"gflops_per_s_per_core"`
	// GFLOPsPerCPUs is the same work over the CPU time the steps took: per core at
	// work, whatever else ran on the machine.
	GFLOPsPerCPUs float64 `json:"gflops_per_cpu_s"`
	// PeakGFLOPsPerCore is one core's nominal float32 peak from /proc/cpuinfo (vector
	// width, FMA pipes, clock; see internal/cpupeak); MeasuredPeakGFLOPsPerCore what a
	// loop of independent FMAs reaches per CPU-second on this machine (the clock it
	// really runs at, boost included). PeakFraction is GFLOPsPerCore and CPUPeakFraction
	// GFLOPsPerCPUs over the measured peak (the nominal one where the loop cannot run).
	// All absent on the GPU or where cpuinfo says nothing usable.
	PeakGFLOPsPerCore         float64 `json:"peak_gflops_per_core,omitempty"`
	MeasuredPeakGFLOPsPerCore float64 `json:"measured_peak_gflops_per_core,omitempty"`
	PeakFraction              float64 `json:"peak_fraction,omitempty"`
	CPUPeakFraction           float64 `json:"cpu_peak_fraction,omitempty"`
	// Peak says how the peak was derived.
	Peak string `json:"peak,omitempty"`

	samples int // rows in the timed steps
}

func newBenchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the speed of this machine's training computation",
	}
	var file string
	var steps, warmup, threads, gpuOrdinal int
	var device string
	compute := &cobra.Command{
		Use:   "compute --job FILE --steps N",
		Short: "Time forward+backward steps of a job's model on its data, without a cluster",
		Long: `Loads the job's training data and builds its model exactly as a worker does, then
runs --steps gradient computations of one batch each (after --warmup untimed ones) in
this process, and prints the throughput, the median step time, the bytes allocated
per step and the arithmetic rate: the model's matrix-product FLOPs per row (forward and
backward) times the throughput, in total and per thread, against one core's float32
peak derived from /proc/cpuinfo (vector width, FMA pipes, clock). Each step runs on the job's worker share of cores (spec.resources.workers.cpu,
rounded up) unless --threads says otherwise; GOMAXPROCS caps it.

With --device gpu the steps run on GPU --gpu as a worker placed with GPUs runs them
(the model's parameters go up and its gradients come back each step, as in training);
the CUDA libraries are found as by 'cohort gpu info' ($COHORT_CUDA_LIBRARY_PATH, then
the system). A model the GPU path cannot run is an error.`,
		Example: `  cohort bench compute --job jobs/examples/attrition-mlp.yaml --steps 50
  cohort bench compute --job jobs/examples/fashion-cnn.yaml --steps 20 --warmup 5 -o json
  GOMAXPROCS=2 cohort bench compute --job jobs/examples/fashion-cnn.yaml --threads 2
  cohort bench compute --job jobs/examples/attrition-mlp.yaml --device gpu --gpu 0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErr("--job: required")
			}
			if steps < 1 {
				return usageErr("--steps: must be >= 1, got %d", steps)
			}
			if warmup < 0 {
				return usageErr("--warmup: must be >= 0, got %d", warmup)
			}
			if threads < 0 {
				return usageErr("--threads: must be >= 0, got %d", threads)
			}
			if gpuOrdinal < 0 {
				return usageErr("--gpu: must be >= 0, got %d", gpuOrdinal)
			}
			dev := worker.CPU()
			switch device {
			case worker.DeviceCPU:
			case worker.DeviceGPU:
				d, err := worker.OpenGPU(gpu.DefaultLoadConfig(), gpuOrdinal)
				if err != nil {
					return err
				}
				defer d.Close()
				dev = d
			default:
				return usageErr("--device: %q is not one of cpu, gpu", device)
			}
			_, spec, err := readSpec(file)
			if err != nil {
				return err
			}
			bd, err := worker.LoadBenchOn(cmd.Context(), spec, nil, dev)
			if errors.Is(err, worker.ErrDeviceUnsupported) {
				return usageErr("--device %s: %v", device, err)
			}
			if err != nil {
				return usageErr("job spec %s: %v", file, err)
			}
			if threads > 0 {
				model.SetThreads(bd.Model, threads)
			} else {
				threads = worker.WorkerThreads(&spec.Spec)
			}
			res, err := runComputeBench(bd, steps, warmup)
			if err != nil {
				return err
			}
			res.Model = spec.Metadata.Name
			res.Threads = min(threads, runtime.GOMAXPROCS(0))
			res.Device = dev.String()
			res.GFLOPs = bd.FLOPsPerRow * res.SamplesPerS / 1e9
			res.GFLOPsPerCore = res.GFLOPs / float64(max(1, res.Threads))
			if res.CPUMsPerStep > 0 {
				res.GFLOPsPerCPUs = bd.FLOPsPerRow * float64(res.samples) / float64(res.Steps) / (res.CPUMsPerStep / 1e3) / 1e9
			}
			if device == worker.DeviceCPU {
				if p, err := cpupeak.Detect(); err == nil {
					res.PeakGFLOPsPerCore, res.Peak = p.GFLOPS, p.String()
					peak := p.GFLOPS
					if m, err := cpupeak.Measure(200 * time.Millisecond); err == nil {
						res.MeasuredPeakGFLOPsPerCore, peak = m, m
						res.Peak += fmt.Sprintf("; measured %.1f GFLOP/s per CPU-second (%.2f GHz at %.0f FLOP/cycle)", m, m/p.FLOPsPerCycle, p.FLOPsPerCycle)
					}
					res.PeakFraction = res.GFLOPsPerCore / peak
					res.CPUPeakFraction = res.GFLOPsPerCPUs / peak
				}
			}
			if g.output == "json" {
				return printJSON(stdout, res)
			}
			_, err = fmt.Fprintf(stdout, "model %s  device %s  batch %d  steps %d  threads %d\nsamples/s %.1f  step p50 %.2f ms  alloc/step %.0f B  CPU/step %.2f ms\nGFLOP/s %.1f  per core %.1f  per CPU-second %.1f",
				res.Model, res.Device, res.Batch, res.Steps, res.Threads, res.SamplesPerS, res.StepMsP50, res.AllocBytesPerStep, res.CPUMsPerStep, res.GFLOPs, res.GFLOPsPerCore, res.GFLOPsPerCPUs)
			if err == nil && res.Peak != "" {
				_, err = fmt.Fprintf(stdout, "  (%.0f%% and %.0f%% of the core's peak)\npeak: %s", 100*res.PeakFraction, 100*res.CPUPeakFraction, res.Peak)
			}
			if err == nil {
				_, err = fmt.Fprintln(stdout)
			}
			return err
		},
	}
	compute.Flags().StringVar(&file, "job", "", "job spec file (YAML)")
	compute.Flags().IntVar(&steps, "steps", 20, "timed steps")
	compute.Flags().IntVar(&warmup, "warmup", 2, "untimed steps first")
	compute.Flags().IntVar(&threads, "threads", 0, "goroutines per step (0: the job's worker CPU request)")
	compute.Flags().StringVar(&device, "device", worker.DeviceCPU, "where the steps run: cpu or gpu")
	compute.Flags().IntVar(&gpuOrdinal, "gpu", 0, "which GPU with --device gpu")
	cmd.AddCommand(compute, newBenchServeCmd(g))
	return cmd
}

// runComputeBench runs warmup then steps gradient computations over consecutive
// batches of the training data (wrapping around).
func runComputeBench(bd *worker.BenchData, steps, warmup int) (benchResult, error) {
	m := bd.Model
	batch := m.BatchSize()
	params := m.InitParams(1)
	grad := make([]float32, m.NumParams())
	pos := 0
	step := func() error {
		n := min(batch, bd.N-pos)
		if _, err := m.Gradient(params, bd.X[pos*bd.Dim:(pos+n)*bd.Dim], bd.Y[pos:pos+n], n, grad); err != nil {
			return err
		}
		if pos += n; pos >= bd.N {
			pos = 0
		}
		return nil
	}
	for range warmup {
		if err := step(); err != nil {
			return benchResult{}, err
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := processCPU()
	times := make([]time.Duration, steps)
	samples := 0
	start := time.Now()
	for i := range times {
		t0 := time.Now()
		samples += min(batch, bd.N-pos)
		if err := step(); err != nil {
			return benchResult{}, err
		}
		times[i] = time.Since(t0)
	}
	total := time.Since(start)
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&after)
	slices.Sort(times)
	return benchResult{
		Batch:             batch,
		Steps:             steps,
		SamplesPerS:       float64(samples) / total.Seconds(),
		StepMsP50:         float64(times[steps/2].Nanoseconds()) / 1e6,
		AllocBytesPerStep: float64(after.TotalAlloc-before.TotalAlloc) / float64(steps),
		CPUMsPerStep:      float64(cpu.Microseconds()) / 1e3 / float64(steps),
		samples:           samples,
	}, nil
}

// processCPU is the process's user and system CPU time so far (0 if unknown).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
