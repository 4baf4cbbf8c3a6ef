package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds cmd/cohort once per test binary run.
func buildBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		// One build per test process, shared by the tests that run the binary; the
		// directory is left to the OS's temporary-file cleaning (tests cannot remove
		// it: the last test to use it is unknown).
		dir, err := os.MkdirTemp("", "cohort-test-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.bin = filepath.Join(dir, "cohort")
		cmd := exec.Command("go", "build", "-o", built.bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// built is the binary buildBinary built for this test process.
var built struct {
	once sync.Once
	bin  string
	err  error
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// coordProc is one `cohort coordinator` process.
type coordProc struct {
	id, dir, raft, grpc, http string
	cmd                       *exec.Cmd
	log                       *os.File
}

// start starts the coordinator; its DATA_DIR/tls holds the test CA, from which it issues
// its own certificate.
func (p *coordProc) start(t *testing.T, bin string, extra ...string) {
	t.Helper()
	withTestCA(t, p.dir)
	args := append([]string{"coordinator", "--node-id", p.id, "--data-dir", p.dir, "--raft-addr", p.raft,
		"--grpc-addr", p.grpc, "--http-addr", p.http, "--log-level", "warn"}, extra...)
	p.cmd = exec.Command(bin, args...)
	var err error
	if p.log, err = os.OpenFile(p.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.id, err)
	}
}

func (p *coordProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
		p.cmd = nil
	}
	if p.log != nil {
		p.log.Close()
	}
}

type peer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Leader  bool   `json:"leader"`
	Voter   bool   `json:"voter"`
}

// cli runs the binary with args and returns stdout.
func cli(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		<-tick.C
	}
	t.Fatalf("timed out waiting for %s: %v", what, err)
}

func peers(bin, addrs string) ([]peer, error) {
	out, err := cli(bin, "operator", "raft", "list-peers", "-o", "json", "--address", addrs)
	if err != nil {
		return nil, err
	}
	var ps []peer
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("list-peers output %q: %w", out, err)
	}
	return ps, nil
}

// startCoordinatorProcs starts three `cohort coordinator` processes in dir (the first
// bootstraps, the others join), waits until they form a cluster with a leader, and
// returns them with their gRPC addresses joined by commas. They are killed when the
// test ends.
func startCoordinatorProcs(t *testing.T, bin, dir string) ([]*coordProc, string) {
	t.Helper()
	procs := make([]*coordProc, 3)
	for i := range procs {
		procs[i] = &coordProc{id: fmt.Sprintf("c%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("c%d", i+1)),
			raft: freePort(t), grpc: freePort(t), http: freePort(t)}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
	})
	procs[0].start(t, bin, "--bootstrap")
	procs[1].start(t, bin, "--join", procs[0].grpc)
	procs[2].start(t, bin, "--join", procs[0].grpc+","+procs[1].grpc)
	var all []string
	for _, p := range procs {
		all = append(all, p.grpc)
	}
	addrs := strings.Join(all, ",")
	waitFor(t, "3 voters with a leader", 60*time.Second, func() error {
		ps, err := peers(bin, addrs)
		if err != nil {
			return err
		}
		if len(ps) != 3 || !slices.ContainsFunc(ps, func(p peer) bool { return p.Leader }) {
			return fmt.Errorf("peers %+v", ps)
		}
		return nil
	})
	return procs, addrs
}

// TestChaosCoordinatorLeaderKill runs three real `cohort coordinator`
// processes, submits jobs through the CLI with every address, SIGKILLs the leader, and
// checks that the survivors elect a new leader, accept submissions, and lost none of the
// acknowledged ones. With COHORT_CHAOS=1 (make chaos) it repeats the kill 20 times,
// restarting the killed voter each time, and reports failover times.
func TestChaosCoordinatorLeaderKill(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	procs, addrs := startCoordinatorProcs(t, bin, dir)

	specPath := filepath.Join(dir, "job.yaml")
	spec := `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: failover}
spec:
  task: binary_classification
  model: {mlp: {hidden: [8]}}
  data: {format: csv, train: "file:///nonexistent/data.csv", label: Attrition, positive: "Yes"}
  training: {epochs: 1}
`
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	var acked []string
	submit := func() {
		t.Helper()
		out, err := cli(bin, "job", "submit", specPath, "-o", "json", "--wait-for-capacity", "--address", addrs) // no node registers
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		var r struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil || r.JobID == "" {
			t.Fatalf("submit output %q: %v", out, err)
		}
		acked = append(acked, r.JobID)
	}
	for range 3 {
		submit()
	}

	rounds := 1
	if os.Getenv("COHORT_CHAOS") != "" {
		rounds = 20
	}
	var failovers []time.Duration
	for round := range rounds {
		ps, err := peers(bin, addrs)
		if err != nil {
			t.Fatal(err)
		}
		li := slices.IndexFunc(ps, func(p peer) bool { return p.Leader })
		if li < 0 {
			t.Fatalf("round %d: no leader in %+v", round, ps)
		}
		leader := ps[li].ID
		var victim *coordProc
		for _, p := range procs {
			if p.id == leader {
				victim = p
			}
		}
		killed := time.Now()
		victim.kill()
		submit() // the CLI fails over to a surviving coordinator and retries
		failovers = append(failovers, time.Since(killed))
		waitFor(t, "a new leader", 30*time.Second, func() error {
			ps, err := peers(bin, addrs)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.Leader && p.ID != leader {
					return nil
				}
			}
			return fmt.Errorf("peers %+v", ps)
		})
		victim.start(t, bin) // restarts from its durable log
	}

	out, err := cli(bin, "job", "list", "-o", "json", "--address", addrs)
	if err != nil {
		t.Fatal(err)
	}
	var listed []struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("job list output %q: %v", out, err)
	}
	seen := map[string]int{}
	for _, j := range listed {
		seen[j.JobID]++
	}
	for _, id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged job %s listed %d times", id, seen[id])
		}
	}
	if len(listed) != len(acked) {
		t.Errorf("%d jobs listed, %d acknowledged", len(listed), len(acked))
	}
	slices.Sort(failovers)
	t.Logf("leader SIGKILL to next acknowledged submission over %d rounds: median %v, max %v",
		len(failovers), failovers[len(failovers)/2], failovers[len(failovers)-1])
}
