package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rotation is an old CA, a new one, and the new one signing with the chain a rotation
// gives it (cross-signed by the old, then the old root).
type rotation struct {
	old, next, signing *CA
}

func newRotation(t testing.TB, now time.Time) rotation {
	t.Helper()
	old := newTestCA(t, "cohort cluster CA", now)
	next := newTestCA(t, "cohort cluster CA 2", now)
	cross, err := old.CrossSign(next, now)
	if err != nil {
		t.Fatal(err)
	}
	return rotation{old: old, next: next, signing: next.WithChain(append(cross, old.CertPEM()...))}
}

func agentReq(name string) SignRequest {
	return SignRequest{Identity: Identity{Name: name, Role: RoleAgent, ACLRole: "agent"}, IPs: nil, DNSNames: []string{"localhost"}}
}

// verifyPEMChain verifies a chain's leaf against roots, through the chain's other
// certificates, as a TLS peer would.
func verifyPEMChain(certPEM []byte, roots ...*x509.Certificate) error {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	var certs []*x509.Certificate
	for _, b := range pemBlocks(certPEM) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// TestCrossSignedChainVerifiesUnderEitherCA checks the overlap a rotation relies on: a
// certificate the new CA signs during it verifies for a peer that trusts only the old
// CA (through the cross-signed certificate) and for one that trusts only the new CA,
// and for no one who trusts neither; once the new CA signs alone (after --finish), the
// old CA no longer vouches for its certificates.
func TestCrossSignedChainVerifiesUnderEitherCA(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	certPEM, _ := issue(t, r.signing, agentReq("a"), now)
	if err := verifyPEMChain(certPEM, r.old.Certificate()); err != nil {
		t.Errorf("a peer trusting only the old CA: %v", err)
	}
	if err := verifyPEMChain(certPEM, r.next.Certificate()); err != nil {
		t.Errorf("a peer trusting only the new CA: %v", err)
	}
	stranger := newTestCA(t, "other", now)
	if err := verifyPEMChain(certPEM, stranger.Certificate()); err == nil {
		t.Error("a peer trusting another CA accepted the chain")
	}
	alone, _ := issue(t, r.next, agentReq("b"), now)
	if err := verifyPEMChain(alone, r.old.Certificate()); err == nil {
		t.Error("after the rotation ends, a certificate of the new CA verified against the old CA alone")
	}
	if n := len(pemBlocks(alone)); n != 2 {
		t.Errorf("the new CA alone signs a chain of %d certificates, want 2 (leaf, CA)", n)
	}
	cross := firstCert(t, pemBlocks2PEM(pemBlocks(certPEM)[1]))
	if SPKIHash(cross) != r.next.Hash() || cross.MaxPathLen != 0 || !cross.MaxPathLenZero || !cross.IsCA {
		t.Errorf("cross-signed certificate: hash %s (want %s), MaxPathLen %d zero %v, CA %v", SPKIHash(cross), r.next.Hash(), cross.MaxPathLen, cross.MaxPathLenZero, cross.IsCA)
	}
	if cross.NotAfter.After(r.old.Certificate().NotAfter) {
		t.Errorf("the cross-signed certificate outlives the old CA: %v > %v", cross.NotAfter, r.old.Certificate().NotAfter)
	}
}

func pemBlocks2PEM(der []byte) []byte { return encodePEM(pemCertificate, der) }

// TestJoinPinsDuringRotation checks join tokens across a rotation: a server on the new
// CA's rotation chain satisfies a token pinning the old CA (minted before) and one
// pinning the new CA; once it serves the new CA alone, an old token is refused with
// ErrCAHashMismatch naming both hashes.
func TestJoinPinsDuringRotation(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	certs := func(ca *CA) []*x509.Certificate {
		req := agentReq("coord")
		req.Identity = Identity{Name: "coord", Role: RoleCoordinator}
		certPEM, _ := issue(t, ca, req, now)
		var out []*x509.Certificate
		for _, b := range pemBlocks(certPEM) {
			c, _ := x509.ParseCertificate(b)
			out = append(out, c)
		}
		return out
	}
	during := certs(r.signing)
	for _, pin := range []*CA{r.old, r.next} {
		got, err := verifyChainAgainstHash(during, pin.Hash(), "", now)
		if err != nil {
			t.Errorf("pin %s during the rotation: %v", pin.Certificate().Subject.CommonName, err)
		} else if SPKIHash(got) != pin.Hash() {
			t.Errorf("pin %s: returned a CA hashing to %s", pin.Hash(), SPKIHash(got))
		}
	}
	after := certs(r.next)
	_, err := verifyChainAgainstHash(after, r.old.Hash(), "", now)
	if !errors.Is(err, ErrCAHashMismatch) || !strings.Contains(err.Error(), r.old.Hash()) || !strings.Contains(err.Error(), r.next.Hash()) {
		t.Errorf("old pin after the rotation: %v, want ErrCAHashMismatch naming both hashes", err)
	}
	// A chain whose pinned certificate was swapped for one with another key fails.
	forged := append([]*x509.Certificate{during[0]}, newTestCA(t, "cohort cluster CA", now).Certificate())
	if _, err := verifyChainAgainstHash(forged, r.old.Hash(), "", now); !errors.Is(err, ErrCAHashMismatch) {
		t.Errorf("forged chain: %v", err)
	}
}

// TestCheckEnrolledAcceptsBundle checks an enrollment answered during a rotation: the
// bundle (new CA first, old after) satisfies a token pinning either, the certificate
// verifies through it, a coordinator's CA key is the new CA's, and Save writes the
// whole bundle.
func TestCheckEnrolledAcceptsBundle(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	bundle := EncodeCertBundle([]*x509.Certificate{r.next.Certificate(), r.old.Certificate()})
	certPEM, keyPEM := issue(t, r.signing, agentReq("a"), now)
	caKey, err := r.next.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for _, pin := range []string{r.old.Hash(), r.next.Hash()} {
		e, err := CheckEnrolled(pin, certPEM, keyPEM, bundle, caKey)
		if err != nil {
			t.Fatalf("pin %s: %v", pin, err)
		}
		if e.CA == nil || e.CA.Hash() != r.next.Hash() {
			t.Fatalf("pin %s: the enrolled CA is not the new one", pin)
		}
		dir := t.TempDir()
		if err := e.Save(dir, "node"); err != nil {
			t.Fatal(err)
		}
		tr, err := LoadTrust(dir + "/" + CACertFile)
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.Hashes(); len(got) != 2 || got[0] != r.next.Hash() || got[1] != r.old.Hash() {
			t.Fatalf("saved bundle hashes %v, want [new old]", got)
		}
		if ca, err := LoadCA(dir); err != nil || ca.Hash() != r.next.Hash() {
			t.Fatalf("LoadCA after Save: %v", err)
		}
	}
	other := newTestCA(t, "x", now).Hash()
	if _, err := CheckEnrolled(other, certPEM, keyPEM, bundle, nil); !errors.Is(err, ErrCAHashMismatch) {
		t.Errorf("a pin in neither CA: %v", err)
	}
}

// TestTrustChangesRunningTLSConfigs checks that servers and clients built from a Trust
// follow its changes at the next handshake: a server trusting the old CA refuses a
// client of the new one until the new CA is added, and refuses the old CA's client once
// it is dropped; a client trusting only the new CA refuses a server still on the old
// CA and accepts it once it presents a chain of the new.
func TestTrustChangesRunningTLSConfigs(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	coord := func(ca *CA) *Reloader {
		req := agentReq("coord")
		req.Identity = Identity{Name: "coord", Role: RoleCoordinator}
		req.DNSNames = []string{"localhost"}
		c, k := issue(t, ca, req, now)
		return newReloader(t, c, k)
	}
	serverCerts := coord(r.old)
	leaf := func(ca *CA, name string) *Reloader {
		c, k := issue(t, ca, agentReq(name), now)
		return newReloader(t, c, k)
	}
	oldClient, newAlone := leaf(r.old, "old"), leaf(r.next, "new")

	serverTrust := NewTrust(r.old.Certificate())
	server := ServerTLSConfigTrust(serverTrust, serverCerts, true)
	clientTrust := NewTrust(r.old.Certificate())
	dial := func(certs *Reloader, tr *Trust) handshakeResult {
		return handshake(t, server, RoleClientTLSConfigTrust(tr, certs, RoleCoordinator))
	}
	if res := dial(oldClient, clientTrust); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("old CA everywhere: %v / %v", res.serverErr, res.clientErr)
	}
	if res := dial(newAlone, clientTrust); res.serverErr == nil {
		t.Fatal("a server trusting the old CA accepted a client of the new CA alone")
	}
	serverTrust.Set(r.next.Certificate(), r.old.Certificate())
	if res := dial(newAlone, clientTrust); res.serverErr != nil {
		t.Fatalf("after adding the new CA: %v", res.serverErr)
	}
	newOnly := NewTrust(r.next.Certificate())
	if res := dial(newAlone, newOnly); res.clientErr == nil {
		t.Fatal("a client trusting only the new CA accepted a server on the old CA")
	}
	req := agentReq("coord")
	req.Identity = Identity{Name: "coord", Role: RoleCoordinator}
	if err := serverCerts.Set(issue(t, r.signing, req, now)); err != nil {
		t.Fatal(err)
	}
	if res := dial(newAlone, newOnly); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("a client trusting the new CA, server renewed onto it: %v / %v", res.serverErr, res.clientErr)
	}
	if res := dial(oldClient, clientTrust); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("a client trusting only the old CA, server renewed during the overlap: %v / %v", res.serverErr, res.clientErr)
	}
	serverTrust.Set(r.next.Certificate())
	if res := dial(oldClient, clientTrust); res.serverErr == nil {
		t.Fatal("after the old CA was dropped, the server accepted a certificate of the old CA")
	}
	if !bytes.Equal(serverTrust.PEM(), r.next.CertPEM()) {
		t.Error("Trust.PEM does not hold the new CA alone")
	}
}

