package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// BenchmarkNodeDeathToDown measures, per iteration, the time from a node's last
// heartbeat to the leader committing its DOWN state through Raft, for two heartbeat
// TTLs. The TTL is the policy; what the figure shows is the overshoot the timer wheel
// and the Raft commit add on top of it.
func BenchmarkNodeDeathToDown(b *testing.B) {
	for _, ttl := range []time.Duration{500 * time.Millisecond, 2 * time.Second} {
		b.Run(fmt.Sprintf("ttl=%s", ttl), func(b *testing.B) {
			dir := b.TempDir()
			cfg := server.DefaultConfig()
			cfg.NodeID, cfg.DataDir, cfg.Bootstrap, cfg.Logger, cfg.HeartbeatTTL = "c1", dir, true, testLogger(), ttl
			s, err := server.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Shutdown() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			if err := s.WaitForLeader(ctx); err != nil {
				b.Fatal(err)
			}
			for !s.IsLeader() {
				time.Sleep(time.Millisecond) // polling until leadership
			}
			var over []time.Duration
			b.ResetTimer()
			for i := range b.N {
				_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{
					Node: &cohortv1.Node{Id: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("n%d", i), Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER},
						Capacity: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30}, Status: cohortv1.NodeStatus_NODE_STATUS_READY},
				}}})
				if err != nil {
					b.Fatal(err)
				}
				id := fmt.Sprintf("n%d", i)
				if err := s.Heartbeat(id, 0); err != nil {
					b.Fatal(err)
				}
				last := time.Now()
				for {
					n, _ := s.State().NodeByID(nil, id)
					if n.GetStatus() == cohortv1.NodeStatus_NODE_STATUS_DOWN {
						break
					}
					if time.Since(last) > ttl+30*time.Second {
						b.Fatalf("node %s still %s %v after its last heartbeat", id, n.GetStatus(), time.Since(last))
					}
					time.Sleep(time.Millisecond) // polling: the measurement's resolution
				}
				over = append(over, time.Since(last)-ttl)
			}
			slices.Sort(over)
			b.ReportMetric(float64(over[len(over)/2].Microseconds())/1000, "median-overshoot-ms")
			b.ReportMetric(float64(over[len(over)-1].Microseconds())/1000, "max-overshoot-ms")
		})
	}
}
