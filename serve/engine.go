package serve

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/model"
)

// engineBuckets are the batch sizes the engine compiles graphs for, smallest first. A
// call of n rows runs on the smallest bucket of at least n rows (its padding costs at
// most 4x a tiny batch, nothing measurable against per-call overhead), and a call of
// more rows than the largest bucket in chunks of the largest. The largest bucket bounds
// a graph's buffers (a CNN's im2col matrix grows with the batch) while keeping per-run
// overhead negligible against the arithmetic of 256 rows.
var engineBuckets = []int{1, 4, 16, 64, 256}

// engine runs a model's network on the training kernels (worker/model: gorgonia graphs
// with the fused dense, convolution and LSTM-cell ops and the fast GEMM), built from the
// one model definition (modeldef) the export's architecture is. Graphs are compiled
// lazily, one per batch-size bucket per concurrent call, and pooled: construction is
// serialised process-wide (gorgonia mutates package state while building) and costs
// milliseconds, so a built graph is reused for every later call. At most slots calls
// run at once (the kernels split their work over the cores themselves); others wait.
type engine struct {
	arch   export.Architecture
	params []float32 // the flat parameter vector in the architecture's layout

	mu    sync.Mutex
	free  [][]model.Model // per bucket: idle models
	slots chan struct{}
}

// newEngine lays the weights out flat and builds one graph per bucket (milliseconds:
// under 10 ms for the example CNN, about 60 ms for the example LSTM), so that an
// architecture the kernels cannot build fails at load, and no first request of a size
// pays for a build. A graph's buffers are allocated at its first run.
func newEngine(a export.Architecture, w export.Weights) (*engine, error) {
	e := &engine{arch: a, free: make([][]model.Model, len(engineBuckets)), slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))}
	for _, t := range a.Tensors() {
		v, ok := w[t.Name]
		if !ok {
			return nil, fmt.Errorf("engine: weights lack tensor %s", t.Name)
		}
		e.params = append(e.params, v...)
	}
	if len(e.params) != a.NumParams() {
		return nil, fmt.Errorf("engine: %d weights, the architecture has %d parameters", len(e.params), a.NumParams())
	}
	for b := range engineBuckets {
		m, err := e.build(b)
		if err != nil {
			return nil, err
		}
		e.put(b, m)
	}
	return e, nil
}

func (e *engine) build(bucket int) (model.Model, error) {
	m, err := model.New(e.arch, model.Options{BatchSize: engineBuckets[bucket]})
	if err != nil {
		return nil, fmt.Errorf("engine: build the %s graph for %d rows: %w", e.arch.Kind, engineBuckets[bucket], err)
	}
	if m.NumParams() != len(e.params) || m.OutputSize() != e.arch.Outputs {
		return nil, fmt.Errorf("engine: the %s graph has %d parameters and %d outputs, the export %d and %d", e.arch.Kind, m.NumParams(), m.OutputSize(), len(e.params), e.arch.Outputs)
	}
	return m, nil
}

func (e *engine) get(bucket int) (model.Model, error) {
	e.mu.Lock()
	if f := e.free[bucket]; len(f) > 0 {
		m := f[len(f)-1]
		e.free[bucket] = f[:len(f)-1]
		e.mu.Unlock()
		return m, nil
	}
	e.mu.Unlock()
	return e.build(bucket)
}

func (e *engine) put(bucket int, m model.Model) {
	e.mu.Lock()
	e.free[bucket] = append(e.free[bucket], m)
	e.mu.Unlock()
}

// bucketFor returns the bucket that runs n rows.
func bucketFor(n int) int {
	for i, b := range engineBuckets {
		if n <= b {
			return i
		}
	}
	return len(engineBuckets) - 1
}

// predict writes Outputs values per row for the n rows of x (n*Inputs features) into
// out, as worker/model's Predict defines them.
func (e *engine) predict(x []float32, n int, out []float32) error {
	if n == 0 {
		return nil
	}
	e.slots <- struct{}{}
	defer func() { <-e.slots }()
	bucket := bucketFor(n)
	m, err := e.get(bucket)
	if err != nil {
		return err
	}
	if err := m.Predict(e.params, x, n, out); err != nil {
		// A failed run leaves the graph usable (inputs are rebound every call), but
		// keep nothing that misbehaved.
		return err
	}
	e.put(bucket, m)
	return nil
}
