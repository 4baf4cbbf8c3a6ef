package pki

import (
	"crypto/x509"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseToken checks that ParseToken never panics, that what it accepts is a
// canonical token that survives String and a second parse, and that its errors never
// depend on the secret's characters (so they cannot echo it): rotating every letter and
// digit of the secret part changes no error message. More seeds live in
// testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	valid := "COH1" + testHash + "::abc123.s3cr3tv4lu3x0y9z"
	for _, s := range []string{
		valid,
		" " + valid + "\n",
		"",
		"COH1",
		"COH1" + testHash,
		"COH1" + testHash + "::",
		"COH1" + testHash + "::abc123.",
		"COH1" + testHash + "::abc123.S3CR3TV4LU3X0Y9Z",
		"COH1" + testHash + ":::abc123.s3cr3tv4lu3x0y9z",
		"COH1" + strings.ToUpper(testHash) + "::abc123.s3cr3tv4lu3x0y9z",
		"COH1" + testHash[:63] + "::abc123.s3cr3tv4lu3x0y9z",
		"COH1" + testHash + "::abc123.s3cr3t.4lu3x0y9z",
		"COH2" + testHash + "::abc123.s3cr3tv4lu3x0y9z",
		"COH1" + testHash + "::abc123.s3cr3tv4lu3x0y9\u00e9",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			var fe *TokenFormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v is not a *TokenFormatError", err)
			}
			if rotated := rotateSecret(s); rotated != s {
				_, err2 := ParseToken(rotated)
				if err2 == nil || err2.Error() != err.Error() {
					t.Fatalf("the error depends on the secret's characters:\n%v\n%v", err, err2)
				}
			}
			return
		}
		if !tokenRE.MatchString(tok.String()) || tok.String() != strings.TrimSpace(s) {
			t.Fatalf("accepted %q as %q", s, tok.String())
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip: %#v, %v; want %#v", again, err, tok)
		}
		if want := strings.TrimSuffix(tok.String(), tok.Secret) + "******"; tok.Redacted() != want {
			t.Fatalf("Redacted() = %q, want %q", tok.Redacted(), want)
		}
	})
}

// rotateSecret maps each letter and digit after the first "::" and the first '.'
// after it (where the secret is) to another of its class: a-z and A-Z by 13, 0-9 by
// 5. Every other byte is kept, so the token's structure and character classes are
// unchanged.
func rotateSecret(s string) string {
	i := strings.Index(s, "::")
	if i < 0 {
		return s
	}
	j := strings.IndexByte(s[i+2:], '.')
	if j < 0 {
		return s
	}
	b := []byte(s)
	for k := i + 2 + j + 1; k < len(b); k++ {
		switch c := b[k]; {
		case 'a' <= c && c <= 'z':
			b[k] = 'a' + (c-'a'+13)%26
		case 'A' <= c && c <= 'Z':
			b[k] = 'A' + (c-'A'+13)%26
		case '0' <= c && c <= '9':
			b[k] = '0' + (c-'0'+5)%10
		}
	}
	return string(b)
}

// FuzzIdentityOf checks that IdentityOf never panics on any certificate x509 parses,
// and that every identity it accepts is valid and is what CA.Sign writes back.
func FuzzIdentityOf(f *testing.F) {
	ca := newTestCA(f, "cohort-ca", t0)
	for _, id := range []Identity{
		{Name: "coord-1", Role: RoleCoordinator},
		{Name: "node-1", Role: RoleAgent, ACLRole: "agent", Namespaces: []string{"default"}},
		{Name: "alice", Role: RoleClient, ACLRole: "submit", Namespaces: []string{"team-a", "team-b"}},
	} {
		f.Add(issueLeaf(f, ca, SignRequest{Identity: id}, t0).Raw)
	}
	f.Add(ca.Certificate().Raw)
	tmpl := agentTemplate()
	tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: "cohort", Host: "role", Path: "/client"})
	f.Add(signTemplate(f, ca, tmpl).Raw)
	f.Add([]byte("junk"))
	_, csr, err := NewKeyAndCSR("fuzz")
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		id, err := IdentityOf(cert)
		if err != nil {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Fatalf("error %v does not wrap ErrInvalidIdentity", err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("IdentityOf accepted an invalid identity %#v: %v", id, err)
		}
		certPEM, err := ca.Sign(SignRequest{CSR: csr, Identity: id}, t0)
		if err != nil {
			t.Fatalf("Sign(%#v): %v", id, err)
		}
		back, err := IdentityOf(firstCert(t, certPEM))
		if err != nil || !reflect.DeepEqual(back, id) {
			t.Fatalf("re-signed identity %#v, %v; want %#v", back, err, id)
		}
	})
}
