package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

const (
	// DefaultCertTTL is how long a certificate is valid when SignRequest.TTL is zero.
	DefaultCertTTL = 24 * time.Hour
	// MaxCertTTL is the longest validity CA.Sign grants.
	MaxCertTTL = 365 * 24 * time.Hour
)

// dnsNameRE is a host name: dot-separated labels, no wildcard.
var dnsNameRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$`)

// SignRequest is what CA.Sign turns into a certificate.
type SignRequest struct {
	// CSR is a DER-encoded certificate signing request (see NewKeyAndCSR). Only its
	// public key is used, once its signature is checked.
	CSR []byte
	// Identity is written into the certificate (see the package documentation).
	Identity Identity
	// TTL is how long the certificate is valid: DefaultCertTTL when zero, at most
	// MaxCertTTL, and never past the CA certificate's own expiry.
	TTL time.Duration
	// DNSNames and IPs are the server names the certificate is valid for; they are
	// refused for RoleClient.
	DNSNames []string
	IPs      []net.IP
}

// Sign issues a certificate for req, valid from now (less a few minutes for clock
// skew), and returns it PEM-encoded followed by the CA certificate, so that the result
// and the holder's key can go straight to tls.X509KeyPair and a server sends its CA
// along (which JoinTLSConfig needs). Everything the CSR asks for other than its key
// (subject, SANs, extensions) is ignored.
func (ca *CA) Sign(req SignRequest, now time.Time) (certPEM []byte, err error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: sign: CSR signature: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	id := req.Identity
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = DefaultCertTTL
	case ttl < 0:
		return nil, fmt.Errorf("pki: sign: negative TTL %v", ttl)
	case ttl > MaxCertTTL:
		return nil, fmt.Errorf("pki: sign: TTL %v is longer than the maximum %v", ttl, MaxCertTTL)
	}
	if id.Role == RoleClient && (len(req.DNSNames) > 0 || len(req.IPs) > 0) {
		return nil, fmt.Errorf("pki: sign: a client certificate carries no DNS names or IP addresses")
	}
	for _, n := range req.DNSNames {
		if len(n) > 253 || !dnsNameRE.MatchString(n) {
			return nil, fmt.Errorf("pki: sign: %q is not a DNS name", n)
		}
	}
	ips := make([]net.IP, 0, len(req.IPs))
	for _, ip := range req.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("pki: sign: malformed IP address %v", ip)
		}
		ips = append(ips, ip)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	notBefore := now.Add(-clockSkew)
	if !notAfter.After(notBefore) || now.Before(ca.cert.NotBefore) {
		return nil, fmt.Errorf("pki: sign: the CA certificate is not valid at %v", now)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	ext := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if id.Role == RoleClient {
		ext = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Name, OrganizationalUnit: []string{string(id.Role)}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           ext,
		BasicConstraintsValid: true,
		DNSNames:              append([]string(nil), req.DNSNames...),
		IPAddresses:           ips,
		URIs:                  id.uris(),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return append(encodePEM(pemCertificate, der), ca.ChainPEM()...), nil
}

// checkPublicKey refuses keys too weak or of a kind TLS does not use.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return errors.New("CSR key is on an unsupported curve")
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("CSR key is RSA-%d; at least 2048 bits are needed", k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("CSR key type %T is not supported", pub)
}

// NewKeyAndCSR makes what a joining process sends and keeps: a new ECDSA P-256 key,
// PEM-encoded as PKCS#8 (keep it, mode 0600), and a DER-encoded CSR for it with
// CommonName name (send it; CA.Sign decides the identity regardless).
func NewKeyAndCSR(name string) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new CSR: %w", err)
	}
	return encodePEM(pemPrivateKey, keyDER), csrDER, nil
}
