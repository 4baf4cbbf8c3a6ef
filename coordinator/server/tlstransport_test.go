package server

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohort-dev/cohort/internal/pki"
)

// TestRaftTransportRefusesRevokedTokens: over real loopback mutual TLS, a voter's Raft
// port refuses a coordinator whose certificate was enrolled with a revoked join token
// (the handshake fails and nothing reaches Raft) and admits one of a valid token and
// one that names none; a voter also refuses to dial a peer serving such a certificate.
func TestRaftTransportRefusesRevokedTokens(t *testing.T) {
	ca, err := pki.NewCA("raft", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name, token string) *pki.Reloader {
		certPEM, keyPEM, err := ca.IssueFor(pki.Identity{Name: name, Role: pki.RoleCoordinator, Token: token}, []string{"127.0.0.1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r, err := pki.NewReloader(certPEM, keyPEM, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	revoked := func(id string) bool { return id == "bad123" }
	log := slog.New(slog.DiscardHandler)
	layer := func(certs *pki.Reloader) *tlsStreamLayer {
		l, err := newTLSStreamLayer("127.0.0.1:0", nil, TLSConfig{CA: ca.Pool(), Certs: certs, Revoked: revoked}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	// accepted is what Raft would read from the next connection l accepts.
	accepted := func(l *tlsStreamLayer) chan string {
		got := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			b := make([]byte, 4)
			_, _ = io.ReadFull(c, b)
			got <- string(b)
		}()
		return got
	}
	server := layer(issue("c1", ""))
	got := accepted(server)
	dialAs := func(certs *pki.Reloader) (net.Conn, error) {
		cfg := pki.RoleClientTLSConfig(ca.Pool(), certs, pki.RoleCoordinator)
		d := &tls.Dialer{Config: cfg}
		c, err := d.Dial("tcp", server.Addr().String())
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// TLS 1.3: the server's verdict on the client certificate arrives with the
		// first read.
		if _, err := c.Write([]byte("raft")); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	if c, err := dialAs(issue("c3", "bad123")); err == nil {
		c.Close()
		t.Error("a coordinator certificate of a revoked join token was admitted")
	}
	select {
	case b := <-got:
		t.Fatalf("Raft read %q from the refused peer", b)
	default:
	}
	for _, tok := range []string{"good12", ""} {
		certs := issue("c2", tok)
		cfg := pki.RoleClientTLSConfig(ca.Pool(), certs, pki.RoleCoordinator)
		c, err := (&tls.Dialer{Config: cfg}).Dial("tcp", server.Addr().String())
		if err != nil {
			t.Fatalf("token %q: %v", tok, err)
		}
		if _, err := c.Write([]byte("raft")); err != nil {
			t.Fatalf("token %q: %v", tok, err)
		}
		select {
		case b := <-got:
			if b != "raft" {
				t.Errorf("token %q: Raft read %q", tok, b)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a coordinator of token %q was not admitted", tok)
		}
		c.Close()
		got = accepted(server)
	}

	// Dialing: a peer that serves a certificate of a revoked token is refused too.
	bad := layer(issue("c3", "bad123"))
	if _, err := server.Dial(raft.ServerAddress(bad.Addr().String()), 10*time.Second); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("dialing a peer with a revoked token's certificate: %v, want a refusal naming the revocation", err)
	}
}
