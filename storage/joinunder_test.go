package storage

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinUnder checks Local's last line of defence: whatever ValidateKey lets
// through, no key maps to a file outside the storage directory.
func TestJoinUnder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "blobs")
	tests := []struct {
		key, want, wantErr string
	}{
		{key: "a/b", want: filepath.Join(root, "a", "b")},
		{key: "jobs/j/checkpoints/000000000001/shard-000.ckpt", want: filepath.Join(root, "jobs", "j", "checkpoints", "000000000001", "shard-000.ckpt")},
		{key: "a/./b", want: filepath.Join(root, "a", "b")},
		{key: "/abs/x", wantErr: "absolute"},
		{key: "/", wantErr: "absolute"},
		{key: "..", wantErr: "outside"},
		{key: "../x", wantErr: "outside"},
		{key: "a/../../x", wantErr: "outside"},
		{key: "a/../..", wantErr: "outside"},
		{key: ".", wantErr: "outside"},
		{key: "a/..", wantErr: "outside"},
		{key: "", wantErr: "outside"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got, err := joinUnder(root, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("joinUnder(%q) = %q, %v; want an error containing %q", tc.key, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("joinUnder(%q) = %q, %v; want %q", tc.key, got, err, tc.want)
			}
		})
	}
}
