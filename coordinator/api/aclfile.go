package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// MinSecretLen is the shortest secret a tokens file may hold (a UUID or 32 hex
// characters of `openssl rand -hex 16` are longer).
const MinSecretLen = 16

// maxTokens bounds a tokens file.
const maxTokens = 10000

// tokenEntry is one item of the tokens file.
type tokenEntry struct {
	Name         string   `yaml:"name"`
	Secret       string   `yaml:"secret"`
	SecretSHA256 string   `yaml:"secret_sha256"`
	Role         string   `yaml:"role"`
	Namespaces   []string `yaml:"namespaces"`
}

var (
	tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)
	// namespaceRE is a DNS label, as job namespaces are.
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// ParseTokens decodes an ACL tokens file: a YAML list of tokens,
//
//   - name: ci-team-a              # unique; shown in logs and errors
//     secret: 9f2c...              # at least 16 characters; or
//     # secret_sha256: <64 hex>    # the SHA-256 of the secret, so the file holds no secret
//     role: submit                 # read | submit | admin | agent
//     namespaces: [team-a]         # optional, read and submit tokens: the only namespaces it reads and writes
//
// Unknown fields are errors. Every error names the line and the field, such as
// `line 4: [1].role: "root" is not one of read, submit, admin, agent`.
func ParseTokens(raw []byte) ([]Token, error) {
	var entries []tokenEntry
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&entries); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no tokens: the file is empty (list at least one token)")
		}
		return nil, fmt.Errorf("not a list of tokens: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document: put every token in one list")
	}
	lines := entryLines(raw)
	switch {
	case len(entries) == 0:
		return nil, errors.New("no tokens: the list is empty (list at least one token)")
	case len(entries) > maxTokens:
		return nil, fmt.Errorf("%d tokens, at most %d", len(entries), maxTokens)
	}
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]int{}
	out := make([]Token, 0, len(entries))
	for i, e := range entries {
		at := func(field, format string, args ...any) error {
			prefix := fmt.Sprintf("[%d].%s", i, field)
			if i < len(lines) && lines[i] > 0 {
				prefix = fmt.Sprintf("line %d: %s", lines[i], prefix)
			}
			return fmt.Errorf("%s: %s", prefix, fmt.Sprintf(format, args...))
		}
		if !tokenNameRE.MatchString(e.Name) {
			if e.Name == "" {
				return nil, at("name", "required")
			}
			return nil, at("name", "%q: use letters, digits and . _ @ - (at most 128, starting with a letter or digit)", e.Name)
		}
		if j, dup := names[e.Name]; dup {
			return nil, at("name", "%q is also the name of token [%d]", e.Name, j)
		}
		names[e.Name] = i
		role, err := ParseRole(e.Role)
		if err != nil {
			if e.Role == "" {
				return nil, at("role", "required (read, submit, admin or agent)")
			}
			return nil, at("role", "%v", err)
		}
		tok := Token{Name: e.Name, Role: role}
		switch {
		case e.Secret != "" && e.SecretSHA256 != "":
			return nil, at("secret", "give secret or secret_sha256, not both")
		case e.Secret != "":
			if len(e.Secret) < MinSecretLen {
				return nil, at("secret", "%d characters, at least %d (try: openssl rand -hex 32)", len(e.Secret), MinSecretLen)
			}
			if strings.TrimSpace(e.Secret) != e.Secret || strings.ContainsAny(e.Secret, " \t\r\n") {
				return nil, at("secret", "contains white space")
			}
			tok.hash = sha256.Sum256([]byte(e.Secret))
		case e.SecretSHA256 != "":
			b, err := hex.DecodeString(e.SecretSHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, at("secret_sha256", "want 64 hex characters (sha256sum of the secret)")
			}
			copy(tok.hash[:], b)
		default:
			return nil, at("secret", "required (or secret_sha256)")
		}
		if j, dup := hashes[tok.hash]; dup {
			return nil, at("secret", "token %q has the same secret", entries[j].Name)
		}
		hashes[tok.hash] = i
		if len(e.Namespaces) > 0 && role != RoleSubmit && role != RoleRead {
			return nil, at("namespaces", "only read and submit tokens are limited to namespaces (a %s token acts cluster-wide)", role)
		}
		seen := map[string]bool{}
		for k, ns := range e.Namespaces {
			if !namespaceRE.MatchString(ns) {
				return nil, at(fmt.Sprintf("namespaces[%d]", k), "%q is not a namespace name (lower-case letters, digits and -)", ns)
			}
			if seen[ns] {
				return nil, at(fmt.Sprintf("namespaces[%d]", k), "%q is listed twice", ns)
			}
			seen[ns] = true
			tok.Namespaces = append(tok.Namespaces, ns)
		}
		out = append(out, tok)
	}
	return out, nil
}

// entryLines returns the line of each list item of the document, where it can tell.
func entryLines(raw []byte) []int {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.SequenceNode {
		return nil
	}
	out := make([]int, len(doc.Content[0].Content))
	for i, n := range doc.Content[0].Content {
		out[i] = n.Line
	}
	return out
}
