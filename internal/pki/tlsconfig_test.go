package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// tlsFixture is a CA, a coordinator serving on 127.0.0.1 as "coord.test", and a
// second, unrelated CA. The handshake tests run on the real clock.
type tlsFixture struct {
	ca, other *CA
	server    *Reloader
}

func newTLSFixture(t *testing.T) tlsFixture {
	now := time.Now()
	// The CAs are older than the expired certificates the tests issue.
	born := now.Add(-72 * time.Hour)
	f := tlsFixture{ca: newTestCA(t, "cohort-ca", born), other: newTestCA(t, "other-ca", born)}
	f.server = f.reloader(t, f.ca, Identity{Name: "coord-1", Role: RoleCoordinator}, now, time.Hour)
	return f
}

func (f tlsFixture) reloader(t *testing.T, ca *CA, id Identity, now time.Time, ttl time.Duration) *Reloader {
	t.Helper()
	req := SignRequest{Identity: id, TTL: ttl}
	if id.Role != RoleClient {
		req.DNSNames, req.IPs = []string{"coord.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	certPEM, keyPEM := issue(t, ca, req, now)
	return newReloader(t, certPEM, keyPEM)
}

func TestTLSMutualAuthentication(t *testing.T) {
	f := newTLSFixture(t)
	agentID := Identity{Name: "node-1", Role: RoleAgent, ACLRole: "agent"}
	agent := f.reloader(t, f.ca, agentID, time.Now(), time.Hour)
	res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), ClientTLSConfig(f.ca.Pool(), agent, "coord.test"))
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("server: %v; client: %v", res.serverErr, res.clientErr)
	}
	if res.serverState.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", res.serverState.Version)
	}
	if id, err := IdentityFromTLS(res.serverState); err != nil || !reflect.DeepEqual(id, agentID) {
		t.Errorf("server sees client %v, %v", id, err)
	}
	if id, err := IdentityFromTLS(res.clientState); err != nil || id.Role != RoleCoordinator || id.Name != "coord-1" {
		t.Errorf("client sees server %v, %v", id, err)
	}
}

func TestTLSRefusesOtherCA(t *testing.T) {
	f := newTLSFixture(t)
	id := Identity{Name: "node-1", Role: RoleAgent}
	t.Run("client certificate", func(t *testing.T) {
		intruder := f.reloader(t, f.other, id, time.Now(), time.Hour)
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), ClientTLSConfig(f.ca.Pool(), intruder, "coord.test"))
		if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), "unknown authority") {
			t.Errorf("server accepted a client certificate from another CA: %v", res.serverErr)
		}
		if res.clientErr == nil {
			t.Error("client did not see the refusal")
		}
	})
	t.Run("client certificate, optional", func(t *testing.T) {
		// VerifyClientCertIfGiven still verifies what is given.
		intruder := f.reloader(t, f.other, id, time.Now(), time.Hour)
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, false), ClientTLSConfig(f.ca.Pool(), intruder, "coord.test"))
		if res.serverErr == nil {
			t.Error("server accepted a client certificate from another CA")
		}
	})
	t.Run("server certificate", func(t *testing.T) {
		impostor := f.reloader(t, f.other, Identity{Name: "coord-1", Role: RoleCoordinator}, time.Now(), time.Hour)
		agent := f.reloader(t, f.ca, id, time.Now(), time.Hour)
		res := handshake(t, ServerTLSConfig(f.other.Pool(), impostor, true), ClientTLSConfig(f.ca.Pool(), agent, "coord.test"))
		if res.clientErr == nil || !strings.Contains(res.clientErr.Error(), "unknown authority") {
			t.Errorf("client accepted a server certificate from another CA: %v", res.clientErr)
		}
	})
}

func TestTLSRefusesExpired(t *testing.T) {
	f := newTLSFixture(t)
	long := time.Now().Add(-48 * time.Hour)
	expired := f.reloader(t, f.ca, Identity{Name: "node-1", Role: RoleAgent}, long, time.Hour)
	res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), ClientTLSConfig(f.ca.Pool(), expired, "coord.test"))
	if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), "expired") {
		t.Errorf("server accepted an expired client certificate: %v", res.serverErr)
	}
	expiredServer := f.reloader(t, f.ca, Identity{Name: "coord-1", Role: RoleCoordinator}, long, time.Hour)
	res = handshake(t, ServerTLSConfig(f.ca.Pool(), expiredServer, false), ClientTLSConfig(f.ca.Pool(), nil, "coord.test"))
	if res.clientErr == nil || !strings.Contains(res.clientErr.Error(), "expired") {
		t.Errorf("client accepted an expired server certificate: %v", res.clientErr)
	}
}

