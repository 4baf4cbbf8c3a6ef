package node_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
)

// TestHTTPSOnTheHTTPPort: with TLS.HTTPS a coordinator serves /healthz, /metrics and the
// dashboard over TLS with its certificate from the cluster CA, which a client holding
// only ca.crt verifies; a plaintext HTTP request gets no page.
func TestHTTPSOnTheHTTPPort(t *testing.T) {
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.TLS = &node.TLSConfig{HTTPS: true}
	n := start(t, cfg)
	pool, err := pki.LoadCAPool(filepath.Join(co.DataDir, "tls", pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(20 * time.Second)
	for _, path := range []string{"/healthz", "/metrics", "/"} {
		for {
			resp, err := client.Get("https://" + n.HTTPAddr() + path)
			if err == nil {
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("https %s: %v %v", path, resp, err)
			}
			time.Sleep(50 * time.Millisecond) // polling until the voter leads (/healthz says 503 before)
		}
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + n.HTTPAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plaintext HTTP got a page from an HTTPS port")
		}
	}
	// A client that does not trust the cluster CA refuses the server.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + n.HTTPAddr() + "/healthz"); err == nil {
		t.Error("a client without ca.crt accepted the server's certificate")
	}
}
