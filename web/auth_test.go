package web

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/testenv"
)

const (
	goodToken  = "dashboard-read-token-0123"
	agentToken = "agent-token-0123456789"
)

// tokenSet is a Check whose accepted tokens a test changes (a tokens-file reload).
type tokenSet struct {
	mu   sync.Mutex
	good map[string]bool
}

func newTokenSet(toks ...string) *tokenSet {
	s := &tokenSet{good: map[string]bool{}}
	for _, tok := range toks {
		s.good[tok] = true
	}
	return s
}

func (s *tokenSet) set(tok string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.good[tok] = ok
}

func (s *tokenSet) check(tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.good[tok]:
		return nil
	case tok == agentToken:
		return errors.New(`token "agents" has role agent; this needs a read, submit or admin token`)
	}
	return errors.New("the ACL token is not valid on this coordinator")
}

// fakeClock is an AuthConfig.Now a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// authServer is a dashboard behind RequireToken, with a fake clock, a changeable token
// set, captured logs, and one state-changing endpoint (POST /api/action answers
// "done") to try CSRF on.
type authServer struct {
	*httptest.Server
	clock  *fakeClock
	tokens *tokenSet
	logs   *testenv.Buffer
	auth   *auth // to look at the sessions
}

// newAuthServer serves over TLS when overTLS is set; edit changes the AuthConfig. At the
// end of the test it checks that no log line holds a token or a session id.
func newAuthServer(t *testing.T, overTLS bool, edit func(*AuthConfig)) *authServer {
	t.Helper()
	s := &authServer{clock: &fakeClock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}, tokens: newTokenSet(goodToken), logs: &testenv.Buffer{}}
	src := newFake()
	j1 := runningJob("j1", 3, 0.5)
	j1.Name = "attrition"
	src.put(j1)
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/action", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "done") })
	mux.Handle("/", New(Config{Source: src, Logger: log}))
	cfg := AuthConfig{Check: s.tokens.check, Logger: log, Now: s.clock.Now}
	if edit != nil {
		edit(&cfg)
	}
	s.auth = newAuth(mux, cfg)
	if overTLS {
		s.Server = httptest.NewTLSServer(s.auth.handler())
	} else {
		s.Server = httptest.NewServer(s.auth.handler())
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() {
		logs := s.logs.String()
		for _, secret := range []string{goodToken, agentToken} {
			if strings.Contains(logs, secret) {
				t.Errorf("a log line holds the token %q:\n%s", secret, logs)
			}
		}
	})
	return s
}

// client is a browser of a test: a cookie jar, no redirects followed, every
// Set-Cookie it receives checked for tokens.
type client struct {
	t    *testing.T
	srv  *authServer
	http *http.Client
}

// cookieGuard fails the test when a response sets a cookie holding a token.
type cookieGuard struct {
	t  *testing.T
	rt http.RoundTripper
}

func (g cookieGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	for _, sc := range resp.Header.Values("Set-Cookie") {
		for _, secret := range []string{goodToken, agentToken} {
			if strings.Contains(sc, secret) || strings.Contains(sc, url.QueryEscape(secret)) {
				g.t.Errorf("%s %s: Set-Cookie %q holds the token", req.Method, req.URL.Path, sc)
			}
		}
	}
	return resp, nil
}

func (s *authServer) client(t *testing.T) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, srv: s, http: &http.Client{
		Jar: jar, Transport: cookieGuard{t: t, rt: s.Client().Transport},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request with an optional url-encoded form and header pairs, and returns
// the response and its body.
func (c *client) do(method, path string, form url.Values, header ...string) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.srv.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Cookie" {
			req.Header.Add("Cookie", header[i+1])
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var (
	formNonceRE = regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)
	metaCSRFRE  = regexp.MustCompile(`<meta name="csrf-token" content="([^"]*)">`)
)

// find returns the first group of re in body, failing the test without a match.
func find(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, body)
	}
	return m[1]
}

// login opens the login form and posts tok with its nonce; it returns the response
// to the POST.
func (c *client) login(tok string) (*http.Response, string) {
	c.t.Helper()
	_, body := c.do("GET", "/login", nil)
	return c.do("POST", "/login", url.Values{"token": {tok}, "next": {"/jobs/j1"}, "csrf_token": {find(c.t, formNonceRE, body)}})
}

