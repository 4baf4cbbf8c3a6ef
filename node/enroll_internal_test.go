package node

import (
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
)

// TestCertExpired: a node agent whose certificate expired while it was down enrolls
// again with its token (it cannot renew with an expired certificate); one still valid
// does not.
func TestCertExpired(t *testing.T) {
	ca, err := pki.NewCA("c", time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id := pki.Identity{Name: "w1", Role: pki.RoleAgent}
	for _, tc := range []struct {
		name   string
		issued time.Time
		want   bool
	}{
		{"valid", time.Now(), false},
		{"expired", time.Now().Add(-3 * time.Hour), true},
	} {
		dir := t.TempDir()
		certPEM, keyPEM, err := ca.IssueFor(id, nil, time.Hour, tc.issued)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.SaveKeyPair(dir, "node", certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		if got := certExpired(dir); got != tc.want {
			t.Errorf("%s: certExpired %v, want %v", tc.name, got, tc.want)
		}
	}
	if certExpired(t.TempDir()) {
		t.Error("an empty directory counts as expired")
	}
}
