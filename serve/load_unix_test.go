//go:build unix

package serve

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/storage"
)

// TestLoadRefusesFIFO is the regression test of security issue #16: `cohort serve
// --model` on a FIFO hung in open and ignored SIGTERM. Load stats first and refuses
// what is not a regular file (a directory is read as a model repository).
func TestLoadRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "model.safetensors")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, loc := range []string{
		fifo,                               // the FIFO itself
		dir,                                // a directory whose model.safetensors is a FIFO
		"file://" + filepath.ToSlash(fifo), // through a file:// URI
		"/dev/zero",                        // a device
	} {
		t.Run(loc, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Load(context.Background(), loc, storage.S3Config{})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("Load(%s): error %v, want a refusal of a non-regular file", loc, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Load(%s) blocked", loc)
			}
		})
	}
	// A missing model still says so.
	if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "none"), storage.S3Config{}); err == nil || !strings.Contains(err.Error(), "no model.safetensors") {
		t.Fatalf("missing model: %v", err)
	}
	_ = os.Remove(fifo)
}
