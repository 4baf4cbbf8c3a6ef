package pki

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLSConfig returns a TLS 1.3 server configuration that serves the certificate
// certs (not nil) holds (renewals take effect on the next handshake) and verifies client
// certificates against ca: required when requireClient is set, else verified only if
// given. Set VerifyConnection (for example to RequireRole(...)) to admit only some
// roles.
func ServerTLSConfig(ca *x509.CertPool, certs *Reloader, requireClient bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClient {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: certs.GetCertificate,
		ClientCAs:      ca,
		ClientAuth:     auth,
	}
}

// ClientTLSConfig returns a TLS 1.3 client configuration that verifies the server
// against ca and serverName and, when certs is not nil, presents the certificate certs
// holds. Set VerifyConnection (for example to RequireRole(RoleCoordinator)) to accept
// only some server roles.
func ClientTLSConfig(ca *x509.CertPool, certs *Reloader, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    ca,
		ServerName: serverName,
	}
	if certs != nil {
		cfg.GetClientCertificate = certs.GetClientCertificate
	}
	return cfg
}
