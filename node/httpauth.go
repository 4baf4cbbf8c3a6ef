package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
)

// httpRule says who may request an HTTP route of a node.
type httpRule int

const (
	// httpPublic: anyone who reaches the port. Only routes that reveal no cluster data
	// beyond counters are public: the probes (/healthz, /readyz: a word and a status
	// code, asked by kubelets and load balancers, which hold no certificate), /metrics
	// (counters, job ids and node names, no secrets and no tensors; Prometheus discovery
	// scrapes without a client certificate) and what a browser needs to log in (the
	// login form, its assets, log out).
	httpPublic httpRule = iota + 1
	// httpDashboard: the dashboard's pages and /api/: over HTTPS, a client certificate
	// of the cluster whose ACL role may read in every namespace (the dashboard does not
	// filter by namespace), or a coordinator's; without one, the
	// dashboard's login (a session or a Bearer ACL token) when ACLs are on, and nobody
	// when they are off. A certificate of another role (an agent's), or one enrolled
	// with a revoked join token, is refused (403) whatever else the request carries.
	httpDashboard
)

func (r httpRule) String() string {
	switch r {
	case httpPublic:
		return "public"
	case httpDashboard:
		return "dashboard"
	}
	return fmt.Sprintf("httpRule(%d)", int(r))
}

// httpRouteRules holds the rule of every pattern a node registers on its HTTP mux. A
// request whose pattern has no rule is refused (403, logged as an error), and
// TestEveryHTTPRouteHasARule fails for a registered pattern without one.
var httpRouteRules = map[string]httpRule{
	"/metrics":     httpPublic,
	"GET /readyz":  httpPublic,
	"GET /healthz": httpPublic, // agents
	"/healthz":     httpPublic, // coordinators
	"GET /static/": httpPublic, // the dashboard's embedded CSS and scripts (the login page uses them)
	"GET /login":   httpPublic, // the login form (ACLs on)
	"POST /login":  httpPublic, // its answer: checks the token it carries
	"/logout":      httpPublic, // ends the session its cookie names (CSRF-checked)
	"/":            httpDashboard,
	"":             httpPublic, // no route matched: the mux's 404 (or a redirect to the clean path)
}

// httpRoutes is a node's HTTP mux that remembers the patterns registered on it, so
// that tests can walk them.
type httpRoutes struct {
	mux      *http.ServeMux
	patterns []string
}

func newHTTPRoutes() *httpRoutes { return &httpRoutes{mux: http.NewServeMux()} }

func (rt *httpRoutes) handle(pattern string, h http.Handler) {
	rt.mux.Handle(pattern, h)
	rt.patterns = append(rt.patterns, pattern)
}

func (rt *httpRoutes) handleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	rt.handle(pattern, http.HandlerFunc(h))
}

// httpGate enforces httpRouteRules in front of a node's HTTP mux.
type httpGate struct {
	routes *httpRoutes
	log    *slog.Logger
	// tls is set when the port serves HTTPS: requests then may carry a verified client
	// certificate.
	tls bool
	// revoked reports whether a join token is revoked (nil on nodes without the state).
	revoked func(tokenID string) bool
	// dashboard is the dashboard itself, served to a request whose certificate
	// authenticates it; login is the dashboard behind its login (the same handler when
	// ACLs are off), served to requests without a certificate.
	dashboard, login http.Handler
	// aclsOn: without a certificate, the login may admit a request (a session or a
	// Bearer token); with ACLs off only a certificate does, over HTTPS.
	aclsOn bool
}

func (g *httpGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := g.routes.mux.Handler(r)
	rule, ok := httpRouteRules[pattern]
	if !ok {
		g.log.Error("http: refused a request to a route without an access rule", "pattern", pattern, "path", r.URL.Path)
		http.Error(w, "forbidden: this route has no access rule", http.StatusForbidden)
		return
	}
	if rule == httpPublic {
		g.routes.mux.ServeHTTP(w, r)
		return
	}
	// httpDashboard. A certificate that may not see the dashboard is refused whatever
	// else the request carries; a Bearer token, when sent where ACLs are on, is the
	// credential instead of an admitted certificate (as on the gRPC API).
	id, err := g.certificate(r)
	switch {
	case err == nil && g.aclsOn && r.Header.Get("Authorization") != "":
		g.login.ServeHTTP(w, r)
	case err == nil:
		if why := crossSite(r); why != "" {
			g.log.Info("http: refused a cross-site request authenticated by a client certificate", "path", r.URL.Path, "caller", id.String(), "why", why)
			http.Error(w, "forbidden: "+why, http.StatusForbidden)
			return
		}
		g.dashboard.ServeHTTP(w, r)
	case !errors.Is(err, pki.ErrNoIdentity):
		g.log.Info("http: request refused", "path", r.URL.Path, "err", err)
		http.Error(w, "forbidden: "+err.Error(), http.StatusForbidden)
	case g.aclsOn || !g.tls:
		// No certificate: the dashboard's login decides (a plaintext port serves only
		// loopback or --insecure, as before certificates existed).
		g.login.ServeHTTP(w, r)
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
		http.Error(w, "unauthenticated: the dashboard needs a client certificate of the cluster with an ACL role that may read (cohort login writes one), or ACL tokens (--acl-tokens-file) to log in with", http.StatusUnauthorized)
	}
}

// certificate returns the identity of the request's verified client certificate when
// it may see the dashboard; pki.ErrNoIdentity when the request carries none; another
// error, saying why, when it carries one that may not.
func (g *httpGate) certificate(r *http.Request) (pki.Identity, error) {
	if r.TLS == nil {
		return pki.Identity{}, pki.ErrNoIdentity
	}
	id, err := pki.IdentityFromTLS(*r.TLS)
	if err != nil {
		return id, err
	}
	if id.Token != "" && g.revoked != nil && g.revoked(id.Token) {
		return id, fmt.Errorf("the certificate of %s was enrolled with join token %s, which is revoked", id.Name, id.Token)
	}
	switch id.Role {
	case pki.RoleCoordinator:
		return id, nil
	case pki.RoleClient:
		role, err := api.ParseRole(id.ACLRole)
		if err != nil {
			return id, fmt.Errorf("the certificate of %s carries ACL role %q: %w", id.Name, id.ACLRole, err)
		}
		if !role.Grants(api.RoleRead) {
			return id, fmt.Errorf("the certificate of %s has ACL role %s; the dashboard needs one that may read", id.Name, role)
		}
		if len(id.Namespaces) > 0 {
			// The dashboard shows every namespace: a certificate limited to some would
			// see more there than the API lets it read.
			return id, fmt.Errorf("the certificate of %s is limited to namespaces %v; the dashboard shows every namespace and needs a certificate without that limit (use the CLI or the API for these namespaces)", id.Name, id.Namespaces)
		}
		return id, nil
	}
	return id, fmt.Errorf("the certificate of %s has role %s; the dashboard needs a client (ACL role read or higher) or coordinator certificate", id.Name, id.Role)
}

// crossSite says why a state-changing request comes from another site ("" when it
// does not, or is not state-changing): browsers present a client certificate on their
// own, so it is no proof of intent (the login's sessions carry a CSRF token instead).
func crossSite(r *http.Request) string {
	if slices.Contains([]string{http.MethodGet, http.MethodHead, http.MethodOptions}, r.Method) {
		return ""
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return "a " + r.Method + " request from another site (Sec-Fetch-Site: " + site + ")"
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return "a " + r.Method + " request from origin " + o
	}
	return ""
}
