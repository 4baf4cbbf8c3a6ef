package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/model"
)

// This file is where a worker computes. A job's model is defined once, by the model
// worker/model builds on the CPU (its layout, initialisation and layout hash); a Device
// places that model: the CPU runs it as built, a GPU runs the same function with its
// parameters and activations on the device (internal/gpu). The parameter servers,
// checkpoints and exports see the same flat parameter vector either way.

// ErrDeviceUnsupported is wrapped by Device.Place when the device cannot run the model;
// the worker then trains on the CPU and says why.
var ErrDeviceUnsupported = errors.New("the device cannot run this model")

// Device runs a job's model.
type Device interface {
	// Kind is "cpu" or "gpu".
	Kind() string
	// String names the device for logs and reports, e.g. "gpu 0 (NVIDIA H100 80GB HBM3)".
	String() string
	// Place returns the model to train with: cpu itself, or a model that computes the
	// same function on this device with the same layout. arch describes cpu, and o
	// holds the options cpu was built with (batch size, dropout and its seed). A device
	// that cannot run the model returns an error wrapping ErrDeviceUnsupported.
	Place(cpu model.Model, arch export.Architecture, o model.Options) (model.Model, error)
	// Close releases the device (and its GPUs back to their GPUSet).
	Close() error
}

// Device kinds.
const (
	DeviceCPU = "cpu"
	DeviceGPU = "gpu"
)

// CPU is the device every worker has.
func CPU() Device { return cpuDevice{} }

type cpuDevice struct{}

func (cpuDevice) Kind() string   { return DeviceCPU }
func (cpuDevice) String() string { return DeviceCPU }
func (cpuDevice) Close() error   { return nil }
func (cpuDevice) Place(cpu model.Model, _ export.Architecture, _ model.Options) (model.Model, error) {
	return cpu, nil
}

// GPUSet hands a node's GPUs to its training tasks, one task per GPU at a time. The
// coordinator places no more GPU tasks on a node than it offers GPUs, so a task that
// finds none free means the node's GPUs are held by something else: it fails rather
// than share one.
type GPUSet struct {
	load gpu.LoadConfig
	mu   sync.Mutex
	free []int // ordinals, ascending
}

// NewGPUSet offers GPUs 0..count-1, opened through load.
func NewGPUSet(load gpu.LoadConfig, count int) *GPUSet {
	s := &GPUSet{load: load}
	for i := range max(count, 0) {
		s.free = append(s.free, i)
	}
	return s
}

// Free is the number of GPUs not held by a task.
func (s *GPUSet) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.free)
}

// Open takes n GPUs (n >= 1) for one task and opens the first: a worker computes on one
// GPU (data parallelism is across workers); further GPUs it was given stay reserved to
// it. Close returns them.
func (s *GPUSet) Open(n int) (Device, error) {
	if n < 1 {
		return nil, fmt.Errorf("worker: open %d GPUs", n)
	}
	s.mu.Lock()
	if len(s.free) < n {
		free := len(s.free)
		s.mu.Unlock()
		return nil, fmt.Errorf("worker: the task was placed with %d GPUs but this node has %d free", n, free)
	}
	held := slices.Clone(s.free[:n])
	s.free = s.free[n:]
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		s.free = append(s.free, held...)
		slices.Sort(s.free)
		s.mu.Unlock()
	}
	d, err := gpu.Open(gpu.Config{Load: s.load, Ordinal: held[0], Logger: slog.Default()})
	if err != nil {
		release()
		return nil, fmt.Errorf("worker: open GPU %d: %w", held[0], err)
	}
	return &gpuDevice{d: d, release: release}, nil
}

// OpenGPU opens GPU ordinal through load, outside any GPUSet (`cohort bench compute
// --device gpu`).
func OpenGPU(load gpu.LoadConfig, ordinal int) (Device, error) {
	d, err := gpu.Open(gpu.Config{Load: load, Ordinal: ordinal, Logger: slog.Default()})
	if err != nil {
		return nil, fmt.Errorf("worker: open GPU %d: %w", ordinal, err)
	}
	return &gpuDevice{d: d, release: func() {}}, nil
}

type gpuDevice struct {
	d       *gpu.Device
	release func()
	once    sync.Once
	models  []*gpuModel
}

func (g *gpuDevice) Kind() string { return DeviceGPU }
func (g *gpuDevice) String() string {
	p := g.d.Props()
	return fmt.Sprintf("gpu %d (%s)", p.Ordinal, p.Name)
}

func (g *gpuDevice) Close() error {
	var err error
	g.once.Do(func() {
		var errs []error
		for _, m := range g.models {
			errs = append(errs, m.net.Close())
		}
		errs = append(errs, g.d.Close())
		g.release()
		err = errors.Join(errs...)
	})
	return err
}

