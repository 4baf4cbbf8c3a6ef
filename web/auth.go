package web

import (
	"context"
	"html/template"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Cookie and CSRF names. On a secure request (over TLS, or AuthConfig.SecureCookies)
// every cookie is Secure and named with the "__Host-" prefix, which browsers accept
// only from a secure origin, for Path=/ and without a Domain: no plain-HTTP page and
// no sibling host can set or shadow it.
const (
	// SessionCookie holds the random id of a dashboard login, never the token:
	// HttpOnly, SameSite=Strict, Path=/.
	SessionCookie = "cohort_session"
	// CSRFHeader carries the session's CSRF token on a state-changing request; a form
	// sends it in the csrf_token field instead.
	CSRFHeader = "X-CSRF-Token"

	// loginCookie holds the login form's nonce (the form's CSRF token before a session
	// exists): the POST must send the same value in its csrf_token field.
	loginCookie = "cohort_login"
	// legacyTokenCookie is where older versions kept the raw token; it is deleted on
	// sight and never read.
	legacyTokenCookie = "cohort_token"
	// csrfField is the form field of the CSRF token.
	csrfField = "csrf_token"
	// securePrefix is the cookie name prefix of secure requests.
	securePrefix = "__Host-"
)

// Defaults of AuthConfig.
const (
	DefaultSessionIdleTimeout = 30 * time.Minute
	DefaultSessionLifetime    = 12 * time.Hour
	DefaultMaxSessions        = 10000
)

const (
	// loginNonceMaxAge is how long a login form may stay open.
	loginNonceMaxAge = time.Hour
	// maxLoginBytes bounds a login or logout form.
	maxLoginBytes = 16 << 10
	// maxFormBytes bounds a url-encoded form read for its CSRF field.
	maxFormBytes = 1 << 20
)

// AuthConfig configures RequireToken.
type AuthConfig struct {
	// Check accepts a token that may read the cluster; its error says why not (it is
	// shown on the login form). Required. It is called at login and again on every
	// request of a session, so a token removed from the tokens file stops working at
	// once.
	Check func(token string) error
	// Logger receives logins, logouts and refused requests (default slog.Default()).
	// Tokens and session ids are never logged; a session appears as a short prefix of
	// the SHA-256 of its id.
	Logger *slog.Logger
	// SecureCookies marks the cookies Secure (and "__Host-") on every request: set it
	// when a TLS-terminating proxy serves the dashboard over HTTPS. Requests that
	// arrive over TLS get secure cookies anyway.
	SecureCookies bool
	// IdleTimeout ends a session unused this long (default DefaultSessionIdleTimeout;
	// each request restarts it); Lifetime ends it this long after the login whatever
	// its use (default DefaultSessionLifetime).
	IdleTimeout, Lifetime time.Duration
	// MaxSessions bounds the sessions held in memory (default DefaultMaxSessions); a
	// login beyond it ends the least recently used one.
	MaxSessions int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// RequireToken serves next only to requests that carry a token Check accepts, in an
// "Authorization: Bearer TOKEN" header or through a login session, and adds:
//
//	GET  /login    a form asking for the token
//	POST /login    checks the token, starts a session and redirects to the page asked for
//	POST /logout   ends the session
//
// A session lives in memory: the cookie holds only its random 256-bit id, the token
// stays on the server and is checked again on every request, so that a token removed
// from the tokens file stops working at once. Each session has a random CSRF token,
// which next's pages carry (a csrf-token meta tag and the Log out form) and which
// every state-changing request of the session (any method but GET, HEAD and OPTIONS)
// must send in the X-CSRF-Token header or a csrf_token form field; the login form is
// covered by a nonce cookie it must echo. Besides, every state-changing request, a
// Bearer one included, is refused when its Sec-Fetch-Site or Origin header says it
// comes from another site. Refusals are 403. (A Bearer request needs no CSRF token:
// browsers never add that header on their own.)
//
// The embedded assets under /static/ stay open (the login page uses them). A page
// request without a valid token or session is redirected to /login; an /api/ request
// gets 401.
func RequireToken(next http.Handler, cfg AuthConfig) http.Handler {
	return newAuth(next, cfg).handler()
}

// newAuth fills cfg's defaults and returns the auth serving next.
func newAuth(next http.Handler, cfg AuthConfig) *auth {
	if cfg.Check == nil {
		panic("web: AuthConfig.Check is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultSessionIdleTimeout
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultSessionLifetime
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &auth{
		next: next, check: cfg.Check, log: cfg.Logger, secureCookies: cfg.SecureCookies, lifetime: cfg.Lifetime,
		sessions: newSessionStore(cfg.IdleTimeout, cfg.Lifetime, cfg.MaxSessions, cfg.Now),
	}
}

// handler routes the login pages and gates the rest.
func (a *auth) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", a.loginPage)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("/logout", a.logout)
	mux.Handle("GET /static/", a.next)
	mux.HandleFunc("/", a.gate)
	return securityHeaders(mux)
}

// auth is RequireToken's handler: the login pages, the sessions and the gate.
type auth struct {
	next          http.Handler
	check         func(string) error
	log           *slog.Logger
	secureCookies bool
	lifetime      time.Duration
	sessions      *sessionStore
}

// csrfKey is the request context key of the session's CSRF token, which the pages
// of the dashboard embed.
type csrfKey struct{}

// csrfToken returns the CSRF token of the request's session ("" without one).
func csrfToken(ctx context.Context) string {
	s, _ := ctx.Value(csrfKey{}).(string)
	return s
}

func (a *auth) gate(w http.ResponseWriter, r *http.Request) {
	a.dropLegacyCookie(w, r)
	if h := r.Header.Get("Authorization"); h != "" {
		a.gateBearer(w, r, h)
		return
	}
	msg := ""
	if c, err := r.Cookie(a.name(r, SessionCookie)); err == nil {
		sess, ok := a.sessions.lookup(c.Value)
		if ok {
			err := a.check(sess.token)
			if err == nil {
				if unsafeMethod(r.Method) {
					if why := a.refuseUnsafe(w, r, sess.csrf); why != "" {
						a.forbid(w, r, why, "session", sess.key.logID())
						return
					}
				}
				a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), csrfKey{}, sess.csrf)))
				return
			}
			a.sessions.delete(sess.key)
			a.log.Info("dashboard: the token of a session was refused; session ended", "session", sess.key.logID(), "err", err)
			msg = "the token was refused: " + err.Error()
		} else {
			msg = "the login session has expired or ended: log in again at /login"
		}
		http.SetCookie(w, a.cookie(r, SessionCookie, "", -1))
	}
	a.unauthorized(w, r, msg)
}

