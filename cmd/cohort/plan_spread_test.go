package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node/nodetest"
)

// TestJobPlanSpreadsShards plans the example job (two shards) on a dev cluster with two
// parameter-server nodes: the shards go to different nodes, and `job plan` says so, in
// its table and its JSON.
func TestJobPlanSpreadsShards(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t)})
	spec := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(spec, exampleSpec(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := cli(bin, "job", "plan", spec, "--address", c.GRPCAddr, "-o", "json")
	if err != nil {
		t.Fatalf("job plan: %v\n%s", err, out)
	}
	var plan struct {
		Feasible   bool `json:"feasible"`
		Placements []struct {
			Task string `json:"task"`
			Node string `json:"node"`
		} `json:"placements"`
		Notes []string `json:"notes"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	shardNodes := map[string]string{}
	for _, p := range plan.Placements {
		if strings.HasPrefix(p.Task, "ps ") {
			shardNodes[p.Task] = p.Node
		}
	}
	if !plan.Feasible || len(shardNodes) != 2 || shardNodes["ps 0"] == shardNodes["ps 1"] {
		t.Fatalf("shards placed %v (feasible %v), want ps 0 and ps 1 on different nodes", shardNodes, plan.Feasible)
	}
	if len(plan.Notes) != 1 || !strings.Contains(plan.Notes[0], "spread over 2 nodes") {
		t.Fatalf("plan notes %q", plan.Notes)
	}
	out, err = cli(bin, "job", "plan", spec, "--address", c.GRPCAddr)
	if err != nil || !strings.Contains(out, "  note: parameter-server shards spread over 2 nodes, one each") {
		t.Fatalf("job plan table: %v\n%s", err, out)
	}
}
