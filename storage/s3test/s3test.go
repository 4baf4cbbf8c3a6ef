// Package s3test starts a real S3 server, versitygw (Apache-2.0) with its posix
// backend, for tests of code that talks to S3. One server, on 127.0.0.1 with a free
// port and a fresh directory, is shared by the tests of a test binary that run at the
// same time; it stops when the last of them ends. Each Start gives a test its own
// bucket.
//
// The versitygw binary is found through $VERSITYGW, then $(go env GOBIN) or
// $(go env GOPATH)/bin, then $PATH; `make deps` (scripts/install-versitygw.sh)
// installs it. A missing binary fails the test: it is never skipped.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cohort-dev/cohort/storage"
)

const (
	// AccessKey and SecretKey are the root credentials of the test server.
	AccessKey = "cohort-test-access"
	SecretKey = "cohort-test-secret-key"
	// Region is the test server's region.
	Region = "us-east-1"

	startTimeout = 20 * time.Second
	startTries   = 3
)

// Server is a running versitygw and one bucket of it, created for the test that
// called Start.
type Server struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT".
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Bucket is this test's own, empty bucket.
	Bucket string

	gw *gateway
}

// Config returns an S3Config for the test's bucket: path style, the test
// credentials, two retries.
func (s *Server) Config() storage.S3Config {
	cfg := storage.DefaultS3Config()
	cfg.Endpoint = s.Endpoint
	cfg.Bucket = s.Bucket
	cfg.Region = Region
	cfg.AccessKey = s.AccessKey
	cfg.SecretKey = s.SecretKey
	cfg.PathStyle = true
	cfg.Retries = 2
	return cfg
}

// Client returns a minio-go client for the server, for what the storage API does
// not offer (multipart uploads by hand, raw objects).
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := s.gw.client()
	if err != nil {
		t.Fatalf("s3test: minio client: %v", err)
	}
	return c
}

// NewBucket creates another empty bucket with a unique name and returns it.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := bucketName(t.Name())
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		t.Fatalf("s3test: create bucket %q: %v", name, err)
	}
	return name
}

