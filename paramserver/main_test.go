//go:build linux

package paramserver

import (
	"fmt"
	"os"
	"testing"
)

// TestMain runs the tests, or, with COHORT_BENCH_SHARD_HOST set, serves as the shard
// host of BenchmarkPushPullTLSAcrossHosts (runShardHost) instead.
func TestMain(m *testing.M) {
	if dir := os.Getenv(shardHostEnv); dir != "" {
		if err := runShardHost(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
