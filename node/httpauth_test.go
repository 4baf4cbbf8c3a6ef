package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// httpsGet requests url presenting cert (none when nil) and trusting pool; it returns
// the status, or 0 and the error when the request fails (a refused handshake).
func httpsGet(pool *x509.CertPool, cert *tls.Certificate, url string, header ...string) (int, error) {
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		// Always sent, even when its CA is not one the server names.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// publicRoutes are the only patterns that may answer a client without a certificate:
// the probes, /metrics, and what a browser needs to log in.
var publicRoutes = map[string]bool{
	"/metrics": true, "GET /readyz": true, "GET /healthz": true, "/healthz": true,
	"GET /static/": true, "GET /login": true, "POST /login": true, "/logout": true,
}

// pathsOf turns a mux pattern into request paths: its method is dropped, its
// wildcards filled, and the dashboard's catch-all "/" stands for a sample of the
// dashboard's pages and API.
func pathsOf(pattern string) []string {
	_, path, ok := strings.Cut(pattern, " ")
	if !ok {
		path = pattern
	}
	if path == "/" {
		return []string{"/", "/jobs", "/jobs/j1", "/api/jobs", "/api/nodes", "/api/peers", "/anything-new"}
	}
	if strings.HasSuffix(path, "/") {
		path += "app.css"
	}
	return []string{path}
}

// TestEveryHTTPRouteRefusesOutsiders walks every pattern registered on the HTTPS port
// of each role (a coordinator with ACLs off, one with ACLs on, a worker and a
// parameter server): each has an access rule; a public route answers a client without
// a certificate; every other route refuses a client without a certificate, one with a
// certificate from another CA (at the handshake), an agent's certificate, a client
// certificate whose ACL role may not read, one limited to namespaces (the dashboard
// shows them all), and one enrolled with a revoked join token,
// and admits a client certificate that may read and a coordinator's. A route added
// without a rule fails here (and is refused at run time).
func TestEveryHTTPRouteRefusesOutsiders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	coordinator := func(acls bool) (*node.Node, string) {
		cfg := node.DefaultConfig()
		co := node.DefaultCoordinatorConfig()
		co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
		co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
		if acls {
			co.ACLTokensFile = filepath.Join(t.TempDir(), "tokens.yaml")
			if err := os.WriteFile(co.ACLTokensFile, []byte("- name: ops\n  secret: 0123456789abcdef0123\n  role: admin\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg.Coordinator, cfg.HTTPAddr, cfg.TLS = &co, "127.0.0.1:0", &node.TLSConfig{HTTPS: true}
		n := start(t, cfg)
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return n, co.DataDir
	}
	c1, dataDir := coordinator(false)
	caDir := filepath.Join(dataDir, "tls")
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	c2, c2Dir := coordinator(true)
	ca2, err := pki.LoadCA(filepath.Join(c2Dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	agent := func(ps bool) *node.Node {
		cfg := node.DefaultConfig()
		dir := nodetestTLSDir(t, caDir, pki.Identity{Name: "a-" + map[bool]string{true: "ps", false: "w"}[ps], Role: pki.RoleAgent, ACLRole: "agent"})
		if ps {
			p := node.DefaultParameterServerConfig()
			p.NodeID, p.Join, p.DataAddr = "a-ps", []string{c1.GRPCAddr()}, "127.0.0.1:0"
			cfg.ParameterServers = []node.ParameterServerConfig{p}
		} else {
			w := node.DefaultWorkerConfig()
			w.NodeID, w.Join = "a-w", []string{c1.GRPCAddr()}
			cfg.Workers = []node.WorkerConfig{w}
		}
		cfg.Storage = node.StorageConfig{Dir: t.TempDir()}
		cfg.HTTPAddr, cfg.TLS = "127.0.0.1:0", &node.TLSConfig{Dir: dir, HTTPS: true}
		return start(t, cfg)
	}

	// A revoked join token of each cluster: certificates naming it are refused.
	revoked := map[*pki.CA]string{}
	for _, c := range []struct {
		n  *node.Node
		ca *pki.CA
	}{{c1, ca}, {c2, ca2}} {
		creds, err := node.ClientTLSCredentials(c.n.ClientTLSDir())
		if err != nil {
			t.Fatal(err)
		}
		admin, err := grpc.NewClient(c.n.GRPCAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		tok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "client", AclRole: "read"})
		if _, err := cohortv1.NewTokenServiceClient(admin).RevokeToken(ctx, &cohortv1.RevokeTokenRequest{Id: tok.ID}); err != nil {
			t.Fatal(err)
		}
		revoked[c.ca] = tok.ID
	}
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := func(from *pki.CA, id pki.Identity) *tls.Certificate {
		certPEM, keyPEM, err := from.IssueFor(id, nil, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	type who struct {
		name  string
		cert  func(*pki.CA) *tls.Certificate
		admit bool
	}
	people := []who{
		{"a client certificate of ACL role read", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "read"})
		}, true},
		{"a coordinator certificate", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "c9", Role: pki.RoleCoordinator})
		}, true},
		{"an agent certificate", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "w9", Role: pki.RoleAgent, ACLRole: "agent"})
		}, false},
		{"a client certificate of ACL role agent", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "bob", Role: pki.RoleClient, ACLRole: "agent"})
		}, false},
		{"a client certificate limited to a namespace", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "carol", Role: pki.RoleClient, ACLRole: "admin", Namespaces: []string{"team-a"}})
		}, false},
		{"a client certificate of a revoked join token", func(ca *pki.CA) *tls.Certificate {
			return cert(ca, pki.Identity{Name: "eve", Role: pki.RoleClient, ACLRole: "admin", Token: revoked[ca]})
		}, false},
	}

	roles := []struct {
		name string
		n    *node.Node
		ca   *pki.CA
	}{
		{"coordinator", c1, ca}, {"coordinator with ACLs", c2, ca2}, {"worker", agent(false), ca}, {"paramserver", agent(true), ca},
	}
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			patterns := node.HTTPRoutes(r.n)
			if len(patterns) < 3 {
				t.Fatalf("only %d routes registered: %v", len(patterns), patterns)
			}
			base := "https://" + r.n.HTTPAddr()
			pool := r.ca.Pool()
			for _, pattern := range patterns {
				rule, ok := node.HTTPRouteRule(pattern)
				if !ok {
					t.Errorf("route %q has no access rule", pattern)
					continue
				}
				if rule == "public" && !publicRoutes[pattern] {
					t.Errorf("route %q is public; only %v may be (see httpRouteRules for why)", pattern, publicRoutes)
				}
				if strings.HasPrefix(pattern, "POST ") {
					continue // the login's POST: covered by the web package's tests
				}
				for _, path := range pathsOf(pattern) {
					code, err := httpsGet(pool, nil, base+path)
					switch {
					case err != nil:
						t.Errorf("%s %s without a certificate: %v", rule, path, err)
					case rule == "public" && (code == http.StatusUnauthorized || code == http.StatusForbidden):
						t.Errorf("public %s without a certificate: %d", path, code)
					case rule != "public" && code < 300:
						t.Errorf("%s %s without a certificate: %d, want a refusal", rule, path, code)
					}
					if _, err := httpsGet(pool, cert(other, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "admin"}), base+path); err == nil {
						t.Errorf("%s with another CA's certificate: the handshake succeeded", path)
					}
					if rule == "public" {
						continue
					}
					for _, p := range people {
						code, err := httpsGet(pool, p.cert(r.ca), base+path)
						if p.admit && (err != nil || code == http.StatusUnauthorized || code == http.StatusForbidden || code >= 300 && code < 400) {
							t.Errorf("%s with %s: %d %v, want it admitted", path, p.name, code, err)
						}
						if !p.admit && code != http.StatusForbidden {
							t.Errorf("%s with %s: %d %v, want 403", path, p.name, code, err)
						}
					}
				}
			}
		})
	}
	// Browsers keep their login where ACLs are on: a Bearer token with the read role
	// (or a session) still opens the dashboard without a certificate.
	if code, err := httpsGet(ca2.Pool(), nil, "https://"+c2.HTTPAddr()+"/api/jobs", "Authorization", "Bearer 0123456789abcdef0123"); err != nil || code != http.StatusOK {
		t.Errorf("dashboard API with an ACL token and no certificate: %d %v, want 200", code, err)
	}
	// A Bearer token sent with an admitted certificate is the credential (as on the
	// gRPC API): a wrong one is refused.
	reader := cert(ca2, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "read"})
	if code, err := httpsGet(ca2.Pool(), reader, "https://"+c2.HTTPAddr()+"/api/jobs", "Authorization", "Bearer wrong-wrong-wrong-wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("dashboard API with a client certificate and a wrong ACL token: %d %v, want 401", code, err)
	}
	if code, _ := httpsGet(ca2.Pool(), nil, "https://"+c2.HTTPAddr()+"/"); code != http.StatusSeeOther && code != http.StatusFound {
		t.Errorf("a page without a certificate where ACLs are on: %d, want a redirect to /login", code)
	}
}

// nodetestTLSDir writes a TLS directory for an agent: the CA's certificate from caDir
// and a certificate for id.
func nodetestTLSDir(t *testing.T, caDir string, id pki.Identity) string {
	t.Helper()
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tls")
	certPEM, keyPEM, err := ca.IssueFor(id, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveCACert(dir, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveKeyPair(dir, "node", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return dir
}
