package netns

import (
	"os"
	"testing"
)

// Require skips t when COHORT_SKIP_NETNS=1, and otherwise fails it with a message
// naming what is missing when this machine cannot run test hosts (Check).
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1: skipping tests that need network namespaces")
	}
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}

// NewT is Require then New with cfg (DefaultConfig when zero), logging through t; the
// network is closed when the test ends, failed or not.
func NewT(t testing.TB, cfg Config) *Network {
	t.Helper()
	Require(t)
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultConfig().Subnet
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netns: cleanup: %v", err)
		}
	})
	return n
}