// mustLogin logs in with the good token and returns the session's CSRF token, read
// from a page.
func (c *client) mustLogin() string {
	c.t.Helper()
	if resp, body := c.login(goodToken); resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	resp, body := c.do("GET", "/", nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET / after login: %d", resp.StatusCode)
	}
	return find(c.t, metaCSRFRE, body)
}

// cookie returns the cookie named name that resp sets, or nil.
func cookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestDashboardLogin: without a token pages redirect to the login form and the JSON API
// answers 401; a refused token shows why; a good one starts a session and lands on the
// page asked for; the session then works for pages and the API; logout ends it.
// Static assets stay open.
func TestDashboardLogin(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	c := srv.client(t)

	resp, _ := c.do("GET", "/jobs/j1", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fjobs%2Fj1" {
		t.Fatalf("GET /jobs/j1 without a token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := c.do("GET", "/api/jobs", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "read role") || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("GET /api/jobs without a token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("GET", "/static/style.css", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /static/style.css: %d, want 200 without a token", resp.StatusCode)
	}
	resp, body = c.do("GET", "/login?next=%2Fjobs%2Fj1", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `value="/jobs/j1"`) {
		t.Fatalf("GET /login: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("the login page has no Content-Security-Policy")
	}
	nonce := find(t, formNonceRE, body)

	// Refused tokens say why and start no session.
	for _, tok := range []string{"nope", agentToken, ""} {
		resp, body := c.do("POST", "/login", url.Values{"token": {tok}, "next": {"/jobs/j1"}, "csrf_token": {nonce}})
		if resp.StatusCode != http.StatusUnauthorized || cookie(resp, SessionCookie) != nil {
			t.Fatalf("login with %q: %d, cookies %v", tok, resp.StatusCode, resp.Cookies())
		}
		if tok == agentToken && !strings.Contains(body, "role agent") {
			t.Errorf("login with the agent token does not say why: %s", body)
		}
		if got := find(t, formNonceRE, body); got != nonce {
			t.Errorf("the form shown again has nonce %q, want the cookie's %q", got, nonce)
		}
	}

	resp, _ = c.do("POST", "/login", url.Values{"token": {goodToken}, "next": {"/jobs/j1"}, "csrf_token": {nonce}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/j1" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ck := cookie(resp, SessionCookie); ck == nil || ck.Value == goodToken || len(ck.Value) != 43 {
		t.Fatalf("session cookie %+v, want a 43-character random id", ck)
	}
	if ck := cookie(resp, loginCookie); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("login: the nonce cookie is not deleted: %+v", ck)
	}
	resp, body = c.do("GET", "/jobs/j1", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "attrition") {
		t.Fatalf("GET /jobs/j1 logged in: %d", resp.StatusCode)
	}
	csrf := find(t, metaCSRFRE, body)
	if got := find(t, formNonceRE, body); got != csrf || !strings.Contains(body, `action="/logout"`) {
		t.Errorf("the page's Log out form has token %q, want the meta tag's %q", got, csrf)
	}
	if resp, body := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"j1"`) {
		t.Fatalf("GET /api/jobs logged in: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("GET", "/logout", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /logout: %d, want 405", resp.StatusCode)
	}

	resp, _ = c.do("POST", "/logout", url.Values{"csrf_token": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ck := cookie(resp, SessionCookie); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("logout: the session cookie is not deleted: %+v", ck)
	}
	if resp, _ := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /api/jobs after logout: %d, want 401", resp.StatusCode)
	}
}

// TestSessionCookieAttributes: the session and nonce cookies are HttpOnly,
// SameSite=Strict, Path=/; Secure with the __Host- prefix over TLS or when configured
// behind TLS, neither on plain HTTP; the session cookie holds a random id, lives as
// long as the session may, and the session works with it.
func TestSessionCookieAttributes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tls, behind   bool
		session, form string
	}{
		{"plain HTTP", false, false, SessionCookie, loginCookie},
		{"TLS", true, false, "__Host-" + SessionCookie, "__Host-" + loginCookie},
		{"behind a TLS proxy", false, true, "__Host-" + SessionCookie, "__Host-" + loginCookie},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAuthServer(t, tc.tls, func(cfg *AuthConfig) { cfg.SecureCookies = tc.behind })
			c := srv.client(t)
			check := func(what string, ck *http.Cookie, maxAge int) {
				t.Helper()
				if ck == nil {
					t.Fatalf("no %s cookie", what)
				}
				if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" ||
					ck.Secure != (tc.tls || tc.behind) || ck.MaxAge != maxAge {
					t.Errorf("%s cookie %s, want HttpOnly; SameSite=Strict; Path=/; Max-Age=%d; Secure %v", what, ck.String(), maxAge, tc.tls || tc.behind)
				}
				if _, ok := parseSecret(ck.Value); !ok {
					t.Errorf("%s cookie value %q is not a 256-bit base64url secret", what, ck.Value)
				}
			}
			resp, body := c.do("GET", "/login", nil)
			check("nonce", cookie(resp, tc.form), 3600)
			// A jar sends no Secure cookie over plain HTTP: behind a proxy, echo it by hand.
			nonce := find(t, formNonceRE, body)
			resp, _ = c.do("POST", "/login", url.Values{"token": {goodToken}, "csrf_token": {nonce}}, "Cookie", tc.form+"="+nonce)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login: %d", resp.StatusCode)
			}
			sc := cookie(resp, tc.session)
			check("session", sc, int(DefaultSessionLifetime.Seconds()))
			if resp, _ := c.do("GET", "/api/jobs", nil, "Cookie", tc.session+"="+sc.Value); resp.StatusCode != http.StatusOK {
				t.Errorf("GET /api/jobs with the session cookie: %d", resp.StatusCode)
			}
			if tc.tls || tc.behind { // the unprefixed name is not read on a secure request
				if resp, _ := srv.client(t).do("GET", "/api/jobs", nil, "Cookie", SessionCookie+"="+sc.Value); resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("GET /api/jobs with the session id under %s: %d, want 401", SessionCookie, resp.StatusCode)
				}
			}
		})
	}
}

// TestSessionExpiry: a session ends after the idle timeout without requests (each
// request restarts it) and after the absolute lifetime however busy; the clock is the
// injected one.
func TestSessionExpiry(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		srv := newAuthServer(t, false, nil)
		c := srv.client(t)
		c.mustLogin()
		for range 4 { // 4 × 29 min: more than the timeout in all, less between requests
			srv.clock.advance(29 * time.Minute)
			if resp, _ := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/jobs 29 min after the last: %d, want 200", resp.StatusCode)
			}
		}
		srv.clock.advance(DefaultSessionIdleTimeout)
		resp, body := c.do("GET", "/api/jobs", nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired") {
			t.Fatalf("GET /api/jobs after the idle timeout: %d %s, want 401", resp.StatusCode, body)
		}
		if ck := cookie(resp, SessionCookie); ck == nil || ck.MaxAge >= 0 {
			t.Errorf("the expired session's cookie is not deleted: %+v", ck)
		}
		if n := srv.auth.sessions.len(); n != 0 {
			t.Errorf("%d sessions held after expiry, want 0", n)
		}
		if resp, _ := c.do("GET", "/jobs", nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("GET /jobs after the idle timeout: %d, want a redirect to the login", resp.StatusCode)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		srv := newAuthServer(t, false, func(cfg *AuthConfig) { cfg.Lifetime = 2 * time.Hour })
		c := srv.client(t)
		c.mustLogin()
		for range 11 { // busy every 10 min, up to 1h50m
			srv.clock.advance(10 * time.Minute)
			if resp, _ := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/jobs at %s: %d, want 200", srv.clock.Now(), resp.StatusCode)
			}
		}
		srv.clock.advance(10 * time.Minute)
		if resp, _ := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /api/jobs at the lifetime: %d, want 401", resp.StatusCode)
		}
	})
}

// TestLogoutEndsSession: after logout the old cookie, replayed, is refused: the
// session is gone from the server, not only from the browser.
func TestLogoutEndsSession(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	c := srv.client(t)
	csrf := c.mustLogin()
	u, _ := url.Parse(srv.URL)
	var id string
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == SessionCookie {
			id = ck.Value
		}
	}
	if id == "" {
		t.Fatal("no session cookie in the jar")
	}
	if resp, _ := c.do("POST", "/logout", nil, CSRFHeader, csrf); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	replay := srv.client(t)
	if resp, _ := replay.do("GET", "/api/jobs", nil, "Cookie", SessionCookie+"="+id); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out cookie replayed: %d, want 401", resp.StatusCode)
	}
	if resp, _ := replay.do("POST", "/api/action", nil, "Cookie", SessionCookie+"="+id, CSRFHeader, csrf); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out cookie and CSRF token replayed on a POST: %d, want 401", resp.StatusCode)
	}
	if n := srv.auth.sessions.len(); n != 0 {
		t.Errorf("%d sessions held after logout, want 0", n)
	}
	logs := srv.logs.String()
	if !strings.Contains(logs, "dashboard: logout") || strings.Contains(logs, id) || strings.Contains(logs, csrf) {
		t.Errorf("logs hold no logout, or a session id or CSRF token:\n%s", logs)
	}
}

// TestSessionTokenRechecked: a session whose token leaves the tokens file ends at its
// next request, and stays ended when the token comes back.
func TestSessionTokenRechecked(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	c := srv.client(t)
	c.mustLogin()
	srv.tokens.set(goodToken, false)
	resp, body := c.do("GET", "/api/jobs", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Fatalf("GET /api/jobs after the token was removed: %d %s, want 401 saying why", resp.StatusCode, body)
	}
	if ck := cookie(resp, SessionCookie); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("the refused session's cookie is not deleted: %+v", ck)
	}
	srv.tokens.set(goodToken, true)
	if resp, _ := c.do("GET", "/jobs", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /jobs once the token is back: %d, want a redirect to the login", resp.StatusCode)
	}
}

// TestCSRF: a state-changing request of a session needs the session's CSRF token (in
// the header or a form field) and must not come from another site; so do login and
// logout, with the form's nonce and the session's token.
func TestCSRF(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	host := strings.TrimPrefix(srv.URL, "http://")

	t.Run("login", func(t *testing.T) {
		c := srv.client(t)
		_, body := c.do("GET", "/login", nil)
		nonce := find(t, formNonceRE, body)
		for _, tc := range []struct {
			name   string
			form   url.Values
			header []string
		}{
			{"without the nonce", url.Values{"token": {goodToken}}, nil},
			{"with another nonce", url.Values{"token": {goodToken}, "csrf_token": {newSecret()}}, nil},
			{"from another origin", url.Values{"token": {goodToken}, "csrf_token": {nonce}}, []string{"Origin", "https://evil.example"}},
			{"from another site", url.Values{"token": {goodToken}, "csrf_token": {nonce}}, []string{"Sec-Fetch-Site", "cross-site"}},
			{"from a null origin", url.Values{"token": {goodToken}, "csrf_token": {nonce}}, []string{"Origin", "null"}},
		} {
			resp, body := c.do("POST", "/login", tc.form, tc.header...)
			if resp.StatusCode != http.StatusForbidden || cookie(resp, SessionCookie) != nil {
				t.Errorf("login %s: %d, cookies %v; want 403 and no session", tc.name, resp.StatusCode, resp.Cookies())
			}
			if !strings.Contains(body, "CSRF") && !strings.Contains(body, "cross-") {
				t.Errorf("login %s: the refusal does not say why: %s", tc.name, body)
			}
		}
		// A login without a nonce cookie (posted by another site's form) is refused too.
		resp, _ := srv.client(t).do("POST", "/login", url.Values{"token": {goodToken}, "csrf_token": {nonce}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("login without the nonce cookie: %d, want 403", resp.StatusCode)
		}
		resp, _ = c.do("POST", "/login", url.Values{"token": {goodToken}, "csrf_token": {nonce}}, "Origin", srv.URL, "Sec-Fetch-Site", "same-origin")
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("login from the same origin with the nonce: %d, want 303", resp.StatusCode)
		}
	})

	t.Run("session", func(t *testing.T) {
		c := srv.client(t)
		csrf := c.mustLogin()
		for _, tc := range []struct {
			name   string
			form   url.Values
			header []string
			want   int
		}{
			{"without a token", nil, nil, http.StatusForbidden},
			{"with a wrong token", nil, []string{CSRFHeader, newSecret()}, http.StatusForbidden},
			{"with the token cut short", nil, []string{CSRFHeader, csrf[:20]}, http.StatusForbidden},
			{"with a wrong form token", url.Values{"csrf_token": {"x"}}, nil, http.StatusForbidden},
			{"with the token in the header", nil, []string{CSRFHeader, csrf}, http.StatusOK},
			{"with the token in a form", url.Values{"csrf_token": {csrf}}, nil, http.StatusOK},
			{"from the same origin", nil, []string{CSRFHeader, csrf, "Origin", srv.URL, "Sec-Fetch-Site", "same-origin"}, http.StatusOK},
			{"from another origin", nil, []string{CSRFHeader, csrf, "Origin", "https://evil.example"}, http.StatusForbidden},
			{"from another port", nil, []string{CSRFHeader, csrf, "Origin", "http://" + strings.Split(host, ":")[0] + ":1"}, http.StatusForbidden},
			{"from a sibling site", nil, []string{CSRFHeader, csrf, "Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
			{"from another site", nil, []string{CSRFHeader, csrf, "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		} {
			resp, body := c.do("POST", "/api/action", tc.form, tc.header...)
			if resp.StatusCode != tc.want {
				t.Errorf("POST %s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusForbidden && !strings.Contains(body, "CSRF") && !strings.Contains(body, "cross-") {
				t.Errorf("POST %s: the refusal does not say why: %s", tc.name, body)
			}
		}
		for _, m := range []string{"PUT", "PATCH", "DELETE"} {
			if resp, _ := c.do(m, "/api/action", nil); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s without a token: %d, want 403", m, resp.StatusCode)
			}
		}
		// Logout without the token is refused and the session lives on.
		if resp, _ := c.do("POST", "/logout", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout without a token: %d, want 403", resp.StatusCode)
		}
		if resp, _ := c.do("POST", "/logout", url.Values{"csrf_token": {csrf}}, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout from another origin: %d, want 403", resp.StatusCode)
		}
		if resp, _ := c.do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/jobs after refused logouts: %d, want 200", resp.StatusCode)
		}
		// Another session's token is no good.
		other := srv.client(t).mustLogin()
		if resp, _ := c.do("POST", "/api/action", nil, CSRFHeader, other); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with another session's token: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("bearer", func(t *testing.T) {
		c := srv.client(t)
		auth := "Bearer " + goodToken
		if resp, _ := c.do("POST", "/api/action", nil, "Authorization", auth); resp.StatusCode != http.StatusOK {
			t.Errorf("POST with a Bearer token: %d, want 200 (no CSRF token needed)", resp.StatusCode)
		}
		if resp, _ := c.do("POST", "/api/action", nil, "Authorization", auth, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with a Bearer token from another origin: %d, want 403", resp.StatusCode)
		}
	})
}

// TestSessionCap: logins beyond MaxSessions end the least recently used sessions.
func TestSessionCap(t *testing.T) {
	srv := newAuthServer(t, false, func(cfg *AuthConfig) { cfg.MaxSessions = 3 })
	var clients []*client
	for range 3 {
		c := srv.client(t)
		c.mustLogin()
		clients = append(clients, c)
		srv.clock.advance(time.Minute)
	}
	// The first is used again: the second is now the least recently used.
	if resp, _ := clients[0].do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	for range 2 {
		c := srv.client(t)
		c.mustLogin()
		clients = append(clients, c)
	}
	if n := srv.auth.sessions.len(); n != 3 {
		t.Errorf("%d sessions held, want 3", n)
	}
	for i, want := range []int{200, 401, 401, 200, 200} {
		if resp, _ := clients[i].do("GET", "/api/jobs", nil); resp.StatusCode != want {
			t.Errorf("session %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if !strings.Contains(srv.logs.String(), "too many sessions") {
		t.Error("no log line about the evicted sessions")
	}
	// Sessions idle past the timeout make room before any live one is evicted.
	srv.clock.advance(DefaultSessionIdleTimeout)
	srv.client(t).mustLogin()
	if n := srv.auth.sessions.len(); n != 1 {
		t.Errorf("%d sessions held after a login once the rest expired, want 1", n)
	}
}

// TestLoginReplacesSession: logging in again ends the session the browser had.
func TestLoginReplacesSession(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	c := srv.client(t)
	c.mustLogin()
	c.mustLogin()
	if n := srv.auth.sessions.len(); n != 1 {
		t.Errorf("%d sessions after logging in twice, want 1", n)
	}
}

// TestDashboardBearerHeader: API clients send the token in an Authorization header; the
// raw-token cookie of older versions is neither read nor kept.
func TestDashboardBearerHeader(t *testing.T) {
	srv := newAuthServer(t, false, nil)
	c := srv.client(t)
	if resp, _ := c.do("GET", "/api/jobs", nil, "Authorization", "Bearer "+goodToken); resp.StatusCode != http.StatusOK {
		t.Errorf("Bearer header: %d", resp.StatusCode)
	}
	if resp, _ := c.do("GET", "/api/jobs", nil, "Authorization", "Basic "+goodToken); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic header: %d, want 401", resp.StatusCode)
	}
	if resp, body := c.do("GET", "/api/jobs", nil, "Authorization", "Bearer "+agentToken); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "role agent") {
		t.Errorf("Bearer agent token: %d %s, want 401 saying why", resp.StatusCode, body)
	}
	// The legacy cookie is deleted, and not accepted.
	req, _ := http.NewRequest("GET", srv.URL+"/api/jobs", nil)
	req.AddCookie(&http.Cookie{Name: legacyTokenCookie, Value: goodToken})
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := cookie(resp, legacyTokenCookie); resp.StatusCode != http.StatusUnauthorized || ck == nil || ck.MaxAge >= 0 || ck.Value != "" {
		t.Errorf("legacy token cookie: %d, Set-Cookie %+v; want 401 and the cookie deleted", resp.StatusCode, ck)
	}
}

// TestPagesWithoutLogin: a dashboard without RequireToken shows no Log out form and no
// CSRF token.
func TestPagesWithoutLogin(t *testing.T) {
	srv := newServer(t, newFake())
	_, _, body := get(t, srv.URL+"/")
	if strings.Contains(body, "csrf") || strings.Contains(body, "/logout") {
		t.Errorf("the overview without a login has a CSRF token or a Log out form:\n%s", body)
	}
}

func TestCrossSite(t *testing.T) {
	for _, tc := range []struct {
		origin, fetchSite string
		tls               bool
		cross             bool
	}{
		{"", "", false, false},
		{"http://dash.example:8080", "same-origin", false, false},
		{"https://dash.example:8080", "", true, false},
		{"", "none", false, false},
		{"HTTP://DASH.EXAMPLE:8080", "", false, false},
		{"http://dash.example:8080", "", true, true}, // an http page posting to the TLS dashboard
		{"https://evil.example", "", false, true},
		{"http://dash.example", "", false, true},
		{"http://dash.example:8080.evil.example", "", false, true},
		{"null", "", false, true},
		{"null", "same-origin", false, false}, // Chromium's own form posts under Referrer-Policy: no-referrer
		{"null", "none", false, true},
		{"https://evil.example", "same-origin", false, true},
		{"file://dash.example:8080", "", false, true},
		{"%zz", "", false, true},
		{"", "cross-site", false, true},
		{"", "same-site", false, true},
		{"", "bogus", false, true},
	} {
		r := httptest.NewRequest("POST", "http://dash.example:8080/logout", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if tc.fetchSite != "" {
			r.Header.Set("Sec-Fetch-Site", tc.fetchSite)
		}
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := crossSite(r) != ""; got != tc.cross {
			t.Errorf("Origin %q, Sec-Fetch-Site %q, TLS %v: cross-site %v, want %v", tc.origin, tc.fetchSite, tc.tls, got, tc.cross)
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/jobs/j1": "/jobs/j1", "": "/", "https://evil.example/": "/", "//evil.example": "/",
		"/\\evil.example": "/", "/login": "/", "jobs": "/", "/jobs?x=1": "/jobs?x=1",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
