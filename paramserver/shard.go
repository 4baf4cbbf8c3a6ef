package paramserver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cohort-dev/cohort/storage"
)

// Consistency modes of ShardConfig.Mode.
const (
	ModeSync    = "sync"
	ModeAsync   = "async"
	ModeBounded = "bounded"
)

// ShardConfig describes one shard of one job as placed by the coordinator.
type ShardConfig struct {
	// JobID and Shard name the shard; Shard counts from 0 in partition order.
	JobID string
	Shard int
	// Generation is the job's membership generation; every request must carry it.
	Generation uint64
	// Workers is the number of worker ranks (0..Workers-1) in this generation; the sync
	// barrier waits for all of them.
	Workers int
	// Optimizer is applied by the shard to its range.
	Optimizer OptimizerConfig
	// Mode is "sync" (the default when empty), "async" or "bounded".
	Mode string
	// Staleness is the bounded mode's limit in rounds of all workers (see the package
	// documentation); it must be non-negative and is ignored by the other modes.
	Staleness int
	// Store receives the shard's checkpoints; nil refuses Checkpoint calls.
	Store storage.Blob
}

// normalize validates c and fills in defaults.
func (c ShardConfig) normalize() (ShardConfig, error) {
	if c.Mode == "" {
		c.Mode = ModeSync
	}
	switch {
	case c.JobID == "":
		return c, fmt.Errorf("%w: empty job id", ErrInvalidConfig)
	case c.Shard < 0:
		return c, fmt.Errorf("%w: negative shard index %d", ErrInvalidConfig, c.Shard)
	case c.Workers < 1:
		return c, fmt.Errorf("%w: job %s shard %d: workers %d must be at least 1", ErrInvalidConfig, c.JobID, c.Shard, c.Workers)
	case c.Mode != ModeSync && c.Mode != ModeAsync && c.Mode != ModeBounded:
		return c, fmt.Errorf("%w: unknown consistency mode %q (want sync, async or bounded)", ErrInvalidConfig, c.Mode)
	case c.Staleness < 0:
		return c, fmt.Errorf("%w: negative staleness %d", ErrInvalidConfig, c.Staleness)
	}
	if err := c.Optimizer.Validate(); err != nil {
		return c, fmt.Errorf("job %s shard %d: %w", c.JobID, c.Shard, err)
	}
	return c, nil
}

// sameSettings reports whether a and b agree on everything but membership and store.
func sameSettings(a, b ShardConfig) bool {
	return a.Optimizer == b.Optimizer && a.Mode == b.Mode && a.Staleness == b.Staleness
}

type shardKey struct {
	job   string
	shard int
}

// snapshot is an immutable copy of a shard's values at one version, shared by the Pulls
// of that version. refs counts the Pulls streaming it plus one while it is current.
type snapshot struct {
	version int64
	values  []float32
	refs    int
}

// shard is one shard's state. All fields below mu are guarded by it; tensors are
// received and sent outside the lock.
type shard struct {
	key shardKey
	m   *metrics
	log *slog.Logger
	// onWait, when set (by tests), is called each time a call starts waiting.
	onWait func()

	mu      sync.Mutex
	cfg     ShardConfig
	removed bool
	changed chan struct{} // closed and replaced whenever version, membership or removed change

	initialised bool
	rng         Range
	total       uint64
	layoutHash  string
	params      []float32
	opt         Optimizer
	version     int64

	// sync barrier of the current version
	acc        []float32     // sum of n_r*g_r
	accPushes  int           // pushes accumulated into acc (0: acc holds garbage)
	accSamples int64         // sum of n_r
	pushed     map[int]bool  // ranks that pushed at the current version
	lastPush   map[int]int64 // async/bounded: rank -> last accepted step
	// clocks is bounded mode's rank -> the highest local step it pulled for: a worker
	// pulling for step c has finished steps 0..c-1. A rank not seen yet counts as 0.
	clocks map[int]int64
	// genBase is the version at which the current generation was installed by a
	// membership change (-1: the shard's first generation). See setMembership.
	genBase int64

	snap      *snapshot
	freeSnaps [][]float32
	freeGrads [][]float32

	// replica is the shard's part in replication (replica.go).
	replica replicaState
}

