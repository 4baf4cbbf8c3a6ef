package main

import (
	"fmt"
	"regexp"
	"strings"
)

// dialedAddress is the --address (or COHORT_ADDR, or config file) value the last
// connect dialled, for the hint of a connection error.
var dialedAddress string

// dialTarget finds the address a gRPC transport error names ("dial tcp ADDR: ...").
var dialTarget = regexp.MustCompile(`dial tcp ([^ ]+?):? `)

// connectionHint turns the message of an Unavailable error that says no coordinator
// could be reached, or that TLS trust failed, into an actionable sentence: which
// address was tried and what to do. It returns "" for other Unavailable errors (no
// leader yet, a coordinator shutting down) and for the plaintext-to-TLS case, whose
// message already says what to do.
func connectionHint(msg string) string {
	addr := dialedAddress
	if m := dialTarget.FindStringSubmatch(msg); m != nil && !strings.Contains(addr, ",") {
		addr = m[1]
	}
	if addr == "" {
		addr = "the configured address"
	}
	switch {
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "authentication handshake failed") ||
		strings.Contains(msg, "tls: "):
		cause := msg
		if i := strings.Index(msg, "x509: "); i >= 0 {
			cause = strings.TrimRight(msg[i:], `"`)
			if j := strings.Index(cause, " (possibly"); j >= 0 {
				cause = cause[:j]
			}
		}
		return fmt.Sprintf("TLS with the coordinator at %s failed (%s): this client's CA and certificate are not "+
			"that cluster's; point COHORT_TLS_DIR (or --tls-dir) at the cluster's client credentials "+
			"(`cohort dev` prints them: DATA_DIR/tls)", addr, cause)
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") ||
		strings.Contains(msg, "i/o timeout") || strings.Contains(msg, "network is unreachable") ||
		strings.Contains(msg, "no route to host"):
		cause := "no answer"
		for _, c := range []string{"connection refused", "no such host", "i/o timeout", "network is unreachable", "no route to host"} {
			if strings.Contains(msg, c) {
				cause = c
				break
			}
		}
		return fmt.Sprintf("no coordinator at %s (%s): start one with `cohort dev`, or point COHORT_ADDR (or --address) "+
			"at a running coordinator", addr, cause)
	}
	return ""
}
