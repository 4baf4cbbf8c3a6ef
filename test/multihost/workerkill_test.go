package multihost

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// jobStatus is what the test reads of `cohort job status -o json`.
type jobStatus struct {
	Job struct {
		State         string `json:"state"`
		Generation    string `json:"generation"`     // uint64: a JSON string
		ActiveWorkers int    `json:"active_workers"` // 0: worker_count
		WorkerCount   int    `json:"worker_count"`
		Restarts      int    `json:"restarts"`
		Progress      struct {
			Step string `json:"step"` // int64: a JSON string
		} `json:"progress"`
	} `json:"job"`
	Allocations []struct {
		Kind   string `json:"kind"`
		Index  int    `json:"index"`
		NodeID string `json:"node_id"`
		State  string `json:"state"`
	} `json:"allocations"`
}

// workers is the number of worker ranks in the current generation.
func (s jobStatus) workers() int {
	if s.Job.ActiveWorkers > 0 {
		return s.Job.ActiveWorkers
	}
	return s.Job.WorkerCount
}

func (s jobStatus) step() int64 {
	var n int64
	fmt.Sscan(s.Job.Progress.Step, &n)
	return n
}

func (s jobStatus) generation() uint64 {
	var n uint64
	fmt.Sscan(s.Job.Generation, &n)
	return n
}

func (c *cluster) jobStatus(id string) (jobStatus, error) {
	var st jobStatus
	r := c.cli(15*time.Second, "job", "status", id, "-o", "json", "--address", c.addrs)
	if r.err != nil {
		return st, r.err
	}
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &st); err != nil {
		return st, fmt.Errorf("job status output %q: %w", r.stdout, err)
	}
	return st, nil
}

// TestWorkerKillShrinksWithoutTTL: SIGKILL the process of one worker of a running
// elastic sync job. Its sessions at the parameter servers break at once; the PS nodes
// report it, the leader finds the worker's node has stopped heartbeating and marks it
// down without waiting for the node TTL, the job shrinks to the survivor (a new
// generation, no restart) and goes on training. The times are logged (BENCHMARKS.md);
// the test checks the mechanism: the suspicion in the leader's log, the shrink
// without a restart, and progress after it.
func TestWorkerKillShrinksWithoutTTL(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir)
	defer func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "cohort-workerkill-"+time.Now().Format("150405"))
			_ = os.Rename(dir, keep)
			t.Logf("logs kept in %s", keep)
		}
	}()
	// A long job whose two workers cannot share a node (1500 of a node's 2000 millicores).
	var doc map[string]any
	if err := yaml.Unmarshal(bytes.ReplaceAll(c.spec, []byte(specName), []byte("long")), &doc); err != nil {
		t.Fatal(err)
	}
	js := doc["spec"].(map[string]any)
	js["training"].(map[string]any)["epochs"] = 100000
	js["resources"].(map[string]any)["workers"].(map[string]any)["cpu"] = "1500m"
	js["checkpoint"] = map[string]any{"everySteps": 200, "keep": 2}
	long, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(c.dir, "specs", "long.yaml")
	if err := os.WriteFile(spec, long, 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.cli(30*time.Second, "job", "submit", spec, "-o", "json", "--address", c.addrs)
	if r.err != nil {
		t.Fatalf("submit: %v\n%s", r.err, r.stderr)
	}
	var sub struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &sub); err != nil || sub.JobID == "" {
		t.Fatalf("submit output %q: %v", r.stdout, err)
	}

	// Running on both workers, making progress.
	var before jobStatus
	var victim string
	c.waitFor("the job training on 2 workers", 120*time.Second, func() error {
		st, err := c.jobStatus(sub.JobID)
		if err != nil {
			return err
		}
		if st.Job.State != "JOB_STATE_RUNNING" || st.workers() != 2 || st.step() < 3 {
			return fmt.Errorf("state %s, %d active workers, step %d", st.Job.State, st.workers(), st.step())
		}
		for _, a := range st.Allocations {
			if a.Kind == "TASK_KIND_WORKER" && a.Index == 1 && a.State == "TASK_STATE_RUNNING" {
				victim = a.NodeID
			}
		}
		if victim == "" {
			return fmt.Errorf("no running rank-1 worker in %+v", st.Allocations)
		}
		before = st
		return nil
	})
	var proc *agent
	for _, a := range c.agents {
		if a.id == victim {
			proc = a
		}
	}
	if proc == nil {
		t.Fatalf("rank 1 runs on %q, not a worker host", victim)
	}
	killed := time.Now()
	proc.proc.Kill()
	t.Logf("SIGKILLed worker %s (rank 1) at step %d, generation %d", victim, before.step(), before.generation())

	// Shrunk to the survivor: a newer generation with one active worker, no restart.
	var shrunk jobStatus
	var shrunkAt time.Time
	c.waitFor("the job shrunk to one worker", 60*time.Second, func() error {
		st, err := c.jobStatus(sub.JobID)
		if err != nil {
			return err
		}
		if st.generation() <= before.generation() || st.workers() != 1 {
			return fmt.Errorf("generation %d, %d active workers", st.generation(), st.workers())
		}
		shrunk, shrunkAt = st, time.Now()
		return nil
	})
	if shrunk.Job.Restarts != 0 || shrunk.Job.State != "JOB_STATE_RUNNING" {
		t.Fatalf("after the kill: state %s, %d restarts; want the job shrunk, running, not restarted", shrunk.Job.State, shrunk.Job.Restarts)
	}
	// The survivor goes on.
	var wentOn time.Time
	c.waitFor("progress after the shrink", 60*time.Second, func() error {
		st, err := c.jobStatus(sub.JobID)
		if err != nil {
			return err
		}
		if st.step() <= shrunk.step() {
			return fmt.Errorf("step %d, %d at the shrink", st.step(), shrunk.step())
		}
		wentOn = time.Now()
		return nil
	})

	// The fast path did it: a parameter server reported the lost session and the
	// leader suspected the node, rather than the TTL running out.
	suspected := false
	for _, co := range c.coords {
		b, err := os.ReadFile(co.log)
		if err != nil {
			t.Fatal(err)
		}
		suspected = suspected || bytes.Contains(b, []byte("its node is suspect")) && bytes.Contains(b, []byte(victim))
	}
	if !suspected {
		t.Errorf("no coordinator log says the worker's node was suspected after its session broke")
	}
	t.Logf("worker kill: shrunk (generation %d, 1 worker, 0 restarts) seen %.2fs after the SIGKILL, "+
		"progress seen %.2fs after it (CLI polls of ~0.2-0.5 s included; node TTL %v)",
		shrunk.generation(), shrunkAt.Sub(killed).Seconds(), wentOn.Sub(killed).Seconds(), nodeTTL)
}