// gateBearer serves a request that sent an Authorization header.
func (a *auth) gateBearer(w http.ResponseWriter, r *http.Request, header string) {
	msg := ""
	scheme, secret, ok := strings.Cut(strings.TrimSpace(header), " ")
	if secret = strings.TrimSpace(secret); ok && strings.EqualFold(scheme, "bearer") && secret != "" {
		err := a.check(secret)
		if err == nil {
			if why := crossSite(r); unsafeMethod(r.Method) && why != "" {
				a.forbid(w, r, why)
				return
			}
			a.next.ServeHTTP(w, r)
			return
		}
		a.log.Debug("dashboard: token refused", "path", r.URL.Path, "err", err)
		msg = "the token was refused: " + err.Error()
	}
	a.unauthorized(w, r, msg)
}

// unauthorized answers a request without a valid token or session: an /api/ or
// state-changing request gets 401 (saying msg when set), a page a redirect to /login.
func (a *auth) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") || r.Method != http.MethodGet {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
		if msg == "" {
			msg = "this dashboard requires an ACL token with the read role: log in at /login or send Authorization: Bearer TOKEN"
		}
		writeJSONError(w, http.StatusUnauthorized, msg)
		return
	}
	http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

// refuseUnsafe says why a state-changing request of a session must be refused: it
// comes from another site, or it lacks the session's CSRF token. "" lets it through.
func (a *auth) refuseUnsafe(w http.ResponseWriter, r *http.Request, want string) string {
	if why := crossSite(r); why != "" {
		return why
	}
	if !equalSecret(sentCSRF(w, r, maxFormBytes), want) {
		return "missing or wrong CSRF token: send the token of the page (its csrf-token meta tag) in the " +
			CSRFHeader + " header or the " + csrfField + " form field"
	}
	return ""
}