func TestTLSClientCertificateRequired(t *testing.T) {
	f := newTLSFixture(t)
	res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), ClientTLSConfig(f.ca.Pool(), nil, "coord.test"))
	if res.serverErr == nil {
		t.Error("server requiring client certificates accepted none")
	}
	res = handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, false), ClientTLSConfig(f.ca.Pool(), nil, "coord.test"))
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("optional client certificate: server %v, client %v", res.serverErr, res.clientErr)
	}
	if _, err := IdentityFromTLS(res.serverState); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("anonymous client has identity: %v", err)
	}
}

func TestTLSServerName(t *testing.T) {
	f := newTLSFixture(t)
	res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, false), ClientTLSConfig(f.ca.Pool(), nil, "other.test"))
	if res.clientErr == nil {
		t.Error("client accepted a certificate for another name")
	}
	res = handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, false), ClientTLSConfig(f.ca.Pool(), nil, "127.0.0.1"))
	if res.clientErr != nil {
		t.Errorf("IP SAN: %v", res.clientErr)
	}
}

func TestTLSRequireRole(t *testing.T) {
	f := newTLSFixture(t)
	user := f.reloader(t, f.ca, Identity{Name: "alice", Role: RoleClient, ACLRole: "admin"}, time.Now(), time.Hour)
	agent := f.reloader(t, f.ca, Identity{Name: "node-1", Role: RoleAgent}, time.Now(), time.Hour)

	srv := ServerTLSConfig(f.ca.Pool(), f.server, true)
	srv.VerifyConnection = RequireRole(RoleAgent, RoleCoordinator)
	res := handshake(t, srv, ClientTLSConfig(f.ca.Pool(), user, "coord.test"))
	if !errors.Is(res.serverErr, ErrRoleNotAllowed) {
		t.Errorf("agent-only server and a client certificate: %v", res.serverErr)
	}
	res = handshake(t, srv, ClientTLSConfig(f.ca.Pool(), agent, "coord.test"))
	if res.serverErr != nil || res.clientErr != nil {
		t.Errorf("agent-only server and an agent: server %v, client %v", res.serverErr, res.clientErr)
	}

	// A client that wants a coordinator refuses an agent serving for the same name.
	cli := ClientTLSConfig(f.ca.Pool(), user, "coord.test")
	cli.VerifyConnection = RequireRole(RoleCoordinator)
	res = handshake(t, ServerTLSConfig(f.ca.Pool(), agent, true), cli)
	if !errors.Is(res.clientErr, ErrRoleNotAllowed) {
		t.Errorf("client wanting a coordinator, agent server: %v", res.clientErr)
	}
}

func TestTLSRefusesOldVersions(t *testing.T) {
	f := newTLSFixture(t)
	cli := ClientTLSConfig(f.ca.Pool(), nil, "coord.test")
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, false), cli); res.serverErr == nil {
		t.Error("server accepted TLS 1.2")
	}
}

func TestTLSServesRenewedCertificate(t *testing.T) {
	f := newTLSFixture(t)
	srvCfg := ServerTLSConfig(f.ca.Pool(), f.server, false)
	cliCfg := ClientTLSConfig(f.ca.Pool(), nil, "coord.test")
	first := handshake(t, srvCfg, cliCfg)
	if first.clientErr != nil {
		t.Fatal(first.clientErr)
	}
	certPEM, keyPEM := issue(t, f.ca, SignRequest{Identity: Identity{Name: "coord-1", Role: RoleCoordinator}, DNSNames: []string{"coord.test"}}, time.Now())
	if err := f.server.Set(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	second := handshake(t, srvCfg, cliCfg)
	if second.clientErr != nil {
		t.Fatal(second.clientErr)
	}
	a, b := first.clientState.PeerCertificates[0].SerialNumber, second.clientState.PeerCertificates[0].SerialNumber
	if a.Cmp(b) == 0 || b.Cmp(f.server.Leaf().SerialNumber) != 0 {
		t.Errorf("serials %v then %v; want the renewed %v", a, b, f.server.Leaf().SerialNumber)
	}
	// A mismatched certificate and key is refused and changes nothing.
	_, otherKey := issue(t, f.ca, SignRequest{Identity: Identity{Name: "x", Role: RoleAgent}}, time.Now())
	if err := f.server.Set(certPEM, otherKey); err == nil {
		t.Error("Set accepted a key that does not match the certificate")
	}
	if f.server.Leaf().SerialNumber.Cmp(b) != 0 {
		t.Error("a refused Set changed the certificate")
	}
}
