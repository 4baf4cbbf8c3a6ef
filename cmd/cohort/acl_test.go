package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node"
)

const (
	aclReadSecret  = "cli-read-secret-0123456789"
	aclTeamSecret  = "cli-team-a-secret-0123456789"
	aclAdminSecret = "cli-admin-secret-0123456789"
	aclAgentSecret = "cli-agent-secret-0123456789"
)

// writeTokensFile writes an ACL tokens file for the tests.
func writeTokensFile(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "tokens.yaml")
	body := `- {name: viewer, secret: ` + aclReadSecret + `, role: read}
- {name: team-a-ci, secret: ` + aclTeamSecret + `, role: submit, namespaces: [team-a]}
- {name: ops, secret: ` + aclAdminSecret + `, role: admin}
- {name: agents, secret: ` + aclAgentSecret + `, role: agent}
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startACLCoordinator runs `cohort coordinator --bootstrap --acl-tokens-file FILE`
// in-process and returns its gRPC address and HTTP base URL once it has a leader.
func startACLCoordinator(t *testing.T, tokensFile string) (grpcAddr, httpURL string) {
	t.Helper()
	dir := t.TempDir()
	withTestCA(t, filepath.Join(dir, "c1"))
	grpcAddr, httpAddr := freePort(t), freePort(t)
	root := newRootCmd()
	root.SetArgs([]string{"coordinator", "--node-id", "c1", "--data-dir", filepath.Join(dir, "c1"),
		"--raft-addr", freePort(t), "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--bootstrap",
		"--acl-tokens-file", tokensFile, "--log-level", "error"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	healthWaitStatus(t, "http://"+httpAddr+"/healthz", http.StatusOK, 30*time.Second)
	return grpcAddr, "http://" + httpAddr
}

// TestCoordinatorACLs runs a real `cohort coordinator` with ACLs on and drives it with
// the CLI in-process: the token comes from COHORT_TOKEN, --token or the config file;
// without one the CLI's admin certificate is the credential; a read token lists but cannot set quotas; a submit
// token limited to team-a submits and cancels there only; an admin sets quotas; a
// worker with the agent token registers; /healthz and /metrics stay open and the
// dashboard asks for a token but reads the cluster with its own.
func TestCoordinatorACLs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg")) // no default config file
	t.Setenv("COHORT_CONFIG", "")
	t.Setenv("COHORT_ADDR", "")
	t.Setenv("COHORT_OUTPUT", "")
	t.Setenv("COHORT_TOKEN", "")
	tokensFile := writeTokensFile(t, dir)
	addr, base := startACLCoordinator(t, tokensFile)
	cli := func(token string, args ...string) (string, error) {
		t.Helper()
		t.Setenv("COHORT_TOKEN", token)
		return runCLI(t, append(args, "--address", addr)...)
	}

	// Without a token the CLI's client certificate (the operator's, ACL role admin) is
	// the credential.
	if out, err := cli("", "job", "list", "-o", "json"); err != nil {
		t.Fatalf("job list without a token, with the admin certificate: %v (%s)", err, out)
	}
	if _, err := cli("wrong-token-0123456789", "job", "list"); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("job list with a wrong token: %v", err)
	}
	if out, err := cli(aclReadSecret, "job", "list", "-o", "json"); err != nil {
		t.Fatalf("job list with COHORT_TOKEN=read token: %v (%s)", err, out)
	}
	_, err := cli(aclReadSecret, "quota", "set", "team-a", "--cpu", "8")
	if err == nil || !strings.Contains(err.Error(), "SetQuota") || !strings.Contains(err.Error(), "admin") {
		t.Fatalf("quota set with a read token: %v, want permission denied naming SetQuota and admin", err)
	}
	// --token beats COHORT_TOKEN.
	if out, err := cli(aclReadSecret, "quota", "set", "team-a", "--cpu", "8", "--token", aclAdminSecret); err != nil {
		t.Fatalf("quota set --token ADMIN: %v (%s)", err, out)
	}
	// The config file's token is used when neither is given, and COHORT_TOKEN beats it.
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("token: "+aclAdminSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("", "quota", "list", "-o", "json", "--config", cfg); err != nil || !strings.Contains(out, "team-a") {
		t.Fatalf("quota list with the config file's token: %v (%s)", err, out)
	}
	if _, err := cli(aclReadSecret, "queue", "set", "research", "--weight", "2", "--config", cfg); err == nil {
		t.Fatal("queue set: COHORT_TOKEN (read) should beat the config file's admin token")
	}

	// Submit: team-a only.
	spec, err := os.ReadFile(filepath.Join("..", "..", "jobs", "examples", "attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inDefault := filepath.Join(dir, "default.yaml")
	inTeamA := filepath.Join(dir, "team-a.yaml")
	if err := os.WriteFile(inDefault, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	teamSpec := strings.Replace(string(spec), "namespace: default", "namespace: team-a", 1)
	if teamSpec == string(spec) {
		t.Fatal("the example spec no longer says namespace: default")
	}
	if err := os.WriteFile(inTeamA, []byte(teamSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(aclReadSecret, "job", "submit", inTeamA); err == nil || !strings.Contains(err.Error(), "SubmitJob") {
		t.Fatalf("job submit with a read token: %v", err)
	}
	if _, err := cli(aclTeamSecret, "job", "submit", inDefault); err == nil || !strings.Contains(err.Error(), `not "default"`) {
		t.Fatalf("job submit to default with the team-a token: %v", err)
	}
	out, err := cli(aclTeamSecret, "job", "submit", inTeamA, "-o", "json", "--wait-for-capacity") // no node has registered
	if err != nil {
		t.Fatalf("job submit to team-a with the team-a token: %v", err)
	}
	id := submittedID(t, []byte(out))
	if _, err := cli(aclReadSecret, "job", "cancel", id); err == nil {
		t.Fatal("job cancel with a read token succeeded")
	}
	if _, err := cli(aclTeamSecret, "job", "cancel", id); err != nil {
		t.Fatalf("job cancel with the team-a token: %v", err)
	}

	// A worker with the agent token registers (its /readyz turns 200).
	agentCtx, stopAgent := context.WithCancel(context.Background())
	f := &nodeAgentFlags{tls: &node.TLSConfig{Dir: agentTLSDir(t, "acl-worker")},
		nodeID: "acl-worker", join: addr, storageDir: t.TempDir(), cpuMillis: 1000, memory: 1 << 30,
		httpAddr: healthFreeAddr(t), logLevel: "error", token: aclAgentSecret,
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- runNodeAgent(agentCtx, f, false) }()
	t.Cleanup(func() {
		stopAgent()
		if err := <-agentDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("node agent: %v", err)
		}
	})
	healthWaitStatus(t, "http://"+f.httpAddr+"/readyz", http.StatusOK, 30*time.Second)
	out, err = cli(aclReadSecret, "node", "list", "-o", "json")
	if err != nil || !strings.Contains(out, "acl-worker") {
		t.Fatalf("node list: %v (%s)", err, out)
	}

	// HTTP: health and metrics open; the dashboard needs a read token.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if resp := get(p, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", p, resp.StatusCode)
		}
	}
	if resp := get("/jobs", ""); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Errorf("GET /jobs without a token: %d to %q, want a redirect to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get("/api/jobs", aclAgentSecret); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/jobs with the agent token: %d, want 401", resp.StatusCode)
	}
	resp := get("/api/jobs", aclReadSecret)
	var jobs struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jobs); err != nil || resp.StatusCode != http.StatusOK || len(jobs.Jobs) != 1 || jobs.Jobs[0].ID != id {
		t.Errorf("GET /api/jobs with a read token: %d, %+v, %v; want job %s", resp.StatusCode, jobs, err, id)
	}

	// SIGHUP reloads the tokens file: a new read token works, the removed one does not.
	// (The coordinator running in this process handles SIGHUP, so it does not end the
	// test binary.)
	const newRead = "cli-rotated-read-secret-0123456789"
	rotated, err := os.ReadFile(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokensFile, []byte(strings.Replace(string(rotated), aclReadSecret, newRead, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reloaded tokens", 10*time.Second, func() error {
		_, err := cli(newRead, "job", "list")
		return err
	})
	if _, err := cli(aclReadSecret, "job", "list"); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Fatalf("job list with the removed read token after SIGHUP: %v", err)
	}
}

// TestCoordinatorBadTokensFile: a tokens file that does not validate is bad input
// (exit 2) naming the file, line and field, before anything starts.
func TestCoordinatorBadTokensFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(path, []byte("- {name: a, secret: 0123456789abcdef, role: read}\n- {name: b, secret: 0123456789abcdeg, role: root}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	root.SetArgs([]string{"coordinator", "--node-id", "c1", "--data-dir", filepath.Join(dir, "c1"), "--bootstrap",
		"--raft-addr", freePort(t), "--grpc-addr", freePort(t), "--http-addr", freePort(t), "--acl-tokens-file", path, "--log-level", "error"})
	err := root.ExecuteContext(context.Background())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `line 2: [1].role: "root"`) {
		t.Fatalf("error %v, want exit 2 naming the file, line 2 and [1].role", err)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "c1")); statErr == nil {
		t.Error("the coordinator created its data directory before refusing the tokens file")
	}
}
