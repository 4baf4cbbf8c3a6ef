package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net"
	"net/url"
	"testing"
	"time"
)

// t0 is the fixed time the tests that need no real clock work at. x509 keeps whole
// seconds, so it has none.
var t0 = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

func newTestCA(t testing.TB, cn string, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(cn, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue makes a key and has ca sign a certificate for id; it returns the chain and
// key PEM, as a joining process would hold them.
func issue(t testing.TB, ca *CA, req SignRequest, now time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, csr, err := NewKeyAndCSR(req.Identity.Name)
	if err != nil {
		t.Fatal(err)
	}
	req.CSR = csr
	certPEM, err = ca.Sign(req, now)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// issueLeaf is issue returning the parsed leaf.
func issueLeaf(t testing.TB, ca *CA, req SignRequest, now time.Time) *x509.Certificate {
	t.Helper()
	certPEM, _ := issue(t, ca, req, now)
	return firstCert(t, certPEM)
}

func firstCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pemBlocks returns the DER of every PEM block in data.
func pemBlocks(data []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		out = append(out, b.Bytes)
	}
}

// signTemplate has ca sign tmpl as it is, bypassing CA.Sign: how the tests make
// certificates CA.Sign never would.
func signTemplate(t testing.TB, ca *CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		if tmpl.SerialNumber, err = newSerial(); err != nil {
			t.Fatal(err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentTemplate is a well-formed agent certificate template, to be broken by tests.
func agentTemplate() *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: "node-1", OrganizationalUnit: []string{"agent"}},
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              t0.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{mustURL("cohort://role/agent")},
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func newReloader(t testing.TB, certPEM, keyPEM []byte) *Reloader {
	t.Helper()
	r, err := NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// handshakeResult is what both ends of a TLS handshake saw.
type handshakeResult struct {
	serverErr, clientErr     error
	serverState, clientState tls.ConnectionState
}

// handshake runs one TLS handshake over a loopback TCP connection. The server writes
// one byte once its handshake succeeds and the client reads it, so that a client whose
// certificate the server refused sees the refusal too (in TLS 1.3 the client's
// handshake ends before the server has checked its certificate).
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		conn := tls.Server(raw, serverCfg)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if res.serverErr = conn.Handshake(); res.serverErr == nil {
			res.serverState = conn.ConnectionState()
			_, res.serverErr = conn.Write([]byte{1})
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, clientCfg)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if res.clientErr = conn.Handshake(); res.clientErr == nil {
		res.clientState = conn.ConnectionState()
		_, res.clientErr = io.ReadFull(conn, make([]byte, 1))
	}
	conn.Close()
	<-done
	return res
}
