package storage

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of storage operations, shared by every Blob that
// Instrument wraps with them.
type Metrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
}

// NewMetrics registers the storage metrics on reg:
// cohort_storage_operations_total{op,outcome}, cohort_storage_operation_duration_seconds{op}
// and cohort_storage_bytes_total{direction}. outcome is ok, not_found, exists or error.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_storage_operations_total",
			Help: "Storage operations by operation and outcome (ok, not_found, exists, error).",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cohort_storage_operation_duration_seconds",
			Help:    "Duration of storage operations (for get: until the object is open).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_storage_bytes_total",
			Help: "Bytes written to (direction=out) and read from (direction=in) storage.",
		}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.ops, m.duration, m.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Instrument returns b with every operation counted and timed in m. A nil m returns b.
// Optional capabilities of b (aborting stale multipart uploads) stay reachable.
func Instrument(b Blob, m *Metrics) Blob {
	if m == nil {
		return b
	}
	ib := &instrumented{Blob: b, m: m}
	if a, ok := b.(uploadAborter); ok {
		return &instrumentedAborter{instrumented: ib, a: a}
	}
	return ib
}

type instrumented struct {
	Blob
	m *Metrics
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		outcome = "not_found"
	case errors.Is(err, ErrExists):
		outcome = "exists"
	default:
		outcome = "error"
	}
	i.m.ops.WithLabelValues(op, outcome).Inc()
	i.m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// countingReader counts the bytes read through it into a counter.
type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.c.Add(float64(n))
	return n, err
}

type countingReadCloser struct {
	countingReader
	closer io.Closer
}

func (c *countingReadCloser) Close() error { return c.closer.Close() }

func (i *instrumented) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	start := time.Now()
	err := i.Blob.Put(ctx, key, &countingReader{r: r, c: i.m.bytes.WithLabelValues("out")}, size)
	i.observe("put", start, err)
	return err
}

func (i *instrumented) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	start := time.Now()
	err := i.Blob.PutIfAbsent(ctx, key, &countingReader{r: r, c: i.m.bytes.WithLabelValues("out")}, size)
	i.observe("put_if_absent", start, err)
	return err
}

func (i *instrumented) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := i.Blob.Get(ctx, key)
	i.observe("get", start, err)
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{countingReader: countingReader{r: rc, c: i.m.bytes.WithLabelValues("in")}, closer: rc}, nil
}

func (i *instrumented) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	start := time.Now()
	info, err := i.Blob.Stat(ctx, key)
	i.observe("stat", start, err)
	return info, err
}

func (i *instrumented) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	start := time.Now()
	infos, err := i.Blob.List(ctx, prefix)
	i.observe("list", start, err)
	return infos, err
}

func (i *instrumented) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := i.Blob.Delete(ctx, key)
	i.observe("delete", start, err)
	return err
}

type instrumentedAborter struct {
	*instrumented
	a uploadAborter
}

func (i *instrumentedAborter) AbortStaleUploadsUnder(ctx context.Context, keyPrefix string, olderThan time.Duration) (int, error) {
	start := time.Now()
	n, err := i.a.AbortStaleUploadsUnder(ctx, keyPrefix, olderThan)
	i.observe("abort_uploads", start, err)
	return n, err
}

// Counter returns the operations counter of op and outcome (for tests and dashboards).
func (m *Metrics) Counter(op, outcome string) (prometheus.Counter, error) {
	return m.ops.GetMetricWithLabelValues(op, outcome)
}

// Bytes returns the byte counter of direction "in" or "out".
func (m *Metrics) Bytes(direction string) prometheus.Counter {
	return m.bytes.WithLabelValues(direction)
}
