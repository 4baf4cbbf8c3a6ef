package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

// The instrumented Blob must still be a conforming Blob.
func TestInstrumentedConformance(t *testing.T) {
	storagetest.RunBlobSuite(t, func(t *testing.T) storage.Blob {
		m, err := storage.NewMetrics(prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return storage.Instrument(newLocal(t), m)
	})
}

func TestInstrumentCountsOperationsOutcomesAndBytes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := storage.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b := storage.Instrument(newLocal(t), m)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 1000)
	if err := b.Put(ctx, "a", bytes.NewReader(payload), int64(len(payload))); err != nil {
		t.Fatal(err)
	}
	if err := b.PutIfAbsent(ctx, "a", bytes.NewReader(payload), int64(len(payload))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("PutIfAbsent over an existing key: %v", err)
	}
	rc, err := b.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := b.Get(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	for _, tc := range []struct {
		op, outcome string
		want        float64
	}{
		{"put", "ok", 1}, {"put_if_absent", "exists", 1}, {"get", "ok", 1}, {"get", "not_found", 1},
	} {
		c, err := m.Counter(tc.op, tc.outcome)
		if err != nil {
			t.Fatal(err)
		}
		if got := value(t, c); got != tc.want {
			t.Errorf("cohort_storage_operations_total{op=%q,outcome=%q} = %v, want %v", tc.op, tc.outcome, got, tc.want)
		}
	}
	// The refused PutIfAbsent may have read some of its body; the put and the get moved
	// at least the payload each way.
	out, in := m.Bytes("out"), m.Bytes("in")
	if value(t, out) < 1000 || value(t, in) != 1000 {
		t.Errorf("bytes out %v in %v, want >= 1000 and 1000", value(t, out), value(t, in))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		if f.GetName() == "cohort_storage_operation_duration_seconds" && len(f.GetMetric()) > 0 {
			found = true
		}
	}
	if !found {
		t.Error("no cohort_storage_operation_duration_seconds series gathered")
	}
}

// An instrumented S3 store keeps its stale-upload abort, which checkpoint GC finds
// through an interface.
func TestInstrumentKeepsS3UploadAborter(t *testing.T) {
	srv := s3test.Start(t)
	s := newS3(t, srv.Config())
	m, err := storage.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b := storage.Instrument(s, m)
	a, ok := b.(interface {
		AbortStaleUploadsUnder(ctx context.Context, keyPrefix string, olderThan time.Duration) (int, error)
	})
	if !ok {
		t.Fatal("instrumented S3 store lost AbortStaleUploadsUnder")
	}
	if _, err := a.AbortStaleUploadsUnder(context.Background(), "jobs/none/", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok := storage.Instrument(newLocal(t), m).(interface {
		AbortStaleUploadsUnder(ctx context.Context, keyPrefix string, olderThan time.Duration) (int, error)
	}); ok {
		t.Fatal("instrumented local store claims multipart uploads")
	}
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
