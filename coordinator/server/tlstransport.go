package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohort-dev/cohort/internal/pki"
)

// TLSConfig runs the Raft transport over mutual TLS.
type TLSConfig struct {
	// CA is the cluster CA: both ends' certificates must chain to it. Trust, when set,
	// replaces it with CAs that can change while the transport runs (a CA rotation).
	CA    *x509.CertPool
	Trust *pki.Trust
	// Certs is this voter's certificate (role coordinator), served and presented.
	Certs *pki.Reloader
	// Revoked, when set, reports whether a join token is revoked: a peer whose
	// certificate was enrolled with a revoked token is refused at the handshake, on
	// both sides (the Server sets it to its own state's tokens when left nil).
	Revoked func(tokenID string) bool
}

// raftHandshakeTimeout bounds the TLS handshake of one Raft connection.
const raftHandshakeTimeout = 10 * time.Second

// tlsStreamLayer is a raft.StreamLayer over mutual TLS: it accepts only peers whose
// certificate, from the cluster CA, names a coordinator (only voters speak Raft), and it
// dials only such peers. Handshakes of accepted connections run concurrently, off the
// accept loop, so a slow or hostile client cannot stall the transport; a refused one is
// logged and closed before Raft reads a byte of it.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	log       *slog.Logger

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// newTLSStreamLayer listens on bind; advertise (nil: the listener's address, which must
// then be advertisable) is the address peers reach this voter at.
func newTLSStreamLayer(bind string, advertise net.Addr, cfg TLSConfig, log *slog.Logger) (*tlsStreamLayer, error) {
	if cfg.Trust == nil && cfg.CA != nil {
		cfg.Trust = pki.TrustPool(cfg.CA)
	}
	if cfg.Trust == nil || cfg.Certs == nil {
		return nil, errors.New("server: raft TLS: CA and Certs are required")
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("local bind address %s is not advertisable: set an advertise address", advertise)
	}
	server := pki.ServerTLSConfigTrust(cfg.Trust, cfg.Certs, true)
	roleOnly := pki.RequireRole(pki.RoleCoordinator)
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := roleOnly(cs); err != nil {
			return err
		}
		return notRevoked(cs.VerifiedChains[0][0], cfg.Revoked)
	}
	client := pki.RoleClientTLSConfigTrust(cfg.Trust, cfg.Certs, pki.RoleCoordinator)
	verifyServer := client.VerifyConnection // the chain and the role
	client.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verifyServer(cs); err != nil {
			return err
		}
		return notRevoked(cs.PeerCertificates[0], cfg.Revoked)
	}
	l := &tlsStreamLayer{
		ln: ln, advertise: advertise, server: server, client: client,
		log: log, conns: make(chan net.Conn), closed: make(chan struct{}),
	}
	go l.acceptLoop()
	return l, nil
}

// notRevoked refuses a Raft peer's verified certificate when it was enrolled with a
// join token that revoked reports revoked.
func notRevoked(leaf *x509.Certificate, revoked func(string) bool) error {
	if revoked == nil {
		return nil
	}
	id, err := pki.IdentityOf(leaf)
	if err != nil {
		return err
	}
	if id.Token != "" && revoked(id.Token) {
		return fmt.Errorf("%w: the certificate of %s was enrolled with join token %s, which is revoked", ErrRevokedPeer, id.Name, id.Token)
	}
	return nil
}

// ErrRevokedPeer means a Raft peer presented a certificate of a revoked join token.
var ErrRevokedPeer = errors.New("raft TLS: revoked certificate")

// acceptLoop accepts TCP connections and hands each, once its handshake succeeds, to
// Accept.
func (l *tlsStreamLayer) acceptLoop() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.log.Error("raft TLS: accept failed", "err", err)
			time.Sleep(10 * time.Millisecond) // a persistent error (out of descriptors) must not spin
			continue
		}
		go l.handshake(c)
	}
}

func (l *tlsStreamLayer) handshake(c net.Conn) {
	tc := tls.Server(c, l.server)
	ctx, cancel := context.WithTimeout(context.Background(), raftHandshakeTimeout)
	defer cancel()
	go func() { // Close ends pending handshakes
		select {
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.log.Warn("raft TLS: refused a connection", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	select {
	case l.conns <- tc:
	case <-l.closed:
		_ = tc.Close()
	}
}

// Accept implements net.Listener: the next connection whose handshake succeeded.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *tlsStreamLayer) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.ln.Close()
	})
	return err
}

// Addr implements net.Listener: the advertised address.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer: a TLS connection to a peer that proves it is a
// coordinator.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: l.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(address))
}

// noPipeline is a NetworkTransport without pipelined AppendEntries: hashicorp/raft
// v1.8.0 can deadlock a leader's pipelined replication when the follower's answers
// end it (a stale term after a leadership transfer): the pipeline's decoder waits to
// hand a response to a consumer that has exited, so the sender blocks for ever on a
// full in-flight queue and Shutdown waits on it for ever (seen under the race
// detector in TestLiveStateAcrossLeaderChange). Raft then replicates one
// AppendEntries at a time, which the control plane's small, infrequent entries do not
// notice.
type noPipeline struct{ *raft.NetworkTransport }

// AppendEntriesPipeline refuses pipelining; raft falls back to plain AppendEntries.
func (noPipeline) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
