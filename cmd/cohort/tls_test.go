package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
)

// cliEnv runs the binary with args and the environment env (COHORT_TLS_DIR replaced) and
// returns its combined output and exit status.
func cliEnv(t *testing.T, bin, tlsDir string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "COHORT_TLS_DIR="+tlsDir, "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return string(out), 0
}

// TestCLIOverMutualTLS runs a real coordinator process that bootstraps its own CA: the
// CLI reaches it with the admin credentials it wrote (and printed), and is refused
// without a certificate (a clear error, at once), with a certificate from another CA,
// and, for an admin RPC, with a node agent's certificate.
func TestCLIOverMutualTLS(t *testing.T) {
	t.Parallel() // independent: its own processes, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	p := &coordProc{id: "c1", dir: filepath.Join(dir, "c1"), raft: freePort(t), grpc: freePort(t), http: freePort(t)}
	args := []string{"coordinator", "--node-id", p.id, "--data-dir", p.dir, "--raft-addr", p.raft,
		"--grpc-addr", p.grpc, "--http-addr", p.http, "--log-level", "warn", "--bootstrap"}
	cmd := exec.Command(bin, args...) // not coordProc.start: this one makes its own CA
	logPath := filepath.Join(dir, "c1.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logf.Close() })
	healthWaitStatus(t, "http://"+p.http+"/healthz", 200, time.Minute)

	tlsDir := filepath.Join(p.dir, "tls")
	abs, _ := filepath.Abs(tlsDir)
	waitFor(t, "the credentials line", 10*time.Second, func() error {
		out, _ := os.ReadFile(logPath)
		if !strings.Contains(string(out), "client credentials: "+abs) || !strings.Contains(string(out), "export COHORT_TLS_DIR="+abs) {
			return errors.New(string(out))
		}
		return nil
	})

	if out, code := cliEnv(t, bin, tlsDir, "node", "list", "--address", p.grpc); code != 0 {
		t.Fatalf("node list with the admin credentials: exit %d: %s", code, out)
	}

	start := time.Now()
	out, code := cliEnv(t, bin, "", "node", "list", "--address", p.grpc)
	if code == 0 || !strings.Contains(out, "requires TLS") || !strings.Contains(out, "COHORT_TLS_DIR") {
		t.Errorf("node list without a certificate: exit %d: %s", code, out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the refused plaintext call took %v", d)
	}

	other := filepath.Join(dir, "other")
	ca, err := pki.NewCA("another CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "other-ca")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.IssueFiles(filepath.Join(dir, "other-ca"), other, node.AdminIdentity, nil, 0); err != nil {
		t.Fatal(err)
	}
	if out, code := cliEnv(t, bin, other, "node", "list", "--address", p.grpc); code == 0 {
		t.Errorf("node list with a certificate from another CA succeeded: %s", out)
	}

	// A node agent's certificate, presented by the CLI, cannot call an admin RPC.
	agentDir := filepath.Join(dir, "agent")
	if out, code := cliEnv(t, bin, "", "tls", "issue", "--ca-dir", tlsDir, "--role", "agent", "--name", "w1", "--out", agentDir); code != 0 {
		t.Fatalf("tls issue: exit %d: %s", code, out)
	}
	for _, f := range [][2]string{{"node.crt", "client.crt"}, {"node.key", "client.key"}} {
		if err := os.Rename(filepath.Join(agentDir, f[0]), filepath.Join(agentDir, f[1])); err != nil {
			t.Fatal(err)
		}
	}
	out, code = cliEnv(t, bin, agentDir, "quota", "set", "default", "--cpu", "8", "--address", p.grpc)
	if code == 0 || !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "permission denied") {
		t.Errorf("quota set with an agent certificate: exit %d: %s", code, out)
	}
}

// TestTLSIssueBadInput: `cohort tls issue` refuses bad input with exit status 2, and
// --tls-dir naming a directory without credentials is bad input too.
func TestTLSIssueBadInput(t *testing.T) {
	caDir := testCADir(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tls", "issue", "--role", "agent", "--name", "w1", "--out", t.TempDir()}, "--ca-dir"},
		{[]string{"tls", "issue", "--ca-dir", caDir, "--role", "root", "--name", "w1", "--out", t.TempDir()}, "--role"},
		{[]string{"tls", "issue", "--ca-dir", caDir, "--role", "client", "--name", "bob", "--host", "10.0.0.1", "--out", t.TempDir()}, "--host"},
		{[]string{"tls", "issue", "--ca-dir", caDir, "--role", "agent", "--name", "bad name", "--out", t.TempDir()}, "name"},
		{[]string{"tls", "issue", "--ca-dir", t.TempDir(), "--role", "agent", "--name", "w1", "--out", t.TempDir()}, "ca.key"},
		{[]string{"node", "list", "--tls-dir", t.TempDir(), "--address", "127.0.0.1:1"}, "no client credentials"},
	} {
		_, err := runCLI(t, tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want exit 2 naming %s", tc.args, err, tc.want)
		}
	}
	out := t.TempDir()
	if _, err := runCLI(t, "tls", "issue", "--ca-dir", caDir, "--role", "client", "--name", "alice", "--acl-role", "submit", "--namespace", "team-a", "--out", out); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := node.ClientTLSFiles(out); !ok {
		t.Errorf("tls issue --role client wrote no client credentials in %s", out)
	}
}

// TestClientTLSDirPrecedence: --tls-dir, else COHORT_TLS_DIR, else ~/.config/cohort when
// it holds client credentials, else plaintext.
func TestClientTLSDirPrecedence(t *testing.T) {
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("COHORT_TLS_DIR", "")
	g := &globalFlags{}
	if dir, err := clientTLSDir(g); err != nil || dir != "" {
		t.Fatalf("nothing anywhere: %q, %v; want plaintext", dir, err)
	}
	home := filepath.Join(xdg, "cohort")
	if _, err := node.IssueFiles(testCADir(t), home, node.AdminIdentity, nil, 0); err != nil {
		t.Fatal(err)
	}
	if dir, err := clientTLSDir(g); err != nil || dir != home {
		t.Fatalf("credentials in ~/.config/cohort: %q, %v", dir, err)
	}
	env := t.TempDir()
	if _, err := node.IssueFiles(testCADir(t), env, node.AdminIdentity, nil, 0); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COHORT_TLS_DIR", env)
	if dir, err := clientTLSDir(g); err != nil || dir != env {
		t.Fatalf("COHORT_TLS_DIR: %q, %v", dir, err)
	}
	g.tlsDir, g.tlsDirSet = home, true
	if dir, err := clientTLSDir(g); err != nil || dir != home {
		t.Fatalf("--tls-dir: %q, %v", dir, err)
	}
}

// TestLoginCertificateACL runs a real coordinator process without ACL tokens: people
// who log in with client join tokens act with the token's ACL role and namespaces on
// every RPC. A read login limited to team-a lists jobs but cannot submit, cancel or set
// quotas (permission denied naming the role) and sees no team-b job; a submit login
// limited to team-a submits there and nowhere else; the admin certificate does all of it.
func TestLoginCertificateACL(t *testing.T) {
	t.Parallel() // independent: its own processes, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	p := &coordProc{id: "c1", dir: filepath.Join(dir, "c1"), raft: freePort(t), grpc: freePort(t), http: freePort(t)}
	cmd := exec.Command(bin, "coordinator", "--node-id", p.id, "--data-dir", p.dir, "--raft-addr", p.raft,
		"--grpc-addr", p.grpc, "--http-addr", p.http, "--log-level", "warn", "--bootstrap")
	logf, err := os.Create(filepath.Join(dir, "c1.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logf.Close() })
	healthWaitStatus(t, "http://"+p.http+"/healthz", 200, time.Minute)
	admin := filepath.Join(p.dir, "tls")
	waitFor(t, "the admin credentials", 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(admin, "admin.crt"))
		return err
	})
	run := func(tlsDir string, args ...string) (string, int) {
		t.Helper()
		return cliEnv(t, bin, tlsDir, append(args, "--address", p.grpc)...)
	}
	login := func(name string, tokenArgs ...string) string {
		t.Helper()
		out, code := run(admin, append([]string{"token", "create", "--role", "client"}, tokenArgs...)...)
		if code != 0 {
			t.Fatalf("token create %v: exit %d: %s", tokenArgs, code, out)
		}
		d := filepath.Join(dir, name)
		if out, code := run("", "login", "--token", strings.TrimSpace(out), "--name", name, "--dir", d); code != 0 {
			t.Fatalf("login %s: exit %d: %s", name, code, out)
		}
		return d
	}
	reader := login("viewer", "--acl-role", "read", "--namespace", "team-a")
	team := login("team-a-ci", "--acl-role", "submit", "--namespace", "team-a")

	raw, err := os.ReadFile(filepath.Join("..", "..", "jobs", "examples", "attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	spec := func(ns string) string {
		path := filepath.Join(dir, ns+".yaml")
		if err := os.WriteFile(path, []byte(strings.Replace(string(raw), "namespace: default", "namespace: "+ns, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	submit := func(tlsDir, ns string) (string, int) {
		return run(tlsDir, "job", "submit", spec(ns), "--wait-for-capacity", "-o", "json")
	}
	jobID := func(out string) string {
		var j struct {
			ID string `json:"job_id"`
		}
		lines := strings.Split(strings.TrimSpace(out), "\n") // warnings (stderr) come first
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &j); err != nil || j.ID == "" {
			t.Fatalf("no job id in %q: %v", out, err)
		}
		return j.ID
	}

	out, code := submit(admin, "team-b")
	if code != 0 {
		t.Fatalf("job submit in team-b with the admin certificate: exit %d: %s", code, out)
	}
	teamB := jobID(out)
	out, code = submit(team, "team-a")
	if code != 0 {
		t.Fatalf("job submit in team-a with the team-a submit login: exit %d: %s", code, out)
	}
	teamA := jobID(out)
	if out, code := submit(team, "team-b"); code == 0 || !strings.Contains(out, "team-a-ci") || !strings.Contains(out, `not "team-b"`) {
		t.Errorf("job submit in team-b with the team-a submit login: exit %d: %s", code, out)
	}
	if out, code := run(team, "job", "cancel", teamB); code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("job cancel of a team-b job with the team-a submit login: exit %d: %s", code, out)
	}

	out, code = run(reader, "job", "list", "-o", "json")
	if code != 0 || !strings.Contains(out, teamA) || strings.Contains(out, teamB) {
		t.Errorf("job list with the team-a read login: exit %d: %s (want %s and not %s)", code, out, teamA, teamB)
	}
	if out, code := run(reader, "job", "status", teamB); code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("job status of a team-b job with the team-a read login: exit %d: %s", code, out)
	}
	if out, code := submit(reader, "team-a"); code == 0 || !strings.Contains(out, "permission denied") || !strings.Contains(out, "has role read") {
		t.Errorf("job submit with the read login: exit %d: %s, want permission denied naming the role", code, out)
	}
	if out, code := run(reader, "job", "cancel", teamA); code == 0 || !strings.Contains(out, "has role read") {
		t.Errorf("job cancel with the read login: exit %d: %s, want permission denied naming the role", code, out)
	}
	if out, code := run(team, "quota", "set", "team-a", "--cpu", "8"); code == 0 || !strings.Contains(out, "has role submit") {
		t.Errorf("quota set with the submit login: exit %d: %s, want permission denied naming the role", code, out)
	}
	for _, args := range [][]string{{"quota", "set", "team-a", "--cpu", "8"}, {"job", "cancel", teamA}, {"job", "cancel", teamB}} {
		if out, code := run(admin, args...); code != 0 {
			t.Errorf("%v with the admin certificate: exit %d: %s", args, code, out)
		}
	}
}

// TestPlaintextHTTPOffLoopbackRefused runs real processes: a node whose --http-addr is
// off loopback without --https does not start (exit status 2, naming the flag and both
// ways out); with --insecure it starts and warns that the address is plaintext; with
// --https it serves that port over TLS.
func TestPlaintextHTTPOffLoopbackRefused(t *testing.T) {
	t.Parallel() // independent: its own processes, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	_, httpPort, _ := strings.Cut(freePort(t), ":")
	coordinator := func(extra ...string) []string {
		return append([]string{"coordinator", "--node-id", "c1", "--data-dir", filepath.Join(dir, "c1"), "--raft-addr", freePort(t),
			"--grpc-addr", freePort(t), "--http-addr", "0.0.0.0:" + httpPort, "--bootstrap", "--log-level", "warn"}, extra...)
	}
	out, code := cliEnv(t, bin, "", coordinator()...)
	if code != 2 || !strings.Contains(out, "--http-addr") || !strings.Contains(out, "--https") || !strings.Contains(out, "--insecure") {
		t.Errorf("coordinator with a plaintext --http-addr 0.0.0.0: exit %d: %s; want exit 2 naming --http-addr, --https and --insecure", code, out)
	}
	out, code = cliEnv(t, bin, "", "worker", "--node-id", "w1", "--join", freePort(t), "--http-addr", "0.0.0.0:"+httpPort)
	if code != 2 || !strings.Contains(out, "--http-addr") || !strings.Contains(out, "--https") {
		t.Errorf("worker with a plaintext --http-addr 0.0.0.0: exit %d: %s; want exit 2 naming --http-addr and --https", code, out)
	}

	run := func(args ...string) string {
		t.Helper()
		logPath := filepath.Join(t.TempDir(), "node.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logf.Close() })
		return logPath
	}
	// --insecure: plaintext, with the warning naming the HTTP address.
	_, insecurePort, _ := strings.Cut(freePort(t), ":")
	logPath := run("worker", "--node-id", "w2", "--join", freePort(t), "--http-addr", "0.0.0.0:"+insecurePort, "--insecure")
	waitFor(t, "the --insecure warning naming the HTTP address", 30*time.Second, func() error {
		raw, _ := os.ReadFile(logPath)
		if !strings.Contains(string(raw), "TLS is off (--insecure)") || !strings.Contains(string(raw), "0.0.0.0:"+insecurePort) {
			return errors.New(string(raw))
		}
		return nil
	})
	healthWaitStatus(t, "http://127.0.0.1:"+insecurePort+"/healthz", 200, 30*time.Second)

	// --https: the coordinator starts and serves TLS with its CA's certificate.
	run(coordinator("--https")...)
	waitFor(t, "the HTTPS port", 30*time.Second, func() error {
		pool, err := pki.LoadCAPool(filepath.Join(dir, "c1", "tls", pki.CACertFile))
		if err != nil {
			return err
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get("https://127.0.0.1:" + httpPort + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/metrics: %s", resp.Status)
		}
		return nil
	})
}
