package worker

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/model"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// The GPU path runs here on gpuemu's emulated device: the real kernel source compiled
// for the CPU behind fake CUDA libraries. It checks everything between the trainer and
// the C ABI; scripts/gpu-check.sh runs the same path on a real GPU.

var emuGPU struct {
	once sync.Once
	dir  string
	load gpu.LoadConfig
	err  error
}

// emulatedGPUs builds the emulated stack once per test binary.
func emulatedGPUs(t *testing.T) gpu.LoadConfig {
	t.Helper()
	if err := gpuemu.Available(); err != nil {
		t.Fatalf("the GPU path's tests need gcc and g++ (make deps installs them): %v", err)
	}
	emuGPU.once.Do(func() {
		if emuGPU.dir, emuGPU.err = os.MkdirTemp("", "cohort-worker-gpuemu-"); emuGPU.err == nil {
			emuGPU.load, emuGPU.err = gpu.BuildEmulated(emuGPU.dir)
		}
	})
	if emuGPU.err != nil {
		t.Fatalf("emulated GPU: %v", emuGPU.err)
	}
	return emuGPU.load
}

func TestMain(m *testing.M) {
	code := m.Run()
	if emuGPU.dir != "" {
		_ = os.RemoveAll(emuGPU.dir)
	}
	os.Exit(code)
}

func openEmulatedGPU(t *testing.T) Device {
	t.Helper()
	dev, err := OpenGPU(emulatedGPUs(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
	})
	return dev
}

func closeTo(got, want, abs, rel float64) bool {
	return math.Abs(got-want) <= abs+rel*math.Abs(want)
}

// realGPU opens GPU 0 of this machine; without one the subtest is skipped with the
// reason, or fails under COHORT_REQUIRE_GPU=1 (scripts/gpu-check.sh).
func realGPU(t *testing.T) Device {
	t.Helper()
	dev, err := OpenGPU(gpu.DefaultLoadConfig(), 0)
	if err != nil {
		if os.Getenv("COHORT_REQUIRE_GPU") == "1" {
			t.Fatalf("COHORT_REQUIRE_GPU=1 but no usable GPU: %v", err)
		}
		t.Skipf("no GPU on this machine: %v", err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	return dev
}

// TestGPUModelMatchesCPU checks the GPU MLP's losses, gradients and predictions against
// worker/model's CPU MLP, for every task and hidden activation, on full and partial
// batches: on the emulated GPU, and on a real one where there is one.
func TestGPUModelMatchesCPU(t *testing.T) {
	t.Run("emulated", func(t *testing.T) { gpuMatchesCPU(t, openEmulatedGPU(t)) })
	t.Run("gpu", func(t *testing.T) { gpuMatchesCPU(t, realGPU(t)) })
}

// cpuModelFor builds worker/model's CPU model for an architecture.
func cpuModelFor(t *testing.T, a export.Architecture, o model.Options) model.Model {
	t.Helper()
	m, err := model.New(a, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// gpuCase is an architecture and its dropout rate.
type gpuCase struct {
	arch    export.Architecture
	dropout float64
}

// gpuCases are the architectures the GPU path must compute exactly as the CPU does:
// MLPs for every task and activation, CNNs with and without pooling, stride and
// padding, one- and two-layer LSTMs with and without a dense layer, a univariate LSTM
// and an MLP of one hidden unit, and each kind with dropout.
func gpuCases() map[string]gpuCase {
	cases := map[string]export.Architecture{}
	for _, task := range []string{export.TaskBinary, export.TaskMulticlass, export.TaskRegression} {
		outputs := 1
		if task == export.TaskMulticlass {
			outputs = 3
		}
		for _, act := range []string{export.ActReLU, export.ActTanh, export.ActSigmoid, export.ActLeakyReLU} {
			cases["mlp/"+task+"/"+act] = export.Architecture{Kind: export.KindMLP, Task: task, Inputs: 7, Outputs: outputs, Hidden: []int{9, 5}, Activation: act}
		}
		cases["cnn-pool/"+task] = export.Architecture{Kind: export.KindCNN, Task: task, Inputs: 2 * 9 * 9, Outputs: outputs,
			Channels: 2, Height: 9, Width: 9, Activation: export.ActReLU, Pool: 2, Dense: []int{6},
			Conv: []export.Conv{{Filters: 4, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 5, Kernel: 2, Stride: 1}}}
	}
	cases["lstm-2-layers/regression"] = export.Architecture{Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 5 * 3, Outputs: 1,
		Steps: 5, Features: 3, Hidden: []int{6, 4}, Dense: []int{5}}
	cases["lstm/binary"] = export.Architecture{Kind: export.KindLSTM, Task: export.TaskBinary, Inputs: 4 * 2, Outputs: 1,
		Steps: 4, Features: 2, Hidden: []int{7}}
	// A univariate series with one hidden unit (features: [y]; the CPU graph once
	// failed to build it), and an MLP of one hidden unit.
	cases["lstm-univariate/regression"] = export.Architecture{Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 6, Outputs: 1,
		Steps: 6, Features: 1, Hidden: []int{1}}
	cases["mlp-one-unit/binary"] = export.Architecture{Kind: export.KindMLP, Task: export.TaskBinary, Inputs: 1, Outputs: 1, Hidden: []int{1}, Activation: export.ActTanh}
	cases["cnn-stride/multiclass/tanh"] = export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 1 * 8 * 7, Outputs: 4,
		Channels: 1, Height: 8, Width: 7, Activation: export.ActTanh,
		Conv: []export.Conv{{Filters: 3, Kernel: 3, Stride: 2, Padding: 1}, {Filters: 2, Kernel: 2, Stride: 1}}}
	out := map[string]gpuCase{}
	for name, a := range cases {
		out[name] = gpuCase{arch: a}
	}
	out["mlp-dropout/binary/tanh"] = gpuCase{cases["mlp/binary_classification/tanh"], 0.3}
	out["cnn-dropout/multiclass"] = gpuCase{export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 1 * 6 * 6, Outputs: 3,
		Channels: 1, Height: 6, Width: 6, Activation: export.ActReLU, Pool: 2, Dense: []int{8, 5},
		Conv: []export.Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}}}, 0.25}
	out["lstm-dropout/regression"] = gpuCase{cases["lstm-2-layers/regression"], 0.2}
	return out
}

