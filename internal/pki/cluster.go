package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names of a process's TLS directory (besides CACertFile and CAKeyFile).
const (
	// NodeCertFile and NodeKeyFile are a cluster process's own certificate chain and key
	// (a coordinator's or a node agent's).
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
	// AdminCertFile and AdminKeyFile are the operator's client certificate that a
	// coordinator holding the CA writes next to it.
	AdminCertFile = "admin.crt"
	AdminKeyFile  = "admin.key"
	// ClientCertFile and ClientKeyFile are a client's certificate in a directory of its
	// own (~/.config/cohort).
	ClientCertFile = "client.crt"
	ClientKeyFile  = "client.key"
)

// RoleClientTLSConfig is ClientTLSConfig for calls inside the cluster, where servers are
// known by role rather than by name: it verifies the server's chain against ca (for
// server authentication) and that the certificate names one of serverRoles, but not the
// host name dialled. Addresses inside a cluster are IPs, bind-all addresses and names
// behind NAT that a certificate issued at start cannot list reliably; what a caller
// needs to know is that it speaks to a coordinator (or to a node agent), and only the CA
// can make a certificate that says so. This is what nomad and consul do unless
// verify_server_hostname is set.
func RoleClientTLSConfig(ca *x509.CertPool, certs *Reloader, serverRoles ...Role) *tls.Config {
	return roleClientTLSConfig(func() *x509.CertPool { return ca }, certs, serverRoles...)
}

func roleClientTLSConfig(roots func() *x509.CertPool, certs *Reloader, serverRoles ...Role) *tls.Config {
	cfg := ClientTLSConfig(roots(), certs, "")
	// The standard verification would also check the host name; VerifyConnection below
	// does everything else it does.
	cfg.InsecureSkipVerify = true
	requireRole := RequireRole(serverRoles...)
	cfg.VerifyConnection = func(state tls.ConnectionState) error {
		if len(state.PeerCertificates) == 0 {
			return ErrNoIdentity
		}
		inter := x509.NewCertPool()
		for _, c := range state.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		chains, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("pki: server certificate: %w", err)
		}
		state.VerifiedChains = chains
		return requireRole(state)
	}
	return cfg
}

// IssueFor makes a new key and has ca sign a certificate for id, valid for ttl from now
// (see SignRequest.TTL), naming hosts (IP addresses and DNS names; other strings and
// duplicates are skipped; none for a client). It returns the chain and the key, PEM.
func (ca *CA) IssueFor(id Identity, hosts []string, ttl time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	keyPEM, csr, err := NewKeyAndCSR(id.Name)
	if err != nil {
		return nil, nil, err
	}
	req := SignRequest{CSR: csr, Identity: id, TTL: ttl}
	if id.Role != RoleClient {
		req.DNSNames, req.IPs = splitHosts(hosts)
	}
	certPEM, err = ca.Sign(req, now)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// splitHosts sorts hosts into IP addresses and DNS names, dropping duplicates and
// strings that are neither.
func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if len(h) <= 253 && dnsNameRE.MatchString(h) && !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// SaveKeyPair writes a certificate chain and its key to dir (created 0700 if needed) as
// <name>.crt (0644) and <name>.key (0600), each replaced atomically. Both are written
// and synced before either is renamed into place, so a reader (the CLI reading the
// admin.crt a coordinator renews) sees a mismatched pair only between two renames.
func SaveKeyPair(dir, name string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	keyPath, certPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	keyTmp, err := stageFile(keyPath, keyPEM, 0o600)
	if err != nil {
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	certTmp, err := stageFile(certPath, certPEM, 0o644)
	if err != nil {
		os.Remove(keyTmp)
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	if err := os.Rename(keyTmp, keyPath); err != nil {
		os.Remove(keyTmp)
		os.Remove(certTmp)
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	if err := os.Rename(certTmp, certPath); err != nil {
		os.Remove(certTmp)
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("pki: save %s: %w", name, err)
	}
	return nil
}

// SaveCACert writes the CA certificate alone to dir (created 0700 if needed) as
// CACertFile: what a process that trusts the CA without holding it keeps.
func SaveCACert(dir string, certPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save CA certificate: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: save CA certificate: %w", err)
	}
	return nil
}

// SaveCACertFile writes certificates (PEM) to path (0644), replacing it atomically.
func SaveCACertFile(path string, certPEM []byte) error {
	if err := writeFileAtomic(path, certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: save %s: %w", filepath.Base(path), err)
	}
	return nil
}

// LoadKeyPair reads the files SaveKeyPair wrote: certPath and keyPath (which group and
// others must not be able to read).
func LoadKeyPair(certPath, keyPath string) (certPEM, keyPEM []byte, err error) {
	if keyPEM, err = readPrivateFile(keyPath); err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	if certPEM, err = os.ReadFile(certPath); err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return certPEM, keyPEM, nil
}

// LoadReloader reads the key pair SaveKeyPair wrote (LoadKeyPair) into a Reloader.
// A pair that does not match is read again a few times, a millisecond apart and then
// longer: a process renewing it (a coordinator reissuing admin.crt during a CA
// rotation) renames the key and then the certificate, and a reader between the two
// would otherwise fail.
func LoadReloader(certPath, keyPath string) (*Reloader, error) {
	var lastErr error
	for attempt := range 6 {
		if attempt > 0 {
			time.Sleep(time.Duration(1<<attempt) * time.Millisecond)
		}
		certPEM, keyPEM, err := LoadKeyPair(certPath, keyPath)
		if err != nil {
			return nil, err
		}
		r, err := NewReloader(certPEM, keyPEM, nil)
		if err == nil {
			return r, nil
		}
		lastErr = fmt.Errorf("%s: %w", certPath, err)
	}
	return nil, lastErr
}

// LoadCAPool reads a CA certificate file (CACertFile) into a new pool: a trust bundle
// of one or more CA certificates (ParseCertBundle), the first the CA that signs now.
func LoadCAPool(path string) (*x509.CertPool, error) {
	t, err := LoadTrust(path)
	if err != nil {
		return nil, err
	}
	return t.Pool(), nil
}
