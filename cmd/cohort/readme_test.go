package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the first ```sh block after the README heading that
// starts with heading.
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	return readmeBlockN(t, heading, 0)
}

// readmeBlockN returns the lines of the n-th (from 0) ```sh block of the README section
// whose heading starts with heading.
func readmeBlockN(t *testing.T, heading string, n int) []string {
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
			if n == 0 {
				return lines
			}
			n, lines, inBlock = n-1, nil, false
		case inBlock:
			lines = append(lines, l)
		}
	}
	t.Fatalf("README.md: too few sh blocks under %q", heading)
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
	// A user's shell: the credentials of the clusters the README starts come from its own
	// export lines, not from the test process's COHORT_TLS_DIR.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "COHORT_TLS_DIR=") })
	sh := &readmeShell{t: t, ctx: ctx, bin: buildBinary(t), dir: t.TempDir(), env: env, ports: map[string]string{}}
	if err := os.Mkdir(filepath.Join(sh.dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sh.bin, filepath.Join(sh.dir, "bin", "cohort")); err != nil {
		t.Fatal(err)
	}
	// A copy, not a link: workers read file:// data only inside their data roots (by
	// default the working directory), and a link would resolve outside it.
	if err := os.CopyFS(filepath.Join(sh.dir, "jobs"), os.DirFS(repoPath(t, "jobs"))); err != nil {
		t.Fatal(err)
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

// cli runs the binary with args as a later line of the block would (in its directory,
// with its environment) and returns stdout.
func (sh *readmeShell) cli(args ...string) (string, error) {
	cmd := exec.CommandContext(sh.ctx, sh.bin, args...)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
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

// output runs one rewritten README line that must exit 0 and returns its stdout.
func (sh *readmeShell) output(raw string) string {
	sh.t.Helper()
	cmd := exec.CommandContext(sh.ctx, "sh", "-c", sh.rewrite(raw))
	cmd.Dir, cmd.Env = sh.dir, sh.env
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		sh.t.Fatalf("README line %q: %v\nstdout:\n%s\nstderr:\n%s", raw, err, out, stderr)
	}
	return string(out)
}

// runBlock runs every line of the README block under heading but comments and blank
// lines, and fails when fewer than least ran (a truncated block).
func (sh *readmeShell) runBlock(heading string, least int) {
	sh.t.Helper()
	ran := 0
	for _, raw := range readmeBlock(sh.t, heading) {
		if line := strings.TrimSpace(raw); line != "" && !strings.HasPrefix(line, "#") {
			sh.run(line)
			ran++
		}
	}
	if ran < least {
		sh.t.Fatalf("ran %d README lines; the block looks truncated", ran)
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
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
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

	// The curl block after it, as written: the metadata names the inputs, the request
	// file holds one tensor for each of them, and the answer has the shape the README shows.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README's curl lines need curl (make deps installs it)")
	}
	var shown string
	var outs []string
	for _, raw := range readmeBlockN(t, "## For ML engineers", 1) {
		line := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(line, "# {"):
			shown = strings.TrimPrefix(line, "# ")
		case line != "" && !strings.HasPrefix(line, "#"):
			outs = append(outs, sh.output(line))
		}
	}
	if len(outs) != 2 || shown == "" {
		t.Fatalf("the curl block ran %d lines and shows %q; want the metadata and infer lines and the answer", len(outs), shown)
	}
	var meta struct {
		Inputs []struct{ Name, Datatype string } `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(outs[0]), &meta); err != nil || len(meta.Inputs) == 0 {
		t.Fatalf("GET /v2/models/attrition-mlp printed %q (%v)", outs[0], err)
	}
	raw, err := os.ReadFile(repoPath(t, "jobs/data/attrition-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Inputs []struct{ Name, Datatype string } `json:"inputs"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatalf("jobs/data/attrition-request.json: %v", err)
	}
	if !slices.Equal(req.Inputs, meta.Inputs) {
		t.Errorf("jobs/data/attrition-request.json sends %v, the model takes %v", req.Inputs, meta.Inputs)
	}
	type answer struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Name     string            `json:"name"`
			Shape    []int             `json:"shape"`
			Datatype string            `json:"datatype"`
			Data     []json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	var got, want answer
	if err := json.Unmarshal([]byte(outs[1]), &got); err != nil {
		t.Fatalf("the infer line printed %q: %v", outs[1], err)
	}
	if err := json.Unmarshal([]byte(shown), &want); err != nil {
		t.Fatalf("the README shows the answer %q: %v", shown, err)
	}
	shape := func(a answer) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s/%s", a.ModelName, a.ModelVersion)
		for _, o := range a.Outputs {
			fmt.Fprintf(&b, " %s %s %v (%d values)", o.Name, o.Datatype, o.Shape, len(o.Data))
		}
		return b.String()
	}
	if shape(got) != shape(want) {
		t.Errorf("the infer answer's shape is\n%s\nthe README shows\n%s", shape(got), shape(want))
	}
	for _, o := range got.Outputs {
		switch o.Name {
		case "probability":
			p, err := strconv.ParseFloat(string(o.Data[0]), 64)
			if err != nil || p < 0 || p > 1 {
				t.Errorf("probability %s is not in [0, 1]", o.Data[0])
			}
		case "label":
			if l := string(o.Data[0]); l != `"Yes"` && l != `"No"` {
				t.Errorf("label %s is not \"Yes\" or \"No\"", l)
			}
		}
	}
}

