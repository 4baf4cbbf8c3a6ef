package server_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
)

// BenchmarkFailover kills the leader of a 3-voter in-process cluster (durable stores,
// TCP transport on loopback) once per iteration and measures the time until a
// surviving voter leads with its leader machinery running, then restarts the victim.
// It compares hashicorp/raft's stock timeouts with Cohort's LAN defaults and a tighter
// setting. Run it with -benchtime=20x for the 20 kills BENCHMARKS.md records.
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name                    string
		heartbeat, election, ls time.Duration
	}{
		{"hashicorp-defaults", time.Second, time.Second, 500 * time.Millisecond},
		{"cohort-defaults", server.DefaultConfig().RaftHeartbeatTimeout, server.DefaultConfig().RaftElectionTimeout, server.DefaultConfig().RaftLeaderLeaseTimeout},
		{"tight-100ms", 100 * time.Millisecond, 100 * time.Millisecond, 50 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := clustertest.TestCluster(b, 3, clustertest.Options{Mutate: func(cfg *server.Config) {
				cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLeaseTimeout = tc.heartbeat, tc.election, tc.ls
			}})
			var times []time.Duration
			b.ResetTimer()
			for range b.N {
				old := c.WaitForLeader(b)
				t0 := time.Now()
				old.Stop()
				for {
					if l := c.Leader(); l != nil && l != old {
						break
					}
					if time.Since(t0) > 30*time.Second {
						b.Fatalf("no new leader 30s after killing %s", old.ID)
					}
					time.Sleep(time.Millisecond) // polling: the measurement's resolution
				}
				times = append(times, time.Since(t0))
				b.StopTimer()
				if err := old.Restart(); err != nil {
					b.Fatal(err)
				}
				c.WaitForLeader(b)
				b.StartTimer()
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "median-ms")
			b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "max-ms")
			b.Logf("%s: %d kills, failover median %v, max %v", tc.name, len(times), times[len(times)/2], times[len(times)-1])
		})
	}
}