// gpuActivation maps a hidden activation to the GPU's.
var gpuActivation = map[string]gpu.Activation{
	export.ActReLU: gpu.ReLU, export.ActTanh: gpu.Tanh, export.ActSigmoid: gpu.Sigmoid, export.ActLeakyReLU: gpu.LeakyReLU,
}

// Place runs MLPs, CNNs and LSTMs on the GPU, with their dropout.
func (g *gpuDevice) Place(cpu model.Model, arch export.Architecture, o model.Options) (model.Model, error) {
	if arch.Kind != export.KindMLP && arch.Kind != export.KindCNN && arch.Kind != export.KindLSTM {
		return nil, fmt.Errorf("%w: the GPU path has no %q models", ErrDeviceUnsupported, arch.Kind)
	}
	act, ok := gpuActivation[arch.Activation]
	if !ok && arch.Kind != export.KindLSTM { // an LSTM's dense layers are always ReLU
		return nil, fmt.Errorf("%w: activation %q", ErrDeviceUnsupported, arch.Activation)
	}
	if got, want := arch.LayoutHash(), cpu.LayoutHash(); got != want {
		return nil, fmt.Errorf("worker: gpu: the architecture's layout hash %s differs from the model's %s", got, want)
	}
	var net gpu.Net
	var err error
	switch arch.Kind {
	case export.KindMLP:
		net, err = gpu.NewMLP(g.d, append(append([]int{arch.Inputs}, arch.Hidden...), arch.Outputs), act, cpu.BatchSize())
	case export.KindCNN:
		cfg := gpu.CNNConfig{Channels: arch.Channels, Height: arch.Height, Width: arch.Width, Pool: arch.Pool,
			Dense: arch.Dense, Outputs: arch.Outputs, Act: act, MaxBatch: cpu.BatchSize()}
		for _, c := range arch.Conv {
			cfg.Conv = append(cfg.Conv, gpu.ConvLayer{Filters: c.Filters, Kernel: c.Kernel, Stride: c.Stride, Padding: c.Padding})
		}
		net, err = gpu.NewCNN(g.d, cfg)
	case export.KindLSTM:
		net, err = gpu.NewLSTM(g.d, gpu.LSTMConfig{Steps: arch.Steps, Features: arch.Features, Hidden: arch.Hidden,
			Dense: arch.Dense, Outputs: arch.Outputs, MaxBatch: cpu.BatchSize()})
	}
	if err != nil {
		return nil, fmt.Errorf("worker: gpu: %w", err)
	}
	m := &gpuModel{
		def: cpu, net: net, task: arch.Task, in: arch.Inputs, k: arch.Outputs,
		logits: make([]float32, cpu.BatchSize()*arch.Outputs), dlogits: make([]float32, cpu.BatchSize()*arch.Outputs),
	}
	g.models = append(g.models, m)
	if o.Dropout > 0 {
		if err := net.EnableDropout(); err != nil {
			return nil, fmt.Errorf("worker: gpu: %w", err)
		}
		m.rate, m.seed, m.drops = o.Dropout, o.Seed, model.NewDropoutStream()
		for _, w := range model.DropoutWidths(arch) {
			m.masks = append(m.masks, make([]float32, cpu.BatchSize()*w))
		}
	}
	return m, nil
}

// gpuModel is a model whose forward and backward passes run on a GPU. Its definition
// (layout, initialisation, hash, batch size) is the CPU model's; the parameters are
// uploaded at each call (they come from the parameter servers each step), the logits
// come back to the host for the task's loss (the same losses as worker/model's, in
// float64), and their gradient goes down for the backward pass.
type gpuModel struct {
	def             model.Model
	net             gpu.Net
	task            string
	in, k           int
	logits, dlogits []float32

	// Dropout: the masks of the k-th Gradient call come from the same stream as the
	// CPU model's (model.DropoutStream), so both train the same.
	rate  float64
	seed  int64
	calls uint64
	drops *model.DropoutStream
	masks [][]float32
}

// SetGradientCalls makes the next Gradient call the k-th (a resumed worker continues the
// uninterrupted run's dropout masks).
func (m *gpuModel) SetGradientCalls(k uint64) { m.calls = k }

var _ model.Model = (*gpuModel)(nil)

func (m *gpuModel) Layout() []model.TensorInfo { return m.def.Layout() }
func (m *gpuModel) NumParams() int             { return m.def.NumParams() }
func (m *gpuModel) LayoutHash() string         { return m.def.LayoutHash() }
func (m *gpuModel) InitParams(seed int64) []float32 {
	return m.def.InitParams(seed)
}
func (m *gpuModel) BatchSize() int  { return m.def.BatchSize() }
func (m *gpuModel) OutputSize() int { return m.k }

