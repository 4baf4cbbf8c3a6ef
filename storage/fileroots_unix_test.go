//go:build unix

package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/storage"
)

// TestOpenRefusesFIFOs checks that a FIFO is refused after a stat, never opened: an
// open of a FIFO blocks until a writer comes (`cohort serve --model` on a FIFO hung
// and ignored SIGTERM), and a FIFO outside the data roots must not even be touched.
func TestOpenRefusesFIFOs(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "data")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	inFIFO, outFIFO := filepath.Join(root, "pipe.csv"), filepath.Join(base, "pipe")
	for _, p := range []string{inFIFO, outFIFO} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
	}
	if err := os.Symlink(outFIFO, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	roots := []string{root}
	tests := []struct {
		name    string
		open    func() error
		wantErr string
	}{
		{"within, FIFO in the root", func() error {
			_, _, err := storage.OpenFileURIWithin("file://"+inFIFO, roots)
			return err
		}, "not a regular file (a named pipe)"},
		{"within, FIFO outside the roots", func() error {
			_, _, err := storage.OpenFileURIWithin("file://"+outFIFO, roots)
			return err
		}, "outside the data roots"},
		{"within, symlink to a FIFO outside", func() error {
			_, _, err := storage.OpenFileURIWithin("file://"+filepath.Join(root, "link"), roots)
			return err
		}, "outside the data roots"},
		{"OpenFileURI", func() error {
			_, _, err := storage.OpenFileURI("file://" + inFIFO)
			return err
		}, "not a regular file (a named pipe)"},
		{"OpenRegularFile", func() error {
			_, _, err := storage.OpenRegularFile(inFIFO)
			return err
		}, "not a regular file (a named pipe)"},
		{"OpenRegularFile, device", func() error {
			_, _, err := storage.OpenRegularFile("/dev/null")
			return err
		}, "not a regular file (a device)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- tc.open() }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want containing %q", err, tc.wantErr)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the open blocked on a FIFO")
			}
		})
	}
}
