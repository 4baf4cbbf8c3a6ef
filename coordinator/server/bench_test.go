package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// BenchmarkSubmit proposes SubmitJob commands through Raft on a single voter with the
// durable log store of each kind (fsync per log append), from 1 and 64 concurrent
// clients, and reports submissions/s and the p50/p99 latency of one submission.
func BenchmarkSubmit(b *testing.B) {
	for _, store := range []string{server.LogStoreWAL, server.LogStoreBoltDB} {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("store=%s/clients=%d", store, clients), func(b *testing.B) {
				benchSubmit(b, store, clients)
			})
		}
	}
}

func benchSubmit(b *testing.B, store string, clients int) {
	s := startBenchServer(b, store)
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				key := fmt.Sprintf("bench-%d", i)
				t0 := time.Now()
				_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
					Job: &cohortv1.Job{Id: key, Name: "bench", Namespace: "default", IdempotencyKey: key,
						State: cohortv1.JobState_JOB_STATE_PENDING, WorkerCount: 1, ShardCount: 1},
				}}})
				if err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "submissions/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

func startBenchServer(b *testing.B, store string) *server.Server {
	b.Helper()
	cfg := server.DefaultConfig()
	cfg.RaftLogStore = store
	cfg.NodeID = "bench"
	cfg.DataDir = b.TempDir()
	cfg.Bootstrap = true
	cfg.Logger = testLogger()
	s, err := server.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		b.Fatal(err)
	}
	for !s.IsLeader() {
		time.Sleep(5 * time.Millisecond) // polling until leadership, bounded by WaitForLeader
	}
	return s
}