// Gradient computes the mean loss over n rows and its gradient, as the CPU model's
// Gradient (the losses are worker/model's: binary cross-entropy on the logit in its
// softplus form, the negative log-likelihood of the softmax, the squared error).
func (m *gpuModel) Gradient(params, x, y []float32, n int, grad []float32) (float64, error) {
	b, p := m.BatchSize(), m.NumParams()
	switch {
	case len(params) != p:
		return 0, fmt.Errorf("model: params has %d values, the layout needs %d", len(params), p)
	case len(grad) != p:
		return 0, fmt.Errorf("model: grad has %d values, the layout needs %d", len(grad), p)
	case n < 1 || n > b:
		return 0, fmt.Errorf("model: gradient row count %d outside [1, %d] (the batch size)", n, b)
	case len(x) < n*m.in:
		return 0, fmt.Errorf("model: x has %d values, %d rows of %d inputs need %d", len(x), n, m.in, n*m.in)
	case len(y) < n:
		return 0, fmt.Errorf("model: y has %d values for %d rows", len(y), n)
	}
	if err := checkFinite(x[:n*m.in], m.in); err != nil {
		return 0, err
	}
	if err := m.net.SetParamsFlat(params); err != nil {
		return 0, fmt.Errorf("model: gpu: %w", err)
	}
	z, dz := m.logits[:n*m.k], m.dlogits[:n*m.k]
	if m.drops != nil {
		m.drops.Fill(m.masks, m.seed, m.calls, m.rate)
		if err := m.net.SetMasks(m.masks, n); err != nil {
			return 0, fmt.Errorf("model: gpu: %w", err)
		}
	}
	m.calls++
	if err := m.net.Forward(x[:n*m.in], n, z); err != nil {
		return 0, fmt.Errorf("model: gpu: %w", err)
	}
	loss, err := taskLoss(m.task, m.k, z, y[:n], dz)
	if err != nil {
		return 0, err
	}
	if err := m.net.Backward(dz, n); err != nil {
		return 0, fmt.Errorf("model: gpu: %w", err)
	}
	if err := m.net.GradsInto(grad); err != nil {
		return 0, fmt.Errorf("model: gpu: %w", err)
	}
	return loss, nil
}

// Predict writes the task's outputs for n rows: the positive-class probability, the
// class probabilities, or the prediction.
func (m *gpuModel) Predict(params, x []float32, n int, out []float32) error {
	switch {
	case len(params) != m.NumParams():
		return fmt.Errorf("model: params has %d values, the layout needs %d", len(params), m.NumParams())
	case n < 0:
		return fmt.Errorf("model: predict row count %d is negative", n)
	case len(x) < n*m.in:
		return fmt.Errorf("model: x has %d values, %d rows of %d inputs need %d", len(x), n, m.in, n*m.in)
	case len(out) < n*m.k:
		return fmt.Errorf("model: out has %d values, %d rows of %d outputs need %d", len(out), n, m.k, n*m.k)
	}
	if n == 0 {
		return nil
	}
	if err := checkFinite(x[:n*m.in], m.in); err != nil {
		return err
	}
	if err := m.net.SetParamsFlat(params); err != nil {
		return fmt.Errorf("model: gpu: %w", err)
	}
	b := m.BatchSize()
	for lo := 0; lo < n; lo += b {
		rows := min(b, n-lo)
		z := out[lo*m.k : (lo+rows)*m.k]
		if err := m.net.Forward(x[lo*m.in:(lo+rows)*m.in], rows, z); err != nil {
			return fmt.Errorf("model: gpu: predict rows %d..%d: %w", lo, lo+rows-1, err)
		}
		taskOutputs(m.task, m.k, z)
	}
	return nil
}

// checkFinite refuses NaN and infinite features, naming the first one's row and column,
// as the CPU models do.
func checkFinite(x []float32, cols int) error {
	for i, v := range x {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("model: x row %d input %d: value is not finite (%v)", i/cols, i%cols, v)
		}
	}
	return nil
}

