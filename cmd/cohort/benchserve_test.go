package main

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
)

// TestBenchServeRequests builds each example export as `cohort bench serve` does,
// loads it as `cohort serve` does, and checks that the generated JSON and binary
// bodies decode to the same tensors, which the model accepts.
func TestBenchServeRequests(t *testing.T) {
	for _, ex := range benchServeExamples {
		t.Run(ex, func(t *testing.T) {
			dir := t.TempDir()
			tbl, err := writeBenchExampleFrom(ex, dir, "../..")
			if err != nil {
				t.Fatal(err)
			}
			m, err := serve.Load(t.Context(), dir, storage.S3Config{})
			if err != nil {
				t.Fatal(err)
			}
			ins := benchInputs(m.Metadata(), 3, tbl, rand.New(rand.NewPCG(1, 2)))
			_, fromJSON, err := serve.DecodeRequest(benchJSONBody(ins), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			body, n := benchBinaryBody(ins)
			_, fromBinary, err := serve.DecodeBinaryRequest(body, n, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(fromJSON) != fmt.Sprint(fromBinary) {
				t.Fatalf("JSON body reads %v, binary body %v", fromJSON, fromBinary)
			}
			if _, rows, err := m.Infer(fromJSON, nil, 10); err != nil || rows != 3 {
				t.Fatalf("infer: %d rows, %v", rows, err)
			}
		})
	}
}

func TestBenchServeStatistics(t *testing.T) {
	var l []time.Duration
	for i := 1; i <= 100; i++ {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := percentiles(l); p50 != 50 || p99 != 99 {
		t.Fatalf("p50 %v p99 %v, want 50 and 99", p50, p99)
	}
	if med, best := medianMax([]float64{3, 1, 2, 5}); med != 2.5 || best != 5 {
		t.Fatalf("median %v best %v", med, best)
	}
}
