package model

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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
	done *split
}

// split counts the parts of one run call that have not returned: the caller watches
// left while it spins and parks on wg after that.
type split struct {
	left atomic.Int32
	wg   sync.WaitGroup
}

func (s *split) add() {
	s.left.Add(1)
	s.wg.Add(1)
}

// finish marks a part returned; wg.Done comes last, so that a caller parked on wg
// returns only once nothing touches s any more.
func (s *split) finish() {
	s.left.Add(-1)
	s.wg.Done()
}

// wait returns once every part has returned: spinning for up to helperSpin (the
// parts of a split are about equal, so the last one is usually microseconds away,
// less than waking a parked goroutine costs), then parked.
func (s *split) wait() {
	if !callerSpins {
		s.wg.Wait()
		return
	}
	deadline := time.Now().Add(helperSpin)
	for spins := 0; s.left.Load() > 0; spins++ {
		if spins%64 == 63 && time.Now().After(deadline) {
			break
		}
	}
	s.wg.Wait()
}

// callerSpins tells whether the caller of a split spins for its last part before it
// parks (split.wait); benchmarks switch it off to compare.
var callerSpins = true

// A helper that finishes a part spins for helperSpin, watching pool.queue, before it
// parks on pool.tasks. A step's splits follow one another within tens to hundreds of
// microseconds, so a spinning helper takes the next one at once; handing a part to a
// parked helper costs a wake-up of its thread. Measured on the fashion CNN at 2
// threads (BENCHMARKS.md, issue #19): the step went from 9.6-12.6 ms to 8.5-8.8 ms
// (spinning 200 us: 9.0-9.9 ms; 1 ms: no better than 500 us). The cost is up to
// helperSpin of CPU after a step's last split.
const helperSpin = 500 * time.Microsecond

var pool struct {
	mu      sync.Mutex
	helpers int
	tasks   chan poolTask // parked helpers receive here

	qmu      sync.Mutex
	queue    []poolTask   // parts posted for spinning helpers (guarded by qmu)
	pending  atomic.Int32 // len(queue), read without the lock
	spinning atomic.Int32 // helpers spinning now
}

// ensureHelpers starts helpers until there are at least n.
func ensureHelpers(n int) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.tasks == nil {
		pool.tasks = make(chan poolTask)
	}
	for ; pool.helpers < n; pool.helpers++ {
		go helperLoop(pool.tasks)
	}
}

// helperLoop runs parts: those posted to pool.queue while it spins, then, parked, those
// sent on tasks.
func helperLoop(tasks <-chan poolTask) {
	for {
		pool.spinning.Add(1)
		deadline := time.Now().Add(helperSpin)
		for spins := 0; ; spins++ {
			if pool.pending.Load() > 0 {
				if t, ok := takeQueued(); ok {
					pool.spinning.Add(-1)
					t.fn(t.part)
					t.done.finish()
					pool.spinning.Add(1)
					deadline = time.Now().Add(helperSpin)
					continue
				}
			}
			if spins%64 == 63 && time.Now().After(deadline) {
				break
			}
		}
		pool.spinning.Add(-1)
		t, ok := <-tasks
		if !ok {
			return
		}
		t.fn(t.part)
		t.done.finish()
	}
}

// takeQueued removes the oldest posted part, if any.
func takeQueued() (poolTask, bool) {
	pool.qmu.Lock()
	defer pool.qmu.Unlock()
	if len(pool.queue) == 0 {
		return poolTask{}, false
	}
	t := pool.queue[0]
	n := copy(pool.queue, pool.queue[1:])
	pool.queue[n] = poolTask{} // keep no closure alive past its split
	pool.queue = pool.queue[:n]
	pool.pending.Store(int32(n))
	return t, true
}

// reclaimQueued removes the posted parts of the split done belongs to that no helper
// took, and returns them.
func reclaimQueued(done *split, into []poolTask) []poolTask {
	pool.qmu.Lock()
	defer pool.qmu.Unlock()
	kept := pool.queue[:0]
	for _, t := range pool.queue {
		if t.done == done {
			into = append(into, t)
		} else {
			kept = append(kept, t)
		}
	}
	clear(pool.queue[len(kept):])
	pool.queue = kept
	pool.pending.Store(int32(len(kept)))
	return into
}

var splits = sync.Pool{New: func() any { return new(split) }}

// run calls fn(0), ..., fn(parts-1), concurrently on up to parts goroutines (the caller
// among them), and returns when all have returned. Parts go to spinning helpers first,
// then to parked ones; a part no helper takes runs on the caller, so nested or
// concurrent splits cannot deadlock.
func (p *intraOp) run(parts int, fn func(part int)) {
	if parts <= 1 {
		if parts == 1 {
			fn(0)
		}
		return
	}
	ensureHelpers(parts - 1)
	wg := splits.Get().(*split)
	posted := 0
	for i := 1; i < parts; i++ {
		wg.add()
		t := poolTask{fn: fn, part: i, done: wg}
		if int(pool.spinning.Load()) > posted {
			pool.qmu.Lock()
			pool.queue = append(pool.queue, t)
			pool.pending.Store(int32(len(pool.queue)))
			pool.qmu.Unlock()
			posted++
			continue
		}
		select {
		case pool.tasks <- t:
		default: // every helper is busy: do it here
			fn(i)
			wg.finish()
		}
	}
	fn(0)
	if posted > 0 {
		// Parts posted for helpers that stopped spinning (or are busy with another
		// split's) before taking them run here.
		var buf [8]poolTask
		for _, t := range reclaimQueued(wg, buf[:0]) {
			t.fn(t.part)
			wg.finish()
		}
	}
	wg.wait()
	splits.Put(wg)
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
