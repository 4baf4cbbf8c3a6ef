package pki

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckEnrolled: an enrollment is accepted only when its CA hashes to the pin, its
// certificate verifies against that CA and belongs to the key, and a CA key sent along
// matches the CA.
func TestCheckEnrolled(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("c", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("o", now)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Name: "c2", Role: RoleCoordinator}
	certPEM, keyPEM, err := ca.IssueFor(id, nil, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.KeyPEM()
	_, strayKey, _ := ca.IssueFor(id, nil, time.Hour, now)
	e, err := CheckEnrolled(ca.Hash(), certPEM, keyPEM, ca.CertPEM(), caKey)
	if err != nil || e.CA == nil || e.CA.Hash() != ca.Hash() || e.Identity.String() != id.String() {
		t.Fatalf("a good enrollment: %v %v", e, err)
	}
	for _, tc := range []struct {
		name                       string
		hash                       string
		cert, key, caCert, caKeyPE []byte
		want                       string
	}{
		{"pinned hash differs", other.Hash(), certPEM, keyPEM, ca.CertPEM(), nil, "hashes to"},
		{"certificate from another CA", other.Hash(), certPEM, keyPEM, other.CertPEM(), nil, "does not verify"},
		{"key is not the certificate's", ca.Hash(), certPEM, strayKey, ca.CertPEM(), nil, "enrollment"},
		{"CA key is another CA's", ca.Hash(), certPEM, keyPEM, ca.CertPEM(), otherKey, "does not match"},
		{"garbage CA", ca.Hash(), certPEM, keyPEM, []byte("nope"), nil, "CA certificate"},
	} {
		if _, err := CheckEnrolled(tc.hash, tc.cert, tc.key, tc.caCert, tc.caKeyPE); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := CheckEnrolled(other.Hash(), certPEM, keyPEM, ca.CertPEM(), nil); !errors.Is(err, ErrCAHashMismatch) {
		t.Errorf("a hash mismatch does not wrap ErrCAHashMismatch: %v", err)
	}
}

// FuzzCheckEnrolled: whatever a server answers to an enrollment, checking it never
// panics, and nothing passes that does not chain to the pinned CA.
func FuzzCheckEnrolled(f *testing.F) {
	now := time.Now()
	ca, err := NewCA("c", now)
	if err != nil {
		f.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueFor(Identity{Name: "w", Role: RoleAgent}, nil, time.Hour, now)
	if err != nil {
		f.Fatal(err)
	}
	caKey, _ := ca.KeyPEM()
	f.Add(certPEM, ca.CertPEM(), caKey)
	f.Add(certPEM, ca.CertPEM(), []byte(nil))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{}, []byte{0})
	f.Fuzz(func(t *testing.T, cert, caCert, caKeyPEM []byte) {
		e, err := CheckEnrolled(ca.Hash(), cert, keyPEM, caCert, caKeyPEM)
		if err != nil {
			return
		}
		if e.CA != nil && SPKIHash(e.CA.Certificate()) != ca.Hash() {
			t.Fatal("accepted a CA key of another CA")
		}
		if h, err := CAHashOf(e.CACertPEM); err != nil || h != ca.Hash() {
			t.Fatalf("accepted a CA hashing to %s (%v)", h, err)
		}
	})
}

// FuzzSign: whatever CSR bytes a joiner sends, signing never panics, and a certificate
// it issues carries exactly the identity given, never one the CSR asks for.
func FuzzSign(f *testing.F) {
	now := time.Now()
	ca, err := NewCA("c", now)
	if err != nil {
		f.Fatal(err)
	}
	_, csr, err := NewKeyAndCSR("admin")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	id := Identity{Name: "w1", Role: RoleAgent, ACLRole: "agent"}
	f.Fuzz(func(t *testing.T, csr []byte) {
		certPEM, err := ca.Sign(SignRequest{CSR: csr, Identity: id}, now)
		if err != nil {
			return
		}
		c, err := parseCertPEM(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		got, err := IdentityOf(c)
		if err != nil || got.String() != id.String() {
			t.Fatalf("signed %v (%v), want %v", got, err, id)
		}
	})
}
