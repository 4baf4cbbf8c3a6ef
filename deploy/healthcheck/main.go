// Command healthcheck is a container health probe for images without a shell or curl
// (the distroless Cohort image): it GETs one URL and exits 0 when the answer is 2xx,
// 1 otherwise, printing why to stderr.
//
//	healthcheck http://127.0.0.1:7071/healthz
//	healthcheck --ca /var/lib/cohort/data/tls/ca.crt https://127.0.0.1:7071/healthz
//
// A node serving its HTTP port off loopback does so over TLS (--https): give the probe
// the node's ca.crt with --ca, and it accepts only a server certificate of that CA. It
// does not check the certificate's host names: the probe calls its own container on
// loopback, which a node's certificate need not name.
//
// docker-compose's healthcheck runs it inside the container; Kubernetes uses its own
// httpGet probes instead.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	args := os.Args[1:]
	var caFile string
	if len(args) == 3 && args[0] == "--ca" {
		caFile, args = args[1], args[2:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck [--ca CA.crt] URL")
		os.Exit(2)
	}
	client, err := clientFor(caFile)
	if err == nil {
		err = probe(client, args[0], 3*time.Second)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// clientFor returns the HTTP client of the probe: http.DefaultClient without caFile,
// else one that trusts only the CA certificates in caFile.
func clientFor(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: caOnlyTLS(pool)}}, nil
}

// caOnlyTLS verifies the server's chain against pool, without checking host names.
func caOnlyTLS(pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyConnection: the chain, not the name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("the server's certificate is not of the --ca CA: %w", err)
			}
			return nil
		},
	}
}

// probe GETs url with client within timeout and reports a transport error or a
// non-2xx status.
func probe(client *http.Client, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}
