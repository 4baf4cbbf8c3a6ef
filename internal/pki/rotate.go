package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// MaxTrustedCAs bounds a trust bundle: the active CA and those still trusted during
// rotations.
const MaxTrustedCAs = 8

// CrossSign has ca (the old CA) sign a certificate for next's key and subject: an
// intermediate (MaxPathLen 0) through which a peer that trusts only ca verifies the
// certificates next signs. It is valid until the earlier of the two CAs' ends.
func (ca *CA) CrossSign(next *CA, now time.Time) (certPEM []byte, err error) {
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: cross-sign: %w", err)
	}
	n := next.cert
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               n.Subject,
		SubjectKeyId:          n.SubjectKeyId,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              minTime(n.NotAfter, ca.cert.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, n.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: cross-sign: %w", err)
	}
	return encodePEM(pemCertificate, der), nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// ParseCertBundle parses a trust bundle: one or more PEM CERTIFICATE blocks, each a
// CA certificate (at most MaxTrustedCAs). Other PEM blocks, and text after the last
// block, are refused (text before a block is skipped, as pem.Decode does).
func ParseCertBundle(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		block, r := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("pki: trust bundle: certificate %d: no PEM block", len(certs)+1)
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("pki: trust bundle: block %d is %q, not %q", len(certs)+1, block.Type, pemCertificate)
		}
		if len(certs) == MaxTrustedCAs {
			return nil, fmt.Errorf("pki: trust bundle: more than %d certificates", MaxTrustedCAs)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: trust bundle: certificate %d: %w", len(certs)+1, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("pki: trust bundle: certificate %d (%s) is not a CA certificate", len(certs)+1, c.Subject.CommonName)
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(r)
	}
	if len(certs) == 0 {
		return nil, errors.New("pki: trust bundle: no certificate")
	}
	return certs, nil
}

// EncodeCertBundle PEM-encodes certs, in order.
func EncodeCertBundle(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, encodePEM(pemCertificate, c.Raw)...)
	}
	return out
}

// Trust is the set of CA certificates a process trusts, replaceable while it runs
// (a CA rotation adds the new CA, and its end drops the old one): the TLS
// configurations built from it (ServerTLSConfigTrust, RoleClientTLSConfigTrust) read it
// at each handshake. It is safe for concurrent use.
type Trust struct {
	cur atomic.Pointer[trustSet]
}

type trustSet struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// NewTrust returns a Trust holding certs.
func NewTrust(certs ...*x509.Certificate) *Trust {
	t := &Trust{}
	t.Set(certs...)
	return t
}

// TrustPool returns a Trust holding pool as it is (Certificates is then empty): for
// callers that have a pool and no rotation.
func TrustPool(pool *x509.CertPool) *Trust {
	t := &Trust{}
	t.cur.Store(&trustSet{pool: pool})
	return t
}

// LoadTrust reads a trust bundle file (CACertFile: one or more CA certificates).
func LoadTrust(path string) (*Trust, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certs, err := ParseCertBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewTrust(certs...), nil
}

// Set replaces the trusted certificates; handshakes from now on use them.
func (t *Trust) Set(certs ...*x509.Certificate) {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	t.cur.Store(&trustSet{pool: pool, certs: slices.Clone(certs)})
}

// SetPEM replaces the trusted certificates with a bundle (ParseCertBundle).
func (t *Trust) SetPEM(bundle []byte) error {
	certs, err := ParseCertBundle(bundle)
	if err != nil {
		return err
	}
	t.Set(certs...)
	return nil
}

// Pool returns the current pool. The caller must not modify it.
func (t *Trust) Pool() *x509.CertPool { return t.cur.Load().pool }

// Certificates returns the trusted CA certificates.
func (t *Trust) Certificates() []*x509.Certificate { return slices.Clone(t.cur.Load().certs) }

// PEM returns the trusted CA certificates as a bundle.
func (t *Trust) PEM() []byte { return EncodeCertBundle(t.cur.Load().certs) }

// Hashes returns the CA hashes (SPKIHash) of the trusted certificates.
func (t *Trust) Hashes() []string {
	var out []string
	for _, c := range t.cur.Load().certs {
		out = append(out, SPKIHash(c))
	}
	return out
}

// ServerTLSConfigTrust is ServerTLSConfig with client certificates verified against
// what trust holds at each handshake (tls.Config.GetConfigForClient), so a CA rotation
// takes effect on running servers.
func ServerTLSConfigTrust(trust *Trust, certs *Reloader, requireClient bool) *tls.Config {
	cfg := ServerTLSConfig(trust.Pool(), certs, requireClient)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = trust.Pool()
		// A resumed session's client chain is checked against this ClientCAs too
		// (crypto/tls, since Go 1.21), so a ticket does not outlive a CA's drop.
		// gRPC's credentials add "h2" to the copy they make of cfg, not to cfg: offer
		// it again, or a gRPC client refuses the connection for want of ALPN.
		if slices.Contains(hello.SupportedProtos, "h2") && !slices.Contains(c.NextProtos, "h2") {
			c.NextProtos = append(slices.Clone(c.NextProtos), "h2")
		}
		return c, nil
	}
	return cfg
}

// RoleClientTLSConfigTrust is RoleClientTLSConfig verifying the server against what
// trust holds at each handshake.
func RoleClientTLSConfigTrust(trust *Trust, certs *Reloader, serverRoles ...Role) *tls.Config {
	return roleClientTLSConfig(trust.Pool, certs, serverRoles...)
}
