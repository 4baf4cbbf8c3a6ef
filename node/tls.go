package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/internal/pki"
)

// Certificate lifetimes. Certificates a node issues for itself are renewed in process
// at two thirds of their life; files written for people and for nodes that cannot renew
// yet (there is no renewal over the network before join tokens) live longer.
const (
	// localCertTTL is the life of a certificate a CA-holding node issues for itself and
	// for its own node agents.
	localCertTTL = pki.DefaultCertTTL
	// FileCertTTL is the default life of a certificate written to a file: the operator's
	// admin certificate and those `cohort tls issue` writes.
	FileCertTTL = pki.MaxCertTTL
)

// tlsDirField is the Config field ConfigErrors about TLS material name.
const tlsDirField = "TLS.Dir"

// caCommonName names the CA a bootstrapping coordinator creates.
const caCommonName = "cohort cluster CA"

// AdminIdentity is who the client certificate a CA-holding coordinator writes for the
// operator (admin.crt) names.
var AdminIdentity = pki.Identity{Name: "admin", Role: pki.RoleClient, ACLRole: "admin"}

// insecureWarnInterval is how often a node running with TLS.Insecure on a non-loopback
// address says so.
var insecureWarnInterval = time.Minute

// ErrPlaintext marks a listener or a coordinator address off loopback on a node that
// has no TLS material and is not Insecure.
var ErrPlaintext = errors.New("is not a loopback address, and this node has no TLS material: " +
	"give it a certificate (a TLS directory with ca.crt, node.crt and node.key) or allow plaintext with --insecure")

// ErrPlaintextHTTP marks an HTTP address (metrics, health, dashboard) off loopback that
// would be served in plaintext: without TLS.HTTPS, or on a node without TLS material.
var ErrPlaintextHTTP = errors.New("is not a loopback address, and the HTTP port (metrics, health, dashboard) would be plaintext: " +
	"serve it over TLS with --https (the node's certificate; verify with its ca.crt), or allow plaintext with --insecure")

// nodeTLS is a node's TLS material; nil when the node runs without TLS.
type nodeTLS struct {
	dir string
	// trust is the CAs this node trusts (ca.crt: the active CA first, and during a CA
	// rotation the old one); every TLS configuration of the node reads it at each
	// handshake.
	trust *pki.Trust
	// signing is the cluster CA when this node holds it (a coordinator): it then issues
	// its own certificate and its agents' at start, and renews them in process. A CA
	// rotation replaces it (see caRotation).
	signing atomic.Pointer[pki.CA]
	// rot is the CA rotation state of a CA-holding node.
	rot caRotation
	// certs is the coordinator's certificate, or the node agent's from dir.
	certs *pki.Reloader
	// adminDir is where the operator's admin credentials are ("" when none were made).
	adminDir string

	// The in-process renewals of the certificates this node issued for itself: those
	// issued before Start wait in pending; startRenewals runs them, and sets run, which
	// runs the later ones (the agents') at once.
	mu       sync.Mutex
	pending  []func(context.Context)
	run      func(func(context.Context))
	renewing int // renewals running (tests)
}

// ca is the cluster CA this node signs with, or nil when it holds none.
func (t *nodeTLS) ca() *pki.CA {
	if t == nil {
		return nil
	}
	return t.signing.Load()
}

