package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

const (
	// CACertFile is the name of the CA certificate in a CA directory.
	CACertFile = "ca.crt"
	// CAKeyFile is the name of the CA private key in a CA directory.
	CAKeyFile = "ca.key"
	// CAValidity is how long a new CA certificate is valid.
	CAValidity = 10 * 365 * 24 * time.Hour

	// clockSkew backdates NotBefore so that a certificate is valid at once on a peer
	// whose clock is a little behind.
	clockSkew = 5 * time.Minute

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// CA is the cluster certificate authority: its self-signed certificate and key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	// chainPEM is what Sign appends after a leaf: certPEM, or, during a CA rotation,
	// this CA cross-signed by the previous one followed by the previous root (WithChain).
	chainPEM []byte
}

// NewCA makes a new CA: an ECDSA P-256 key and a self-signed certificate for it named
// commonName, valid for CAValidity from now, that may sign certificates and CRLs and
// one level of intermediates (MaxPathLen 1).
func NewCA(commonName string, now time.Time) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("pki: new CA: empty common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	return &CA{cert: cert, certPEM: encodePEM(pemCertificate, der), key: key}, nil
}

// Certificate returns the CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM-encoded: what joining nodes store.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// ChainPEM returns what Sign appends after each leaf: the CA certificate, or what
// WithChain set.
func (ca *CA) ChainPEM() []byte {
	if ca.chainPEM == nil {
		return ca.CertPEM()
	}
	return append([]byte(nil), ca.chainPEM...)
}

// WithChain returns a copy of ca whose signed chains end with chainPEM (certificates,
// PEM) instead of the CA certificate: during a rotation, the new CA cross-signed by the
// old one and the old root, so that a peer trusting only the old CA still verifies the
// new CA's certificates, and a join token pinning the old CA still finds it. nil
// restores the CA certificate alone.
func (ca *CA) WithChain(chainPEM []byte) *CA {
	c := *ca
	c.chainPEM = nil
	if chainPEM != nil {
		c.chainPEM = append([]byte(nil), chainPEM...)
	}
	return &c
}

// Pool returns a new certificate pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Hash returns the CA hash that join tokens pin: the lowercase hex SHA-256 of the CA
// certificate's SubjectPublicKeyInfo.
func (ca *CA) Hash() string { return SPKIHash(ca.cert) }

// SPKIHash returns the lowercase hex SHA-256 of cert's DER-encoded
// SubjectPublicKeyInfo.
func SPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CAHashOf returns the CA hash (see CA.Hash) of the first certificate in certPEM.
func CAHashOf(certPEM []byte) (string, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return "", fmt.Errorf("pki: CA hash: %w", err)
	}
	return SPKIHash(cert), nil
}

// Save writes the CA to dir, creating dir (0700) if needed: CAKeyFile with mode 0600
// as a PKCS#8 PEM block, then CACertFile with mode 0644. Each file is written to a
// temporary file in dir, synced, and renamed over the old one, so a reader sees the
// old file or the new one, never part of one. It replaces a CA already in dir.
func (ca *CA) Save(dir string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), encodePEM(pemPrivateKey, keyDER), 0o600); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	return nil
}

// LoadCA reads the CA that Save wrote to dir. It refuses a key file that group or
// others may access (the error names the file and its mode), a key that is not
// PKCS#8, a certificate that is not a self-signed CA, and a key that does not match
// the certificate.
func LoadCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, CAKeyFile)
	keyPEM, err := readPrivateFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	certPath := filepath.Join(dir, CACertFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %s: %w", keyPath, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		// A trust bundle (SaveWithTrust) whose first CA is not the key's: a rotation
		// stopped between the bundle and the key. The key's CA is the one later in it.
		certs, err := ParseCertBundle(certPEM)
		if err != nil {
			return nil, fmt.Errorf("pki: load CA: %s: %w", certPath, err)
		}
		i := slices.IndexFunc(certs, func(c *x509.Certificate) bool { return publicKeysEqual(key.Public(), c.PublicKey) })
		if i < 0 {
			return nil, fmt.Errorf("pki: load CA: %s does not match the public key in %s", keyPath, certPath)
		}
		cert = certs[i]
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: load CA: %s is not a CA certificate", certPath)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("pki: load CA: %s is not self-signed: %w", certPath, err)
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw}), key: key}, nil
}

// SaveWithTrust writes the CA to dir like Save, but with bundle (PEM certificates,
// this CA's among them) as CACertFile, and in the other order: the bundle first, then
// the key. A client reading CACertFile meanwhile sees the old bundle or the new one,
// never this CA alone; a node stopped between the two renames finds its old key and a
// bundle holding its certificate, which LoadCA accepts.
func (ca *CA) SaveWithTrust(dir string, bundle []byte) error {
	certs, err := ParseCertBundle(bundle)
	if err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if !slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return c.Equal(ca.cert) }) {
		return fmt.Errorf("pki: save CA: the trust bundle lacks CA %s", ca.Hash())
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), bundle, 0o644); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), encodePEM(pemPrivateKey, keyDER), 0o600); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	return nil
}

// LoadOrCreateCA loads the CA in dir, or, when dir holds neither CACertFile nor
// CAKeyFile, makes one with NewCA(commonName, now) and saves it there; created says
// which. A directory holding only one of the two files is an error: it is never
// overwritten.
func LoadOrCreateCA(dir, commonName string, now time.Time) (ca *CA, created bool, err error) {
	_, certErr := os.Stat(filepath.Join(dir, CACertFile))
	_, keyErr := os.Stat(filepath.Join(dir, CAKeyFile))
	certMissing, keyMissing := errors.Is(certErr, fs.ErrNotExist), errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		ca, err := NewCA(commonName, now)
		if err != nil {
			return nil, false, err
		}
		if err := ca.Save(dir); err != nil {
			return nil, false, err
		}
		return ca, true, nil
	case certMissing != keyMissing:
		return nil, false, fmt.Errorf("pki: load CA: %s holds only one of %s and %s; restore the other or remove it", dir, CACertFile, CAKeyFile)
	}
	ca, err = LoadCA(dir)
	return ca, false, err
}

// readPrivateFile reads a file that must be accessible to its owner only.
func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a private key must not be accessible by group or others (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	return io.ReadAll(f)
}

// writeFileAtomic replaces path with data: it writes a temporary file in the same
// directory, syncs it, renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := stageFile(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// stageFile writes data to a synced temporary file next to path, for a rename over it.
func stageFile(path string, data []byte, perm fs.FileMode) (tmp string, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	tmp = f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return "", err
	}
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	return tmp, f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err = d.Sync(); err != nil && runtime.GOOS != "windows" {
		return err
	}
	return nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertPEM parses the first PEM block of data, which must be a certificate.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != pemCertificate {
		return nil, fmt.Errorf("PEM block is %q, not %q", block.Type, pemCertificate)
	}
	return x509.ParseCertificate(block.Bytes)
}

// parseKeyPEM parses a PKCS#8 private key.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("PEM block is %q, not a PKCS#8 %q", block.Type, pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
