package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Join token format: COH1<ca-hash>::<id>.<secret>.
const (
	// TokenPrefix starts every join token; the digit is the format version.
	TokenPrefix = "COH1"
	// TokenIDLen is the length of a token id.
	TokenIDLen = 6
	// TokenSecretLen is the length of a token secret.
	TokenSecretLen = 16

	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
	hashHexLen     = 2 * sha256.Size
	tokenSeparator = "::"
	redactedSecret = "******"
)

// Errors about join tokens.
var (
	// ErrMalformedToken is wrapped by every ParseToken error (as a *TokenFormatError).
	ErrMalformedToken = errors.New("pki: malformed join token")
	// ErrTokenSecret means a secret does not match the token's stored hash.
	ErrTokenSecret = errors.New("pki: join token secret does not match")
	// ErrTokenExpired means the token's ExpiresAt has passed.
	ErrTokenExpired = errors.New("pki: join token expired")
	// ErrTokenRevoked means the token was revoked.
	ErrTokenRevoked = errors.New("pki: join token revoked")
	// ErrTokenNodeName means the token is bound to another node name.
	ErrTokenNodeName = errors.New("pki: join token is bound to another node name")
)

// TokenFormatError says which part of a join token is malformed. Its message never
// contains the token's secret.
type TokenFormatError struct {
	// Part is "prefix", "ca hash", "separator", "id" or "secret".
	Part string
	// Reason says what is wrong with it.
	Reason string
}

func (e *TokenFormatError) Error() string {
	return fmt.Sprintf("%v: %s: %s (want %s<64 hex CA hash>::<6 [a-z0-9] id>.<16 [a-z0-9] secret>)", ErrMalformedToken, e.Part, e.Reason, TokenPrefix)
}

// Unwrap returns ErrMalformedToken.
func (e *TokenFormatError) Unwrap() error { return ErrMalformedToken }

// Token is a join token.
type Token struct {
	// CAHash pins the cluster CA (see CA.Hash).
	CAHash string
	// ID names the token; it is not secret, and is how the coordinator finds its
	// TokenRecord.
	ID string
	// Secret proves the bearer was given the token.
	Secret string
}

// GenerateToken returns a new token pinning caHash, with a random id and secret from
// crypto/rand.
func GenerateToken(caHash string) (Token, error) {
	if err := checkHash(caHash); err != nil {
		return Token{}, &TokenFormatError{Part: "ca hash", Reason: err.Error()}
	}
	id, err := randomString(TokenIDLen)
	if err != nil {
		return Token{}, fmt.Errorf("pki: generate token: %w", err)
	}
	secret, err := randomString(TokenSecretLen)
	if err != nil {
		return Token{}, fmt.Errorf("pki: generate token: %w", err)
	}
	return Token{CAHash: caHash, ID: id, Secret: secret}, nil
}

// ParseToken parses a join token, ignoring white space around it. Its errors are
// *TokenFormatError values naming the part that is wrong; they never echo the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		return Token{}, &TokenFormatError{Part: "prefix", Reason: "the token does not start with " + TokenPrefix}
	}
	hash, tail, found := strings.Cut(rest, tokenSeparator)
	if !found {
		// Blame the hash if it is wrong, else the missing separator after it.
		if err := checkHash(rest[:min(len(rest), hashHexLen)]); err != nil {
			return Token{}, &TokenFormatError{Part: "ca hash", Reason: err.Error()}
		}
		return Token{}, &TokenFormatError{Part: "separator", Reason: fmt.Sprintf("%q must follow the %d-digit CA hash", tokenSeparator, hashHexLen)}
	}
	if err := checkHash(hash); err != nil {
		return Token{}, &TokenFormatError{Part: "ca hash", Reason: err.Error()}
	}
	id, secret, found := strings.Cut(tail, ".")
	if !found {
		return Token{}, &TokenFormatError{Part: "separator", Reason: "'.' must separate the id from the secret"}
	}
	if err := checkTokenPart(id, TokenIDLen); err != nil {
		return Token{}, &TokenFormatError{Part: "id", Reason: err.Error()}
	}
	if err := checkTokenPart(secret, TokenSecretLen); err != nil {
		return Token{}, &TokenFormatError{Part: "secret", Reason: err.Error()}
	}
	return Token{CAHash: hash, ID: id, Secret: secret}, nil
}

// String returns the whole token, secret included: give it only to whoever joins.
func (t Token) String() string {
	return TokenPrefix + t.CAHash + tokenSeparator + t.ID + "." + t.Secret
}

