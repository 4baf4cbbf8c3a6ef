package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	c := ca.Certificate()
	if c.Subject.CommonName != "cohort-ca" || !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 1 || c.MaxPathLenZero {
		t.Errorf("CA certificate: CN %q IsCA %v BasicConstraintsValid %v MaxPathLen %d", c.Subject.CommonName, c.IsCA, c.BasicConstraintsValid, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if !c.NotAfter.Equal(t0.Add(CAValidity)) || c.NotBefore.After(t0) {
		t.Errorf("validity %v to %v, want from before %v to %v", c.NotBefore, c.NotAfter, t0, t0.Add(CAValidity))
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", c.SerialNumber)
	}

	// The hash, computed independently from the public key.
	spki, err := x509.MarshalPKIXPublicKey(c.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	if want := hex.EncodeToString(sum[:]); ca.Hash() != want {
		t.Errorf("Hash() = %s, want %s", ca.Hash(), want)
	}
	if h, err := CAHashOf(ca.CertPEM()); err != nil || h != ca.Hash() {
		t.Errorf("CAHashOf = %q, %v; want %s", h, err, ca.Hash())
	}
	if _, err := CAHashOf([]byte("not PEM")); err == nil {
		t.Error("CAHashOf(garbage) succeeded")
	}
	if _, err := NewCA("", t0); err == nil {
		t.Error("NewCA with an empty name succeeded")
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := newTestCA(t, "cohort-ca", t0)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", name, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("CA directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	// Saving again replaces the files and leaves no temporary file behind.
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("CA directory holds %d entries, want 2: %v", len(entries), entries)
	}

	got, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != ca.Hash() || !got.Certificate().Equal(ca.Certificate()) || string(got.CertPEM()) != string(ca.CertPEM()) {
		t.Error("loaded CA differs from the saved one")
	}
	// The loaded key signs certificates the original CA's pool accepts.
	leaf := issueLeaf(t, got, SignRequest{Identity: Identity{Name: "node-1", Role: RoleAgent}}, t0)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("certificate signed by the loaded CA does not verify: %v", err)
	}
}

func TestLoadCARefusesAccessibleKey(t *testing.T) {
	dir := t.TempDir()
	if err := newTestCA(t, "cohort-ca", t0).Save(dir); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o602} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			if err := os.Chmod(keyPath, mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCA(dir)
			if err == nil {
				t.Fatal("LoadCA accepted a key group or others can access")
			}
			if msg := err.Error(); !strings.Contains(msg, keyPath) || !strings.Contains(msg, fmt.Sprintf("%04o", mode)) {
				t.Errorf("error %q does not name %s and mode %04o", msg, keyPath, mode)
			}
		})
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(dir); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}

func TestLoadCARefuses(t *testing.T) {
	other := newTestCA(t, "other-ca", t0)
	leafPEM, _ := issue(t, other, SignRequest{Identity: Identity{Name: "node-1", Role: RoleAgent}}, t0)
	sec1, err := x509.MarshalECPrivateKey(other.key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		breakF func(dir string) error
		want   string
	}{
		{"missing key", func(dir string) error { return os.Remove(filepath.Join(dir, CAKeyFile)) }, CAKeyFile},
		{"missing cert", func(dir string) error { return os.Remove(filepath.Join(dir, CACertFile)) }, CACertFile},
		{"cert of another CA", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CACertFile), other.CertPEM(), 0o644)
		}, "does not match"},
		{"leaf instead of CA", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CACertFile), leafPEM, 0o644)
		}, "not a CA"},
		{"SEC1 key", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CAKeyFile), encodePEM("EC PRIVATE KEY", sec1), 0o600)
		}, "PKCS#8"},
		{"garbage cert", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644)
		}, "no PEM block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := newTestCA(t, "cohort-ca", t0).Save(dir); err != nil {
				t.Fatal(err)
			}
			if err := tc.breakF(dir); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCA(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadCA: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, created, err := LoadOrCreateCA(dir, "cohort-ca", t0)
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	again, created, err := LoadOrCreateCA(dir, "ignored", t0.Add(time.Hour))
	if err != nil || created {
		t.Fatalf("second call: created %v, %v", created, err)
	}
	if again.Hash() != ca.Hash() || again.Certificate().Subject.CommonName != "cohort-ca" {
		t.Error("second call returned a different CA")
	}
	// Half a CA is never overwritten.
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, "cohort-ca", t0); err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("with only ca.key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CACertFile)); err == nil {
		t.Error("LoadOrCreateCA wrote a certificate next to an existing key")
	}
}

func TestSPKIHashIgnoresCertificateFields(t *testing.T) {
	// The hash pins the key: a CA certificate re-issued for the same key hashes the same.
	ca := newTestCA(t, "cohort-ca", t0)
	tmpl := *ca.Certificate()
	tmpl.NotAfter = tmpl.NotAfter.Add(365 * 24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	reissued, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if SPKIHash(reissued) != ca.Hash() {
		t.Error("re-issuing the CA certificate with the same key changed its hash")
	}
}
