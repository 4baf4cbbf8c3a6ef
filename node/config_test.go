package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevConfig: DevConfig is one bootstrapping coordinator on loopback and the asked
// numbers of agents, sharing the machine, with no GPUs, all under the data directory.
func TestDevConfig(t *testing.T) {
	cfg := DevConfig(3, 2, "/data")
	co := cfg.Coordinator
	if co == nil || !co.Bootstrap || co.NodeID != "dev-coordinator" || co.DataDir != filepath.Join("/data", "coordinator") ||
		co.GRPCAddr != "127.0.0.1:7070" || cfg.HTTPAddr != "127.0.0.1:7071" || cfg.Storage.Dir != filepath.Join("/data", "storage") {
		t.Fatalf("dev coordinator %+v, http %q, storage %+v", co, cfg.HTTPAddr, cfg.Storage)
	}
	if len(cfg.Workers) != 3 || len(cfg.ParameterServers) != 2 {
		t.Fatalf("%d workers, %d parameter servers; want 3, 2", len(cfg.Workers), len(cfg.ParameterServers))
	}
	for i, w := range cfg.Workers {
		if w.NodeID != "dev-worker-"+string(rune('0'+i)) || w.GPUs != 0 || w.CPUMillis < 1000 || len(w.Join) != 0 {
			t.Errorf("worker %d: %+v", i, w)
		}
	}
	for i, p := range cfg.ParameterServers {
		if p.NodeID != "dev-ps-"+string(rune('0'+i)) || p.DataAddr != "127.0.0.1:0" || p.GPUs != 0 {
			t.Errorf("parameter server %d: %+v", i, p)
		}
		if p.MemoryBytes != TotalMemory()/5 {
			t.Errorf("parameter server %d: %d bytes of memory, want a fifth of %d", i, p.MemoryBytes, TotalMemory())
		}
	}
	if err := cfg.validate(); err != nil {
		t.Errorf("DevConfig does not validate: %v", err)
	}
	alone := DevConfig(0, 0, "/data")
	if err := alone.validate(); err != nil {
		t.Errorf("DevConfig(0, 0) (a coordinator alone) does not validate: %v", err)
	}
}

// TestConfigValidate: New refuses a Config it cannot run with a ConfigError naming the
// field.
func TestConfigValidate(t *testing.T) {
	worker := func() Config {
		cfg := DefaultConfig()
		w := DefaultWorkerConfig()
		w.NodeID, w.Join = "w1", []string{"127.0.0.1:7070"}
		cfg.Workers, cfg.Storage.Dir = []WorkerConfig{w}, t.TempDir()
		return cfg
	}
	coordinator := func() Config {
		cfg := DefaultConfig()
		c := DefaultCoordinatorConfig()
		c.NodeID, c.DataDir, c.Bootstrap = "c1", t.TempDir(), true
		cfg.Coordinator = &c
		return cfg
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		base   func() Config
		field  string
	}{
		{"no node ID", func(c *Config) { c.Coordinator.NodeID = "" }, coordinator, "Coordinator.NodeID"},
		{"no data dir", func(c *Config) { c.Coordinator.DataDir = "" }, coordinator, "Coordinator.DataDir"},
		{"bootstrap and join", func(c *Config) { c.Coordinator.Join = []string{"x:1"} }, coordinator, "Coordinator.Join"},
		{"short TTL", func(c *Config) { c.Coordinator.HeartbeatTTL = time.Second }, coordinator, "Coordinator.HeartbeatTTL"},
		{"tokens file missing", func(c *Config) { c.Coordinator.ACLTokensFile = "/nonexistent/tokens.yaml" }, coordinator, "Coordinator.ACLTokensFile"},
		{"agent without join", func(c *Config) { c.Workers[0].Join = nil }, worker, "AgentConfig.Join"},
		{"agent without memory", func(c *Config) { c.Workers[0].MemoryBytes = 0 }, worker, "AgentConfig"},
		{"agent without storage", func(c *Config) { c.Storage.Dir = "" }, worker, "Storage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.base()
			tc.mutate(&cfg)
			_, err := New(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("New: %v, want a ConfigError on %s", err, tc.field)
			}
		})
	}
	if _, err := New(DefaultConfig()); err == nil || !strings.Contains(err.Error(), "no role") {
		t.Errorf("New without a role: %v", err)
	}
	// A short TTL is fine when this node's agents heartbeat faster.
	cfg := coordinator()
	cfg.Coordinator.HeartbeatTTL, cfg.HeartbeatInterval = time.Second, 100*time.Millisecond
	if _, err := New(cfg); err != nil {
		t.Errorf("TTL 1s with 100ms heartbeats: %v", err)
	}
}

// TestBadTokensFile: a tokens file that does not validate is refused by New, naming
// the file, line and field, before anything is created.
func TestBadTokensFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(path, []byte("- {name: a, secret: 0123456789abcdef, role: read}\n- {name: b, secret: 0123456789abcdeg, role: root}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	c := DefaultCoordinatorConfig()
	c.NodeID, c.DataDir, c.Bootstrap, c.ACLTokensFile = "c1", filepath.Join(dir, "c1"), true, path
	cfg.Coordinator = &c
	_, err := New(cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Value != path || !strings.Contains(err.Error(), `line 2: [1].role: "root"`) {
		t.Fatalf("New: %v, want a ConfigError naming %s, line 2 and [1].role", err, path)
	}
	if _, err := os.Stat(c.DataDir); err == nil {
		t.Error("the data directory was created")
	}
}
