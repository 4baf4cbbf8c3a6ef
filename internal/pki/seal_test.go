package pki

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestSeal: what one CA seals for a purpose opens only with the same CA and purpose,
// unaltered; the sealed bytes do not contain the plaintext.
func TestSeal(t *testing.T) {
	ca, err := NewCA("c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("o", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("gossip key material 0123456789ab")
	sealed, err := ca.Seal("gossip keyring", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed bytes hold the plaintext")
	}
	got, err := ca.Open("gossip keyring", sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q %v", got, err)
	}
	// A clone of the CA (another voter, after enrollment) opens it too.
	key, _ := ca.KeyPEM()
	clone, err := ParseCA(ca.CertPEM(), key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := clone.Open("gossip keyring", sealed); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open by another voter: %q %v", got, err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"another CA":      func() ([]byte, error) { return other.Open("gossip keyring", sealed) },
		"another purpose": func() ([]byte, error) { return ca.Open("tokens", sealed) },
		"tampered":        func() ([]byte, error) { return ca.Open("gossip keyring", tampered) },
		"short":           func() ([]byte, error) { return ca.Open("gossip keyring", sealed[:5]) },
	} {
		if _, err := open(); !errors.Is(err, ErrSealed) {
			t.Errorf("%s: %v, want ErrSealed", name, err)
		}
	}
}