func gpuMatchesCPU(t *testing.T, dev Device) {
	const batch = 12
	for name, c := range gpuCases() {
		t.Run(name, func(t *testing.T) {
			arch := c.arch
			task, in, outputs := arch.Task, arch.Inputs, arch.Outputs
			opts := model.Options{BatchSize: batch, Dropout: c.dropout, Seed: 9}
			cpu := cpuModelFor(t, arch, opts)
			g, err := dev.Place(cpu, arch, opts)
			if err != nil {
				t.Fatal(err)
			}
			if g.LayoutHash() != cpu.LayoutHash() || g.NumParams() != cpu.NumParams() || g.BatchSize() != batch || g.OutputSize() != outputs {
				t.Fatal("the GPU model does not keep the CPU model's definition")
			}
			r := rand.New(rand.NewPCG(5, uint64(len(name))))
			params := cpu.InitParams(3)
			for i := range params {
				params[i] += float32(0.05 * r.NormFloat64()) // biases too
			}
			x := make([]float32, 2*batch*in)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			y := make([]float32, 2*batch)
			for i := range y {
				switch task {
				case export.TaskBinary:
					y[i] = float32(r.IntN(2))
				case export.TaskMulticlass:
					y[i] = float32(r.IntN(outputs))
				default:
					y[i] = float32(r.NormFloat64())
				}
			}
			for i, n := range []int{batch, 5, 1, batch} { // 1: a last batch of one row
				if i == 3 && c.dropout > 0 { // a resumed worker's call count: same masks on both
					cpu.(interface{ SetGradientCalls(uint64) }).SetGradientCalls(41)
					g.(interface{ SetGradientCalls(uint64) }).SetGradientCalls(41)
				}
				gc, gg := make([]float32, cpu.NumParams()), make([]float32, cpu.NumParams())
				lc, err := cpu.Gradient(params, x, y, n, gc)
				if err != nil {
					t.Fatal(err)
				}
				lg, err := g.Gradient(params, x, y, n, gg)
				if err != nil {
					t.Fatal(err)
				}
				if !closeTo(lg, lc, 1e-5, 1e-4) {
					t.Errorf("n=%d: loss %v on the GPU, %v on the CPU", n, lg, lc)
				}
				for i := range gc {
					if !closeTo(float64(gg[i]), float64(gc[i]), 1e-5, 1e-3) {
						t.Fatalf("n=%d: grad[%d] = %v on the GPU, %v on the CPU", n, i, gg[i], gc[i])
					}
				}
			}
			rows := 2*batch - 3 // more than one batch, the last partial
			pc, pg := make([]float32, rows*outputs), make([]float32, rows*outputs)
			if err := cpu.Predict(params, x, rows, pc); err != nil {
				t.Fatal(err)
			}
			if err := g.Predict(params, x, rows, pg); err != nil {
				t.Fatal(err)
			}
			for i := range pc {
				if !closeTo(float64(pg[i]), float64(pc[i]), 1e-5, 1e-4) {
					t.Fatalf("predict[%d] = %v on the GPU, %v on the CPU", i, pg[i], pc[i])
				}
			}
		})
	}
}