func newShard(cfg ShardConfig, m *metrics, log *slog.Logger, onWait func()) *shard {
	return &shard{
		onWait:   onWait,
		key:      shardKey{cfg.JobID, cfg.Shard},
		m:        m,
		log:      log.With("job", cfg.JobID, "shard", cfg.Shard),
		cfg:      cfg,
		changed:  make(chan struct{}),
		pushed:   make(map[int]bool),
		lastPush: make(map[int]int64),
		clocks:   make(map[int]int64),
		genBase:  -1,
	}
}

// broadcast wakes every waiter; mu must be held.
func (s *shard) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// checkRef validates a request's generation; mu must be held.
func (s *shard) checkRef(gen uint64) error {
	if s.removed {
		return fmt.Errorf("%w: job %s shard %d", ErrShardRemoved, s.key.job, s.key.shard)
	}
	if s.replica.backup {
		return fmt.Errorf("%w: job %s shard %d is a backup here", ErrNotPrimary, s.key.job, s.key.shard)
	}
	if gen != s.cfg.Generation {
		return fmt.Errorf("%w: job %s shard %d: stale generation %d (current %d)", ErrStaleGeneration, s.key.job, s.key.shard, gen, s.cfg.Generation)
	}
	return nil
}

// checkReady is checkRef plus the init check; mu must be held.
func (s *shard) checkReady(gen uint64) error {
	if err := s.checkRef(gen); err != nil {
		return err
	}
	if !s.initialised {
		return fmt.Errorf("%w: job %s shard %d is not initialised", ErrNotInitialised, s.key.job, s.key.shard)
	}
	return nil
}

// wait blocks until cond (evaluated under mu) holds, ctx ends or the shard is removed.
// It returns with mu held on success and unlocked on error.
func (s *shard) wait(ctx context.Context, gen uint64, cond func() bool) error {
	s.mu.Lock()
	for {
		if err := s.checkReady(gen); err != nil {
			s.mu.Unlock()
			return err
		}
		if cond() {
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		if s.onWait != nil {
			s.onWait()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s shard %d: %w", s.key.job, s.key.shard, ctx.Err())
		case <-ch:
		}
		s.mu.Lock()
	}
}

// remove marks the shard removed and fails everyone waiting on it.
func (s *shard) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removed {
		s.removed = true
		s.broadcast()
	}
}

// setMembership installs a newer generation (or repeats the current one with the same
// worker count). The new barrier applies at once. Ranks are renumbered by a membership
// change, so what the old ranks did is not carried over: in sync mode the gradients
// already pushed for the step in progress (the version v the shard is at) are
// discarded and the new membership pushes step v again; in async and bounded modes the
// per-rank push and pull records start afresh.
//
// With several shards a change can find one shard with step v complete (every old rank
// had pushed to it) and another still waiting for v. A push of the step just before
// the generation's first version (v-1, the step the old membership completed here) is
// then answered AlreadyExists, which clients treat as success: the workers finish v-1
// on the shards still at it, and every shard reaches v+1 the same way. The workers
// (package worker) tell the two cases apart by the shards' versions.
func (s *shard) setMembership(gen uint64, workers int, store storage.Blob) error {
	if workers < 1 {
		return fmt.Errorf("%w: workers %d must be at least 1", ErrInvalidConfig, workers)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return fmt.Errorf("%w: job %s shard %d", ErrShardRemoved, s.key.job, s.key.shard)
	}
	switch {
	case gen < s.cfg.Generation:
		return fmt.Errorf("%w: job %s shard %d: generation %d is older than %d", ErrStaleGeneration, s.key.job, s.key.shard, gen, s.cfg.Generation)
	case gen == s.cfg.Generation && workers != s.cfg.Workers:
		return fmt.Errorf("%w: job %s shard %d: generation %d already has %d workers, not %d", ErrInvalidConfig, s.key.job, s.key.shard, gen, s.cfg.Workers, workers)
	}
	if store != nil {
		s.cfg.Store = store
	}
	if gen == s.cfg.Generation {
		return nil
	}
	s.log.Info("membership changed", "generation", gen, "previous_generation", s.cfg.Generation, "workers", workers, "previous_workers", s.cfg.Workers)
	s.cfg.Generation, s.cfg.Workers = gen, workers
	s.genBase = s.version
	if s.accPushes > 0 {
		s.log.Info("gradients of the step in progress discarded: the new membership pushes it again", "step", s.version, "pushes", s.accPushes)
	}
	s.accPushes, s.accSamples = 0, 0
	clear(s.pushed)
	clear(s.lastPush)
	clear(s.clocks)
	s.broadcast()
	return nil
}