// TestParseCertBundle checks the bundle decoder's refusals.
func TestParseCertBundle(t *testing.T) {
	now := time.Now()
	a, b := newTestCA(t, "a", now), newTestCA(t, "b", now)
	leafPEM, keyPEM := issue(t, a, agentReq("x"), now)
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"empty":    {nil, "no certificate"},
		"garbage":  {[]byte("hello"), "no PEM block"},
		"key":      {keyPEM, "not \"CERTIFICATE\""},
		"leaf":     {leafPEM, "is not a CA certificate"},
		"too many": {bytes.Repeat(a.CertPEM(), MaxTrustedCAs+1), "more than"},
	} {
		if _, err := ParseCertBundle(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
	certs, err := ParseCertBundle(append(b.CertPEM(), a.CertPEM()...))
	if err != nil || len(certs) != 2 || SPKIHash(certs[0]) != b.Hash() {
		t.Fatalf("two CAs: %v", err)
	}
}

// FuzzParseCertBundle checks that ParseCertBundle never panics and that what it accepts
// round-trips through EncodeCertBundle.
func FuzzParseCertBundle(f *testing.F) {
	now := time.Now()
	a, _ := NewCA("a", now)
	b, _ := NewCA("b", now)
	f.Add(a.CertPEM())
	f.Add(append(a.CertPEM(), b.CertPEM()...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertBundle(data)
		if err != nil {
			return
		}
		again, err := ParseCertBundle(EncodeCertBundle(certs))
		if err != nil || len(again) != len(certs) || len(certs) > MaxTrustedCAs {
			t.Fatalf("round trip: %d certificates, %v (had %d)", len(again), err, len(certs))
		}
	})
}

// TestServerTLSConfigTrustRefusesResumption: a client holding a session ticket from
// before the server dropped its CA cannot resume past the drop (crypto/tls checks a
// resumed session's chain against the ClientCAs of the configuration
// GetConfigForClient returns, which must be the current trust).
func TestServerTLSConfigTrustRefusesResumption(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	req := agentReq("coord")
	req.Identity = Identity{Name: "coord", Role: RoleCoordinator}
	sc, sk := issue(t, r.signing, req, now)
	serverCerts := newReloader(t, sc, sk)
	c, k := issue(t, r.old, agentReq("old"), now)
	oldClient := newReloader(t, c, k)
	serverTrust := NewTrust(r.next.Certificate(), r.old.Certificate())
	server := ServerTLSConfigTrust(serverTrust, serverCerts, true)
	client := RoleClientTLSConfigTrust(NewTrust(r.old.Certificate()), oldClient, RoleCoordinator)
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	client.ServerName = "localhost" // the session cache key (each handshake has a new port)
	if res := handshake(t, server, client); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("during the overlap: %v / %v", res.serverErr, res.clientErr)
	}
	if res := handshake(t, server, client); res.serverErr != nil || !res.serverState.DidResume {
		t.Fatalf("during the overlap, the second connection did not resume (%v): the test needs a ticket", res.serverErr)
	}
	serverTrust.Set(r.next.Certificate())
	res := handshake(t, server, client)
	if res.serverErr == nil {
		t.Fatalf("after the old CA was dropped, a client of it was accepted (resumed: %v)", res.serverState.DidResume)
	}
}

