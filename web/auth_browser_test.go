package web

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// TestLoginInBrowser logs in and out through the dashboard's own forms in headless
// Chromium: the login form's nonce and the Log out form's CSRF token pass the checks a
// real browser's Origin and Sec-Fetch-Site headers go through; the session cookie is
// out of the page's reach; a fetch needs the page's CSRF token to change state.
func TestLoginInBrowser(t *testing.T) {
	bctx := testenv.Browser(t)
	srv := newAuthServer(t, false, nil)
	// A forbidden fetch logs a network error; only the page's own errors count.
	tab := newTab(t, bctx)
	// waitPath waits until the tab shows path, loaded; evaluations fail while a form
	// submission replaces the page, so it retries.
	waitPath := func(path string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			at, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.readyState === "complete" ? location.pathname : ""`))
			if err == nil && at == path {
				return
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(tab, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
				t.Fatalf("waiting for %s: %v; the tab shows %s", path, err, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/jobs/j1")); err != nil {
		t.Fatal(err)
	}
	waitPath("/login")
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), goodToken),
		chromedp.Submit(chromedp.CSS(`form[action="/login"]`))); err != nil {
		t.Fatal(err)
	}
	waitPath("/jobs/j1")
	type facts struct {
		Title    string `json:"title"`
		Cookie   string `json:"cookie"`
		CSRF     string `json:"csrf"`
		Without  int    `json:"without"`
		With     int    `json:"with"`
		WithBody string `json:"withBody"`
		Jobs     int    `json:"jobs"`
	}
	got, err := chromedp.Run(tab, chromedp.Evaluate[facts](`(async () => {
	  const csrf = document.querySelector('meta[name="csrf-token"]').content;
	  const without = await fetch("/api/action", { method: "POST" });
	  const withTok = await fetch("/api/action", { method: "POST", headers: { "X-CSRF-Token": csrf } });
	  const jobs = await fetch("/api/jobs");
	  return { title: document.getElementById("job-name").textContent, cookie: document.cookie, csrf,
	    without: without.status, with: withTok.status, withBody: await withTok.text(), jobs: jobs.status };
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != "attrition" || got.Jobs != http.StatusOK {
		t.Errorf("logged in: job %q, GET /api/jobs %d", got.Title, got.Jobs)
	}
	if got.Cookie != "" {
		t.Errorf("the page reads cookies %q; want none (HttpOnly)", got.Cookie)
	}
	if _, ok := parseSecret(got.CSRF); !ok {
		t.Errorf("csrf-token meta tag %q", got.CSRF)
	}
	if got.Without != http.StatusForbidden || got.With != http.StatusOK || got.WithBody != "done" {
		t.Errorf("POST from the page: %d without the CSRF token, %d %q with it; want 403, 200 done", got.Without, got.With, got.WithBody)
	}

	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`form.logout button`))); err != nil {
		t.Fatal(err)
	}
	waitPath("/login")
	status, err := chromedp.Run(tab, chromedp.Evaluate[int](`fetch("/api/jobs").then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusUnauthorized {
		t.Errorf("GET /api/jobs after Log out: %d (%v), want 401", status, err)
	}
	if n := srv.auth.sessions.len(); n != 0 {
		t.Errorf("%d sessions after Log out, want 0", n)
	}
	if logs := srv.logs.String(); !strings.Contains(logs, "reason=\"missing or wrong CSRF token") {
		t.Errorf("the refused fetch is not logged:\n%s", logs)
	}
}
