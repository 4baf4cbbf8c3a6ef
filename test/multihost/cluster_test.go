package multihost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohort-dev/cohort/internal/netns"
)

// Ports every role listens on, on its own host's address.
const (
	raftPort   = 7000
	grpcPort   = 7070
	httpPort   = 7071
	psDataPort = 7080
	nodeTTL    = 15 * time.Second // the coordinators' default --node-heartbeat-ttl
	sampleRows = 300              // rows of the attrition sample the jobs train on
)

// binary is the cohort binary, built once per test binary (TestMain).
var binary struct {
	path string
	err  error
	once sync.Once
	dir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

// cohortBinary builds cmd/cohort with `go build -o` into a temporary directory, once.
func cohortBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "cohort-multihost-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.dir = dir
		binary.path = filepath.Join(dir, "cohort")
		cmd := exec.Command("go", "build", "-o", binary.path, "github.com/cohort-dev/cohort/cmd/cohort")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// repoRoot is the module root (this package is test/multihost).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// coordinator is one `cohort coordinator` on its own host.
type coordinator struct {
	id      string
	host    *netns.Host
	proc    *netns.Process
	dataDir string
	log     string
	grpc    string
	metrics string // http://host:port/metrics
}

// agent is one `cohort paramserver` or `cohort worker` on its own host.
type agent struct {
	id, role string
	host     *netns.Host
	proc     *netns.Process
	args     []string
	log      string
	ready    string // http://host:port/readyz
}

// cluster is 3 coordinators, 2 parameter-server nodes and 2 workers on separate hosts,
// and a client host the workload runs from.
type cluster struct {
	t       *testing.T
	net     *netns.Network
	bin     string
	dir     string // logs, data directories, specs
	storage string // the storage directory every role shares
	data    string // the workers' data root
	coords  []*coordinator
	agents  []*agent
	client  *netns.Host
	addrs   string // every coordinator's gRPC address, comma-separated
	http    *http.Client
	netLog  *logFile
	spec    []byte // specTemplate
	tlsDir  string // the operator's TLS directory: the cluster CA and an admin client certificate
}

// logFile is a goroutine-safe line log.
type logFile struct {
	mu sync.Mutex
	f  *os.File
	t0 time.Time
}

func (l *logFile) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	fmt.Fprintf(l.f, "%s %8.3fs %s\n", now.UTC().Format("15:04:05.000"), now.Sub(l.t0).Seconds(), fmt.Sprintf(format, args...))
}