// Start returns the test binary's versitygw, starting it when no test holds it, with
// a new bucket for t. The server stops when the last test that holds it ends.
func Start(t testing.TB) *Server {
	t.Helper()
	gw, err := acquire(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	s := &Server{Endpoint: gw.endpoint, AccessKey: AccessKey, SecretKey: SecretKey, gw: gw}
	s.Bucket = s.NewBucket(t)
	return s
}

var (
	mu      sync.Mutex
	current *gateway
	refs    int
	seq     atomic.Uint64
)

func acquire(t testing.TB) (*gateway, error) {
	mu.Lock()
	defer mu.Unlock()
	if current == nil {
		bin, err := findBinary()
		if err != nil {
			return nil, err
		}
		gw, err := startGateway(bin)
		if err != nil {
			return nil, err
		}
		t.Logf("s3test: versitygw at %s (dir %s)", gw.endpoint, gw.dir)
		current = gw
	}
	refs++
	return current, nil
}

func release() {
	mu.Lock()
	defer mu.Unlock()
	refs--
	if refs == 0 && current != nil {
		current.stop()
		current = nil
	}
}

// errNotFound is the message of a missing binary (the Makefile names the fix).
const errNotFound = "versitygw not found: run `make deps` (scripts/install-versitygw.sh)"

// findBinary looks for versitygw in $VERSITYGW, the Go bin directory, then $PATH.
func findBinary() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s ($VERSITYGW=%q is not an executable file)", errNotFound, p)
	}
	for _, dir := range goBinDirs() {
		if p := filepath.Join(dir, "versitygw"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", errors.New(errNotFound)
}

func goBinDirs() []string {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		if home, herr := os.UserHomeDir(); herr == nil {
			return []string{filepath.Join(home, "go", "bin")}
		}
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var dirs []string
	if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
		dirs = append(dirs, strings.TrimSpace(lines[0]))
	}
	if len(lines) > 1 {
		for _, p := range filepath.SplitList(strings.TrimSpace(lines[1])) {
			if p != "" {
				dirs = append(dirs, filepath.Join(p, "bin"))
			}
		}
	}
	return dirs
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// gateway is one versitygw process.
type gateway struct {
	endpoint string
	dir      string // temporary directory: root/ holds the buckets, versitygw.log the output
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	waitErr  error
	log      *lockedBuffer
}

func startGateway(bin string) (*gateway, error) {
	var lastErr error
	for try := 0; try < startTries; try++ {
		gw, err := startGatewayOnce(bin)
		if err == nil {
			return gw, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// startGatewayOnce starts versitygw on a port that was free a moment ago; another
// process may take it meanwhile, which startGateway answers by trying again.
func startGatewayOnce(bin string) (*gateway, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("s3test: find a free port: %w", err)
	}
	dir, err := os.MkdirTemp("", "cohort-versitygw-")
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("s3test: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	gw := &gateway{endpoint: "http://" + addr, dir: dir, exited: make(chan struct{}), log: &lockedBuffer{}}
	gw.cmd = exec.Command(bin,
		"--access", AccessKey, "--secret", SecretKey,
		"--port", addr, "--region", Region,
		"--keep-alive", "--quiet",
		"posix", root)
	gw.cmd.Env = gatewayEnv()
	gw.cmd.Stdout = gw.log
	gw.cmd.Stderr = gw.log
	gw.cmd.SysProcAttr = sysProcAttr()
	gw.cmd.WaitDelay = 5 * time.Second
	if err := gw.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("s3test: start %s: %w", bin, err)
	}
	go func() {
		gw.waitErr = gw.cmd.Wait()
		close(gw.exited)
	}()
	if err := gw.waitReady(); err != nil {
		gw.stop()
		return nil, err
	}
	return gw, nil
}

// gatewayEnv is the environment without versitygw's own settings, so a developer's
// VGW_* or ROOT_* variables cannot change the test server.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VGW_") || strings.HasPrefix(kv, "ROOT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady polls the port until versitygw answers HTTP (an anonymous request gets
// 403 AccessDenied once it serves), the process exits, or startTimeout passes.
func (gw *gateway) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	hc := &http.Client{Timeout: time.Second}
	poll := 5 * time.Millisecond
	for {
		req, _ := http.NewRequest(http.MethodGet, gw.endpoint+"/", nil)
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.Header.Get("Server") != "" || resp.StatusCode == http.StatusForbidden {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("s3test: versitygw at %s not ready after %v (last error: %v); output:\n%s", gw.endpoint, startTimeout, err, gw.log.String())
		}
		select {
		case <-gw.exited:
			return fmt.Errorf("s3test: versitygw exited before it was ready (%v); output:\n%s", gw.waitErr, gw.log.String())
		case <-time.After(poll):
		}
		poll = min(poll*2, 100*time.Millisecond)
	}
}

// stop ends the process (SIGTERM, then SIGKILL) and removes its directory.
func (gw *gateway) stop() {
	if gw.cmd.Process != nil {
		_ = gw.cmd.Process.Signal(os.Interrupt)
		select {
		case <-gw.exited:
		case <-time.After(5 * time.Second):
			_ = gw.cmd.Process.Kill()
			<-gw.exited
		}
	}
	_ = os.RemoveAll(gw.dir)
}

func (gw *gateway) client() (*minio.Client, error) {
	return minio.New(strings.TrimPrefix(gw.endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var nonBucketChars = regexp.MustCompile(`[^a-z0-9-]+`)

// bucketName makes a unique, valid bucket name from a test name.
func bucketName(testName string) string {
	slug := nonBucketChars.ReplaceAllString(strings.ToLower(testName), "-")
	prefix := fmt.Sprintf("t%d-", seq.Add(1))
	if max := 63 - len(prefix); len(slug) > max {
		slug = slug[:max]
	}
	name := strings.Trim(prefix+slug, "-")
	for strings.Contains(name, "--") {
		name = strings.ReplaceAll(name, "--", "-")
	}
	return name
}

// lockedBuffer collects the process output for error messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil // enough to explain a failure
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