// forbid refuses a request with 403 and logs why (never a token or a session id).
func (a *auth) forbid(w http.ResponseWriter, r *http.Request, why string, attrs ...any) {
	a.log.Info("dashboard: request refused", append([]any{"method", r.Method, "path", r.URL.Path, "reason", why}, attrs...)...)
	msg := "forbidden: " + why
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSONError(w, http.StatusForbidden, msg)
		return
	}
	http.Error(w, msg, http.StatusForbidden)
}

// unsafeMethod reports whether a method may change state.
func unsafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// crossSite says why a request comes from another site, as its browser tells through
// Sec-Fetch-Site or Origin, or returns "" (same origin, or a client that sends
// neither header). Like http.CrossOriginProtection it trusts Sec-Fetch-Site, which
// every browser sends since 2023; unlike it, it also refuses an Origin of another
// host, or plain http on a TLS connection, whatever Sec-Fetch-Site says. An opaque
// Origin ("null", which Chromium sends on the dashboard's own form posts, the
// Referrer-Policy being no-referrer) counts only with Sec-Fetch-Site: same-origin.
func crossSite(r *http.Request) string {
	site := r.Header.Get("Sec-Fetch-Site")
	switch site {
	case "", "same-origin", "none":
	default:
		return "cross-site request (Sec-Fetch-Site: " + site + ")"
	}
	origin := r.Header.Get("Origin")
	switch {
	case origin == "":
		return ""
	case origin == "null" && site == "same-origin":
		return ""
	}
	u, err := url.Parse(origin)
	switch {
	case err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host):
		return "cross-origin request (Origin " + origin + ")"
	case u.Scheme != "https" && (u.Scheme != "http" || r.TLS != nil):
		return "cross-origin request (Origin " + origin + " over TLS)"
	}
	return ""
}

// sentCSRF returns the CSRF token a request sends: the X-CSRF-Token header, else the
// csrf_token field of a url-encoded form body (read up to limit bytes).
func sentCSRF(w http.ResponseWriter, r *http.Request, limit int64) string {
	if v := r.Header.Get(CSRFHeader); v != "" {
		return v
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return ""
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		return ""
	}
	return r.PostForm.Get(csrfField)
}

