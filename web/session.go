package web

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"
)

// secretBytes is the size of every random secret the dashboard hands out: session ids,
// CSRF tokens and login-form nonces (256 bits).
const secretBytes = 32

// secretLen is the length of such a secret in unpadded base64url.
var secretLen = base64.RawURLEncoding.EncodedLen(secretBytes)

// secretEncoding decodes secrets strictly: no padding, no stray bits, so that each
// secret has exactly one spelling.
var secretEncoding = base64.RawURLEncoding.Strict()

// newSecret returns 256 random bits from crypto/rand, base64url-encoded.
func newSecret() string {
	var b [secretBytes]byte
	_, _ = rand.Read(b[:]) // never returns an error (since Go 1.24 it crashes instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// parseSecret decodes a secret from outside (a cookie, a form field): exactly
// secretLen characters of unpadded base64url that decode to secretBytes bytes.
func parseSecret(s string) ([secretBytes]byte, bool) {
	var b [secretBytes]byte
	if len(s) != secretLen {
		return b, false
	}
	n, err := secretEncoding.Decode(b[:], []byte(s))
	return b, err == nil && n == secretBytes
}

// equalSecret compares a secret sent by a client with the expected one in constant
// time (given their lengths).
func equalSecret(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// sessionKey is what the store indexes a session by: the SHA-256 of its id's bytes,
// so that neither the store's memory nor a log line holds an id a client could replay.
type sessionKey [sha256.Size]byte

// keyOf returns the key of a session id, if the id is well-formed.
func keyOf(id string) (sessionKey, bool) {
	raw, ok := parseSecret(id)
	if !ok {
		return sessionKey{}, false
	}
	return sha256.Sum256(raw[:]), true
}

// logID is a short, non-reversible name for a session in logs.
func (k sessionKey) logID() string { return hex.EncodeToString(k[:4]) }

// session is one login. The token stays on the server: every request re-checks it, so
// a token removed from the tokens file stops working at once.
type session struct {
	key       sessionKey
	token     string // the ACL token the user logged in with
	csrf      string // the per-session CSRF token pages and scripts send back
	created   time.Time
	idleUntil time.Time // last use + the idle timeout
}

// sessionStore holds the logins in memory, least recently used last, at most max of
// them. Sessions die after an idle timeout (sliding) or an absolute lifetime, which
// ever comes first.
type sessionStore struct {
	idle, lifetime time.Duration
	max            int
	now            func() time.Time

	mu    sync.Mutex
	byKey map[sessionKey]*list.Element // of *session
	lru   list.List                    // front: most recently used
}

func newSessionStore(idle, lifetime time.Duration, max int, now func() time.Time) *sessionStore {
	return &sessionStore{idle: idle, lifetime: lifetime, max: max, now: now, byKey: map[sessionKey]*list.Element{}}
}

// create starts a session for token and returns its id (for the cookie, never kept
// here) and the session. To stay within max it first drops sessions that are idle
// past the timeout, then the least recently used ones; evicted counts the latter.
func (s *sessionStore) create(token string) (id string, sess session, evicted int) {
	id = newSecret()
	key, _ := keyOf(id)
	now := s.now()
	sess = session{key: key, token: token, csrf: newSecret(), created: now, idleUntil: now.Add(s.idle)}

	s.mu.Lock()
	defer s.mu.Unlock()
	for e := s.lru.Back(); e != nil && !now.Before(e.Value.(*session).idleUntil); e = s.lru.Back() {
		s.remove(e)
	}
	for s.lru.Len() >= s.max {
		s.remove(s.lru.Back())
		evicted++
	}
	stored := sess
	s.byKey[sess.key] = s.lru.PushFront(&stored)
	return id, sess, evicted
}

// lookup returns the live session an id names and marks it used now (the idle timeout
// slides). An expired session is dropped; a malformed id finds nothing.
func (s *sessionStore) lookup(id string) (session, bool) {
	key, ok := keyOf(id)
	if !ok {
		return session{}, false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byKey[key]
	if !ok {
		return session{}, false
	}
	sess := e.Value.(*session)
	if !now.Before(sess.idleUntil) || !now.Before(sess.created.Add(s.lifetime)) {
		s.remove(e)
		return session{}, false
	}
	sess.idleUntil = now.Add(s.idle)
	s.lru.MoveToFront(e)
	return *sess, true
}

// delete ends a session (logout, or its token was refused).
func (s *sessionStore) delete(key sessionKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[key]; ok {
		s.remove(e)
	}
}

// len is how many sessions are held (live or not yet swept).
func (s *sessionStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// remove drops e; s.mu is held.
func (s *sessionStore) remove(e *list.Element) {
	delete(s.byKey, e.Value.(*session).key)
	s.lru.Remove(e)
}