// startCluster creates the hosts and starts every role, and returns when the
// coordinators have a leader and every node agent is ready. dir holds everything the
// run writes.
func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	netns.Require(t)
	bin := cohortBinary(t)
	lf, err := os.Create(filepath.Join(dir, "harness.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	nl := &logFile{f: lf, t0: time.Now()}
	n := netns.NewT(t, netns.Config{Logf: nl.printf})
	c := &cluster{t: t, net: n, bin: bin, dir: dir, storage: filepath.Join(dir, "storage"), data: filepath.Join(dir, "data"), netLog: nl}
	for _, d := range []string{c.storage, c.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An empty client config, so a config file in the user's home cannot change the CLI.
	if err := os.WriteFile(filepath.Join(dir, "client-config.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	copyHead(t, filepath.Join(repoRoot(t), "jobs/data/attrition-sample.csv"), filepath.Join(c.data, "attrition.csv"), sampleRows+1)
	c.spec = specTemplate(t, c.data)
	if err := os.MkdirAll(filepath.Join(dir, "specs"), 0o755); err != nil {
		t.Fatal(err)
	}

	host := func(name string) *netns.Host {
		h, err := n.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var grpcs []string
	for i := range 3 {
		h := host(fmt.Sprintf("c%d", i+1))
		co := &coordinator{id: h.Name(), host: h, dataDir: filepath.Join(dir, h.Name()), log: filepath.Join(dir, h.Name()+".log"),
			grpc: h.HostPort(grpcPort), metrics: "https://" + h.HostPort(httpPort) + "/metrics"}
		c.coords = append(c.coords, co)
		grpcs = append(grpcs, co.grpc)
	}
	c.addrs = strings.Join(grpcs, ",")
	for _, spec := range []struct{ id, role string }{{"ps1", "paramserver"}, {"ps2", "paramserver"}, {"w1", "worker"}, {"w2", "worker"}} {
		h := host(spec.id)
		a := &agent{id: spec.id, role: spec.role, host: h, log: filepath.Join(dir, spec.id+".log"), ready: "https://" + h.HostPort(httpPort) + "/readyz"}
		a.args = []string{spec.role, "--node-id", spec.id, "--join", c.addrs, "--storage-dir", c.storage,
			"--tls-dir", filepath.Join(dir, spec.id+"-tls"),
			"--http-addr", h.HostPort(httpPort), "--https", "--gpus", "0", "--cpu-millis", "2000", "--memory-bytes", fmt.Sprint(4 << 30)}
		if spec.role == "paramserver" {
			a.args = append(a.args, "--data-addr", h.HostPort(psDataPort))
		} else {
			a.args = append(a.args, "--data-root", c.data)
		}
		c.agents = append(c.agents, a)
	}
	c.client = host("client")
	c.http = c.client.HTTPClient(2 * time.Second)
	// Every HTTP port is HTTPS (plaintext off loopback is refused). The harness polls
	// health, readiness and metrics without verifying the server certificate: it has no
	// CA until the first voter has made one; gRPC and Raft, which the campaign checks,
	// verify both sides.
	c.http.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above

	// Mutual TLS, as the README's walkthrough sets it up: the first voter creates the
	// cluster CA and an admin client certificate in its DATA_DIR/tls; the operator keeps
	// a copy (c.tlsDir, what the CLI presents; the first voter's directory may be
	// emptied by a rebuild) and issues every other process its certificate from it.
	c.tlsDir = filepath.Join(dir, "operator-tls")
	for i, co := range c.coords {
		var extra []string
		if i == 0 {
			extra = []string{"--bootstrap"}
		} else {
			c.issueCert("coordinator", co.id, co.host.Addr().String(), filepath.Join(co.dataDir, "tls"))
			extra = []string{"--join", strings.Join(grpcs[:i], ",")}
		}
		c.startCoordinator(co, extra...)
		c.waitHTTP("coordinator "+co.id+" /healthz", "https://"+co.host.HostPort(httpPort)+"/healthz", 60*time.Second)
		if i == 0 {
			c.copyOperatorTLS(filepath.Join(co.dataDir, "tls"))
		}
	}
	c.waitFor("3 voters with a leader", 60*time.Second, func() error {
		_, err := c.peersVia(c.addrs, 10*time.Second)
		return err
	})
	for _, a := range c.agents {
		c.issueCert("agent", a.id, a.host.Addr().String(), filepath.Join(dir, a.id+"-tls"))
		c.startAgent(a)
	}
	for _, a := range c.agents {
		c.waitHTTP(a.role+" "+a.id+" /readyz", a.ready, 60*time.Second)
	}
	return c
}

// copyHead copies the first lines of src to dst.
func copyHead(t *testing.T, src, dst string, lines int) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var buf bytes.Buffer
	sc := bufio.NewScanner(in)
	for i := 0; i < lines && sc.Scan(); i++ {
		buf.Write(sc.Bytes())
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startCoordinator starts (or restarts, from its data directory) a coordinator.
func (c *cluster) startCoordinator(co *coordinator, extra ...string) {
	c.t.Helper()
	args := append([]string{"coordinator", "--node-id", co.id, "--data-dir", co.dataDir, "--storage-dir", c.storage,
		"--raft-addr", co.host.HostPort(raftPort), "--grpc-addr", co.grpc, "--http-addr", co.host.HostPort(httpPort), "--https",
		"--log-level", "info"}, extra...)
	p, err := co.host.Start(netns.ProcessConfig{Name: "coordinator " + co.id, Path: c.bin, Args: args, Dir: c.dir, Log: co.log})
	if err != nil {
		c.t.Fatal(err)
	}
	co.proc = p
}

// rebuildCoordinator replaces a coordinator that cannot start from its data directory
// the way an operator would: remove it from the Raft configuration, empty its data
// directory and start it with --join, so it catches up from the leader.
func (c *cluster) rebuildCoordinator(co *coordinator) error {
	var others []string
	for _, o := range c.coords {
		if o != co {
			others = append(others, o.grpc)
		}
	}
	if r := c.cli(30*time.Second, "operator", "raft", "remove-peer", co.id, "--address", strings.Join(others, ",")); r.err != nil {
		return fmt.Errorf("remove-peer %s: %v", co.id, r.err)
	}
	if err := os.RemoveAll(co.dataDir); err != nil {
		return err
	}
	c.issueCert("coordinator", co.id, co.host.Addr().String(), filepath.Join(co.dataDir, "tls"))
	c.startCoordinator(co, "--join", strings.Join(others, ","))
	return nil
}

// copyOperatorTLS waits for the bootstrapped voter's TLS directory to hold the CA and
// the admin client certificate, and copies them to c.tlsDir.
func (c *cluster) copyOperatorTLS(from string) {
	c.t.Helper()
	files := []string{"ca.crt", "ca.key", "admin.crt", "admin.key"}
	c.waitFor("the cluster CA in "+from, 30*time.Second, func() error {
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(from, f)); err != nil {
				return err
			}
		}
		return nil
	})
	if err := os.MkdirAll(c.tlsDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err == nil {
			err = os.WriteFile(filepath.Join(c.tlsDir, f), b, 0o600)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// issueCert writes a TLS directory for a coordinator or node agent named name serving
// on addr, from the operator's copy of the CA (`cohort tls issue`, offline).
func (c *cluster) issueCert(role, name, addr, out string) {
	c.t.Helper()
	cmd := exec.Command(c.bin, "tls", "issue", "--ca-dir", c.tlsDir, "--role", role, "--name", name, "--host", addr, "--out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("cohort tls issue --role %s --name %s: %v\n%s", role, name, err, b)
	}
}

// startAgent starts (or restarts) a node agent.
func (c *cluster) startAgent(a *agent) {
	c.t.Helper()
	p, err := a.host.Start(netns.ProcessConfig{Name: a.role + " " + a.id, Path: c.bin, Args: a.args, Dir: c.dir, Log: a.log})
	if err != nil {
		c.t.Fatal(err)
	}
	a.proc = p
}

// waitFor polls cond every 100 ms until it holds, failing the test at the deadline.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func() error) {
	c.t.Helper()
	if err := poll(timeout, cond); err != nil {
		c.t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// poll calls cond every 100 ms until it returns nil or timeout passes (then its last
// error).
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

// waitHTTP waits until url answers 200 from the client host.
func (c *cluster) waitHTTP(what, url string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor(what, timeout, func() error { return c.get(url) })
}

func (c *cluster) get(url string) error {
	resp, err := c.http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// cliResult is one CLI run on the client host.
type cliResult struct {
	stdout, stderr string
	err            error // nil: exit status 0
	exit           int   // -1: killed at the deadline or not started
	call, ret      time.Time
}

// cli runs `cohort args...` on the client host, killing it after timeout.
func (c *cluster) cli(timeout time.Duration, args ...string) cliResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := c.client.Command(ctx, c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "COHORT_CONFIG="+filepath.Join(c.dir, "client-config.yaml"), "COHORT_TLS_DIR="+c.tlsDir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := cliResult{call: time.Now(), exit: -1}
	r.err = cmd.Run()
	r.ret = time.Now()
	r.stdout, r.stderr = out.String(), errb.String()
	var ee *exec.ExitError
	switch {
	case r.err == nil:
		r.exit = 0
	case ctx.Err() != nil:
		r.err = fmt.Errorf("killed after %v: %w", timeout, ctx.Err())
	case errors.As(r.err, &ee):
		r.exit = ee.ExitCode()
		r.err = fmt.Errorf("exit %d: %s", r.exit, strings.TrimSpace(lastLine(r.stderr)))
	}
	return r
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// peer is one entry of `operator raft list-peers -o json`.
type peer struct {
	ID     string `json:"id"`
	Leader bool   `json:"leader"`
	Voter  bool   `json:"voter"`
}

// peersVia lists the Raft peers through the coordinators at addrs, and checks that
// there are 3 voters with exactly one leader.
func (c *cluster) peersVia(addrs string, timeout time.Duration) ([]peer, error) {
	r := c.cli(timeout, "operator", "raft", "list-peers", "-o", "json", "--address", addrs)
	if r.err != nil {
		return nil, r.err
	}
	var ps []peer
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &ps); err != nil {
		return nil, fmt.Errorf("list-peers output %q: %w", r.stdout, err)
	}
	leaders := 0
	for _, p := range ps {
		if p.Leader {
			leaders++
		}
	}
	if len(ps) != 3 || leaders != 1 {
		return ps, fmt.Errorf("peers %+v: want 3 voters, one leader", ps)
	}
	return ps, nil
}

// leaderClaims scrapes every coordinator's cohort_coordinator_leader gauge from the
// client host: the IDs of those that say they run the leader machinery now, and of
// those that did not answer.
func (c *cluster) leaderClaims() (leaders, silent []string) {
	type res struct {
		id             string
		leader, answer bool
	}
	ch := make(chan res, len(c.coords))
	for _, co := range c.coords {
		go func() {
			v, err := c.gauge(co.metrics, "cohort_coordinator_leader")
			ch <- res{co.id, err == nil && v == "1", err == nil}
		}()
	}
	for range c.coords {
		r := <-ch
		if r.leader {
			leaders = append(leaders, r.id)
		}
		if !r.answer {
			silent = append(silent, r.id)
		}
	}
	slices.Sort(leaders)
	slices.Sort(silent)
	return leaders, silent
}

// gauge reads one unlabelled metric from a /metrics page.
func (c *cluster) gauge(url, name string) (string, error) {
	resp, err := c.http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no %s", url, name)
}

// coordinator returns the coordinator with id.
func (c *cluster) coordinator(id string) *coordinator {
	for _, co := range c.coords {
		if co.id == id {
			return co
		}
	}
	return nil
}

// specName stands for the job name in specTemplate.
const specName = "campaign-job-name"

// specTemplate is jobs/examples/attrition-mlp.yaml with a few epochs on the first rows
// of its sample data (in the workers' data root), without the audit, explanations and
// export (they add seconds per job and nothing the campaign checks), and small
// resources so several jobs run at once; its name is specName.
func specTemplate(t *testing.T, dataRoot string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "jobs/examples/attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["metadata"].(map[string]any)["name"] = specName
	spec := doc["spec"].(map[string]any)
	delete(spec, "audit")
	delete(spec, "explain")
	delete(spec, "export")
	spec["model"] = map[string]any{"mlp": map[string]any{"hidden": []int{8}, "activation": "relu"}}
	spec["data"].(map[string]any)["train"] = "file://" + filepath.Join(dataRoot, "attrition.csv")
	tr := spec["training"].(map[string]any)
	tr["epochs"] = 2
	tr["optimizer"] = map[string]any{"name": "adam", "learningRate": 0.01}
	spec["resources"] = map[string]any{
		"workers":          map[string]any{"count": 2, "min": 1, "max": 2, "gpus": 0, "cpu": "250m", "memory": "256Mi"},
		"parameterServers": map[string]any{"shards": 2, "cpu": "250m", "memory": "256Mi"},
	}
	spec["checkpoint"] = map[string]any{"everySteps": 4, "keep": 2}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jobSpec writes the spec of a job named name and returns its path.
func (c *cluster) jobSpec(name string) (string, error) {
	path := filepath.Join(c.dir, "specs", name+".yaml")
	if err := os.WriteFile(path, bytes.ReplaceAll(c.spec, []byte(specName), []byte(name)), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// logTail returns the last n lines of a role's log file.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