// loginData fills the login form.
type loginData struct {
	Next, Error, CSRF string
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Cohort</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header><a class="brand" href="/">Cohort</a></header>
<main>
<h1>Log in</h1>
<p>This cluster requires an ACL token with the read role (or submit, or admin).</p>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{{.CSRF}}">
<input type="hidden" name="next" value="{{.Next}}">
<label>Token <input type="password" name="token" autocomplete="off" required autofocus></label>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
`))

// renderLogin shows the login form with its nonce: the one of the request's login
// cookie when it has a well-formed one (another tab's form stays valid), else a new one.
func (a *auth) renderLogin(w http.ResponseWriter, r *http.Request, code int, d loginData) {
	d.CSRF = ""
	if c, err := r.Cookie(a.name(r, loginCookie)); err == nil {
		if _, ok := parseSecret(c.Value); ok {
			d.CSRF = c.Value
		}
	}
	if d.CSRF == "" {
		d.CSRF = newSecret()
	}
	var b strings.Builder
	if err := loginPage.Execute(&b, d); err != nil {
		http.Error(w, "render login page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, a.cookie(r, loginCookie, d.CSRF, int(loginNonceMaxAge.Seconds())))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (a *auth) loginPage(w http.ResponseWriter, r *http.Request) {
	a.dropLegacyCookie(w, r)
	a.renderLogin(w, r, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

func (a *auth) login(w http.ResponseWriter, r *http.Request) {
	a.dropLegacyCookie(w, r)
	if why := crossSite(r); why != "" {
		a.forbid(w, r, "login refused: "+why)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBytes)
	if err := r.ParseForm(); err != nil {
		a.renderLogin(w, r, http.StatusBadRequest, loginData{Error: "unreadable form: " + err.Error()})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !a.loginNonceSent(r) {
		a.log.Info("dashboard: request refused", "method", r.Method, "path", r.URL.Path, "reason", "login form without its nonce")
		a.renderLogin(w, r, http.StatusForbidden, loginData{Next: next,
			Error: "This login form has expired or was not sent by this dashboard (missing or wrong CSRF token). Enter the token again."})
		return
	}
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	if secret == "" {
		a.renderLogin(w, r, http.StatusUnauthorized, loginData{Next: next, Error: "Enter a token."})
		return
	}
	if err := a.check(secret); err != nil {
		a.log.Debug("dashboard: login refused", "err", err)
		a.renderLogin(w, r, http.StatusUnauthorized, loginData{Next: next, Error: "The token was refused: " + err.Error()})
		return
	}
	if old, err := r.Cookie(a.name(r, SessionCookie)); err == nil { // a new login replaces the session
		if key, ok := keyOf(old.Value); ok {
			a.sessions.delete(key)
		}
	}
	id, sess, evicted := a.sessions.create(secret)
	if evicted > 0 {
		a.log.Warn("dashboard: too many sessions; the least recently used ended", "ended", evicted)
	}
	a.log.Info("dashboard: login", "session", sess.key.logID())
	http.SetCookie(w, a.cookie(r, SessionCookie, id, int(a.lifetime.Seconds())))
	http.SetCookie(w, a.cookie(r, loginCookie, "", -1))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (a *auth) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "log out with POST /logout (the Log out button)", http.StatusMethodNotAllowed)
		return
	}
	if why := crossSite(r); why != "" {
		a.forbid(w, r, "logout refused: "+why)
		return
	}
	if c, err := r.Cookie(a.name(r, SessionCookie)); err == nil {
		if sess, ok := a.sessions.lookup(c.Value); ok {
			if !equalSecret(sentCSRF(w, r, maxLoginBytes), sess.csrf) {
				a.forbid(w, r, "logout refused: missing or wrong CSRF token", "session", sess.key.logID())
				return
			}
			a.sessions.delete(sess.key)
			a.log.Info("dashboard: logout", "session", sess.key.logID())
		}
		http.SetCookie(w, a.cookie(r, SessionCookie, "", -1))
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// secure reports whether the request's cookies are Secure.
func (a *auth) secure(r *http.Request) bool { return a.secureCookies || r.TLS != nil }

// name is a cookie's name on this request: "__Host-" prefixed when secure.
func (a *auth) name(r *http.Request, base string) string {
	if a.secure(r) {
		return securePrefix + base
	}
	return base
}

// cookie is one of the dashboard's cookies; maxAge < 0 deletes it.
func (a *auth) cookie(r *http.Request, base, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: a.name(r, base), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.secure(r),
	}
}

// dropLegacyCookie deletes the raw-token cookie of older versions.
func (a *auth) dropLegacyCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(legacyTokenCookie); err == nil {
		http.SetCookie(w, &http.Cookie{Name: legacyTokenCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.secure(r)})
	}
}

// loginNonceSent reports whether a login form echoes the nonce of its login cookie.
func (a *auth) loginNonceSent(r *http.Request) bool {
	c, err := r.Cookie(a.name(r, loginCookie))
	if err != nil {
		return false
	}
	if _, ok := parseSecret(c.Value); !ok {
		return false
	}
	return equalSecret(r.PostForm.Get(csrfField), c.Value)
}

// safeNext keeps a post-login redirect on this site: a local path, else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.HasPrefix(next, "/login") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}
