package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrSealed means a sealed value could not be opened: it was sealed by another CA, for
// another purpose, or was altered.
var ErrSealed = errors.New("pki: cannot open sealed value")

// sealKey derives a 256-bit AES key for purpose from the CA's private key: only the
// holders of the CA key (the coordinators) can seal and open.
func (ca *CA) sealKey(purpose string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return hkdf.Key(sha256.New, der, nil, "cohort seal v1: "+purpose, 32)
}

// sealAEAD is the AES-256-GCM of purpose's sealing key.
func (ca *CA) sealAEAD(purpose string) (cipher.AEAD, error) {
	key, err := ca.sealKey(purpose)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext with AES-256-GCM under a key derived from the CA's private
// key for purpose (which is authenticated too). What the coordinators must replicate
// but not expose (the gossip keyring in Raft) is sealed this way.
func (ca *CA) Seal(purpose string, plaintext []byte) ([]byte, error) {
	gcm, err := ca.sealAEAD(purpose)
	if err != nil {
		return nil, fmt.Errorf("pki: seal: %w", err)
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plaintext, []byte(purpose)), nil
}

// Open decrypts what Seal sealed for purpose; any other input is ErrSealed.
func (ca *CA) Open(purpose string, sealed []byte) ([]byte, error) {
	gcm, err := ca.sealAEAD(purpose)
	if err != nil {
		return nil, fmt.Errorf("pki: open: %w", err)
	}
	if len(sealed) < gcm.NonceSize()+gcm.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrSealed, len(sealed))
	}
	out, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], []byte(purpose))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealed, err)
	}
	return out, nil
}
