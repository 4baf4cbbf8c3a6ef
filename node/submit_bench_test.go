package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// BenchmarkSubmitGRPC measures job submissions per second through a single voter's gRPC
// API (16 concurrent callers, each submission one Raft entry), plaintext on loopback
// against mutual TLS with an admin client certificate (the default). BENCHMARKS.md
// records both.
func BenchmarkSubmitGRPC(b *testing.B) {
	raw, err := os.ReadFile("../jobs/examples/attrition-mlp.yaml")
	if err != nil {
		b.Fatal(err)
	}
	data, _ := filepath.Abs("../jobs/data/attrition-sample.csv")
	spec := []byte(strings.Replace(string(raw), "file://jobs/data/attrition-sample.csv", "file://"+data, 1))
	for _, mode := range []string{"plaintext", "mtls"} {
		b.Run(mode, func(b *testing.B) {
			cfg := node.DefaultConfig()
			co := node.DefaultCoordinatorConfig()
			co.NodeID, co.DataDir, co.Bootstrap = "c1", b.TempDir(), true
			co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.Coordinator = &co
			cfg.TLS = &node.TLSConfig{Insecure: mode == "plaintext"}
			cfg.Logger = slog.New(slog.DiscardHandler)
			n, err := node.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := n.Start(ctx); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = n.Shutdown(context.Background()) })
			if err := n.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			var creds credentials.TransportCredentials
			if mode == "mtls" {
				if creds, err = node.ClientTLSCredentials(n.ClientTLSDir()); err != nil {
					b.Fatal(err)
				}
			}
			conn, err := node.DialCoordinators([]string{n.GRPCAddr()}, creds)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := cohortv1.NewJobServiceClient(conn)
			var seq atomic.Int64
			b.SetParallelism(8) // 16 callers on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := fmt.Sprintf("bench-%d", seq.Add(1))
					if _, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: key}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "submissions/s")
		})
	}
}