// verifyLeaf checks that the certificate certs holds chains to pool, through the
// certificates that follow it.
func verifyLeaf(certs *pki.Reloader, pool *x509.CertPool, usage x509.ExtKeyUsage) error {
	inter := x509.NewCertPool()
	for _, der := range certs.Current().Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := certs.Leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// has reports whether dir holds the file name.
func has(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// loadTLS loads (or, for a bootstrapping coordinator, creates) the node's TLS material;
// nil without TLS (Insecure, or a node that has none and makes none).
func loadTLS(cfg *Config, log *slog.Logger) (*nodeTLS, error) {
	var tc TLSConfig
	if cfg.TLS != nil {
		tc = *cfg.TLS
	}
	if tc.Insecure {
		return nil, nil
	}
	if tc.JoinToken != "" || tc.JoinTokenFile != "" {
		if err := enrollNode(cfg, tc, log); err != nil {
			return nil, err
		}
	}
	co := cfg.Coordinator
	dir, explicit := tc.Dir, tc.Dir != ""
	if !explicit {
		if co == nil {
			return nil, nil // a node agent given no TLS directory: plaintext, loopback only
		}
		dir = filepath.Join(co.DataDir, "tls")
	}
	const field = tlsDirField
	fresh := !has(dir, pki.CACertFile) && !has(dir, pki.NodeCertFile) && !has(dir, pki.NodeKeyFile)
	switch {
	case has(dir, pki.CAKeyFile) || (fresh && co != nil && co.Bootstrap):
		if co == nil {
			return nil, configErr(field, dir, fmt.Errorf("holds the cluster CA's key (%s), which only coordinators keep; give node agents a directory with ca.crt, node.crt and node.key", pki.CAKeyFile))
		}
		return loadCA(cfg, dir, log)
	case fresh && !explicit:
		return nil, nil // a coordinator that joins or restarts without material: plaintext, loopback only
	case fresh:
		return nil, configErr(field, dir, fmt.Errorf("holds no TLS material: want %s, %s and %s (or, for a bootstrapping coordinator, nothing: it creates the CA)",
			pki.CACertFile, pki.NodeCertFile, pki.NodeKeyFile))
	}
	trust, err := pki.LoadTrust(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, configErr(field, dir, err)
	}
	certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(dir, pki.NodeCertFile), filepath.Join(dir, pki.NodeKeyFile))
	if err != nil {
		return nil, configErr(field, dir, err)
	}
	certs, err := pki.NewReloader(certPEM, keyPEM, log)
	if err != nil {
		return nil, configErr(field, dir, err)
	}
	if err := verifyLeaf(certs, trust.Pool(), x509.ExtKeyUsageAny); err != nil {
		return nil, configErr(field, dir, fmt.Errorf("%s does not verify against %s: %w", pki.NodeCertFile, pki.CACertFile, err))
	}
	id, err := pki.IdentityOf(certs.Leaf())
	if err != nil {
		return nil, configErr(field, dir, fmt.Errorf("%s: %w", pki.NodeCertFile, err))
	}
	want := pki.RoleAgent
	if co != nil {
		want = pki.RoleCoordinator
	}
	if id.Role != want {
		return nil, configErr(field, dir, fmt.Errorf("%s is a %s certificate (%s); this node needs a certificate of role %s", pki.NodeCertFile, id.Role, id, want))
	}
	if co != nil && len(cfg.Workers)+len(cfg.ParameterServers) > 0 {
		return nil, configErr(field, dir, errors.New("a coordinator that does not hold the CA cannot run node agents in the same process"))
	}
	log.Info("TLS on", "dir", dir, "identity", id.String(), "not_after", certs.Leaf().NotAfter)
	t := &nodeTLS{dir: dir, trust: trust, certs: certs}
	if as := agentsOf(cfg); co == nil && len(as) > 0 {
		t.startNetworkRenewal(as[0].Join, certHosts(certs.Leaf()))
	}
	return t, nil
}

// loadCA loads the CA in dir (creating it for a bootstrapping coordinator), issues the
// coordinator's certificate (kept in node.crt and node.key, renewed in process), and
// writes the operator's admin credentials when they are missing or due for renewal.
func loadCA(cfg *Config, dir string, log *slog.Logger) (*nodeTLS, error) {
	const field = tlsDirField
	co := cfg.Coordinator
	now := time.Now()
	ca, created, err := pki.LoadOrCreateCA(dir, caCommonName, now)
	if err != nil {
		return nil, configErr(field, dir, err)
	}
	if created {
		log.Info("created the cluster CA", "dir", dir, "ca_hash", ca.Hash())
	}
	t := &nodeTLS{dir: dir}
	if err := t.loadCAs(ca); err != nil {
		return nil, configErr(field, dir, err)
	}
	id := pki.Identity{Name: co.NodeID, Role: pki.RoleCoordinator}
	if t.certs, err = t.issueLocal(id, coordinatorHosts(co), "node", log); err != nil {
		return nil, configErr(field, dir, err)
	}
	if err := t.ensureAdmin(now); err != nil {
		return nil, configErr(field, dir, err)
	}
	t.adminDir = dir
	log.Info("TLS on", "dir", dir, "identity", id.String(), "ca_hash", ca.Hash())
	return t, nil
}

// issueLocal issues id a certificate from the node's CA naming hosts and returns it in
// a Reloader that Start renews in process (runRenewals). With save set, the
// certificate and key are also written to <dir>/<save>.crt and .key, at every renewal.
func (t *nodeTLS) issueLocal(id pki.Identity, hosts []string, save string, log *slog.Logger) (*pki.Reloader, error) {
	issue := func() ([]byte, []byte, error) {
		certPEM, keyPEM, err := t.ca().IssueFor(id, hosts, localCertTTL, time.Now())
		if err == nil && save != "" {
			err = pki.SaveKeyPair(t.dir, save, certPEM, keyPEM)
		}
		return certPEM, keyPEM, err
	}
	certPEM, keyPEM, err := issue()
	if err != nil {
		return nil, err
	}
	r, err := pki.NewReloader(certPEM, keyPEM, log)
	if err != nil {
		return nil, err
	}
	t.rot.addLocal(r)
	t.addRenewal(func(ctx context.Context) {
		r.RenewLoop(ctx, func(context.Context) ([]byte, []byte, error) { return issue() }, nil)
	})
	return r, nil
}

// addRenewal runs renew once startRenewals has run, at once after.
func (t *nodeTLS) addRenewal(renew func(context.Context)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.run != nil {
		t.run(renew)
		return
	}
	t.pending = append(t.pending, renew)
}

// ensureAdmin writes the operator's client credentials (admin.crt, admin.key; ca.crt is
// next to them) unless valid ones are there that are not due for renewal yet.
func (t *nodeTLS) ensureAdmin(now time.Time) error {
	certPath, keyPath := filepath.Join(t.dir, pki.AdminCertFile), filepath.Join(t.dir, pki.AdminKeyFile)
	if certPEM, keyPEM, err := pki.LoadKeyPair(certPath, keyPath); err == nil {
		if c, err := tls.X509KeyPair(certPEM, keyPEM); err == nil && c.Leaf != nil && now.Before(pki.RenewAt(c.Leaf)) {
			// Signed by the active CA: after a rotation the operator's credentials move
			// onto the new CA at once.
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: t.ca().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				return nil
			}
		}
	}
	certPEM, keyPEM, err := t.ca().IssueFor(AdminIdentity, nil, FileCertTTL, now)
	if err != nil {
		return err
	}
	return pki.SaveKeyPair(t.dir, "admin", certPEM, keyPEM)
}

