package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// greedyCSR asks for everything a joining node should not get.
func greedyCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTrue, _ := asn1.Marshal(struct{ IsCA bool }{true})
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{
			CommonName:         "coord-1",
			Organization:       []string{"system:masters"},
			OrganizationalUnit: []string{"coordinator"},
		},
		DNSNames:       []string{"evil.example", "*.cluster.local"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{mustURL("cohort://role/coordinator"), mustURL("cohort://acl/admin")},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caTrue}, // basicConstraints CA:TRUE
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestSignIgnoresCSRRequests(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	id := Identity{Name: "node-1", Role: RoleAgent, ACLRole: "agent"}
	certPEM, err := ca.Sign(SignRequest{
		CSR:      greedyCSR(t),
		Identity: id,
		DNSNames: []string{"node-1.cluster.internal"},
		IPs:      []net.IP{net.ParseIP("127.0.0.1")},
	}, t0)
	if err != nil {
		t.Fatal(err)
	}
	blocks := pemBlocks(certPEM)
	if len(blocks) != 2 || !bytes.Equal(blocks[1], ca.Certificate().Raw) {
		t.Fatalf("Sign returned %d PEM blocks; want the leaf then the CA", len(blocks))
	}
	c, err := x509.ParseCertificate(blocks[0])
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "node-1" || len(c.Subject.Organization) != 0 || !reflect.DeepEqual(c.Subject.OrganizationalUnit, []string{"agent"}) {
		t.Errorf("subject %v: the CSR's subject leaked in", c.Subject)
	}
	if !reflect.DeepEqual(c.DNSNames, []string{"node-1.cluster.internal"}) {
		t.Errorf("DNS names %q", c.DNSNames)
	}
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP addresses %v", c.IPAddresses)
	}
	if len(c.EmailAddresses) != 0 || c.IsCA || c.Issuer.CommonName != "cohort-ca" {
		t.Errorf("email %v, IsCA %v, issuer %v", c.EmailAddresses, c.IsCA, c.Issuer)
	}
	if got, err := IdentityOf(c); err != nil || !reflect.DeepEqual(got, id) {
		t.Errorf("IdentityOf = %v, %v; want %v", got, err, id)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage %v", c.KeyUsage)
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) && bytes.Contains(e.Value, []byte{0x01, 0x01, 0xff}) {
			t.Error("the CSR's CA:TRUE extension leaked in")
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, DNSName: "node-1.cluster.internal"}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
}

func TestSignExtKeyUsage(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		id   Identity
		want []x509.ExtKeyUsage
	}{
		{Identity{Name: "c", Role: RoleCoordinator}, both},
		{Identity{Name: "a", Role: RoleAgent}, both},
		{Identity{Name: "u", Role: RoleClient, ACLRole: "read"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	} {
		if got := issueLeaf(t, ca, SignRequest{Identity: tc.id}, t0).ExtKeyUsage; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ExtKeyUsage %v, want %v", tc.id.Role, got, tc.want)
		}
	}
}

func TestSignValidity(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	id := Identity{Name: "node-1", Role: RoleAgent}
	c := issueLeaf(t, ca, SignRequest{Identity: id}, t0)
	if !c.NotAfter.Equal(t0.Add(DefaultCertTTL)) || !c.NotBefore.Equal(t0.Add(-clockSkew)) {
		t.Errorf("default validity %v to %v", c.NotBefore, c.NotAfter)
	}
	c = issueLeaf(t, ca, SignRequest{Identity: id, TTL: MaxCertTTL}, t0)
	if !c.NotAfter.Equal(t0.Add(MaxCertTTL)) {
		t.Errorf("NotAfter %v with the maximum TTL", c.NotAfter)
	}
	_, csr, _ := NewKeyAndCSR("x")
	for _, ttl := range []time.Duration{MaxCertTTL + time.Second, -time.Second} {
		if _, err := ca.Sign(SignRequest{CSR: csr, Identity: id, TTL: ttl}, t0); err == nil {
			t.Errorf("TTL %v accepted", ttl)
		}
	}

	// Never past the CA's own expiry.
	old := newTestCA(t, "old-ca", t0.Add(-CAValidity+time.Hour))
	c = issueLeaf(t, old, SignRequest{Identity: id}, t0)
	if !c.NotAfter.Equal(old.Certificate().NotAfter) {
		t.Errorf("NotAfter %v past the CA's %v", c.NotAfter, old.Certificate().NotAfter)
	}
	if _, err := old.Sign(SignRequest{CSR: csr, Identity: id}, t0.Add(2*time.Hour)); err == nil {
		t.Error("an expired CA signed")
	}
}

func TestSignSerials(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	seen := map[string]bool{}
	for range 8 {
		s := issueLeaf(t, ca, SignRequest{Identity: Identity{Name: "n", Role: RoleAgent}}, t0).SerialNumber
		if s.Sign() <= 0 || s.BitLen() > 128 || seen[s.String()] {
			t.Fatalf("serial %v (seen %v)", s, seen[s.String()])
		}
		seen[s.String()] = true
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	_, csr, err := NewKeyAndCSR("node-1")
	if err != nil {
		t.Fatal(err)
	}
	badSig := bytes.Clone(csr)
	badSig[len(badSig)-3] ^= 0x55 // inside the signature
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	agent := Identity{Name: "node-1", Role: RoleAgent}
	client := Identity{Name: "alice", Role: RoleClient, ACLRole: "read"}
	for name, tc := range map[string]struct {
		req  SignRequest
		want string
	}{
		"garbage CSR":        {SignRequest{CSR: []byte("junk"), Identity: agent}, "parse CSR"},
		"bad CSR signature":  {SignRequest{CSR: badSig, Identity: agent}, "signature"},
		"RSA-1024":           {SignRequest{CSR: weak, Identity: agent}, "2048"},
		"invalid identity":   {SignRequest{CSR: csr, Identity: Identity{Name: "node-1", Role: "root"}}, "invalid identity"},
		"client DNS name":    {SignRequest{CSR: csr, Identity: client, DNSNames: []string{"a.example"}}, "client"},
		"client IP":          {SignRequest{CSR: csr, Identity: client, IPs: []net.IP{net.ParseIP("::1")}}, "client"},
		"wildcard DNS name":  {SignRequest{CSR: csr, Identity: agent, DNSNames: []string{"*.example"}}, "DNS name"},
		"empty DNS name":     {SignRequest{CSR: csr, Identity: agent, DNSNames: []string{""}}, "DNS name"},
		"malformed IP":       {SignRequest{CSR: csr, Identity: agent, IPs: []net.IP{{1, 2, 3}}}, "IP"},
		"client without ACL": {SignRequest{CSR: csr, Identity: Identity{Name: "alice", Role: RoleClient}}, "ACL"},
	} {
		_, err := ca.Sign(tc.req, t0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Sign = %v; want an error containing %q", name, err, tc.want)
		}
	}
}

func TestNewKeyAndCSR(t *testing.T) {
	keyPEM, csrDER, err := NewKeyAndCSR("node-9")
	if err != nil {
		t.Fatal(err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", key)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil || csr.Subject.CommonName != "node-9" || !publicKeysEqual(key.Public(), csr.PublicKey) {
		t.Errorf("CSR: %v, CN %q", err, csr.Subject.CommonName)
	}
}