// TestSaveWithTrust: a rotation writes the new CA's key with the whole trust bundle as
// CACertFile (a client reading it never finds the new CA alone); LoadCA reads the
// CA back, and, when the bundle is written but the key is still the old one (a stop
// between the two), finds the old key's certificate later in the bundle. A bundle
// without the CA is refused, as is a key that matches none of the bundle.
func TestSaveWithTrust(t *testing.T) {
	now := time.Now()
	r := newRotation(t, now)
	dir := t.TempDir()
	if err := r.old.Save(dir); err != nil {
		t.Fatal(err)
	}
	bundle := append(r.next.CertPEM(), r.old.CertPEM()...)
	if err := r.next.SaveWithTrust(dir, r.old.CertPEM()); err == nil || !strings.Contains(err.Error(), r.next.Hash()) {
		t.Fatalf("a bundle without the CA: %v, want an error naming the CA", err)
	}
	// Stopped after the bundle, before the key: the old CA still loads.
	if err := SaveCACert(dir, bundle); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil || ca.Hash() != r.old.Hash() || !bytes.Equal(ca.CertPEM(), r.old.CertPEM()) {
		t.Fatalf("LoadCA with the old key and the new bundle: %v, want the old CA", err)
	}
	if err := r.next.SaveWithTrust(dir, bundle); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil || !bytes.Equal(got, bundle) {
		t.Fatalf("%s after SaveWithTrust: %v, want the bundle", CACertFile, err)
	}
	if ca, err = LoadCA(dir); err != nil || ca.Hash() != r.next.Hash() {
		t.Fatalf("LoadCA after SaveWithTrust: %v, want the new CA", err)
	}
	stranger := newTestCA(t, "stranger", now)
	if err := SaveCACert(dir, stranger.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("LoadCA with a key matching none of the bundle: %v", err)
	}
}

// TestLoadReloaderMismatchedPair: a key pair that stays mismatched (not a writer
// between its two renames) is an error naming the certificate file; a matching one
// loads.
func TestLoadReloaderMismatchedPair(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, "cohort cluster CA", now)
	dir := t.TempDir()
	certA, keyA, err := ca.IssueFor(Identity{Name: "a", Role: RoleClient, ACLRole: "admin"}, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	_, keyB, err := ca.IssueFor(Identity{Name: "b", Role: RoleClient, ACLRole: "admin"}, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key")
	if err := SaveKeyPair(dir, "x", certA, keyB); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadReloader(certPath, keyPath); err == nil || !strings.Contains(err.Error(), certPath) {
		t.Fatalf("a mismatched pair: %v, want an error naming %s", err, certPath)
	}
	if err := SaveKeyPair(dir, "x", certA, keyA); err != nil {
		t.Fatal(err)
	}
	if r, err := LoadReloader(certPath, keyPath); err != nil || r.Leaf().Subject.CommonName == "" {
		t.Fatalf("a matching pair: %v", err)
	}
}
