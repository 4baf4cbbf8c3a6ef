package pki

import (
	"bytes"
	"errors"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testHash is a well-formed CA hash (the SHA-256 of "abc").
const testHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

var tokenRE = regexp.MustCompile(`^COH1[0-9a-f]{64}::[a-z0-9]{6}\.[a-z0-9]{16}$`)

func TestTokenRoundTrip(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	tok, err := GenerateToken(ca.Hash())
	if err != nil {
		t.Fatal(err)
	}
	s := tok.String()
	if !tokenRE.MatchString(s) || !strings.HasPrefix(s, "COH1"+ca.Hash()+"::") {
		t.Fatalf("token %q does not have the documented format", s)
	}
	for _, in := range []string{s, "  " + s + "\n"} {
		got, err := ParseToken(in)
		if err != nil || got != tok {
			t.Errorf("ParseToken(%q) = %#v, %v; want %#v", in, got, err, tok)
		}
	}
	if want := "COH1" + ca.Hash() + "::" + tok.ID + ".******"; tok.Redacted() != want {
		t.Errorf("Redacted() = %q, want %q", tok.Redacted(), want)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("made token", "token", tok)
	if strings.Contains(logs.String(), tok.Secret) || !strings.Contains(logs.String(), tok.Redacted()) {
		t.Errorf("logged token is not redacted: %s", logs.String())
	}
	other, err := GenerateToken(ca.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == tok.ID && other.Secret == tok.Secret {
		t.Error("two tokens are the same")
	}
	for _, bad := range []string{"", testHash[:63], strings.ToUpper(testHash)} {
		if _, err := GenerateToken(bad); !errors.Is(err, ErrMalformedToken) {
			t.Errorf("GenerateToken(%q) = %v", bad, err)
		}
	}
}

func TestRandomStringAlphabet(t *testing.T) {
	// Every character of the alphabet turns up, and nothing else.
	seen := map[rune]int{}
	for range 200 {
		s, err := randomString(TokenSecretLen)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range s {
			seen[r]++
		}
	}
	if len(seen) != len(tokenAlphabet) {
		t.Errorf("saw %d distinct characters, want %d", len(seen), len(tokenAlphabet))
	}
	for r := range seen {
		if !strings.ContainsRune(tokenAlphabet, r) {
			t.Errorf("character %q outside the alphabet", r)
		}
	}
}

func TestParseTokenErrors(t *testing.T) {
	const (
		id     = "abc123"
		secret = "s3cr3tv4lu3x0y9z"
	)
	h := testHash
	for _, tc := range []struct {
		name, in, part string
	}{
		{"empty", "", "prefix"},
		{"lowercase prefix", "coh1" + h + "::" + id + "." + secret, "prefix"},
		{"other version", "COH2" + h + "::" + id + "." + secret, "prefix"},
		{"no prefix", h + "::" + id + "." + secret, "prefix"},
		{"short hash", "COH1" + h[:63] + "::" + id + "." + secret, "ca hash"},
		{"long hash", "COH1" + h + "0::" + id + "." + secret, "ca hash"},
		{"uppercase hash", "COH1" + strings.ToUpper(h) + "::" + id + "." + secret, "ca hash"},
		{"non-hex hash", "COH1" + "g" + h[1:] + "::" + id + "." + secret, "ca hash"},
		{"short hash no separator", "COH1" + h[:10], "ca hash"},
		{"no separator", "COH1" + h + id + "." + secret, "separator"},
		{"single colon", "COH1" + h + ":" + id + "." + secret, "separator"},
		{"no dot", "COH1" + h + "::" + id + secret, "separator"},
		{"short id", "COH1" + h + "::" + id[:5] + "." + secret, "id"},
		{"uppercase id", "COH1" + h + "::" + strings.ToUpper(id) + "." + secret, "id"},
		{"id with dash", "COH1" + h + "::abc-12." + secret, "id"},
		{"triple colon", "COH1" + h + ":::" + id + "." + secret, "id"},
		{"short secret", "COH1" + h + "::" + id + "." + secret[:15], "secret"},
		{"long secret", "COH1" + h + "::" + id + "." + secret + "q", "secret"},
		{"uppercase secret", "COH1" + h + "::" + id + "." + strings.ToUpper(secret), "secret"},
		{"secret with dot", "COH1" + h + "::" + id + "." + secret[:8] + "." + secret[9:], "secret"},
		{"empty secret", "COH1" + h + "::" + id + ".", "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken(tc.in)
			var fe *TokenFormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("ParseToken = %#v, %v; want a *TokenFormatError", tok, err)
			}
			if fe.Part != tc.part {
				t.Errorf("error blames %q, want %q: %v", fe.Part, tc.part, err)
			}
			for _, s := range []string{secret, strings.ToUpper(secret), secret[:8], secret[9:]} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q echoes the secret", err)
				}
			}
		})
	}
}

