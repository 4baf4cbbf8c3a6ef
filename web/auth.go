package web

import (
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// TokenCookie is the cookie the login form sets: the ACL token itself, HttpOnly (no
// script reads it) and SameSite=Strict (no other site sends it).
const TokenCookie = "cohort_token"

// tokenCookieMaxAge is how long a login lasts.
const tokenCookieMaxAge = 12 * time.Hour

// maxLoginBytes bounds a login form.
const maxLoginBytes = 16 << 10

// AuthConfig configures RequireToken.
type AuthConfig struct {
	// Check accepts a token that may read the cluster; its error says why not (it is
	// shown on the login form). Required.
	Check func(token string) error
	// Logger receives refused logins at debug level (default slog.Default()).
	Logger *slog.Logger
}

// RequireToken serves next only to requests that carry a token Check accepts, in an
// "Authorization: Bearer TOKEN" header or the TokenCookie cookie, and adds:
//
//	GET  /login    a form asking for the token
//	POST /login    checks the token, sets the cookie and redirects to the page asked for
//	GET|POST /logout clears the cookie
//
// The embedded assets under /static/ stay open (the login page uses them). A page
// request without a valid token is redirected to /login; an /api/ request gets 401.
func RequireToken(next http.Handler, cfg AuthConfig) http.Handler {
	if cfg.Check == nil {
		panic("web: AuthConfig.Check is required")
	}
	a := &auth{next: next, check: cfg.Check, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", a.loginPage)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("/logout", a.logout)
	mux.Handle("GET /static/", next)
	mux.HandleFunc("/", a.gate)
	return securityHeaders(mux)
}

type auth struct {
	next  http.Handler
	check func(string) error
	log   *slog.Logger
}

// token returns the request's token and whether it came from the cookie.
func token(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(secret), false
		}
		return "", false
	}
	if c, err := r.Cookie(TokenCookie); err == nil {
		return c.Value, true
	}
	return "", false
}

func (a *auth) gate(w http.ResponseWriter, r *http.Request) {
	secret, fromCookie := token(r)
	var err error
	if secret != "" {
		if err = a.check(secret); err == nil {
			a.next.ServeHTTP(w, r)
			return
		}
		a.log.Debug("dashboard: token refused", "path", r.URL.Path, "err", err)
		if fromCookie { // revoked or reloaded away: forget it
			http.SetCookie(w, a.cookie(r, "", -1))
		}
	}
	if strings.HasPrefix(r.URL.Path, "/api/") || r.Method != http.MethodGet {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
		msg := "this dashboard requires an ACL token with the read role: log in at /login or send Authorization: Bearer TOKEN"
		if err != nil {
			msg = "the token was refused: " + err.Error()
		}
		writeJSONError(w, http.StatusUnauthorized, msg)
		return
	}
	http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

// loginData fills the login form.
type loginData struct {
	Next, Error string
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
<input type="hidden" name="next" value="{{.Next}}">
<label>Token <input type="password" name="token" autocomplete="off" required autofocus></label>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
`))

func (a *auth) renderLogin(w http.ResponseWriter, code int, d loginData) {
	var b strings.Builder
	if err := loginPage.Execute(&b, d); err != nil {
		http.Error(w, "render login page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (a *auth) loginPage(w http.ResponseWriter, r *http.Request) {
	a.renderLogin(w, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

func (a *auth) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin login refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBytes)
	if err := r.ParseForm(); err != nil {
		a.renderLogin(w, http.StatusBadRequest, loginData{Error: "unreadable form: " + err.Error()})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	if secret == "" {
		a.renderLogin(w, http.StatusUnauthorized, loginData{Next: next, Error: "Enter a token."})
		return
	}
	if err := a.check(secret); err != nil {
		a.log.Debug("dashboard: login refused", "err", err)
		a.renderLogin(w, http.StatusUnauthorized, loginData{Next: next, Error: "The token was refused: " + err.Error()})
		return
	}
	http.SetCookie(w, a.cookie(r, secret, int(tokenCookieMaxAge.Seconds())))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (a *auth) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, a.cookie(r, "", -1))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// cookie is the token cookie; maxAge < 0 deletes it.
func (a *auth) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: TokenCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
}

// safeNext keeps a post-login redirect on this site: a local path, else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.HasPrefix(next, "/login") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

// sameOrigin refuses a form posted from another site (when the browser says so).
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return origin == ""
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}
