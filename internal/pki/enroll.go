package pki

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
)

// KeyPEM returns the CA's private key, PEM-encoded as PKCS#8: what a coordinator sends,
// over a connection its join token authenticated, to another coordinator joining with a
// coordinator token, so that every voter can sign.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	return encodePEM(pemPrivateKey, der), nil
}

// ParseCA builds a CA from its certificate and key, PEM-encoded, as KeyPEM and CertPEM
// return them. It refuses what LoadCA refuses: a certificate that is not a self-signed
// CA, or a key that does not match it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: parse CA: the certificate is not a CA")
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("pki: parse CA: the certificate is not self-signed: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("pki: parse CA: the key does not match the certificate")
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}), key: key}, nil
}

// Enrolled is what an enrollment returned, checked (CheckEnrolled).
type Enrolled struct {
	// CertPEM is the certificate followed by the CA certificate; KeyPEM its key.
	CertPEM, KeyPEM []byte
	// CACertPEM is the CA certificate, whose key hashes to the token's CA hash.
	CACertPEM []byte
	// CA is set when the coordinator sent the CA's key (a coordinator token).
	CA *CA
	// Identity is the identity the certificate names.
	Identity Identity
}

// CheckEnrolled checks what an enrollment returned before anything of it is trusted or
// written: the CA certificate must hash to wantHash (else the error wraps
// ErrCAHashMismatch and names both hashes), the certificate must verify against it and
// belong to keyPEM, and a CA key, when sent, must match the CA certificate.
func CheckEnrolled(wantHash string, certPEM, keyPEM, caCertPEM, caKeyPEM []byte) (*Enrolled, error) {
	bundle, err := ParseCertBundle(caCertPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: enrollment: CA certificate: %w", err)
	}
	// During a CA rotation the bundle holds the new CA first and the old one after it:
	// a token minted before the rotation pins the old one.
	if !slices.ContainsFunc(bundle, func(c *x509.Certificate) bool { return SPKIHash(c) == wantHash }) {
		return nil, fmt.Errorf("%w: the enrollment's CA hashes to %s, the token pins %s", ErrCAHashMismatch, SPKIHash(bundle[0]), wantHash)
	}
	pair, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: enrollment: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki: enrollment: the certificate does not verify against the pinned CA: %w", err)
	}
	id, err := IdentityOf(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("pki: enrollment: %w", err)
	}
	e := &Enrolled{CertPEM: certPEM, KeyPEM: keyPEM, CACertPEM: EncodeCertBundle(bundle), Identity: id}
	if len(caKeyPEM) > 0 {
		if e.CA, err = ParseCA(encodePEM(pemCertificate, bundle[0].Raw), caKeyPEM); err != nil {
			return nil, fmt.Errorf("pki: enrollment: %w", err)
		}
	}
	return e, nil
}

// Save writes the enrollment to dir (created 0700): CACertFile, <name>.crt and
// <name>.key (0600), and, when the CA's key came with it, CAKeyFile (0600).
func (e *Enrolled) Save(dir, name string) error {
	if e.CA != nil {
		if err := e.CA.Save(dir); err != nil {
			return err
		}
	}
	// The whole bundle: the CA (first, which a CA.Save above wrote alone) and those
	// still trusted during a rotation.
	if err := SaveCACert(dir, e.CACertPEM); err != nil {
		return err
	}
	return SaveKeyPair(dir, name, e.CertPEM, e.KeyPEM)
}

// HasKeyPair reports whether dir holds <name>.crt and <name>.key.
func HasKeyPair(dir, name string) bool {
	for _, ext := range []string{".crt", ".key"} {
		if _, err := os.Stat(filepath.Join(dir, name+ext)); err != nil {
			return false
		}
	}
	return true
}

// SplitHosts sorts hosts into DNS names and IP addresses for a SignRequest, dropping
// duplicates and strings that are neither.
func SplitHosts(hosts []string) (dns []string, ips []net.IP) { return splitHosts(hosts) }
