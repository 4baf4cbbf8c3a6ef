package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	if err := probe(http.DefaultClient, srv.URL+"/healthz", time.Second); err != nil {
		t.Errorf("healthy endpoint: %v", err)
	}
	err := probe(http.DefaultClient, srv.URL+"/other", time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("unhealthy endpoint: err = %v, want the status and body", err)
	}
	srv.Close()
	if err := probe(http.DefaultClient, srv.URL+"/healthz", time.Second); err == nil {
		t.Error("closed server: probe succeeded")
	}
	if err := probe(http.DefaultClient, "://bad", time.Second); err == nil {
		t.Error("bad URL: probe succeeded")
	}
}

// TestProbeHTTPS: with --ca the probe reaches a TLS server whose certificate is of that
// CA, whatever names it holds, and refuses one of another CA.
func TestProbeHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	// httptest's certificate is self-signed: it is its own CA.
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := clientFor(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := probe(client, srv.URL+"/healthz", 5*time.Second); err != nil {
		t.Errorf("HTTPS with the server's CA: %v", err)
	}
	if err := probe(http.DefaultClient, srv.URL+"/healthz", 5*time.Second); err == nil {
		t.Error("HTTPS without --ca: the probe trusted a certificate of an unknown CA")
	}
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	other.StartTLS()
	defer other.Close()
	if err := probe(client, other.URL+"/healthz", 5*time.Second); err == nil || !strings.Contains(err.Error(), "not of the --ca CA") {
		t.Errorf("HTTPS server of another CA: %v, want a refusal naming the CA", err)
	}
	if _, err := clientFor(filepath.Join(dir, "missing.crt")); err == nil {
		t.Error("a missing --ca file was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.crt"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := clientFor(filepath.Join(dir, "junk.crt")); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a --ca file without a certificate: %v", err)
	}
}

// selfSigned is a certificate for 127.0.0.1 that is its own CA (not httptest's).
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
