package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestNodeListShowsHeartbeatsAndUsage runs a job on a dev cluster whose agents
// heartbeat every 100 ms: the last heartbeat of `node list` moves with successive
// heartbeats (it used to stay at registration), the running tasks get CPU and memory
// figures in GetJob, and `node list` shows the nodes' use in human units, and in its
// JSON.
func TestNodeListShowsHeartbeatsAndUsage(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 1, PS: 1, Logger: testLogger(t),
		Mutate: func(cfg *node.Config) { cfg.HeartbeatInterval = 100 * time.Millisecond }})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cohortv1.NewJobServiceClient(conn)
	spec := exampleSpec(t, "epochs: 30", "epochs: 2000", "count: 2, min: 1", "count: 1, min: 1", "shards: 2", "shards: 1")
	sub, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CancelJob(context.Background(), &cohortv1.CancelJobRequest{Id: sub.GetJob().GetId()})

	// Every task of the running job gets usage from its node's heartbeats.
	waitFor(t, "usage of the running tasks", time.Minute, func() error {
		resp, err := client.GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.GetJob().GetId()})
		if err != nil {
			return err
		}
		if resp.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING || len(resp.GetAllocations()) < 2 {
			return fmt.Errorf("job %s with %d tasks", resp.GetJob().GetState(), len(resp.GetAllocations()))
		}
		kinds := map[cohortv1.TaskKind]int{}
		for _, a := range resp.GetAllocations() {
			if a.GetState() != cohortv1.TaskState_TASK_STATE_RUNNING {
				continue
			}
			if u := a.GetUsage(); u.GetMemoryBytes() <= 0 || u.GetTimeUnixNano() <= 0 {
				return fmt.Errorf("task %s usage %v", a.GetId(), u)
			}
			kinds[a.GetKind()]++
		}
		if kinds[cohortv1.TaskKind_TASK_KIND_WORKER] == 0 || kinds[cohortv1.TaskKind_TASK_KIND_PS_SHARD] == 0 {
			return fmt.Errorf("running tasks with usage by kind: %v", kinds)
		}
		return nil
	})

	nodes := func() map[string]*cohortv1.Node {
		resp, err := client.ListNodes(ctx, &cohortv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*cohortv1.Node{}
		for _, n := range resp.GetNodes() {
			m[n.GetId()] = n
		}
		return m
	}
	first := nodes()
	for i := range 3 {
		waitFor(t, fmt.Sprintf("heartbeat %d", i+1), 30*time.Second, func() error {
			for id, n := range nodes() {
				if n.GetLastHeartbeatUnixNano() <= first[id].GetLastHeartbeatUnixNano() {
					return fmt.Errorf("node %s: last heartbeat still %v", id, time.Unix(0, n.GetLastHeartbeatUnixNano()))
				}
			}
			return nil
		})
		first = nodes()
	}
	for id, n := range first {
		if u := n.GetUsage(); u.GetMemoryBytes() <= 0 || u.GetMemoryTotalBytes() < u.GetMemoryBytes() {
			t.Fatalf("node %s usage %v", id, u)
		}
		if age := time.Since(time.Unix(0, n.GetLastHeartbeatUnixNano())); age > 10*time.Second {
			t.Fatalf("node %s: last heartbeat %v ago", id, age)
		}
	}

	// The same figures as Prometheus metrics on the coordinator's /metrics.
	resp, err := http.Get("http://" + c.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^cohort_node_cpu_usage_ratio\{node="dev-worker-0"\} \S+$`,
		`(?m)^cohort_node_memory_usage_bytes\{node="dev-ps-0"\} [1-9]`,
		`(?m)^cohort_node_last_heartbeat_timestamp_seconds\{node="dev-worker-0"\} [1-9]`,
		`(?m)^cohort_task_memory_usage_bytes\{allocation="` + regexp.QuoteMeta(sub.GetJob().GetId()) + `-\S+",job="` + regexp.QuoteMeta(sub.GetJob().GetId()) + `"\} [1-9]`,
		`(?m)^cohort_task_cpu_usage_cores\{allocation="\S+",job="` + regexp.QuoteMeta(sub.GetJob().GetId()) + `"\} \S+$`,
	} {
		if !regexp.MustCompile(re).Match(metrics) {
			t.Fatalf("/metrics has no line matching %s:\n%s", re, grepLines(string(metrics), "usage|heartbeat_timestamp"))
		}
	}

	out, err := cli(bin, "node", "list", "--address", c.GRPCAddr)
	if err != nil {
		t.Fatalf("node list: %v\n%s", err, out)
	}
	row := regexp.MustCompile(`(?m)^dev-worker-\S+\s+worker\s+ready\s+\d+\.\d/\d+(\.\d+)?\s+\d+\.\d [KMG]iB/\d+\.\d [KMG]iB\s+0\s+-\s+-\s+\d\d:\d\d:\d\dZ \(\d+s ago\)$`)
	if !strings.Contains(out, "CPU USED/CAP") || !row.MatchString(out) {
		t.Fatalf("node list table:\n%s", out)
	}
	out, err = cli(bin, "node", "list", "--address", c.GRPCAddr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Nodes []struct {
			ID            string `json:"id"`
			LastHeartbeat string `json:"last_heartbeat_unix_nano"`
			Usage         struct {
				CPUCores    float64 `json:"cpu_cores"`
				MemoryBytes string  `json:"memory_bytes"`
			} `json:"usage"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Nodes) != 2 {
		t.Fatalf("node list -o json: %v\n%s", err, out)
	}
	for _, n := range listed.Nodes {
		if n.LastHeartbeat == "" || n.Usage.MemoryBytes == "" {
			t.Fatalf("node %s in JSON without heartbeat or usage: %s", n.ID, out)
		}
	}
}

// grepLines returns the lines of s matching pattern.
func grepLines(s, pattern string) string {
	re := regexp.MustCompile(pattern)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
