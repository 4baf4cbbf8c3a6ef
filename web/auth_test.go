package web

import (
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

const goodToken = "dashboard-read-token-0123"

func checkToken(tok string) error {
	switch tok {
	case goodToken:
		return nil
	case "agent-token-0123456789":
		return errors.New(`token "agents" has role agent; this needs a read, submit or admin token`)
	}
	return errors.New("the ACL token is not valid on this coordinator")
}

func newAuthServer(t *testing.T) *httptest.Server {
	t.Helper()
	src := newFake()
	src.put(&cohortv1.Job{Id: "j1", Name: "attrition", State: cohortv1.JobState_JOB_STATE_RUNNING})
	srv := httptest.NewServer(RequireToken(New(Config{Source: src}), AuthConfig{Check: checkToken}))
	t.Cleanup(srv.Close)
	return srv
}

// TestDashboardLogin: without a token pages redirect to the login form and the JSON API
// answers 401; a refused token shows why; a good one sets an HttpOnly, SameSite=Strict
// cookie and lands on the page asked for; the cookie then works for pages, the API and
// the event stream; logout clears it. Static assets stay open.
func TestDashboardLogin(t *testing.T) {
	srv := newAuthServer(t)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, form url.Values, header ...string) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, srv.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	resp, _ := do("GET", "/jobs/j1", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fjobs%2Fj1" {
		t.Fatalf("GET /jobs/j1 without a token: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := do("GET", "/api/jobs", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "read role") || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("GET /api/jobs without a token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do("GET", "/static/style.css", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /static/style.css: %d, want 200 without a token", resp.StatusCode)
	}
	resp, body = do("GET", "/login?next=%2Fjobs%2Fj1", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `value="/jobs/j1"`) {
		t.Fatalf("GET /login: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("the login page has no Content-Security-Policy")
	}

	// Refused tokens say why and set no cookie.
	for _, tok := range []string{"nope", "agent-token-0123456789", ""} {
		resp, body := do("POST", "/login", url.Values{"token": {tok}, "next": {"/jobs/j1"}})
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Fatalf("login with %q: %d, cookies %v", tok, resp.StatusCode, resp.Cookies())
		}
		if tok == "agent-token-0123456789" && !strings.Contains(body, "role agent") {
			t.Errorf("login with the agent token does not say why: %s", body)
		}
	}
	// A login posted from another site is refused.
	if resp, _ := do("POST", "/login", url.Values{"token": {goodToken}}, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin login: %d, want 403", resp.StatusCode)
	}

	resp, _ = do("POST", "/login", url.Values{"token": {goodToken}, "next": {"/jobs/j1"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/j1" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == TokenCookie {
			c = ck
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Value != goodToken || c.MaxAge <= 0 {
		t.Fatalf("login cookie %+v, want HttpOnly, SameSite=Strict, Path=/", c)
	}
	if resp, body := do("GET", "/jobs/j1", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, "attrition") {
		t.Fatalf("GET /jobs/j1 logged in: %d", resp.StatusCode)
	}
	if resp, body := do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"j1"`) {
		t.Fatalf("GET /api/jobs logged in: %d %s", resp.StatusCode, body)
	}

	// Logout clears the cookie.
	resp, _ = do("POST", "/logout", nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := do("GET", "/api/jobs", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /api/jobs after logout: %d, want 401", resp.StatusCode)
	}
}

// TestDashboardBearerHeader: API clients send the token in an Authorization header; a
// stale cookie (a token removed from the tokens file) is cleared.
func TestDashboardBearerHeader(t *testing.T) {
	srv := newAuthServer(t)
	get := func(header, cookie string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/api/jobs", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: TokenCookie, Value: cookie})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get("Bearer "+goodToken, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("Bearer header: %d", resp.StatusCode)
	}
	if resp := get("Basic "+goodToken, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic header: %d, want 401", resp.StatusCode)
	}
	resp := get("", "revoked-token")
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == TokenCookie && c.MaxAge < 0)
	}
	if resp.StatusCode != http.StatusUnauthorized || !cleared {
		t.Errorf("revoked cookie: %d, cleared %v", resp.StatusCode, cleared)
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