// taskLoss computes the mean loss of the task over the rows of logits z (n×k) against
// labels y, and writes its gradient with respect to z into dz: worker/model's losses
// (lossop.go), in float64.
func taskLoss(task string, k int, z, y, dz []float32) (float64, error) {
	n := len(y)
	inv := 1 / float64(n)
	var sum float64
	for r, label := range y {
		l := float64(label)
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return 0, fmt.Errorf("model: y[%d]: value is not finite (%v)", r, label)
		}
		row, drow := z[r*k:(r+1)*k], dz[r*k:(r+1)*k]
		switch task {
		case jobs.TaskMulticlass:
			if l != math.Trunc(l) || l < 0 || int(l) >= k {
				return 0, fmt.Errorf("model: y[%d]: class index %v is not an integer in [0, %d)", r, label, k)
			}
			c := int(l)
			mx := float64(row[0])
			for _, v := range row[1:] {
				mx = max(mx, float64(v))
			}
			var se float64
			for _, v := range row {
				se += math.Exp(float64(v) - mx)
			}
			lse := mx + math.Log(se)
			sum += lse - float64(row[c])
			for j, v := range row {
				g := math.Exp(float64(v) - lse)
				if j == c {
					g--
				}
				drow[j] = float32(g * inv)
			}
		case jobs.TaskBinary:
			if l < 0 || l > 1 {
				return 0, fmt.Errorf("model: y[%d]: binary label %v outside [0, 1]", r, label)
			}
			v := float64(row[0])
			sum += max(v, 0) + math.Log1p(math.Exp(-math.Abs(v))) - l*v
			drow[0] = float32((1/(1+math.Exp(-v)) - l) * inv)
		default: // regression
			d := float64(row[0]) - l
			sum += d * d
			drow[0] = float32(2 * d * inv)
		}
	}
	loss := sum * inv
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, fmt.Errorf("model: loss is %v (training diverged, or parameters are not finite)", loss)
	}
	return loss, nil
}

// taskOutputs turns rows of logits z (…×k) into the task's outputs in place: the
// sigmoid (binary), the softmax (multiclass) or z itself (regression).
func taskOutputs(task string, k int, z []float32) {
	for r := 0; r+k <= len(z); r += k {
		row := z[r : r+k]
		switch task {
		case jobs.TaskBinary:
			row[0] = float32(1 / (1 + math.Exp(-float64(row[0]))))
		case jobs.TaskMulticlass:
			mx := float64(row[0])
			for _, v := range row[1:] {
				mx = max(mx, float64(v))
			}
			var se float64
			for j, v := range row {
				e := math.Exp(float64(v) - mx)
				row[j] = float32(e)
				se += e
			}
			for j := range row {
				row[j] = float32(float64(row[j]) / se)
			}
		}
	}
}

// placeModel picks the task's device: the CPU, or one of the node's GPUs when the task
// was placed with GPUs. A GPU that cannot be opened fails the task (it was placed for
// it); a model the GPU path cannot run trains on the CPU, with a warning that says why.
func (t *Trainer) placeModel(s *jobs.Spec, ds *datasets, cpu model.Model) (Device, model.Model, error) {
	want := s.Resources.Workers.GPUs
	if want == 0 {
		return CPU(), cpu, nil
	}
	if t.cfg.GPUs == nil {
		t.log.Warn("the task was placed with GPUs but this worker was given none; training on the CPU", "gpus", want)
		return CPU(), cpu, nil
	}
	dev, err := t.cfg.GPUs.Open(want)
	if err != nil {
		return nil, nil, err
	}
	m, err := placeOn(dev, s, ds, cpu, t.rank)
	if errors.Is(err, ErrDeviceUnsupported) {
		t.log.Warn("training on the CPU: "+err.Error(), "device", dev.String())
		return CPU(), cpu, dev.Close()
	}
	if err != nil {
		_ = dev.Close()
		return nil, nil, err
	}
	t.log.Info("training on the GPU", "device", dev.String())
	return dev, m, nil
}

// placeOn places the spec's model, built on the CPU as cpu for rank, on dev.
func placeOn(dev Device, s *jobs.Spec, ds *datasets, cpu model.Model, rank int) (model.Model, error) {
	arch, err := architectureOf(s, ds)
	if err != nil {
		return nil, err
	}
	return dev.Place(cpu, arch, modelOptions(s, rank))
}

// LoadBenchOn is LoadBench with the model placed on dev; a model the device cannot run
// is an error (wrapping ErrDeviceUnsupported) rather than a silent CPU run.
func LoadBenchOn(ctx context.Context, spec *jobs.TrainingJob, s3 *storage.S3Config, dev Device) (*BenchData, error) {
	ds, err := dataSource{ctx: ctx, s3: s3, roots: []string{string(filepath.Separator)}}.loadData(&spec.Spec)
	if err != nil {
		return nil, err
	}
	cpu, err := buildModel(&spec.Spec, ds, 0)
	if err != nil {
		return nil, err
	}
	model.SetThreads(cpu, WorkerThreads(&spec.Spec))
	m, err := placeOn(dev, &spec.Spec, ds, cpu, 0)
	if err != nil {
		return nil, err
	}
	t := ds.train
	bd := &BenchData{Model: m, X: t.X, Y: t.Y, N: t.N, Dim: t.Dim}
	if arch, err := architectureOf(&spec.Spec, ds); err == nil {
		bd.FLOPsPerRow = arch.TrainFLOPs()
	}
	return bd, nil
}