func TestGPUModelRefusesBadInput(t *testing.T) {
	dev := openEmulatedGPU(t)
	cpu, err := model.NewMLP(model.MLPConfig{Inputs: 2, Activation: export.ActReLU, Outputs: 3, Task: export.TaskMulticlass, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	g, err := dev.Place(cpu, export.Architecture{Kind: export.KindMLP, Task: export.TaskMulticlass, Inputs: 2, Outputs: 3, Activation: export.ActReLU}, model.Options{BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	p, grad := cpu.InitParams(1), make([]float32, cpu.NumParams())
	for name, c := range map[string]struct {
		x, y []float32
		n    int
		want string
	}{
		"class out of range": {x: []float32{1, 2}, y: []float32{3}, n: 1, want: "class index 3"},
		"NaN feature":        {x: []float32{1, float32(math.NaN())}, y: []float32{0}, n: 1, want: "row 0 input 1"},
		"too many rows":      {x: make([]float32, 10), y: make([]float32, 5), n: 5, want: "outside [1, 4]"},
	} {
		if _, err := g.Gradient(p, c.x, c.y, c.n, grad); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestGPUPlaceRefusesWhatItCannotRun(t *testing.T) {
	dev := openEmulatedGPU(t)
	cpu, err := model.NewMLP(model.MLPConfig{Inputs: 2, Activation: export.ActReLU, Outputs: 1, Task: export.TaskBinary, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	mlp := export.Architecture{Kind: export.KindMLP, Task: export.TaskBinary, Inputs: 2, Outputs: 1, Activation: export.ActReLU}
	odd := mlp
	odd.Kind = "transformer"
	if _, err := dev.Place(cpu, odd, model.Options{BatchSize: 4}); !errors.Is(err, ErrDeviceUnsupported) || !strings.Contains(err.Error(), "transformer") {
		t.Errorf("an unknown kind: %v", err)
	}
	other := mlp
	other.Hidden = []int{3}
	if _, err := dev.Place(cpu, other, model.Options{BatchSize: 4}); err == nil || errors.Is(err, ErrDeviceUnsupported) {
		t.Errorf("an architecture that is not the model's: %v", err)
	}
}

func TestGPUSetHandsOutEachGPUOnce(t *testing.T) {
	set := NewGPUSet(emulatedGPUs(t), 2)
	a, err := set.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := set.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() == b.String() || !strings.HasPrefix(a.String(), "gpu 0") || !strings.HasPrefix(b.String(), "gpu 1") {
		t.Fatalf("devices %q and %q", a, b)
	}
	if _, err := set.Open(1); err == nil || !strings.Contains(err.Error(), "0 free") {
		t.Fatalf("a third task on a 2-GPU node: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil || set.Free() != 1 { // Close is idempotent
		t.Fatalf("after closing one: err %v, %d free", err, set.Free())
	}
	if err := b.Close(); err != nil || set.Free() != 2 {
		t.Fatalf("after closing both: err %v, %d free", err, set.Free())
	}
}

// TestTrainOnEmulatedGPUMatchesCPU trains the same two-worker job placed with one GPU
// per worker and without, and checks that both runs follow the same trajectory: the
// GPU path computes the function the model definition describes.
func TestTrainOnEmulatedGPUMatchesCPU(t *testing.T) {
	load := emulatedGPUs(t)
	train := func(gpus bool) (*Result, *cohortv1.Job, storage.Blob) {
		store := mustLocal(t)
		c := newTestCluster(t, store)
		if gpus {
			c.spec = bytes.Replace(c.spec, []byte("workers: {count: 2}"), []byte("workers: {count: 2, gpus: 1}"), 1)
		}
		set := NewGPUSet(load, 2)
		job := c.job("gpu-vs-cpu")
		var logs testenv.Buffer
		res, err := c.run(job, runOpts{configure: func(cfg *TrainerConfig) {
			cfg.GPUs = set
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}})
		if err != nil {
			t.Fatal(err)
		}
		if set.Free() != 2 {
			t.Fatalf("%d of 2 GPUs free after the run", set.Free())
		}
		want := 0
		if gpus {
			want = 2 // one per worker
		}
		if got := strings.Count(logs.String(), "training on the GPU"); got != want {
			t.Fatalf("%d workers trained on the GPU, want %d; logs:\n%s", got, want, logs.String())
		}
		return res, job, store
	}
	onCPU, _, cpuStore := train(false)
	onGPU, _, gpuStore := train(true)
	for _, k := range []string{"val_loss", "val_auc", "val_accuracy"} {
		c, g := onCPU.Metrics[k], onGPU.Metrics[k]
		if math.IsNaN(g) || !closeTo(g, c, 2e-4, 1e-3) {
			t.Errorf("%s: %v trained on the emulated GPU, %v on the CPU", k, g, c)
		}
	}
	pc, pg := finalState(t, cpuStore, onCPU.Checkpoint), finalState(t, gpuStore, onGPU.Checkpoint)
	if len(pc.Params) != len(pg.Params) {
		t.Fatalf("%d parameters on the CPU, %d on the GPU", len(pc.Params), len(pg.Params))
	}
	for i := range pc.Params {
		if !closeTo(float64(pg.Params[i]), float64(pc.Params[i]), 1e-3, 1e-2) {
			t.Fatalf("param %d: %v trained on the emulated GPU, %v on the CPU", i, pg.Params[i], pc.Params[i])
		}
	}
}