// TestREADMEForClusterAdmins runs the cluster admin's walkthrough in README.md line by
// line: three coordinator processes, two parameter-server and two worker agents, a job,
// quotas and queues, a drain, a backup restored onto a fresh coordinator. Then it
// checks what the lines claim: the restored cluster lists the job that succeeded.
func TestREADMEForClusterAdmins(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := newReadmeShell(t, ctx)
	sh.runBlock("## For cluster admins", 15)
	if sh.jobID == "" {
		t.Fatal("the walkthrough submitted no job")
	}
	out, err := sh.cli("job", "status", sh.jobID, "-o", "json", "--address", sh.addr("127.0.0.1:7370"))
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
	if m := regexp.MustCompile(`\b([a-z][a-z0-9-]*-[0-9a-f]{8})\b`).FindStringSubmatch(s); m != nil {
		return m[1]
	}
	t.Fatalf("job submit printed no job id: %s", out)
	return ""
}

// TestREADMEAuditWalkthrough runs the audit walkthrough in README.md line by line: a
// model trained on biased data fails its fairness gate, export refuses it, an override
// exports it, and the served model explains a row. Then it checks what the lines claim.
func TestREADMEAuditWalkthrough(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sh := newReadmeShell(t, ctx)
	sh.runBlock("## Explain and audit a model", 7)
	addr := sh.addr("127.0.0.1:7470")

	// The job succeeded, its gate failed on Gender, and the override is on record.
	out, err := sh.cli("job", "status", sh.jobID, "-o", "json", "--address", addr)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Job struct {
			State         string `json:"state"`
			StatusMessage string `json:"status_message"`
			Report        string `json:"report"`
			Gate          struct {
				Passed    bool     `json:"passed"`
				Reasons   []string `json:"reasons"`
				Overrides []struct {
					By, Reason string
				} `json:"overrides"`
			} `json:"gate"`
		} `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("job status -o json: %v\n%s", err, out)
	}
	j := st.Job
	if j.State != "JOB_STATE_SUCCEEDED" || j.Gate.Passed || len(j.Gate.Reasons) == 0 ||
		!strings.Contains(j.Gate.Reasons[0], "impact ratio") || !strings.Contains(j.Gate.Reasons[0], "Gender=") ||
		!strings.Contains(j.StatusMessage, "export blocked: impact ratio") {
		t.Errorf("job %s %q, gate %+v", j.State, j.StatusMessage, j.Gate)
	}
	// The CLI's certificate (cohort dev's admin.crt) names the caller.
	if len(j.Gate.Overrides) != 1 || j.Gate.Overrides[0].By != "admin" ||
		j.Gate.Overrides[0].Reason != "reviewed with HR legal, ticket 42" {
		t.Errorf("overrides %+v", j.Gate.Overrides)
	}

	// Without the override, export is refused with exit status 2 and the reasons.
	cmd := exec.CommandContext(ctx, sh.bin, "export", sh.jobID, "--format", "onnx", "--out", filepath.Join(sh.dir, "again"), "--address", addr)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	stderr, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(stderr), "impact ratio") {
		t.Errorf("export without override: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(sh.dir, "again")); !os.IsNotExist(err) {
		t.Errorf("a refused export wrote %s (%v)", filepath.Join(sh.dir, "again"), err)
	}

	// The exported report and model card carry the override.
	raw, err := os.ReadFile(filepath.Join(sh.dir, "audit-models", "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Audit struct {
			Gate struct {
				Passed   bool
				Override *struct{ By, Reason, Time string }
			}
		}
		Importance []struct{ Feature string }
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if o := rep.Audit.Gate.Override; rep.Audit.Gate.Passed || o == nil || o.Reason != "reviewed with HR legal, ticket 42" || o.Time == "" {
		t.Errorf("exported report's gate %+v", rep.Audit.Gate)
	}
	card, err := os.ReadFile(filepath.Join(sh.dir, "audit-models", "model_card.md"))
	if err != nil || !strings.Contains(string(card), "reviewed with HR legal, ticket 42") {
		t.Errorf("model card lacks the override (%v):\n%s", err, card)
	}
	for _, im := range rep.Importance {
		if im.Feature == "Gender" {
			t.Error("Gender, the audited column, is a model input")
		}
	}

	// The served model explains a row: one attribution per input, completing the
	// difference between the explained output and the baseline's.
	serveAddr := sh.addr("127.0.0.1:8480")
	resp, err := http.Get("http://" + serveAddr + "/v2/models/attrition-fairness-gate")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Inputs []struct{ Name, Datatype string } `json:"inputs"`
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil || len(meta.Inputs) == 0 {
		t.Fatalf("metadata: %v %+v", err, meta)
	}
	// The README's explain line, as written: its request file holds one tensor for each
	// of the model's inputs.
	reqBody, err := os.ReadFile(repoPath(t, "jobs/data/attrition-fairness-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Inputs []struct{ Name, Datatype string } `json:"inputs"`
	}
	if err := json.Unmarshal(reqBody, &req); err != nil || !slices.Equal(req.Inputs, meta.Inputs) {
		t.Fatalf("jobs/data/attrition-fairness-request.json sends %v (%v), the model takes %v", req.Inputs, err, meta.Inputs)
	}
	var explainOut string
	for _, l := range readmeBlockN(t, "## Explain and audit", 1) {
		if line := strings.TrimSpace(l); strings.HasPrefix(line, "curl ") {
			explainOut = sh.output(line)
		}
	}
	if explainOut == "" {
		t.Fatal("the README's explain block runs no curl line")
	}
	var ex struct {
		Outputs []struct {
			Name string            `json:"name"`
			Data []json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(explainOut), &ex); err != nil {
		t.Fatalf("explain printed %q: %v", explainOut, err)
	}
	vals := map[string]float64{}
	var sum float64
	attributions := 0
	for _, o := range ex.Outputs {
		var v float64
		if len(o.Data) != 1 || json.Unmarshal(o.Data[0], &v) != nil {
			continue // the label output is text
		}
		vals[o.Name] = v
		if strings.HasPrefix(o.Name, "attribution_") {
			sum += v
			attributions++
		}
	}
	if attributions != len(meta.Inputs) {
		t.Errorf("%d attribution tensors for %d inputs", attributions, len(meta.Inputs))
	}
	if diff := vals["explained_output"] - vals["baseline_output"]; math.Abs(sum-diff) > 1e-3 || math.Abs(vals["explained_output"]-vals["probability"]) > 1e-6 {
		t.Errorf("attributions sum to %.6f, output %.6f - baseline %.6f = %.6f (probability %.6f)",
			sum, vals["explained_output"], vals["baseline_output"], diff, vals["probability"])
	}
	t.Logf("explain: P(Yes) %.4f, baseline %.4f, %d attributions", vals["explained_output"], vals["baseline_output"], attributions)
}
