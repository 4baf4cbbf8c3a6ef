package model

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// This file holds the intra-op parallelism of a model: a model splits its products and
// per-image convolution work over Threads goroutines, the caller and helpers taken from
// one process-wide pool of persistent goroutines (started on first use, never one per
// call). A helper busy elsewhere is not waited for: its share runs on the caller, so
// nested or concurrent splits (two workers in one process) cannot deadlock.

// intraOp is one model's share of the pool: how many goroutines its ops split over.
type intraOp struct {
	threads atomic.Int32 // 0: GOMAXPROCS
}

// workers returns the number of goroutines a split of n independent parts uses.
func (p *intraOp) workers(n int) int {
	t := runtime.GOMAXPROCS(0)
	if p != nil {
		if v := int(p.threads.Load()); v > 0 {
			t = min(t, v)
		}
	}
	return max(1, min(t, n))
}

// SetThreads sets how many goroutines each Gradient and Predict call of m splits its
// work over (n <= 0: GOMAXPROCS, the default; never more than GOMAXPROCS). A worker
// sets it to the cores it was given. Results do not depend on it.
func SetThreads(m Model, n int) {
	if t, ok := m.(interface{ intra() *intraOp }); ok {
		t.intra().threads.Store(int32(max(0, n)))
	}
}

// buildPar is the intraOp of the model being built; set under buildMu, it is where op
// constructors find theirs.
var buildPar *intraOp

// poolTask is one part of a split handed to a helper.
type poolTask struct {
	fn   func(part int)
	part int
	done *sync.WaitGroup
}

var pool struct {
	mu      sync.Mutex
	helpers int
	tasks   chan poolTask
}

// ensureHelpers starts helpers until there are at least n.
func ensureHelpers(n int) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.tasks == nil {
		pool.tasks = make(chan poolTask)
	}
	for ; pool.helpers < n; pool.helpers++ {
		go func(tasks <-chan poolTask) {
			for t := range tasks {
				t.fn(t.part)
				t.done.Done()
			}
		}(pool.tasks)
	}
}

var waitGroups = sync.Pool{New: func() any { return new(sync.WaitGroup) }}

// run calls fn(0), ..., fn(parts-1), concurrently on up to parts goroutines (the caller
// among them), and returns when all have returned.
func (p *intraOp) run(parts int, fn func(part int)) {
	if parts <= 1 {
		if parts == 1 {
			fn(0)
		}
		return
	}
	ensureHelpers(parts - 1)
	wg := waitGroups.Get().(*sync.WaitGroup)
	for i := 1; i < parts; i++ {
		wg.Add(1)
		select {
		case pool.tasks <- poolTask{fn: fn, part: i, done: wg}:
		default: // every helper is busy: do it here
			fn(i)
			wg.Done()
		}
	}
	fn(0)
	wg.Wait()
	waitGroups.Put(wg)
}

// forRanges splits [0, n) into up to workers(n) contiguous ranges and runs fn(part, lo,
// hi) on each, concurrently; it returns the number of ranges.
func (p *intraOp) forRanges(n int, fn func(part, lo, hi int)) int {
	w := p.workers(n)
	if w == 1 {
		fn(0, 0, n)
		return 1
	}
	p.run(w, func(i int) { fn(i, i*n/w, (i+1)*n/w) })
	return w
}
