package s3test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/storage"
)

// Fault is what a FaultProxy does to a request it picks: answer Status with the S3
// error Code instead of the server's answer. With AfterForward the request first goes
// to the server (so it takes effect) and only its answer is replaced, as when a
// connection drops after the server has acted.
type Fault struct {
	Status       int
	Code         string
	AfterForward bool
}

// SlowDown is the throttling answer of S3.
var SlowDown = Fault{Status: http.StatusServiceUnavailable, Code: "SlowDown"}

// InternalError is S3's answer to a server fault.
var InternalError = Fault{Status: http.StatusInternalServerError, Code: "InternalError"}

// FaultProxy is a reverse proxy on 127.0.0.1 in front of a Server that answers chosen
// requests with errors, for tests of retries and failure handling. It stops when the
// test ends.
type FaultProxy struct {
	// URL is the proxy's endpoint, "http://127.0.0.1:PORT".
	URL string

	srv *Server
	mu  sync.Mutex
	// rules are tried in order; a rule with n == 0 is spent (n < 0: never spent).
	rules    []*faultRule
	requests int
	faults   int
}

type faultRule struct {
	match func(*http.Request) bool
	n     int
	fault Fault
}

// StartFaultProxy starts a proxy in front of s that forwards everything until told
// otherwise with Inject.
func (s *Server) StartFaultProxy(t testing.TB) *FaultProxy {
	t.Helper()
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatalf("s3test: fault proxy: %v", err)
	}
	p := &FaultProxy{srv: s}
	rp := httputil.NewSingleHostReverseProxy(target)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := p.pick(r)
		if !ok {
			rp.ServeHTTP(w, r)
			return
		}
		if f.AfterForward {
			rp.ServeHTTP(discardResponse{header: http.Header{}}, r)
		} else {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by s3test.FaultProxy</Message><Resource>%s</Resource><RequestId>fault</RequestId></Error>`, f.Code, r.URL.Path)
	}))
	t.Cleanup(hs.Close)
	p.URL = hs.URL
	return p
}

// Inject makes the next n requests that match (all requests when match is nil) get
// fault; n < 0 means every matching request from now on.
func (p *FaultProxy) Inject(match func(*http.Request) bool, n int, fault Fault) {
	if match == nil {
		match = func(*http.Request) bool { return true }
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &faultRule{match: match, n: n, fault: fault})
}

// Clear removes every rule.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Counts returns how many requests the proxy has seen and how many it answered with
// a fault.
func (p *FaultProxy) Counts() (requests, faults int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.faults
}

// Config returns the Server's S3Config pointed at the proxy.
func (p *FaultProxy) Config() storage.S3Config {
	cfg := p.srv.Config()
	cfg.Endpoint = p.URL
	return cfg
}

func (p *FaultProxy) pick(r *http.Request) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	for _, rule := range p.rules {
		if rule.n != 0 && rule.match(r) {
			if rule.n > 0 {
				rule.n--
			}
			p.faults++
			return rule.fault, true
		}
	}
	return Fault{}, false
}

// IsPartUpload matches the requests that upload one part of a multipart upload.
func IsPartUpload(r *http.Request) bool {
	q := r.URL.Query()
	return r.Method == http.MethodPut && q.Has("partNumber") && q.Has("uploadId")
}

// IsObjectPut matches single-request object uploads (a PUT of a path-style
// /bucket/key without partNumber), not bucket creation.
func IsObjectPut(r *http.Request) bool {
	return r.Method == http.MethodPut && !r.URL.Query().Has("partNumber") &&
		strings.Contains(strings.Trim(r.URL.Path, "/"), "/")
}

// discardResponse swallows the server's answer to a request forwarded under a Fault
// with AfterForward.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d discardResponse) WriteHeader(int)             {}
