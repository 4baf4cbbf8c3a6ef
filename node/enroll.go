package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// BootstrapTokenFile is the file, in a bootstrapping coordinator's data directory, that
// holds the first admin client token (mode 0600).
const BootstrapTokenFile = "bootstrap-token"

// enrollTimeout bounds an enrollment's retries: the coordinators may be starting.
var enrollTimeout = 60 * time.Second

// enrollAttemptTimeout bounds one enrollment call to one address.
const enrollAttemptTimeout = 15 * time.Second

// IsJoinToken reports whether s looks like a join token (COH1...), as opposed to an ACL
// token: `--token` carries either.
func IsJoinToken(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), pki.TokenPrefix) }

// EnrollWithToken enrolls name with the join token tok at the first of addrs that
// answers: it fetches the CA there without trusting it and compares its key's hash with
// the token's (a mismatch wraps pki.ErrCAHashMismatch and names both hashes; the
// secret is never sent then), then sends a new key's CSR with the token's id and secret
// over TLS pinned to that CA, and checks what comes back. hosts are the addresses the
// certificate names (not for clients).
func EnrollWithToken(ctx context.Context, addrs []string, tok pki.Token, name string, hosts []string) (*pki.Enrolled, error) {
	if len(addrs) == 0 {
		return nil, errors.New("enroll: no coordinator address to join")
	}
	var errs []error
	for _, addr := range addrs {
		e, err := enrollOne(ctx, addr, tok, name, hosts)
		if err == nil {
			return e, nil
		}
		if errors.Is(err, pki.ErrCAHashMismatch) {
			return nil, err // a server that is not this cluster's: never try the secret elsewhere blindly
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, fmt.Errorf("enroll: %w", errors.Join(errs...))
}

func enrollOne(ctx context.Context, addr string, tok pki.Token, name string, hosts []string) (*pki.Enrolled, error) {
	actx, cancel := context.WithTimeout(ctx, enrollAttemptTimeout)
	defer cancel()
	caCert, err := pki.FetchCA(actx, addr, tok.CAHash, nil)
	if err != nil {
		return nil, err
	}
	keyPEM, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	creds := credentials.NewTLS(pki.RoleClientTLSConfig(pool, nil, pki.RoleCoordinator))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := cohortv1.NewEnrollServiceClient(conn).Enroll(actx, &cohortv1.EnrollRequest{
		TokenId: tok.ID, TokenSecret: tok.Secret, Name: name, Csr: csr, Hosts: hosts,
	})
	if err != nil {
		return nil, err
	}
	return pki.CheckEnrolled(tok.CAHash, resp.CertificatePem, keyPEM, resp.CaCertificatePem, resp.CaKeyPem)
}

// RenewOverNetwork asks the coordinators at addrs for a new certificate for the identity
// of the one certs holds (authenticated by it), and returns the new pair.
func RenewOverNetwork(ctx context.Context, addrs []string, pool *x509.CertPool, certs *pki.Reloader, hosts []string) (certPEM, keyPEM []byte, err error) {
	resp, keyPEM, err := renewOverNetwork(ctx, addrs, pki.TrustPool(pool), certs, hosts)
	if err != nil {
		return nil, nil, err
	}
	return resp.CertificatePem, keyPEM, nil
}

// RenewWithBundle is RenewOverNetwork that also returns the CAs the cluster trusts
// (PEM, the active CA first; checked with pki.ParseCertBundle), which the caller keeps
// as its ca.crt: after a CA rotation that is how a client learns the new CA.
func RenewWithBundle(ctx context.Context, addrs []string, pool *x509.CertPool, certs *pki.Reloader) (certPEM, keyPEM, bundlePEM []byte, err error) {
	resp, keyPEM, err := renewOverNetwork(ctx, addrs, pki.TrustPool(pool), certs, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(resp.CaCertificatePem) > 0 {
		b, err := pki.ParseCertBundle(resp.CaCertificatePem)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("renew: the coordinators' trust bundle: %w", err)
		}
		bundlePEM = pki.EncodeCertBundle(b)
	}
	return resp.CertificatePem, keyPEM, bundlePEM, nil
}

// renewOverNetwork is RenewOverNetwork verifying the coordinators against trust, and
// returning the whole answer (with the cluster's trust bundle).
func renewOverNetwork(ctx context.Context, addrs []string, trust *pki.Trust, certs *pki.Reloader, hosts []string) (*cohortv1.RenewResponse, []byte, error) {
	keyPEM, csr, err := pki.NewKeyAndCSR(certs.Leaf().Subject.CommonName)
	if err != nil {
		return nil, nil, err
	}
	conn, err := DialCoordinators(addrs, credentials.NewTLS(pki.RoleClientTLSConfigTrust(trust, certs, pki.RoleCoordinator)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, enrollAttemptTimeout)
	defer cancel()
	resp, err := cohortv1.NewEnrollServiceClient(conn).Renew(cctx, &cohortv1.RenewRequest{Csr: csr, Hosts: hosts})
	if err != nil {
		return nil, nil, fmt.Errorf("renew at %v: %w", addrs, err)
	}
	return resp, keyPEM, nil
}

// enrollNode enrolls this node with TLS.JoinToken unless its TLS directory already
// holds its material (a restart). A coordinator enrolls with Coordinator.Join, a node
// agent with its Join addresses; the directory is the one loadTLS then reads.
func enrollNode(cfg *Config, tc TLSConfig, log *slog.Logger) error {
	var name, dir string
	var addrs, hosts []string
	if co := cfg.Coordinator; co != nil {
		if co.Bootstrap && len(co.Join) == 0 {
			log.Warn("a join token was given to a coordinator that bootstraps (it makes the CA); the token is not used")
			return nil
		}
		name, addrs, hosts = co.NodeID, co.Join, coordinatorHosts(co)
		dir = tc.Dir
		if dir == "" {
			dir = filepath.Join(co.DataDir, "tls")
		}
		if len(addrs) == 0 {
			return configErr("Coordinator.Join", "", errors.New("a join token needs the address of a coordinator to join (--join)"))
		}
	} else {
		agents := agentsOf(cfg)
		if len(agents) == 0 {
			return configErr("TLS.JoinToken", "", errors.New("a join token is for a coordinator or a node agent"))
		}
		name, addrs = agents[0].NodeID, agents[0].Join
		hosts = []string{"127.0.0.1", "::1", "localhost"}
		for _, p := range cfg.ParameterServers {
			hosts = append(hosts, addrHosts(p.DataAddr)...)
		}
		dir = tc.Dir
		if dir == "" {
			return configErr(tlsDirField, "", errors.New("a node agent joining with a token needs a TLS directory to keep its certificate in (--tls-dir)"))
		}
	}
	if has(dir, pki.CAKeyFile) || (pki.HasKeyPair(dir, "node") && !certExpired(dir)) {
		log.Info("TLS material present; the join token is not used again", "dir", dir)
		return nil
	}
	if tc.JoinToken == "" { // only now: a restart needs neither the token nor its file
		raw, err := readJoinTokenFile(tc.JoinTokenFile, log)
		if err != nil {
			return configErr("TLS.JoinTokenFile", tc.JoinTokenFile, err)
		}
		tc.JoinToken = raw
	}
	tok, err := pki.ParseToken(tc.JoinToken)
	if err != nil {
		return configErr("TLS.JoinToken", "", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), enrollTimeout)
	defer cancel()
	var e *pki.Enrolled
	for back := 200 * time.Millisecond; ; back = min(2*back, 2*time.Second) {
		e, err = EnrollWithToken(ctx, addrs, tok, name, hosts)
		if err == nil || errors.Is(err, pki.ErrCAHashMismatch) || refusedEnroll(err) {
			break
		}
		log.Warn("enrollment failed; retrying", "err", err, "backoff", back)
		select {
		case <-ctx.Done():
		case <-time.After(back):
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("join with token %s: %w", tok.Redacted(), err)
	}
	if err := e.Save(dir, "node"); err != nil {
		return err
	}
	log.Info("enrolled with a join token", "identity", e.Identity.String(), "dir", dir, "ca_hash", tok.CAHash, "holds_ca", e.CA != nil)
	return nil
}

// refusedEnroll reports whether the coordinators refused the token (no retry helps).
func refusedEnroll(err error) bool {
	s := err.Error()
	if strings.Contains(s, "is not known to this cluster") {
		return false // a token written at bootstrap may not be recorded yet
	}
	return strings.Contains(s, "code = Unauthenticated") || strings.Contains(s, "code = InvalidArgument") ||
		strings.Contains(s, "code = PermissionDenied") || strings.Contains(s, "code = FailedPrecondition")
}

// ensureBootstrapToken writes the first admin client token to the data directory of a
// coordinator that bootstraps with the CA (unless the file exists) and, once it leads,
// records the token in Raft (unless a record with its id exists, revoked or not).
func (n *Node) ensureBootstrapToken(ctx context.Context) {
	co := n.cfg.Coordinator
	if co == nil || !co.Bootstrap || n.tls == nil || n.tls.ca() == nil || co.Ephemeral {
		return
	}
	log := n.log.With("component", "tokens")
	path := filepath.Join(co.DataDir, BootstrapTokenFile)
	tok, err := loadOrCreateBootstrapToken(path, n.tls.ca().Hash())
	if err != nil {
		log.Error("bootstrap token", "path", path, "err", err)
		return
	}
	n.bootstrapToken = path
	n.serveWG.Go(func() { recordBootstrapToken(ctx, n.srv, tok, log, path) })
	if dir := n.cfg.TLS.joinTokenDir(); dir != "" {
		n.writeDeploymentTokens(ctx, dir, log)
	}
}

// joinTokenDir is JoinTokenDir, or "" for a nil config.
func (t *TLSConfig) joinTokenDir() string {
	if t == nil {
		return ""
	}
	return t.JoinTokenDir
}

// loadOrCreateBootstrapToken reads the token in path, or writes a new one (0600).
func loadOrCreateBootstrapToken(path, caHash string) (pki.Token, error) {
	if raw, err := os.ReadFile(path); err == nil {
		tok, err := pki.ParseToken(string(raw))
		if err != nil {
			return pki.Token{}, fmt.Errorf("%s: %w", path, err)
		}
		return tok, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return pki.Token{}, err
	}
	tok, err := pki.GenerateToken(caHash)
	if err != nil {
		return pki.Token{}, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return pki.Token{}, err
	}
	if _, err := f.WriteString(tok.String() + "\n"); err != nil {
		f.Close()
		return pki.Token{}, err
	}
	return tok, f.Close()
}

// recordBootstrapToken proposes the bootstrap token's record once this node leads.
func recordBootstrapToken(ctx context.Context, srv *server.Server, tok pki.Token, log *slog.Logger, path string) {
	admin := pki.Identity{Name: "admin", Role: pki.RoleClient, ACLRole: "admin"}
	recordToken(ctx, srv, tok, admin, "bootstrap admin token", log, path)
}

// recordToken proposes tok's record granting id (unbound) once this node leads, unless
// a record with its id exists.
func recordToken(ctx context.Context, srv *server.Server, tok pki.Token, id pki.Identity, desc string, log *slog.Logger, path string) {
	for {
		if err := srv.WaitForLeader(ctx); err != nil {
			return
		}
		existing, err := srv.State().TokenByID(nil, tok.ID)
		if err == nil && existing != nil {
			return
		}
		if srv.IsLeader() {
			rec := api.NewJoinTokenRecord(tok, id, false, time.Now(), 0, desc)
			_, err = srv.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_CreateToken{CreateToken: &cohortv1.CreateTokenCommand{Token: rec}}})
			if err == nil {
				log.Info("join token recorded", "what", desc, "file", path, "token", tok)
				return
			}
			log.Warn("recording the bootstrap token failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// BootstrapTokenPath is where this coordinator wrote the first admin join token, or ""
// when it wrote none.
func (n *Node) BootstrapTokenPath() string { return n.bootstrapToken }

// startNetworkRenewal renews a node agent's certificate (from its TLS directory) over
// the network at two thirds of its life, writing each new pair back to the directory.
func (t *nodeTLS) startNetworkRenewal(addrs, hosts []string) {
	if t == nil || t.ca() != nil || t.certs == nil || len(addrs) == 0 {
		return
	}
	t.addRenewal(func(ctx context.Context) {
		t.certs.RenewLoop(ctx, func(ctx context.Context) ([]byte, []byte, error) {
			return t.renewFromNetwork(ctx, addrs, hosts)
		}, nil)
	})
	t.addRenewal(func(ctx context.Context) { t.watchCoordinatorCA(ctx, addrs) })
}

// enrollServices registers the enrollment and token services on a coordinator's server.
func (n *Node) enrollServices(gs *grpc.Server, acfg api.Config) {
	ec := api.EnrollConfig{CA: func() *pki.CA {
		if n.tls == nil {
			return nil
		}
		return n.tls.ca()
	}, KnownCAs: n.tls.knownCAs, Trust: n.tls.trustOf}
	cohortv1.RegisterEnrollServiceServer(gs, api.NewEnrollService(n.srv, acfg, ec))
	cohortv1.RegisterTokenServiceServer(gs, api.NewTokenService(n.srv, acfg, ec))
	cohortv1.RegisterGossipServiceServer(gs, api.NewGossipService(n.srv, acfg, ec))
	cohortv1.RegisterTLSServiceServer(gs, api.NewTLSService(n.srv, acfg, ec))
}

// coordinatorServerCreds are the credentials of a coordinator's gRPC API: mutual TLS,
// with client certificates verified when given, so that a process holding only a join
// token can enroll; every other RPC refuses a caller without one (api.CertRoleServerOptions).
func (t *nodeTLS) coordinatorServerCreds() credentials.TransportCredentials {
	return credentials.NewTLS(pki.ServerTLSConfigTrust(t.trust, t.certs, false))
}

// certHosts are the DNS names and IP addresses a certificate names, for its renewal.
func certHosts(c *x509.Certificate) []string {
	hosts := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	return hosts
}

// certExpired reports whether dir's node certificate has expired (a node agent that was
// down past its certificate's life): it cannot renew with it, so it enrolls again with
// its token. An unreadable certificate counts as not expired: loadTLS then says why.
func certExpired(dir string) bool {
	certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(dir, pki.NodeCertFile), filepath.Join(dir, pki.NodeKeyFile))
	if err != nil {
		return false
	}
	r, err := pki.NewReloader(certPEM, keyPEM, nil)
	return err == nil && !time.Now().Before(r.Leaf().NotAfter)
}

// httpTLSConfig is the TLS configuration of the node's HTTP port when TLS.HTTPS is set
// and the node has TLS material: its certificate, TLS 1.2 or later (browsers and
// Prometheus), no client certificate asked for. nil otherwise.
func (n *Node) httpTLSConfig() *tls.Config {
	if n.tls == nil || n.cfg.TLS == nil || !n.cfg.TLS.HTTPS {
		return nil
	}
	certs := n.tls.certs
	if certs == nil {
		return nil
	}
	// Client certificates are asked for, not required: probes, scrapers and browsers
	// without one still connect, and httpGate decides per route. One that is sent must
	// verify against the cluster's trust bundle (read at each handshake).
	cfg := pki.ServerTLSConfigTrust(n.tls.trust, certs, false)
	cfg.MinVersion = tls.VersionTLS12 // browsers
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return cfg
}

// readJoinTokenFile reads a join token from path, waiting (up to enrollTimeout) for the
// file to appear: in a deployment the bootstrapping voter writes it.
func readJoinTokenFile(path string, log *slog.Logger) (string, error) {
	deadline := time.Now().Add(enrollTimeout)
	for {
		raw, err := os.ReadFile(path)
		if err == nil {
			if _, err := pki.ParseToken(string(raw)); err != nil {
				return "", err
			}
			return strings.TrimSpace(string(raw)), nil
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return "", err
		}
		log.Info("waiting for the join token file", "path", path)
		time.Sleep(time.Second) // the file is written by another process; nothing to wait on but the file system
	}
}

// deploymentTokens are the join tokens JoinTokenDir receives: file name and role.
var deploymentTokens = []struct {
	file string
	role pki.Role
	acl  string
}{{"coordinator.token", pki.RoleCoordinator, ""}, {"agent.token", pki.RoleAgent, "agent"}}

// writeDeploymentTokens writes (unless present) and records the JoinTokenDir tokens.
func (n *Node) writeDeploymentTokens(ctx context.Context, dir string, log *slog.Logger) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("join token directory", "dir", dir, "err", err)
		return
	}
	for _, dt := range deploymentTokens {
		path := filepath.Join(dir, dt.file)
		tok, err := loadOrCreateBootstrapToken(path, n.tls.ca().Hash())
		if err != nil {
			log.Error("join token file", "path", path, "err", err)
			continue
		}
		id := pki.Identity{Name: "any", Role: dt.role, ACLRole: dt.acl}
		desc := "deployment " + string(dt.role) + " token (" + path + ")"
		n.serveWG.Go(func() { recordToken(ctx, n.srv, tok, id, desc, log, path) })
	}
}
