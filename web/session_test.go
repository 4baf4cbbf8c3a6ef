package web

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestParseSecret(t *testing.T) {
	id := newSecret()
	if len(id) != secretLen || secretLen != 43 {
		t.Fatalf("newSecret() = %q (%d characters), want 43", id, len(id))
	}
	if _, ok := parseSecret(id); !ok {
		t.Fatalf("parseSecret(%q) refused a fresh secret", id)
	}
	if newSecret() == id {
		t.Fatal("two secrets are equal")
	}
	for _, s := range []string{
		"", id[:42], id + "A", id + "=", strings.Repeat("A", 42) + "B", // stray bits in the last character
		strings.Repeat("A", 42) + "+", strings.Repeat("A", 42) + "/", " " + id[1:], strings.Repeat("A", 40) + "A\nA",
	} {
		if _, ok := parseSecret(s); ok {
			t.Errorf("parseSecret(%q) accepted it", s)
		}
	}
}

// FuzzParseSecret: parseSecret (the decoder of session cookies and CSRF tokens) never
// panics, accepts exactly one spelling of each secret, and a session store finds a
// session by its own id only.
func FuzzParseSecret(f *testing.F) {
	store := newSessionStore(time.Hour, time.Hour, 10, time.Now)
	id, _, _ := store.create("token")
	for _, s := range []string{"", id, id[:42] + "B", strings.Repeat("_", 43), strings.Repeat("-", 42) + "w", "%00", strings.Repeat("A", 44)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, ok := parseSecret(s)
		if ok && base64.RawURLEncoding.EncodeToString(b[:]) != s {
			t.Fatalf("parseSecret(%q) accepted another spelling of %x", s, b)
		}
		if _, kok := keyOf(s); kok != ok {
			t.Fatalf("keyOf(%q) ok %v, parseSecret ok %v", s, kok, ok)
		}
		if _, found := store.lookup(s); found != (s == id) {
			t.Fatalf("lookup(%q) found %v, want %v", s, found, s == id)
		}
	})
}
