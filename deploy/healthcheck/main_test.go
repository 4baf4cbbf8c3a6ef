package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	if err := probe(srv.URL+"/healthz", time.Second); err != nil {
		t.Errorf("healthy endpoint: %v", err)
	}
	err := probe(srv.URL+"/other", time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("unhealthy endpoint: err = %v, want the status and body", err)
	}
	srv.Close()
	if err := probe(srv.URL+"/healthz", time.Second); err == nil {
		t.Error("closed server: probe succeeded")
	}
	if err := probe("://bad", time.Second); err == nil {
		t.Error("bad URL: probe succeeded")
	}
}
