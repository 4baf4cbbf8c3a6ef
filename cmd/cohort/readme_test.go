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
			if inSection && lines != nil {
				return lines
			}
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

// TestREADMEForMLEngineers runs the ML engineer's walkthrough in README.md line by
// line, as a user would paste it into a shell in the repository: the built binary at
// bin/cohort, the example job and its data, ./cohort-data for storage. The only changes
// are ports (7070 and 8080 become free ones), JOB_ID (the id the submit printed), and
// the tensorboard line, which is checked by looking for the event files it would read.
// A line that exits non-zero fails the test, so the README cannot drift from the CLI.
func TestREADMEForMLEngineers(t *testing.T) {
	lines := readmeBlock(t, "## For ML engineers")
	bin := buildBinary(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"bin/cohort": bin, "jobs": repoPath(t, "jobs")} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	grpcAddr, serveAddr := freePort(t), freePort(t)
	ports := strings.NewReplacer("127.0.0.1:7070", grpcAddr, "127.0.0.1:8080", serveAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	background := func(line string) {
		cmd := exec.CommandContext(ctx, "sh", "-c", "exec "+line)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "COHORT_ADDR="+grpcAddr)
		logf, err := os.Create(filepath.Join(t.TempDir(), "out.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				out, _ := os.ReadFile(logf.Name())
				t.Logf("output of %q:\n%s", line, out)
			}
		})
	}
	jobID := ""
	ran := 0
	for _, raw := range lines {
		line := strings.TrimSpace(ports.Replace(raw))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ran++
		switch {
		case strings.HasPrefix(line, "bin/cohort dev"):
			// Leave it running, as the comment says; its HTTP port must not clash either.
			background(strings.Replace(line, "bin/cohort dev", "bin/cohort dev --grpc-addr "+grpcAddr+" --http-addr "+freePort(t), 1))
			waitFor(t, "the dev cluster", time.Minute, func() error {
				_, err := cli(bin, "--address", grpcAddr, "node", "list")
				return err
			})
			continue
		case strings.HasPrefix(line, "export COHORT_ADDR="):
			if got := strings.TrimPrefix(line, "export COHORT_ADDR="); got != grpcAddr {
				t.Fatalf("README exports COHORT_ADDR=%s, want the dev cluster's default address", got)
			}
			continue
		case strings.HasPrefix(line, "tensorboard "):
			logdir := regexp.MustCompile(`--logdir (\S+)`).FindStringSubmatch(line)
			if logdir == nil || jobID == "" {
				t.Fatalf("%q: want --logdir DIR after a job was submitted", raw)
			}
			events, _ := filepath.Glob(filepath.Join(dir, strings.ReplaceAll(logdir[1], "JOB_ID", jobID), "events.out.tfevents.*"))
			if len(events) == 0 {
				t.Errorf("%q: no TensorBoard event files there", raw)
			}
			continue
		}
		if strings.Contains(line, "JOB_ID") {
			if jobID == "" {
				t.Fatalf("%q uses JOB_ID before any job was submitted", raw)
			}
			line = strings.ReplaceAll(line, "JOB_ID", jobID)
		}
		if strings.HasSuffix(line, "&") || strings.Contains(line, "bin/cohort serve ") {
			background(strings.TrimSuffix(strings.TrimSpace(strings.SplitN(line, " #", 2)[0]), "&"))
			waitFor(t, "cohort serve", time.Minute, func() error {
				resp, err := http.Get("http://" + serveAddr + "/v2/health/ready")
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			})
			continue
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "COHORT_ADDR="+grpcAddr)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("README line %q: %v\nstdout:\n%s\nstderr:\n%s", raw, err, out, stderr)
		}
		if strings.Contains(line, "job submit") {
			jobID = submittedID(t, out)
		}
	}
	if ran < 8 {
		t.Fatalf("ran %d README lines; the block looks truncated", ran)
	}

	// The curl lines after the block: the model's metadata names its inputs.
	resp, err := http.Get("http://" + serveAddr + "/v2/models/attrition-mlp")
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

// submittedID finds the job id in `job submit -o json` output.
func submittedID(t *testing.T, out []byte) string {
	t.Helper()
	var v struct {
		ID    string `json:"id"`
		JobID string `json:"job_id"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &v); err != nil {
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("job submit -o json printed %q: %v", out, err)
		}
	}
	if v.JobID != "" {
		return v.JobID
	}
	if v.ID == "" {
		t.Fatalf("job submit -o json printed no id: %s", out)
	}
	return v.ID
}