// coordinatorHosts are the names a coordinator's certificate carries: the hosts of its
// gRPC and Raft addresses (the machine's host name when one binds every interface), and
// loopback.
func coordinatorHosts(co *CoordinatorConfig) []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	for _, addr := range []string{co.GRPCAddr, co.RaftAddr} {
		hosts = append(hosts, addrHosts(addr)...)
	}
	return hosts
}

// addrHosts is the host of a listen address, or the machine's host name when it binds
// every interface.
func addrHosts(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		name, err := os.Hostname()
		if err != nil {
			return nil
		}
		return []string{name}
	}
	return []string{host}
}

// agentCerts is the certificate a node agent of this node presents: issued for it by
// the node's CA (cohort dev), else the node's own from its TLS directory.
func (t *nodeTLS) agentCerts(nodeID string, dataAddr string, log *slog.Logger) (*pki.Reloader, error) {
	if t.ca() == nil {
		return t.certs, nil
	}
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if dataAddr != "" {
		hosts = append(hosts, addrHosts(dataAddr)...)
	}
	return t.issueLocal(pki.Identity{Name: nodeID, Role: pki.RoleAgent, ACLRole: "agent"}, hosts, "", log)
}

// startRenewals renews the certificates this node issued for itself, and those it
// issues from now on, until ctx ends; wg tracks the renewals.
func (t *nodeTLS) startRenewals(ctx context.Context, wg *sync.WaitGroup) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.run = func(renew func(context.Context)) {
		t.renewing++
		wg.Go(func() { renew(ctx) })
	}
	for _, renew := range t.pending {
		t.run(renew)
	}
	t.pending = nil
}