// Redacted returns the token with its secret replaced by asterisks, for logs.
func (t Token) Redacted() string {
	return TokenPrefix + t.CAHash + tokenSeparator + t.ID + "." + redactedSecret
}

// LogValue logs the token redacted (slog.LogValuer).
func (t Token) LogValue() slog.Value { return slog.StringValue(t.Redacted()) }

// HashSecret returns the lowercase hex SHA-256 of a token secret: what a TokenRecord
// stores. A fast hash is right here, unlike for passwords: secrets are 16 characters
// from crypto/rand over a 36-letter alphabet (about 83 bits), so guessing one from
// its hash is out of reach however fast each guess is.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// VerifySecret reports whether secret hashes to storedHash, comparing in constant
// time.
func VerifySecret(storedHash, secret string) bool {
	want, err := hex.DecodeString(storedHash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(want, got[:]) == 1
}

// TokenRecord is what the coordinators keep, in Raft, about a join token: never the
// secret, only its hash, and the identity the token grants.
type TokenRecord struct {
	// ID is the token's id.
	ID string
	// SecretHash is HashSecret of the token's secret.
	SecretHash string
	// Role, ACLRole and Namespaces are the identity a certificate issued for the token
	// carries (see Identity).
	Role       Role
	ACLRole    string
	Namespaces []string
	// NodeName, when set, is the only name the token may join as.
	NodeName string
	// CreatedAt is when the token was made.
	CreatedAt time.Time
	// ExpiresAt is when the token stops working; zero means never.
	ExpiresAt time.Time
	// Revoked marks a token that no longer works.
	Revoked bool
}

// NewTokenRecord returns the record of tok granting id's role, ACL role and
// namespaces, created at now and expiring ttl later (never if ttl is zero). A
// non-empty id.Name binds the token to that node name.
func NewTokenRecord(tok Token, id Identity, now time.Time, ttl time.Duration) TokenRecord {
	r := TokenRecord{
		ID: tok.ID, SecretHash: HashSecret(tok.Secret),
		Role: id.Role, ACLRole: id.ACLRole, Namespaces: slices.Clone(id.Namespaces),
		NodeName: id.Name, CreatedAt: now,
	}
	if ttl > 0 {
		r.ExpiresAt = now.Add(ttl)
	}
	return r
}

// Check reports whether secret opens the token at now. The secret is checked first, so
// that whoever lacks it learns nothing about the token: ErrTokenSecret, then
// ErrTokenRevoked, then ErrTokenExpired.
func (r TokenRecord) Check(secret string, now time.Time) error {
	if !VerifySecret(r.SecretHash, secret) {
		return fmt.Errorf("%w (token %s)", ErrTokenSecret, r.ID)
	}
	if r.Revoked {
		return fmt.Errorf("%w (token %s)", ErrTokenRevoked, r.ID)
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		return fmt.Errorf("%w (token %s at %s)", ErrTokenExpired, r.ID, r.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// IdentityFor returns the identity a node joining as name with this token gets: the
// token's role, ACL role and namespaces, and name, which must equal NodeName when the
// token is bound (ErrTokenNodeName) and be a valid identity name. Call it only after
// Check.
func (r TokenRecord) IdentityFor(name string) (Identity, error) {
	if r.NodeName != "" && name != r.NodeName {
		return Identity{}, fmt.Errorf("%w: token %s is for %q, not %q", ErrTokenNodeName, r.ID, r.NodeName, name)
	}
	id := Identity{Name: name, Role: r.Role, ACLRole: r.ACLRole, Namespaces: slices.Clone(r.Namespaces), Token: r.ID}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// checkHash checks a CA hash: 64 lowercase hex digits.
func checkHash(h string) error {
	if len(h) != hashHexLen {
		return fmt.Errorf("the CA hash has %d characters; want %d lowercase hex digits", len(h), hashHexLen)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("character %d of the CA hash is not a lowercase hex digit", i+1)
		}
	}
	return nil
}

// checkTokenPart checks an id or secret: n characters of [a-z0-9]. The error names
// only lengths and positions.
func checkTokenPart(s string, n int) error {
	if len(s) != n {
		return fmt.Errorf("has %d characters; want %d of [a-z0-9]", len(s), n)
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(tokenAlphabet, rune(s[i])) {
			return fmt.Errorf("character %d is not one of [a-z0-9]", i+1)
		}
	}
	return nil
}

// randomString returns n characters of tokenAlphabet from crypto/rand, unbiased
// (bytes at or above the largest multiple of the alphabet's size are dropped).
func randomString(n int) (string, error) {
	const limit = 256 - 256%len(tokenAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out), nil
}
