package tasklog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cohort-dev/cohort/storage"
)

// Defaults of Config.
const (
	DefaultFlushInterval    = 2 * time.Second
	DefaultSegmentBytes     = 1 << 20
	DefaultMaxBufferedBytes = 8 << 20
	DefaultFlushTimeout     = 10 * time.Second
)

// Config configures task log writers.
type Config struct {
	// Store receives the segments (required).
	Store storage.Blob
	// FlushInterval is how often buffered lines are written as a segment (0:
	// DefaultFlushInterval).
	FlushInterval time.Duration
	// SegmentBytes writes a segment as soon as this much is buffered (0:
	// DefaultSegmentBytes; at most MaxSegmentBytes).
	SegmentBytes int
	// MaxBufferedBytes bounds the lines kept while storage cannot be written; beyond
	// it the oldest are dropped, and the next segment says how much was (0:
	// DefaultMaxBufferedBytes).
	MaxBufferedBytes int
	// FlushTimeout bounds one segment write (0: DefaultFlushTimeout).
	FlushTimeout time.Duration
	// Level is the lowest level a task logger writes to storage (nil: slog.LevelInfo).
	Level slog.Leveler
	// Logger receives the writers' own problems (a segment that cannot be written);
	// nil means slog.Default(). It must not write to a task log.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.SegmentBytes <= 0 || c.SegmentBytes > MaxSegmentBytes {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = DefaultFlushTimeout
	}
	if c.Level == nil {
		c.Level = slog.LevelInfo
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Writer buffers one task's log lines and writes them to storage as segments: every
// FlushInterval, whenever SegmentBytes are buffered, and at Close (the final segment).
// It is an io.Writer for one slog handler: each Write is one or more whole lines.
type Writer struct {
	cfg   Config
	job   string
	task  string
	gen   uint64
	log   *slog.Logger
	close func() // run once by Close, before the final segment (nil: nothing)

	mu      sync.Mutex
	buf     []byte
	dropped int64
	closed  bool
	failing bool // the last write failed (logged once until one succeeds)

	flushMu   sync.Mutex // one segment write at a time, in seq order
	seq       uint64
	seqListed bool // seq starts after the segments of the task and generation already stored

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// Open starts a writer of task (see TaskName) of job jobID in generation gen. Close it
// when the task ends.
func (c Config) Open(jobID, task string, gen uint64) (*Writer, error) {
	if c.Store == nil {
		return nil, errors.New("tasklog: Config.Store is required")
	}
	if jobID == "" || !ValidTask(task) || gen > maxGeneration {
		return nil, fmt.Errorf("tasklog: job %q task %q generation %d: not a task log", jobID, task, gen)
	}
	c = c.withDefaults()
	w := &Writer{cfg: c, job: jobID, task: task, gen: gen,
		log:  c.Logger.With("component", "tasklog", "job_id", jobID, "task", task, "generation", gen),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// Handler returns a slog handler that writes JSON lines to w at the configured level.
func (w *Writer) Handler() slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: w.cfg.Level})
}

// Logger returns base with w as a second destination: every record goes to base's
// handler and, as a JSON line, to the task log.
func (w *Writer) Logger(base *slog.Logger) *slog.Logger {
	return slog.New(slog.NewMultiHandler(base.Handler(), w.Handler()))
}

// Write buffers p (whole lines). It never fails: lines written after Close are dropped.
func (w *Writer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > MaxLineBytes+1 {
		p = append(p[:MaxLineBytes:MaxLineBytes], '\n')
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return n, nil
	}
	w.buf = append(w.buf, p...)
	w.trimLocked()
	if len(w.buf) >= w.cfg.SegmentBytes {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return n, nil
}

// trimLocked drops the oldest whole lines beyond MaxBufferedBytes.
func (w *Writer) trimLocked() {
	for len(w.buf) > w.cfg.MaxBufferedBytes {
		cut := len(w.buf) - w.cfg.MaxBufferedBytes
		if i := bytes.IndexByte(w.buf[cut:], '\n'); i >= 0 {
			cut += i + 1
		} else {
			cut = len(w.buf)
		}
		w.dropped += int64(cut)
		w.buf = w.buf[cut:]
	}
}

func (w *Writer) loop() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		case <-w.kick:
		}
		_ = w.flush(false)
	}
}

// Flush writes the buffered lines as a segment now.
func (w *Writer) Flush() error { return w.flush(false) }

// Close writes what is buffered as the task's final segment and stops the writer. It
// returns the error of that write; the lines are lost then.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	if w.close != nil {
		w.close()
	}
	return w.flush(true)
}

// flush writes the buffer as the next segment (final: the last one, written even when
// empty). On failure the lines go back to the front of the buffer.
func (w *Writer) flush(final bool) error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	data, dropped := w.buf, w.dropped
	w.buf, w.dropped = nil, 0
	w.mu.Unlock()
	if len(data) == 0 && !final {
		return nil
	}
	if dropped > 0 {
		note := fmt.Appendf(nil, `{"time":%q,"level":"WARN","msg":"log lines dropped while storage could not be written","dropped_bytes":%d}`+"\n",
			time.Now().UTC().Format(time.RFC3339Nano), dropped)
		data = append(note, data...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.FlushTimeout)
	defer cancel()
	err := w.put(ctx, data, final)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if !final {
			w.buf = append(data, w.buf...) // dropped is in data now
			w.trimLocked()
		}
		if !w.failing || final {
			w.log.Warn("task log segment not written; kept for the next attempt", "bytes", len(data), "final", final, "err", err)
		}
		w.failing = true
		return err
	}
	if w.failing {
		w.log.Info("task log segments written again")
	}
	w.failing = false
	return nil
}

// put writes data as the next free segment (create-only: a segment of another writer
// of the same task and generation is never overwritten).
func (w *Writer) put(ctx context.Context, data []byte, final bool) error {
	if !w.seqListed {
		// A task started again in the same generation continues after the segments of
		// its earlier run (PutIfAbsent alone would not stop its final segment, another
		// key, from sorting before theirs).
		segs, err := List(ctx, w.cfg.Store, w.job, w.task)
		if err != nil {
			return err
		}
		for _, seg := range segs {
			if seg.Generation == w.gen {
				w.seq = max(w.seq, seg.Seq+1)
			}
		}
		w.seqListed = true
	}
	for ; w.seq <= maxSeq; w.seq++ {
		key := SegmentKey(w.job, w.task, w.gen, w.seq, final)
		err := w.cfg.Store.PutIfAbsent(ctx, key, bytes.NewReader(data), int64(len(data)))
		if errors.Is(err, storage.ErrExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tasklog: write %s: %w", key, err)
		}
		w.seq++
		return nil
	}
	return fmt.Errorf("tasklog: job %s task %s generation %d: no free segment number", w.job, w.task, w.gen)
}