// serverCreds are the credentials of a gRPC server presenting certs that requires a
// client certificate from the cluster CA, of one of roles when any are given.
func (t *nodeTLS) serverCreds(certs *pki.Reloader, roles ...pki.Role) credentials.TransportCredentials {
	cfg := pki.ServerTLSConfigTrust(t.trust, certs, true)
	if len(roles) > 0 {
		cfg.VerifyConnection = pki.RequireRole(roles...)
	}
	return credentials.NewTLS(cfg)
}

// clientCreds are the credentials of a gRPC client presenting certs to a server whose
// certificate, from the cluster CA, names one of serverRoles.
func (t *nodeTLS) clientCreds(certs *pki.Reloader, serverRoles ...pki.Role) credentials.TransportCredentials {
	return credentials.NewTLS(pki.RoleClientTLSConfigTrust(t.trust, certs, serverRoles...))
}

// transportOptions are the dial options carrying creds, or plaintext's when creds is
// nil.
func transportOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	if creds == nil {
		return plaintextOptions()
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(creds)}
}

// ClientTLSFiles returns the client credentials in dir: ca.crt with client.crt and
// client.key, else with admin.crt and admin.key (what a CA-holding coordinator writes
// for the operator). ok is false when dir holds no such pair.
func ClientTLSFiles(dir string) (caFile, certFile, keyFile string, ok bool) {
	if dir == "" || !has(dir, pki.CACertFile) {
		return "", "", "", false
	}
	for _, pair := range [][2]string{{pki.ClientCertFile, pki.ClientKeyFile}, {pki.AdminCertFile, pki.AdminKeyFile}} {
		if has(dir, pair[0]) && has(dir, pair[1]) {
			return filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1]), true
		}
	}
	return "", "", "", false
}

