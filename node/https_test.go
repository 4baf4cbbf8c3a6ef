package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
)

// TestHTTPSOnTheHTTPPort: with TLS.HTTPS a coordinator serves /healthz, /metrics and the
// dashboard over TLS with its certificate from the cluster CA, which a client holding
// only ca.crt verifies (the dashboard then asks for a client certificate, which the
// operator's admin.crt is); a plaintext HTTP request gets no page.
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
	admin, err := tls.LoadX509KeyPair(filepath.Join(n.ClientTLSDir(), pki.AdminCertFile), filepath.Join(n.ClientTLSDir(), pki.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}}}}
	deadline := time.Now().Add(20 * time.Second)
	for _, path := range []string{"/healthz", "/metrics", "/"} {
		client := client
		if path == "/" {
			client = withCert
			resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}).Get("https://" + n.HTTPAddr() + path)
			if err != nil || resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("the dashboard without a client certificate: %v %v, want 401", resp, err)
			}
			if err == nil {
				resp.Body.Close()
			}
		}
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

// TestPlaintextHTTPOffLoopback: an HTTP port (metrics, health, dashboard) off loopback
// is refused at New unless it is TLS (TLS.HTTPS on a node with TLS material) or the
// node runs Insecure, which then warns that it serves that address in plaintext.
func TestPlaintextHTTPOffLoopback(t *testing.T) {
	coordinator := func(t *testing.T) node.Config {
		cfg := node.DefaultConfig()
		co := node.DefaultCoordinatorConfig()
		co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
		co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Coordinator, cfg.HTTPAddr, cfg.Logger = &co, "0.0.0.0:0", nodetest.Logger()
		return cfg
	}
	worker := func(t *testing.T) node.Config {
		cfg := node.DefaultConfig()
		w := node.DefaultWorkerConfig()
		w.NodeID, w.Join = "w1", []string{"127.0.0.1:7070"}
		cfg.Workers, cfg.Storage.Dir, cfg.HTTPAddr, cfg.Logger = []node.WorkerConfig{w}, t.TempDir(), ":7181", nodetest.Logger()
		return cfg
	}
	for name, cfg := range map[string]func(*testing.T) node.Config{"coordinator with TLS": coordinator, "agent without TLS": worker} {
		t.Run(name, func(t *testing.T) {
			_, err := node.New(cfg(t))
			var ce *node.ConfigError
			if !errors.As(err, &ce) || ce.Field != "HTTPAddr" || !errors.Is(err, node.ErrPlaintextHTTP) ||
				!strings.Contains(err.Error(), "--https") || !strings.Contains(err.Error(), "--insecure") {
				t.Fatalf("New: %v, want a ConfigError on HTTPAddr wrapping ErrPlaintextHTTP, naming --https and --insecure", err)
			}
			insecure := cfg(t)
			insecure.TLS = &node.TLSConfig{Insecure: true}
			if _, err := node.New(insecure); err != nil {
				t.Errorf("New with Insecure: %v", err)
			}
		})
	}
	https := coordinator(t)
	https.TLS = &node.TLSConfig{HTTPS: true}
	if _, err := node.New(https); err != nil {
		t.Errorf("New with HTTPS off loopback: %v", err)
	}
	loopback := coordinator(t)
	loopback.HTTPAddr = "127.0.0.1:0"
	if _, err := node.New(loopback); err != nil {
		t.Errorf("New with plaintext HTTP on loopback: %v", err)
	}

	// Insecure: it starts, and its warning names the plaintext HTTP address.
	warned := make(chan []string, 16)
	cfg := coordinator(t)
	cfg.TLS = &node.TLSConfig{Insecure: true}
	cfg.Logger = slog.New(warnHandler{warned})
	n := start(t, cfg)
	select {
	case addrs := <-warned:
		if !slices.Contains(addrs, "0.0.0.0:0") {
			t.Errorf("the --insecure warning names %v, want the HTTP address 0.0.0.0:0", addrs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no --insecure warning")
	}
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + n.HTTPAddr() + "/metrics"); err != nil {
		t.Errorf("plaintext /metrics with Insecure: %v", err)
	} else {
		resp.Body.Close()
	}
}

// warnHandler sends the addrs of every "TLS is off (--insecure)" warning to c.
type warnHandler struct{ c chan<- []string }

func (warnHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h warnHandler) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h warnHandler) WithGroup(string) slog.Handler          { return h }
func (h warnHandler) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "TLS is off (--insecure)") {
		return nil
	}
	var addrs []string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addrs" {
			addrs, _ = a.Value.Any().([]string)
		}
		return true
	})
	select {
	case h.c <- addrs:
	default:
	}
	return nil
}