// layoutMatches reports whether an Init header agrees with the shard; a restored shard
// without a recorded total and layout hash adopts them. mu must be held.
func (s *shard) layoutMatches(rng Range, total uint64, layout string) error {
	if s.total == 0 && s.layoutHash == "" && rng == s.rng {
		s.total, s.layoutHash = total, layout
		return nil
	}
	if rng != s.rng || total != s.total || layout != s.layoutHash {
		return fmt.Errorf("%w: job %s shard %d: init with range [%d,+%d) of %d and layout %q, shard has [%d,+%d) of %d and layout %q",
			ErrLayoutMismatch, s.key.job, s.key.shard, rng.Offset, rng.Length, total, layout, s.rng.Offset, s.rng.Length, s.total, s.layoutHash)
	}
	return nil
}

// beginInit checks an Init header; needValues is false when the shard is already
// initialised (and matches), in which case version is its version.
func (s *shard) beginInit(gen uint64, rng Range, total uint64, layout string) (needValues bool, version int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkRef(gen); err != nil {
		return false, 0, err
	}
	if !s.initialised {
		return true, 0, nil
	}
	return false, s.version, s.layoutMatches(rng, total, layout)
}

// commitInit installs values as the initial values unless another Init won the race.
func (s *shard) commitInit(gen uint64, rng Range, total uint64, layout string, values []float32) (accepted bool, version int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkRef(gen); err != nil {
		return false, 0, err
	}
	if s.initialised {
		return false, s.version, s.layoutMatches(rng, total, layout)
	}
	opt, err := NewOptimizer(s.cfg.Optimizer, len(values))
	if err != nil {
		return false, 0, err
	}
	s.install(rng, total, layout, values, opt, 0)
	s.log.Info("shard initialised", "range_offset", rng.Offset, "range_length", rng.Length, "total_params", total, "layout_hash", layout)
	return true, 0, nil
}

// install sets the shard's values; mu must be held (or the shard unpublished).
func (s *shard) install(rng Range, total uint64, layout string, values []float32, opt Optimizer, version int64) {
	s.rng, s.total, s.layoutHash = rng, total, layout
	s.params, s.opt, s.version = values, opt, version
	s.acc = make([]float32, len(values))
	s.initialised = true
	s.broadcast()
}

// admitPush decides whether a push may be accepted now; mu must be held.
func (s *shard) admitPush(gen uint64, rank int, step, samples int64) error {
	if err := s.checkReady(gen); err != nil {
		return err
	}
	if rank < 0 || rank >= s.cfg.Workers {
		return fmt.Errorf("%w: job %s shard %d: worker rank %d outside [0,%d)", ErrInvalidArgument, s.key.job, s.key.shard, rank, s.cfg.Workers)
	}
	if samples < 0 {
		return fmt.Errorf("%w: negative num_samples %d", ErrInvalidArgument, samples)
	}
	if s.cfg.Mode == ModeSync {
		if s.genBase >= 0 && step < s.version && step >= s.genBase-1 {
			// Completed here since (or just before) the membership change: see
			// setMembership.
			return fmt.Errorf("%w: job %s shard %d: step %d is complete (shard at step %d)", ErrDuplicatePush, s.key.job, s.key.shard, step, s.version)
		}
		if step != s.version {
			return fmt.Errorf("%w: job %s shard %d: push for step %d, shard is at step %d", ErrWrongStep, s.key.job, s.key.shard, step, s.version)
		}
		if s.pushed[rank] {
			return fmt.Errorf("%w: job %s shard %d: rank %d already pushed step %d", ErrDuplicatePush, s.key.job, s.key.shard, rank, step)
		}
		return nil
	}
	if last, ok := s.lastPush[rank]; ok {
		if step == last {
			return fmt.Errorf("%w: job %s shard %d: rank %d already pushed step %d", ErrDuplicatePush, s.key.job, s.key.shard, rank, step)
		}
		if step < last {
			return fmt.Errorf("%w: job %s shard %d: rank %d pushed step %d after step %d", ErrWrongStep, s.key.job, s.key.shard, rank, step, last)
		}
	}
	if step > s.version {
		return fmt.Errorf("%w: job %s shard %d: push for step %d, shard is at step %d", ErrWrongStep, s.key.job, s.key.shard, step, s.version)
	}
	if s.cfg.Mode == ModeBounded {
		if limit := s.version - int64(s.cfg.Staleness)*int64(s.cfg.Workers); step < limit {
			return fmt.Errorf("%w: job %s shard %d: gradient of step %d is %w (shard at step %d, oldest accepted %d)", ErrWrongStep, s.key.job, s.key.shard, step, ErrTooStale, s.version, limit)
		}
	}
	return nil
}

