package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func TestParseLabels(t *testing.T) {
	got, err := parseLabels([]string{"zone=eu-1", "cohort.dev/gpu-class=a100", "empty=", "zone=eu-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"zone": "eu-1", "cohort.dev/gpu-class": "a100", "empty": ""}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("label %q = %q, want %q", k, got[k], v)
		}
	}
	for _, tc := range []struct{ in, wantErr string }{
		{"zone", "want KEY=VALUE"},
		{"=x", "name must be"},
		{"-zone=a", "name must be"},
		{"Bad_Prefix/zone=a", "DNS subdomain"},
		{"zone=a b", "value must be"},
		{"zone=" + strings.Repeat("a", 64), "value must be"},
	} {
		if _, err := parseLabels([]string{tc.in}); err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--label") {
			t.Errorf("parseLabels(%q) = %v, want an error naming --label and containing %q", tc.in, err, tc.wantErr)
		}
	}
	if _, err := parseLabels([]string{"zone=a", "zone=b"}); err == nil || !strings.Contains(err.Error(), `already set to "a"`) {
		t.Errorf("conflicting labels: got %v", err)
	}
}

// FuzzParseLabels: any flag values either parse into labels that round-trip through
// the same rules, or fail with an error naming the flag; never a panic.
func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"zone=eu-1", "a.b/c=d", "x=", "=", "a/b/c=d", "é=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseLabels([]string{s})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--label ") {
				t.Fatalf("error %q does not name the flag", err)
			}
			return
		}
		for k, v := range got {
			if _, err := parseLabels([]string{k + "=" + v}); err != nil {
				t.Fatalf("accepted %q but not its own result %q=%q: %v", s, k, v, err)
			}
		}
	})
}

// TestNodeAgentLabelsSteerPlacement starts a worker and a parameter-server agent with
// --label pool=tabular next to a dev cluster's unlabelled nodes: the labels reach the
// node records, a job selecting pool=tabular is planned onto those two nodes only, and
// one selecting a pool nobody offers is infeasible with a reason naming the selector.
func TestNodeAgentLabelsSteerPlacement(t *testing.T) {
	c, client, ctx := startCluster(t, 1, 1)
	for _, ps := range []bool{false, true} {
		name := map[bool]string{false: "tabular-worker", true: "tabular-ps"}[ps]
		actx, cancel := context.WithCancel(ctx)
		f := &nodeAgentFlags{
			nodeID: name, join: c.GRPCAddr, storageDir: t.TempDir(), cpuMillis: 4000, memory: 8 << 30, tls: &node.TLSConfig{Dir: agentTLSDir(t, name)},
			dataAddr: "127.0.0.1:0", logLevel: "error", labels: []string{"pool=tabular", "zone=eu-1"},
		}
		done := make(chan error, 1)
		go func() { done <- runNodeAgent(actx, f, ps) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	waitFor(t, "labelled nodes registered", time.Minute, func() error {
		resp, err := client.ListNodes(ctx, &cohortv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		n := 0
		for _, node := range resp.GetNodes() {
			if strings.HasPrefix(node.GetId(), "tabular-") {
				if node.GetLabels()["pool"] != "tabular" || node.GetLabels()["zone"] != "eu-1" {
					return fmt.Errorf("node %s has labels %v", node.GetId(), node.GetLabels())
				}
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d of 2 labelled nodes registered", n)
		}
		return nil
	})

	selecting := func(pool string) []byte {
		return exampleSpec(t, "  checkpoint:", "  placement: {nodeSelector: {pool: "+pool+"}}\n  checkpoint:")
	}
	plan, err := client.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: selecting("tabular")})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.GetFeasible() || len(plan.GetPlacements()) == 0 {
		t.Fatalf("plan with nodeSelector pool=tabular: feasible %v, reasons %v", plan.GetFeasible(), plan.GetReasons())
	}
	for _, p := range plan.GetPlacements() {
		if !strings.HasPrefix(p.GetNodeId(), "tabular-") {
			t.Errorf("%s placed on %s, outside pool=tabular", p.GetTask(), p.GetNodeId())
		}
	}

	// The CLI's contract shape: every key present, the same placements.
	specFile := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(specFile, selecting("tabular"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "--address", c.GRPCAddr, "job", "plan", specFile, "-o", "json")
	if err != nil {
		t.Fatalf("job plan -o json: %v", err)
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &shape); err != nil {
		t.Fatalf("job plan -o json printed %q: %v", out, err)
	}
	for _, k := range []string{"feasible", "placements", "reasons", "preemptions", "shrinks", "never_fits"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("job plan -o json has no %q: %s", k, out)
		}
	}
	var placements []struct{ Node string }
	if err := json.Unmarshal(shape["placements"], &placements); err != nil || len(placements) != len(plan.GetPlacements()) {
		t.Errorf("job plan -o json placements %s (err %v), want the %d the API planned", shape["placements"], err, len(plan.GetPlacements()))
	}
	for _, p := range placements {
		if !strings.HasPrefix(p.Node, "tabular-") {
			t.Errorf("job plan -o json places a task on %s", p.Node)
		}
	}

	plan, err = client.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: selecting("vision")})
	if err != nil {
		t.Fatal(err)
	}
	if plan.GetFeasible() || !strings.Contains(strings.Join(plan.GetReasons(), "; "), "pool=vision") {
		t.Errorf("plan with nodeSelector pool=vision: feasible %v, reasons %v; want infeasible naming pool=vision", plan.GetFeasible(), plan.GetReasons())
	}
}
