package pki

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestVerifyChainAgainstHash(t *testing.T) {
	now := time.Now()
	born := now.Add(-72 * time.Hour)
	ca, other := newTestCA(t, "cohort-ca", born), newTestCA(t, "other-ca", born)
	coord := Identity{Name: "coord-1", Role: RoleCoordinator}
	serve := SignRequest{Identity: coord, DNSNames: []string{"coord.test"}}
	chainOf := func(c *CA, req SignRequest, at time.Time) [][]byte {
		certPEM, _ := issue(t, c, req, at)
		return pemBlocks(certPEM)
	}
	good := chainOf(ca, serve, now)
	foreignLeaf := append(chainOf(other, serve, now)[:1], ca.Certificate().Raw)
	clientOnly := chainOf(ca, SignRequest{Identity: Identity{Name: "alice", Role: RoleClient, ACLRole: "read"}}, now)
	expired := chainOf(ca, serve, now.Add(-48*time.Hour))

	// A chain through an intermediate CA (MaxPathLen 1 allows one): interCA's key,
	// certified by ca.
	interCA := newTestCA(t, "intermediate", born)
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	interDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: interCA.cert.Subject, SubjectKeyId: interCA.cert.SubjectKeyId,
		NotBefore: born, NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}, ca.cert, interCA.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	viaInter := append(chainOf(interCA, serve, now)[:1], interDER, ca.Certificate().Raw)

	for _, tc := range []struct {
		name       string
		raw        [][]byte
		want       string
		serverName string
		errIs      error  // when set, the error must wrap it
		errHas     string // when set, the error must contain it
	}{
		{name: "right hash", raw: good, want: ca.Hash()},
		{name: "right hash and name", raw: good, want: ca.Hash(), serverName: "coord.test"},
		{name: "through an intermediate", raw: viaInter, want: ca.Hash(), serverName: "coord.test"},
		{name: "wrong hash", raw: good, want: other.Hash(), errIs: ErrCAHashMismatch, errHas: other.Hash() + "|" + ca.Hash()},
		{name: "leaf not signed by the CA", raw: foreignLeaf, want: ca.Hash(), errHas: "does not verify"},
		{name: "wrong name", raw: good, want: ca.Hash(), serverName: "other.test", errHas: "does not verify"},
		{name: "client certificate", raw: clientOnly, want: ca.Hash(), errHas: "does not verify"},
		{name: "expired leaf", raw: expired, want: ca.Hash(), errHas: "expired"},
		{name: "leaf only", raw: good[:1], want: ca.Hash(), errHas: "1 certificate"},
		{name: "nothing", raw: nil, want: ca.Hash(), errHas: "0 certificate"},
		{name: "leaf as CA", raw: [][]byte{good[0], good[0]}, want: SPKIHash(firstCertDER(t, good[0])), errHas: "not a self-signed CA"},
		{name: "garbage", raw: [][]byte{[]byte("junk"), good[1]}, want: ca.Hash(), errHas: "certificate 0"},
		{name: "malformed pin", raw: good, want: strings.ToUpper(ca.Hash()), errHas: "hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VerifyChainAgainstHash(tc.raw, tc.want, tc.serverName)
			if tc.errIs == nil && tc.errHas == "" {
				if err != nil || !got.Equal(ca.Certificate()) {
					t.Fatalf("VerifyChainAgainstHash = %v, %v; want the CA", got, err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyChainAgainstHash succeeded")
			}
			if tc.errIs != nil && !errors.Is(err, tc.errIs) {
				t.Errorf("error %v does not wrap %v", err, tc.errIs)
			}
			if tc.errIs == nil && errors.Is(err, ErrCAHashMismatch) {
				t.Errorf("error %v blames the hash", err)
			}
			for _, s := range strings.Split(tc.errHas, "|") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func firstCertDER(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recordingServer accepts one TLS connection on 127.0.0.1 and reports whether its
// handshake succeeded and every application byte the client sent.
type recordingServer struct {
	addr string
	done chan struct{}
	// Set before done is closed.
	handshakeErr error
	received     []byte
}

func startRecordingServer(t *testing.T, cfg *tls.Config) *recordingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &recordingServer{addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		raw, err := ln.Accept()
		if err != nil {
			s.handshakeErr = err
			return
		}
		conn := tls.Server(raw, cfg)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if s.handshakeErr = conn.Handshake(); s.handshakeErr != nil {
			return
		}
		s.received, _ = io.ReadAll(conn)
	}()
	return s
}

func (s *recordingServer) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not finish")
	}
}

// joinFixture is a CA, a coordinator certificate and an agent certificate from it,
// and an unrelated CA.
type joinFixture struct {
	ca, other    *CA
	coord, agent *Reloader
}

func newJoinFixture(t *testing.T) joinFixture {
	now := time.Now()
	f := joinFixture{ca: newTestCA(t, "cohort-ca", now), other: newTestCA(t, "other-ca", now)}
	certPEM, keyPEM := issue(t, f.ca, SignRequest{Identity: Identity{Name: "coord-1", Role: RoleCoordinator}, DNSNames: []string{"coord.test"}}, now)
	f.coord = newReloader(t, certPEM, keyPEM)
	certPEM, keyPEM = issue(t, f.ca, SignRequest{Identity: Identity{Name: "node-1", Role: RoleAgent}, DNSNames: []string{"coord.test"}}, now)
	f.agent = newReloader(t, certPEM, keyPEM)
	return f
}

func TestFetchCA(t *testing.T) {
	f := newJoinFixture(t)
	ctx := context.Background()

	srv := startRecordingServer(t, ServerTLSConfig(f.ca.Pool(), f.coord, false))
	got, err := FetchCA(ctx, srv.addr, f.ca.Hash(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(f.ca.Certificate()) {
		t.Error("FetchCA returned another certificate than the CA")
	}
	srv.wait(t)
	if len(srv.received) != 0 {
		t.Errorf("FetchCA sent %d application bytes", len(srv.received))
	}

	srv = startRecordingServer(t, ServerTLSConfig(f.ca.Pool(), f.coord, false))
	_, err = FetchCA(ctx, srv.addr, f.other.Hash(), nil)
	if !errors.Is(err, ErrCAHashMismatch) || !strings.Contains(err.Error(), f.other.Hash()) || !strings.Contains(err.Error(), f.ca.Hash()) {
		t.Errorf("FetchCA with the wrong hash: %v", err)
	}
	srv.wait(t)
	if srv.handshakeErr == nil || len(srv.received) != 0 {
		t.Errorf("server: handshake %v, received %d bytes", srv.handshakeErr, len(srv.received))
	}

	// A dial function is used as given.
	srv = startRecordingServer(t, ServerTLSConfig(f.ca.Pool(), f.coord, false))
	var dialed string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = addr
		return (&net.Dialer{}).DialContext(ctx, network, srv.addr)
	}
	if _, err := FetchCA(ctx, "coordinator.example:7000", f.ca.Hash(), dial); err != nil || dialed != "coordinator.example:7000" {
		t.Errorf("FetchCA with a dial function: %v (dialed %q)", err, dialed)
	}
	srv.wait(t)

	if _, err := FetchCA(ctx, srv.addr, "nope", nil); err == nil {
		t.Error("FetchCA accepted a malformed hash")
	}
}

// The join secret is written only to a server that passes the pin: with the wrong
// hash, or an agent posing as the coordinator, the write fails and the server
// receives nothing. The right hash is the control: the same write arrives.
func TestJoinSecretNotSentToUnpinnedServer(t *testing.T) {
	f := newJoinFixture(t)
	secret := []byte("COH1...::abc123.s3cr3tv4lu3x0y9z")
	for _, tc := range []struct {
		name   string
		certs  *Reloader
		hash   string
		errIs  error
		chain1 bool // the server sends its leaf only
	}{
		{name: "right hash", certs: f.coord, hash: f.ca.Hash()},
		{name: "wrong hash", certs: f.coord, hash: f.other.Hash(), errIs: ErrCAHashMismatch},
		{name: "agent posing as coordinator", certs: f.agent, hash: f.ca.Hash(), errIs: ErrRoleNotAllowed},
		{name: "server sends no CA", certs: f.coord, hash: f.ca.Hash(), chain1: true, errIs: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ServerTLSConfig(f.ca.Pool(), tc.certs, false)
			if tc.chain1 {
				leafOnly := *tc.certs.Current()
				leafOnly.Certificate = leafOnly.Certificate[:1]
				cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &leafOnly, nil }
			}
			srv := startRecordingServer(t, cfg)
			raw, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			conn := tls.Client(raw, JoinTLSConfig(tc.hash, "coord.test"))
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Write(secret) // handshakes first
			conn.Close()
			srv.wait(t)

			if tc.errIs == nil {
				if err != nil || string(srv.received) != string(secret) {
					t.Fatalf("write: %v; server received %q", err, srv.received)
				}
				return
			}
			if err == nil || tc.errIs != errAny && !errors.Is(err, tc.errIs) {
				t.Errorf("write: %v; want %v", err, tc.errIs)
			}
			if srv.handshakeErr == nil || len(srv.received) != 0 {
				t.Errorf("server: handshake %v, received %d application bytes", srv.handshakeErr, len(srv.received))
			}
		})
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")