func TestHashAndVerifySecret(t *testing.T) {
	if got := HashSecret("abc"); got != testHash {
		t.Errorf("HashSecret(abc) = %s, want %s", got, testHash)
	}
	h := HashSecret("s3cr3tv4lu3x0y9z")
	if !VerifySecret(h, "s3cr3tv4lu3x0y9z") {
		t.Error("the right secret does not verify")
	}
	for _, tc := range []struct{ stored, secret string }{
		{h, "s3cr3tv4lu3x0y9y"},
		{h, ""},
		{"", ""},
		{h[:62], "s3cr3tv4lu3x0y9z"},
		{"zz" + h[2:], "s3cr3tv4lu3x0y9z"},
		{strings.ToUpper(h) + "00", "s3cr3tv4lu3x0y9z"},
	} {
		if VerifySecret(tc.stored, tc.secret) {
			t.Errorf("VerifySecret(%q, %q) = true", tc.stored, tc.secret)
		}
	}
}

func TestTokenRecordCheck(t *testing.T) {
	tok := Token{CAHash: testHash, ID: "abc123", Secret: "s3cr3tv4lu3x0y9z"}
	base := NewTokenRecord(tok, Identity{Role: RoleAgent, ACLRole: "agent"}, t0, time.Hour)
	if base.ExpiresAt != t0.Add(time.Hour) || base.SecretHash != HashSecret(tok.Secret) || base.ID != "abc123" || base.NodeName != "" {
		t.Fatalf("NewTokenRecord = %+v", base)
	}
	revoked := base
	revoked.Revoked = true
	forever := NewTokenRecord(tok, Identity{Role: RoleAgent}, t0, 0)
	for _, tc := range []struct {
		name   string
		rec    TokenRecord
		secret string
		now    time.Time
		want   error
	}{
		{"valid", base, tok.Secret, t0, nil},
		{"just before expiry", base, tok.Secret, t0.Add(time.Hour - time.Nanosecond), nil},
		{"at expiry", base, tok.Secret, t0.Add(time.Hour), ErrTokenExpired},
		{"after expiry", base, tok.Secret, t0.Add(2 * time.Hour), ErrTokenExpired},
		{"wrong secret", base, "s3cr3tv4lu3x0y9a", t0, ErrTokenSecret},
		{"wrong secret, expired", base, "wrong", t0.Add(2 * time.Hour), ErrTokenSecret},
		{"wrong secret, revoked", revoked, "wrong", t0, ErrTokenSecret},
		{"revoked", revoked, tok.Secret, t0, ErrTokenRevoked},
		{"revoked and expired", revoked, tok.Secret, t0.Add(2 * time.Hour), ErrTokenRevoked},
		{"no expiry", forever, tok.Secret, t0.Add(100 * 365 * 24 * time.Hour), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rec.Check(tc.secret, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Check = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q echoes the secret", err)
			}
		})
	}
}

func TestTokenRecordIdentityFor(t *testing.T) {
	tok := Token{CAHash: testHash, ID: "abc123", Secret: "s3cr3tv4lu3x0y9z"}
	grant := Identity{Role: RoleClient, ACLRole: "submit", Namespaces: []string{"team-a"}}
	open := NewTokenRecord(tok, grant, t0, time.Hour)
	id, err := open.IdentityFor("alice")
	want := Identity{Name: "alice", Role: RoleClient, ACLRole: "submit", Namespaces: []string{"team-a"}, Token: "abc123"}
	if err != nil || !reflect.DeepEqual(id, want) {
		t.Errorf("IdentityFor(alice) = %v, %v", id, err)
	}
	if _, err := open.IdentityFor("bad name"); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IdentityFor(bad name) = %v", err)
	}
	grant.Name = "node-7"
	bound := NewTokenRecord(tok, grant, t0, time.Hour)
	if _, err := bound.IdentityFor("node-8"); !errors.Is(err, ErrTokenNodeName) {
		t.Errorf("bound token, other name: %v", err)
	}
	if id, err := bound.IdentityFor("node-7"); err != nil || id.Name != "node-7" {
		t.Errorf("bound token, its name: %v, %v", id, err)
	}
	// The record's namespaces are not shared with the identity it returns.
	id.Namespaces[0] = "changed"
	if open.Namespaces[0] != "team-a" {
		t.Error("IdentityFor shares the record's namespaces")
	}
}