// beginPush checks a push header before its gradient is received and returns a
// gradient buffer of the shard's length.
func (s *shard) beginPush(gen uint64, rank int, step, samples int64) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.admitPush(gen, rank, step, samples); err != nil {
		return nil, err
	}
	if k := len(s.freeGrads); k > 0 {
		g := s.freeGrads[k-1]
		s.freeGrads = s.freeGrads[:k-1]
		return g, nil
	}
	return make([]float32, s.rng.Length), nil
}

// releaseGrad returns a gradient buffer from beginPush.
func (s *shard) releaseGrad(g []float32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(len(g)) == s.rng.Length && len(s.freeGrads) < max(s.cfg.Workers, 2) {
		s.freeGrads = append(s.freeGrads, g)
	}
}

// commitPush accepts a received gradient: sync mode accumulates it and applies the
// step when the barrier is complete; async and bounded apply it at once.
func (s *shard) commitPush(gen uint64, rank int, step, samples int64, grad []float32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.admitPush(gen, rank, step, samples); err != nil {
		return 0, err
	}
	if s.cfg.Mode != ModeSync {
		s.lastPush[rank] = step
		if samples > 0 {
			s.applyTimed(grad)
		}
		s.advance()
		return s.version, nil
	}
	if s.accumulate(rank, samples, grad) {
		s.completeSyncStep()
	}
	return s.version, nil
}

// accumulate adds rank's sync-mode push to the barrier and reports whether the barrier
// is complete; mu must be held.
func (s *shard) accumulate(rank int, samples int64, grad []float32) bool {
	w := float32(samples)
	acc := s.acc[:len(grad)]
	if s.accPushes == 0 {
		for i, g := range grad {
			acc[i] = w * g
		}
	} else {
		for i, g := range grad {
			acc[i] += w * g
		}
	}
	s.accPushes++
	s.accSamples += samples
	s.pushed[rank] = true
	return s.barrierComplete()
}

// barrierComplete reports whether every rank of the current membership pushed.
func (s *shard) barrierComplete() bool {
	for r := 0; r < s.cfg.Workers; r++ {
		if !s.pushed[r] {
			return false
		}
	}
	return true
}

// completeSyncStep applies the weighted mean gradient; mu must be held.
func (s *shard) completeSyncStep() {
	if mean, n := s.meanGradient(); n > 0 {
		s.applyTimed(mean)
	}
	s.accPushes, s.accSamples = 0, 0
	clear(s.pushed)
	s.advance()
}

// meanGradient turns the barrier's sum into the sample-weighted mean gradient, in
// place, and returns it with the samples it averages (0: no optimizer step, and acc
// untouched); mu must be held.
func (s *shard) meanGradient() ([]float32, int64) {
	if s.accSamples > 0 {
		scale := float32(1 / float64(s.accSamples))
		for i := range s.acc {
			s.acc[i] *= scale
		}
	}
	return s.acc, s.accSamples
}

