package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// ErrCAHashMismatch means the CA a server presented is not the one a join token pins.
var ErrCAHashMismatch = errors.New("pki: CA hash mismatch")

// VerifyChainAgainstHash checks a certificate chain as a server sends it (leaf first,
// DER-encoded) against a pinned CA hash, trusting nothing else: the last certificate
// must be a self-signed CA whose SPKI hash (see CA.Hash) is wantHash, else the error
// wraps ErrCAHashMismatch and names both hashes; and the leaf must verify against that
// CA, through any certificates in between, for server authentication now and, when
// serverName is not empty, for that host name or IP address. It returns the CA
// certificate.
func VerifyChainAgainstHash(rawCerts [][]byte, wantHash string, serverName string) (*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("pki: verify chain: certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	return verifyChainAgainstHash(certs, wantHash, serverName, time.Now())
}

func verifyChainAgainstHash(certs []*x509.Certificate, wantHash, serverName string, now time.Time) (*x509.Certificate, error) {
	if err := checkHash(wantHash); err != nil {
		return nil, fmt.Errorf("pki: verify chain: pinned %s", err)
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("pki: verify chain: the server sent %d certificate(s); it must send its CA certificate after its own", len(certs))
	}
	// The pinned CA is the chain's last certificate, or, while the cluster rotates its
	// CA (chain: leaf, new CA cross-signed by the old, old root), the one carrying the
	// pinned key: the pin is on the key, and a certificate for that key that the old
	// CA signed proves nothing less than its self-signed one.
	i := slices.IndexFunc(certs[1:], func(c *x509.Certificate) bool { return SPKIHash(c) == wantHash })
	if i < 0 {
		return nil, fmt.Errorf("%w: the server's CA hashes to %s, the token pins %s", ErrCAHashMismatch, SPKIHash(certs[len(certs)-1]), wantHash)
	}
	ca := certs[1+i]
	if !ca.IsCA || !ca.BasicConstraintsValid {
		return nil, errors.New("pki: verify chain: the pinned key's certificate is not a self-signed CA, nor a cross-signed one")
	}
	if bytes.Equal(ca.RawSubject, ca.RawIssuer) {
		if err := ca.CheckSignatureFrom(ca); err != nil {
			return nil, fmt.Errorf("pki: verify chain: the pinned key's certificate is not self-signed: %w", err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for j, c := range certs[1:] {
		if j != i {
			inter.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       serverName,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return nil, fmt.Errorf("pki: verify chain: the server's certificate does not verify against the pinned CA: %w", err)
	}
	return ca, nil
}

// JoinTLSConfig returns the client configuration for a node that holds a join token
// but no CA yet: it trusts no certificate store, and instead accepts the server only
// if VerifyChainAgainstHash(chain, wantHash, serverName) succeeds and the leaf names a
// RoleCoordinator. The check runs inside the handshake, so a connection made with this
// configuration fails before the caller can write anything, the join secret included.
// serverName, when not empty, is also sent as SNI; when empty, the host name is not
// checked (the pin and the coordinator role authenticate the server, which may be
// reached through an address its certificate does not name).
func JoinTLSConfig(wantHash, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verification is VerifyConnection's, against the pinned hash.
		InsecureSkipVerify: true,
		VerifyConnection: func(state tls.ConnectionState) error {
			if _, err := verifyChainAgainstHash(state.PeerCertificates, wantHash, serverName, time.Now()); err != nil {
				return err
			}
			id, err := IdentityOf(state.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id.Role != RoleCoordinator {
				return fmt.Errorf("%w: %s has role %q; only a coordinator serves joins", ErrRoleNotAllowed, id.Name, id.Role)
			}
			return nil
		},
	}
}

// FetchCA connects to addr with JoinTLSConfig(wantHash, "") and returns the CA
// certificate the server presented, which the handshake has checked against
// wantHash; the caller then trusts it (ClientTLSConfig) for everything else. No
// application data is sent. dial, when nil, is a net.Dialer's DialContext; ctx bounds
// the dial and the handshake.
func FetchCA(ctx context.Context, addr string, wantHash string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*x509.Certificate, error) {
	if err := checkHash(wantHash); err != nil {
		return nil, fmt.Errorf("pki: fetch CA: pinned %s", err)
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pki: fetch CA from %s: %w", addr, err)
	}
	conn := tls.Client(raw, JoinTLSConfig(wantHash, ""))
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("pki: fetch CA from %s: %w", addr, err)
	}
	peers := conn.ConnectionState().PeerCertificates
	return peers[len(peers)-1], nil
}
