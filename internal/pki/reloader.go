package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Clock is the time RenewLoop waits on; tests pass a fake one.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Backoff between failed renewals: it starts at RenewBackoffMin and doubles up to
// RenewBackoffMax.
const (
	RenewBackoffMin = time.Second
	RenewBackoffMax = 5 * time.Minute
)

// RenewFunc obtains a new certificate chain (PEM, leaf first) and its private key
// (PEM), typically by making a new key and CSR and asking the coordinator over a
// connection authenticated by the current certificate.
type RenewFunc func(ctx context.Context) (certPEM, keyPEM []byte, err error)

// Reloader holds a process's current certificate and key, serves them to TLS through
// GetCertificate and GetClientCertificate, and renews them (RenewLoop). It is safe for
// concurrent use.
type Reloader struct {
	cur    atomic.Pointer[tls.Certificate]
	logger *slog.Logger
	soon   chan struct{}
}

// NewReloader returns a Reloader holding the given certificate chain and key (PEM, as
// CA.Sign and NewKeyAndCSR return them). logger receives RenewLoop's logs;
// slog.Default() when nil.
func NewReloader(certPEM, keyPEM []byte, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Reloader{logger: logger, soon: make(chan struct{}, 1)}
	if err := r.Set(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return r, nil
}

// Set replaces the certificate and key; handshakes from now on use the new ones.
func (r *Reloader) Set(certPEM, keyPEM []byte) error {
	c, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	r.cur.Store(c)
	return nil
}

func parseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate and key: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: certificate: %w", err)
		}
	}
	return &c, nil
}

// Current returns the certificate in use. The caller must not modify it.
func (r *Reloader) Current() *tls.Certificate { return r.cur.Load() }

// Leaf returns the parsed leaf certificate in use.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().Leaf }

// GetCertificate is a tls.Config.GetCertificate returning the current certificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate returning the current
// certificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// RenewSoon makes RenewLoop renew now rather than at RenewAt: after a CA rotation, so
// that the certificate moves onto the new CA.
func (r *Reloader) RenewSoon() {
	select {
	case r.soon <- struct{}{}:
	default:
	}
}

// RenewAt returns when a certificate is due for renewal: two thirds of the way from
// its NotBefore to its NotAfter.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life / 3 * 2)
}

// RenewLoop renews the certificate until ctx is done: it waits until RenewAt of the
// current leaf, calls renew, and installs the result. A failure (renew's error, an
// unusable result, or a certificate expiring no later than the current one) is logged
// and retried after a backoff from RenewBackoffMin doubling to RenewBackoffMax. clock
// is SystemClock when nil.
func (r *Reloader) RenewLoop(ctx context.Context, renew RenewFunc, clock Clock) {
	if clock == nil {
		clock = SystemClock
	}
	backoff := RenewBackoffMin
	for {
		old := r.Leaf()
		if wait := RenewAt(old).Sub(clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-clock.After(wait):
			case <-r.soon:
			}
		}
		err := r.renewOnce(ctx, renew, old)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			leaf := r.Leaf()
			r.logger.Info("pki: certificate renewed", "subject", leaf.Subject.CommonName,
				"not_after", leaf.NotAfter, "renew_at", RenewAt(leaf))
			backoff = RenewBackoffMin
			continue
		}
		level := slog.LevelWarn
		if !clock.Now().Before(old.NotAfter) {
			level = slog.LevelError
		}
		r.logger.Log(ctx, level, "pki: certificate renewal failed", "subject", old.Subject.CommonName,
			"not_after", old.NotAfter, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-clock.After(backoff):
		}
		backoff = min(2*backoff, RenewBackoffMax)
	}
}

func (r *Reloader) renewOnce(ctx context.Context, renew RenewFunc, old *x509.Certificate) error {
	certPEM, keyPEM, err := renew(ctx)
	if err != nil {
		return err
	}
	c, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	// A certificate of another CA (a rotation's) is taken even if it expires no later.
	if !c.Leaf.NotAfter.After(old.NotAfter) && bytes.Equal(c.Leaf.AuthorityKeyId, old.AuthorityKeyId) {
		return errors.New("pki: the renewed certificate expires no later than the current one")
	}
	r.cur.Store(c)
	return nil
}
