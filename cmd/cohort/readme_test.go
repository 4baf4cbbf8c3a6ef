package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the first ```sh block after the README heading that
// starts with heading.
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open(repoPath(t, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## "):
			inSection = strings.HasPrefix(l, heading)
		case inSection && !inBlock && l == "```sh":
			inBlock = true
		case inBlock && l == "```":
			return lines
		case inBlock:
			lines = append(lines, l)
		}
	}
	t.Fatalf("README.md: no sh block under %q", heading)
	return nil
}

// readmeShell runs README lines the way a user pasting them into a shell in the
// repository would: bin/cohort is the freshly built binary, jobs/ the repository's
// examples and data, everything else is written under a temporary working directory.
// Every 127.0.0.1:PORT in the README is mapped to a free port, consistently, so tests
// can run side by side.
type readmeShell struct {
	t     *testing.T
	ctx   context.Context
	bin   string
	dir   string
	env   []string
	ports map[string]string
	jobID string // the id the last `job submit` printed; replaces JOB_ID
}

func newReadmeShell(t *testing.T, ctx context.Context) *readmeShell {
	t.Helper()
	sh := &readmeShell{t: t, ctx: ctx, bin: buildBinary(t), dir: t.TempDir(), env: os.Environ(), ports: map[string]string{}}
	if err := os.Mkdir(filepath.Join(sh.dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"bin/cohort": sh.bin, "jobs": repoPath(t, "jobs")} {
		if err := os.Symlink(target, filepath.Join(sh.dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return sh
}

var loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// rewrite maps the line's loopback ports to free ones and JOB_ID to the submitted job.
func (sh *readmeShell) rewrite(line string) string {
	line = loopbackAddr.ReplaceAllStringFunc(line, func(a string) string {
		if _, ok := sh.ports[a]; !ok {
			sh.ports[a] = freePort(sh.t)
		}
		return sh.ports[a]
	})
	if strings.Contains(line, "JOB_ID") {
		if sh.jobID == "" {
			sh.t.Fatalf("%q uses JOB_ID before any job was submitted", line)
		}
		line = strings.ReplaceAll(line, "JOB_ID", sh.jobID)
	}
	return line
}

// addr is the free address that stands for the README's address a.
func (sh *readmeShell) addr(a string) string {
	sh.t.Helper()
	if got, ok := sh.ports[a]; ok {
		return got
	}
	sh.t.Fatalf("the README never used %s", a)
	return ""
}

// run runs one rewritten README line: `export` lines set the environment of the later
// ones, lines ending in & start a process that runs until the test ends (and wait until
// it answers on its --http-addr), other lines must exit 0.
func (sh *readmeShell) run(raw string) {
	t := sh.t
	t.Helper()
	line := sh.rewrite(strings.TrimSpace(raw))
	if name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && strings.HasPrefix(line, "export ") {
		sh.env = append(sh.env, name+"="+value)
		return
	}
	if cmdline, ok := strings.CutSuffix(strings.TrimSpace(strings.SplitN(line, " #", 2)[0]), "&"); ok {
		sh.background(strings.TrimSpace(cmdline))
		return
	}
	cmd := exec.CommandContext(sh.ctx, "sh", "-c", line)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("README line %q: %v\nstdout:\n%s\nstderr:\n%s", raw, err, out, stderr)
	}
	if strings.Contains(line, " job submit ") {
		sh.jobID = submittedID(t, out)
	}
}

// background starts a long-running process and waits until it is ready: /readyz for a
// node agent, /healthz for a coordinator or dev cluster, /v2/health/ready for serve.
func (sh *readmeShell) background(cmdline string) {
	t := sh.t
	t.Helper()
	cmd := exec.CommandContext(sh.ctx, "sh", "-c", "exec "+cmdline)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	logf, err := os.CreateTemp(t.TempDir(), "out-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmdline, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("output of %q:\n%s", cmdline, out)
		}
	})
	var url string
	switch f := strings.Fields(cmdline); {
	case len(f) > 1 && f[1] == "serve":
		m := regexp.MustCompile(`--addr (\S+)`).FindStringSubmatch(cmdline)
		if m == nil {
			t.Fatalf("%q: want --addr", cmdline)
		}
		url = "http://" + m[1] + "/v2/health/ready"
	default:
		m := regexp.MustCompile(`--http-addr (\S+)`).FindStringSubmatch(cmdline)
		if m == nil {
			t.Fatalf("%q runs in the background without --http-addr: nothing tells when it is ready", cmdline)
		}
		url = "http://" + m[1] + "/healthz"
		if len(f) > 1 && (f[1] == "worker" || f[1] == "paramserver") {
			url = "http://" + m[1] + "/readyz"
		}
	}
	waitFor(t, url, 90*time.Second, func() error {
		if cmd.ProcessState != nil {
			return fmt.Errorf("%s exited", cmdline)
		}
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	})
}

// TestREADMEForMLEngineers runs the ML engineer's walkthrough in README.md line by
// line. Besides ports, the one change is the tensorboard line, which is checked by
// looking for the event files it would read. A line that exits non-zero fails the test, so the README cannot drift
// from the CLI.
func TestREADMEForMLEngineers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sh := newReadmeShell(t, ctx)
	ran := 0
	for _, raw := range readmeBlock(t, "## For ML engineers") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "tensorboard "):
			logdir := regexp.MustCompile(`--logdir (\S+)`).FindStringSubmatch(sh.rewrite(line))
			if logdir == nil {
				t.Fatalf("%q: want --logdir DIR", raw)
			}
			if events, _ := filepath.Glob(filepath.Join(sh.dir, logdir[1], "events.out.tfevents.*")); len(events) == 0 {
				t.Errorf("%q: no TensorBoard event files there", raw)
			}
			ran++
			continue
		}
		sh.run(line)
		ran++
	}
	if ran < 8 {
		t.Fatalf("ran %d README lines; the block looks truncated", ran)
	}

	// The curl lines after the block: the model's metadata names its inputs.
	resp, err := http.Get("http://" + sh.addr("127.0.0.1:8080") + "/v2/models/attrition-mlp")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var meta struct {
		Inputs []struct{ Name string } `json:"inputs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil || resp.StatusCode != http.StatusOK || len(meta.Inputs) == 0 {
		t.Errorf("GET /v2/models/attrition-mlp: status %d, %d inputs (err %v)", resp.StatusCode, len(meta.Inputs), err)
	}
}

// TestREADMEForClusterAdmins runs the cluster admin's walkthrough in README.md line by
// line: three coordinator processes, two parameter-server and two worker agents, a job,
// quotas and queues, a drain, a backup restored onto a fresh coordinator. Then it
// checks what the lines claim: the restored cluster lists the job that succeeded.
func TestREADMEForClusterAdmins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := newReadmeShell(t, ctx)
	ran := 0
	for _, raw := range readmeBlock(t, "## For cluster admins") {
		if line := strings.TrimSpace(raw); line != "" && !strings.HasPrefix(line, "#") {
			sh.run(line)
			ran++
		}
	}
	if ran < 15 {
		t.Fatalf("ran %d README lines; the block looks truncated", ran)
	}
	if sh.jobID == "" {
		t.Fatal("the walkthrough submitted no job")
	}
	out, err := cli(sh.bin, "job", "status", sh.jobID, "-o", "json", "--address", sh.addr("127.0.0.1:7370"))
	if err != nil {
		t.Fatalf("the restored cluster does not know job %s: %v", sh.jobID, err)
	}
	if !strings.Contains(out, "SUCCEEDED") && !strings.Contains(out, "succeeded") {
		t.Errorf("restored job %s: %s, want it succeeded", sh.jobID, out)
	}
}

// submittedID finds the job id in `job submit` output: the JSON object's id, or the
// table's first "job ID" word.
func submittedID(t *testing.T, out []byte) string {
	t.Helper()
	var v struct {
		ID    string `json:"id"`
		JobID string `json:"job_id"`
	}
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "{") {
		lines := strings.Split(s, "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &v); err != nil {
			if err := json.Unmarshal([]byte(s), &v); err != nil {
				t.Fatalf("job submit -o json printed %q: %v", out, err)
			}
		}
		if v.JobID != "" {
			return v.JobID
		}
		if v.ID != "" {
			return v.ID
		}
	}
	if m := regexp.MustCompile(`\b(attrition-mlp-[0-9a-f]+)\b`).FindStringSubmatch(s); m != nil {
		return m[1]
	}
	t.Fatalf("job submit printed no job id: %s", out)
	return ""
}
