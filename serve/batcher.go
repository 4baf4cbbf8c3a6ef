package serve

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// errQueueFull is returned by batcher.submit when the queue holds QueueSize requests.
var errQueueFull = errors.New("serve: the batching queue is full")

// batchItem is one request's featurized rows waiting for a batch.
type batchItem struct {
	ctx  context.Context
	x    []float32
	n    int
	out  []float32  // n*Outputs values, written by the executor
	done chan error // buffered: the executor never blocks on a gone client
	t0   time.Time  // enqueue time
}

// batcher merges small requests into server-side batches (dynamic batching, as Triton's
// dynamic_batching and KServe's batcher do). A request's rows are featurized and
// checked on the request's own goroutine, so a bad row fails only its request; the
// executors run the network on the concatenated rows and hand each request its own
// slice of the outputs.
//
// An executor takes the first queued request, then every request already queued, up
// to maxRows rows. While requests that have arrived are still being decoded (they
// will join the queue in microseconds), it waits for them, at most window after it took
// the first request, and it yields the processor once so that handlers already
// runnable can queue theirs; a batch whose requests are all queued runs at once, so a
// lone client pays no window. A window of 0 takes only what is queued.
type batcher struct {
	model   *Model
	queue   chan *batchItem
	window  time.Duration
	maxRows int
	arrived atomic.Int64 // requests admitted to the batcher but not yet queued
	stop    chan struct{}
	wg      sync.WaitGroup

	depth    prometheus.Gauge
	size     prometheus.Histogram
	rejected prometheus.Counter
	waited   prometheus.Histogram
}

func newBatcher(m *Model, window time.Duration, maxRows, queue, executors int) *batcher {
	b := &batcher{
		model: m, queue: make(chan *batchItem, queue), window: window, maxRows: maxRows, stop: make(chan struct{}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cohort_serve_queue_depth", Help: "Inference requests waiting in the batching queue.",
		}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cohort_serve_batch_size_rows", Help: "Rows per server-side batch run by the network.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_serve_rejected_requests_total", Help: "Inference requests answered 429 because the batching queue was full.",
		}),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cohort_serve_queue_wait_seconds", Help: "Time a batched request waited in the queue before its batch ran.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 9),
		}),
	}
	if executors <= 0 {
		executors = runtime.GOMAXPROCS(0)
	}
	for range executors {
		b.wg.Add(1)
		go b.run()
	}
	return b
}

func (b *batcher) collectors() []prometheus.Collector {
	return []prometheus.Collector{b.depth, b.size, b.rejected, b.waited}
}

// close stops the executors after the queued requests are answered.
func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}

// admit announces a request that will be submitted (or dropped) soon; every admit is
// matched by one submit or one drop.
func (b *batcher) admit() { b.arrived.Add(1) }

// drop withdraws an admitted request that will not be submitted.
func (b *batcher) drop() { b.arrived.Add(-1) }

// submit queues n rows of features and waits for their outputs. It returns
// errQueueFull at once when the queue is full.
func (b *batcher) submit(ctx context.Context, x []float32, n int) ([]float32, error) {
	it := &batchItem{x: x, n: n, out: make([]float32, n*b.model.arch.Outputs), done: make(chan error, 1), t0: time.Now(), ctx: ctx}
	select {
	case b.queue <- it:
		b.arrived.Add(-1)
		b.depth.Inc()
	default:
		b.arrived.Add(-1)
		b.rejected.Inc()
		return nil, errQueueFull
	}
	select {
	case err := <-it.done:
		return it.out, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run is one executor.
func (b *batcher) run() {
	defer b.wg.Done()
	var carry *batchItem
	var timer *time.Timer
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.queue:
				b.depth.Dec()
			case <-b.stop:
				for { // answer what is still queued, one by one
					select {
					case it := <-b.queue:
						b.depth.Dec()
						b.execute([]*batchItem{it})
					default:
						return
					}
				}
			}
		}
		batch, rows := []*batchItem{first}, first.n
		var deadline <-chan time.Time
		yielded := false
		// add takes a queued request into the batch, or carries it to the next batch
		// (false) when it would overflow this one.
		add := func(it *batchItem) bool {
			b.depth.Dec()
			if rows+it.n > b.maxRows {
				carry = it
				return false
			}
			batch, rows = append(batch, it), rows+it.n
			return true
		}
	collect:
		for rows < b.maxRows {
			select {
			case it := <-b.queue:
				if !add(it) {
					break collect
				}
				yielded = false
				continue
			default:
			}
			if b.window <= 0 || b.arrived.Load() <= 0 {
				// Requests whose handlers are runnable but have not run yet (on few
				// cores, all of them while this goroutine runs) are not counted in
				// arrived: yield once to let them reach the queue, and again as long
				// as that brings some.
				if b.window > 0 && !yielded {
					yielded = true
					runtime.Gosched()
					continue
				}
				break
			}
			if deadline == nil {
				if timer == nil {
					timer = time.NewTimer(b.window)
				} else {
					timer.Reset(b.window)
				}
				deadline = timer.C
			}
			select {
			case it := <-b.queue:
				if !add(it) {
					break collect
				}
			case <-deadline:
				deadline = nil
				break collect
			}
		}
		if deadline != nil {
			timer.Stop() // Go 1.23 timers: no stale value to drain after Stop
		}
		b.execute(batch)
	}
}

// execute runs one batch and answers its requests. If the batch fails as a whole,
// each request is run on its own, so that one request's failure is its own.
func (b *batcher) execute(batch []*batchItem) {
	now := time.Now()
	live := batch[:0:0]
	for _, it := range batch {
		if it.ctx.Err() != nil { // the client is gone: skip its rows
			it.done <- it.ctx.Err()
			continue
		}
		b.waited.Observe(now.Sub(it.t0).Seconds())
		live = append(live, it)
	}
	batch, rows := live, 0
	for _, it := range batch {
		rows += it.n
	}
	if len(batch) == 0 {
		return
	}
	b.size.Observe(float64(rows))
	if len(batch) == 1 {
		it := batch[0]
		it.done <- b.model.Predict(it.x, it.n, it.out)
		return
	}
	in, k := b.model.arch.Inputs, b.model.arch.Outputs
	x := make([]float32, 0, rows*in)
	for _, it := range batch {
		x = append(x, it.x...)
	}
	out := make([]float32, rows*k)
	if err := b.model.Predict(x, rows, out); err != nil {
		for _, it := range batch {
			it.done <- b.model.Predict(it.x, it.n, it.out)
		}
		return
	}
	off := 0
	for _, it := range batch {
		copy(it.out, out[off*k:(off+it.n)*k])
		off += it.n
		it.done <- nil
	}
}