// ClientTLSCredentials loads the client credentials in dir (see ClientTLSFiles) for
// calls to coordinators: the client presents its certificate and accepts only servers
// whose certificate, from the same CA, names a coordinator.
func ClientTLSCredentials(dir string) (credentials.TransportCredentials, error) {
	caFile, certFile, keyFile, ok := ClientTLSFiles(dir)
	if !ok {
		return nil, fmt.Errorf("%s holds no client credentials (%s with %s and %s, or %s and %s): %w", dir,
			pki.CACertFile, pki.ClientCertFile, pki.ClientKeyFile, pki.AdminCertFile, pki.AdminKeyFile, fs.ErrNotExist)
	}
	pool, err := pki.LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	certs, err := pki.LoadReloader(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(pki.RoleClientTLSConfig(pool, certs, pki.RoleCoordinator)), nil
}

// checkPlaintext is for a node without TLS: it refuses every address the node would
// serve or call off loopback (ErrPlaintext), unless TLS.Insecure, and returns those
// addresses for the Insecure node's warnings.
func checkPlaintext(cfg *Config) ([]string, error) {
	insecure := cfg.TLS != nil && cfg.TLS.Insecure
	type use struct{ field, addr string }
	var uses []use
	if cfg.HTTPAddr != "" {
		uses = append(uses, use{"HTTPAddr", cfg.HTTPAddr})
	}
	if co := cfg.Coordinator; co != nil {
		uses = append(uses, use{"Coordinator.GRPCAddr", co.GRPCAddr}, use{"Coordinator.RaftAddr", co.RaftAddr})
		for _, a := range co.Join {
			uses = append(uses, use{"Coordinator.Join", a})
		}
	}
	for _, p := range cfg.ParameterServers {
		uses = append(uses, use{"ParameterServers.DataAddr", p.DataAddr})
	}
	for _, a := range agentsOf(cfg) {
		for _, j := range a.Join {
			uses = append(uses, use{"AgentConfig.Join", j})
		}
	}
	var open []string
	for _, u := range uses {
		if isLoopback(u.addr) {
			continue
		}
		if !insecure && u.field == "HTTPAddr" {
			return nil, configErr(u.field, u.addr, ErrPlaintextHTTP)
		}
		if !insecure {
			return nil, configErr(u.field, u.addr, ErrPlaintext)
		}
		open = append(open, u.addr)
	}
	return open, nil
}

// checkHTTPPlaintext is for a node with TLS material: it refuses an HTTP address off
// loopback served in plaintext (without TLS.HTTPS) with ErrPlaintextHTTP. (A node
// without TLS material has its HTTP address checked, and warned about when Insecure,
// by checkPlaintext.)
func checkHTTPPlaintext(cfg *Config) error {
	if cfg.HTTPAddr == "" || isLoopback(cfg.HTTPAddr) || (cfg.TLS != nil && (cfg.TLS.HTTPS || cfg.TLS.Insecure)) {
		return nil
	}
	return configErr("HTTPAddr", cfg.HTTPAddr, ErrPlaintextHTTP)
}

// isLoopback reports whether addr's host is a loopback IP or "localhost".
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startTLS starts what TLS needs while the node runs: the renewals of the certificates
// it issues itself, or, for an Insecure node, its warnings.
func (n *Node) startTLS() {
	n.tls.startRenewals(n.runCtx, &n.serveWG)
	if n.tls != nil || n.cfg.TLS == nil || !n.cfg.TLS.Insecure {
		return
	}
	log := n.log.With("component", "tls")
	if len(n.plaintext) == 0 {
		log.Warn("TLS is off (--insecure); every address this node uses is on loopback")
		return
	}
	n.serveWG.Go(func() { warnInsecure(n.runCtx, log, n.plaintext) })
}

// warnInsecure logs, now and then every insecureWarnInterval until ctx ends, that the
// node serves or calls addrs in plaintext.
func warnInsecure(ctx context.Context, log *slog.Logger, addrs []string) {
	for {
		log.Warn("TLS is off (--insecure): traffic to and from these addresses is plaintext and unauthenticated; "+
			"anyone on the network can read it and call the cluster", "addrs", addrs)
		select {
		case <-ctx.Done():
			return
		case <-time.After(insecureWarnInterval):
		}
	}
}

// IssueFiles has the CA in caDir (ca.crt and ca.key) issue id a certificate naming hosts,
// valid for ttl (FileCertTTL when 0), and writes it to outDir (created 0700) with the CA
// certificate: node.crt and node.key for a coordinator or a node agent, client.crt and
// client.key for a client. The result is a TLS directory that a node (TLSConfig.Dir,
// --tls-dir) or the CLI (--tls-dir, COHORT_TLS_DIR) uses as it is. It returns the
// files written.
func IssueFiles(caDir, outDir string, id pki.Identity, hosts []string, ttl time.Duration) ([]string, error) {
	if ttl == 0 {
		ttl = FileCertTTL
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.IssueFor(id, hosts, ttl, time.Now())
	if err != nil {
		return nil, err
	}
	base := "node"
	if id.Role == pki.RoleClient {
		base = "client"
	}
	if err := pki.SaveCACert(outDir, ca.CertPEM()); err != nil {
		return nil, err
	}
	if err := pki.SaveKeyPair(outDir, base, certPEM, keyPEM); err != nil {
		return nil, err
	}
	return []string{filepath.Join(outDir, pki.CACertFile), filepath.Join(outDir, base+".crt"), filepath.Join(outDir, base+".key")}, nil
}

// ClientTLSDir is the directory holding the operator's client credentials (ca.crt,
// admin.crt, admin.key) that this node's coordinator wrote, or "" when it wrote none
// (it does not hold the CA, or runs without TLS).
func (n *Node) ClientTLSDir() string {
	if n.tls == nil {
		return ""
	}
	return n.tls.adminDir
}