func (s *shard) applyTimed(grad []float32) {
	start := time.Now()
	s.opt.Apply(s.params, grad)
	s.m.applySeconds.WithLabelValues(s.opt.Name()).Observe(time.Since(start).Seconds())
}

// advance moves to the next version and wakes waiters; mu must be held.
func (s *shard) advance() {
	s.version++
	s.m.steps.WithLabelValues(s.cfg.Mode).Inc()
	s.broadcast()
}

// acquireSnapshot waits until the shard may serve rank's pull for minStep and returns a
// snapshot of the current version; release it with releaseSnapshot. In sync and async
// mode it waits for the version to reach minStep. In bounded mode minStep is the
// worker's own step (its clock): the pull waits until every other rank has pulled for
// at least minStep-Staleness, so no worker runs more than Staleness steps ahead of the
// slowest (stale synchronous parallel).
func (s *shard) acquireSnapshot(ctx context.Context, gen uint64, rank int, minStep int64) (*snapshot, error) {
	start := time.Now()
	ready := func() bool { return s.version >= minStep }
	if s.cfg.Mode == ModeBounded {
		s.mu.Lock()
		if rank >= 0 && rank < s.cfg.Workers && minStep > s.clocks[rank] {
			s.clocks[rank] = minStep
			s.broadcast()
		}
		s.mu.Unlock()
		ready = func() bool { return s.boundedReady(rank, minStep) }
	}
	if err := s.wait(ctx, gen, ready); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	s.m.pullWaitSeconds.Observe(time.Since(start).Seconds())
	if s.snap == nil || s.snap.version != s.version {
		if s.snap != nil {
			s.unref(s.snap)
		}
		var buf []float32
		if k := len(s.freeSnaps); k > 0 {
			buf = s.freeSnaps[k-1]
			s.freeSnaps = s.freeSnaps[:k-1]
		} else {
			buf = make([]float32, len(s.params))
		}
		copy(buf, s.params)
		s.snap = &snapshot{version: s.version, values: buf, refs: 1}
	}
	s.snap.refs++
	return s.snap, nil
}

// boundedReady reports whether every rank but rank has pulled for at least
// step-Staleness; mu must be held.
func (s *shard) boundedReady(rank int, step int64) bool {
	floor := step - int64(s.cfg.Staleness)
	for r := 0; r < s.cfg.Workers; r++ {
		if r != rank && s.clocks[r] < floor {
			return false
		}
	}
	return true
}

// releaseSnapshot drops a reference taken by acquireSnapshot.
func (s *shard) releaseSnapshot(sn *snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unref(sn)
}

func (s *shard) unref(sn *snapshot) {
	sn.refs--
	if sn.refs == 0 && len(sn.values) == len(s.params) && len(s.freeSnaps) < 2 {
		s.freeSnaps = append(s.freeSnaps, sn.values)
	}
}

// encodeCheckpoint waits for the version to reach step and encodes the shard's values
// and optimizer state at exactly that version (sync mode) or at the version it reached
// (async and bounded modes, whose version counts every rank's pushes), and returns the
// version written.
func (s *shard) encodeCheckpoint(ctx context.Context, gen uint64, step int64) ([]byte, storage.Blob, int64, error) {
	if err := s.wait(ctx, gen, func() bool { return s.version >= step }); err != nil {
		return nil, nil, 0, err
	}
	defer s.mu.Unlock()
	if s.version > step && s.cfg.Mode == ModeSync {
		return nil, nil, 0, fmt.Errorf("%w: job %s shard %d: checkpoint of step %d requested, shard is already at step %d", ErrWrongStep, s.key.job, s.key.shard, step, s.version)
	}
	if s.cfg.Store == nil {
		return nil, nil, 0, fmt.Errorf("%w: job %s shard %d", ErrNoStore, s.key.job, s.key.shard)
	}
	data, err := encodeShardCheckpoint(&ShardCheckpoint{
		JobID: s.key.job, Shard: s.key.shard, Step: s.version, Range: s.rng,
		TotalParams: s.total, LayoutHash: s.layoutHash,
		Optimizer: s.opt.Name(), OptimizerStep: s.opt.Step(),
		Params: s.params, State: s.opt.State(),
	})
	return data, s.cfg.Store, s.version, err
}
