package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
)

// openPTY opens a pseudo-terminal pair of cols x rows (posix_openpt, unlockpt,
// ptsname with x/sys/unix).
func openPTY(t *testing.T, cols, rows uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open pty slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		t.Fatalf("set window size: %v", err)
	}
	return m, s
}

// screen is a minimal terminal of cols columns: it keeps the lines written, handles
// \r, \n, ESC[K (erase to the end of the line) and counts the auto-wraps (a character
// written past the last column) of progress lines (those starting with "[").
type screen struct {
	cols  int
	lines [][]byte
	col   int
	wraps int
}

func (s *screen) write(b []byte) {
	if len(s.lines) == 0 {
		s.lines = [][]byte{nil}
	}
	for i := 0; i < len(b); i++ {
		cur := len(s.lines) - 1
		switch c := b[i]; {
		case c == '\r':
			s.col = 0
		case c == '\n':
			s.lines = append(s.lines, nil)
			s.col = 0
		case c == 0x1b && i+2 < len(b) && b[i+1] == '[' && b[i+2] == 'K':
			s.lines[cur] = s.lines[cur][:min(s.col, len(s.lines[cur]))]
			i += 2
		case c >= 0x20:
			if s.col >= s.cols {
				if bytes.HasPrefix(s.lines[cur], []byte("[")) {
					s.wraps++
				}
				s.lines = append(s.lines, nil)
				cur++
				s.col = 0
			}
			for len(s.lines[cur]) <= s.col {
				s.lines[cur] = append(s.lines[cur], ' ')
			}
			s.lines[cur][s.col] = c
			s.col++
		}
	}
}

// TestProgressBarOnPTYAt80Columns runs `cohort job submit --wait` as a process whose
// output is an 80-column pseudo-terminal, against a dev cluster whose chief reports
// every 4 steps. The live line is redrawn in place many times, shows an ETA before the
// job ends, never wraps, and leaves exactly one progress line on the screen between
// the state lines.
func TestProgressBarOnPTYAt80Columns(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t),
		Mutate: func(cfg *node.Config) {
			for i := range cfg.Workers {
				cfg.Workers[i].ProgressInterval, cfg.Workers[i].ProgressEverySteps = -1, 4
			}
		}})
	spec := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(spec, exampleSpec(t, "epochs: 30", "epochs: 3"), 0o644); err != nil {
		t.Fatal(err)
	}
	master, slave := openPTY(t, 80, 24)
	defer master.Close()
	cmd := exec.CommandContext(ctx, bin, "job", "submit", spec, "--wait", "--address", c.GRPCAddr)
	// Both outputs on the terminal, as a user has them: the final summary's long URIs
	// wrap, which is fine; the progress line must not.
	cmd.Stdout, cmd.Stderr = slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var raw bytes.Buffer
	readDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(&raw, master)
		readDone <- err
	}()
	waitErr := cmd.Wait()
	// Once the child has exited and the last slave descriptor is closed, reading the
	// master ends with EIO after the buffered output.
	if err := <-readDone; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatalf("read pty: %v", err)
	}
	out := raw.String()
	if waitErr != nil {
		t.Fatalf("job submit --wait: %v\n%s", waitErr, out)
	}
	redraws := strings.Count(out, "\r\x1b[K")
	var etaBeforeEnd bool
	for _, frame := range strings.Split(out, "\r\x1b[K") {
		line, _, _ := strings.Cut(frame, "\r")
		if strings.HasPrefix(line, "[") && strings.Contains(line, "ETA ") && !strings.Contains(line, "100%") {
			etaBeforeEnd = true
		}
		if n := len(line); strings.HasPrefix(line, "[") && n > 79 {
			t.Errorf("a live line of %d columns: %q", n, line)
		}
	}
	scr := &screen{cols: 80}
	scr.write(raw.Bytes())
	var bars, states []string
	for _, l := range scr.lines {
		s := strings.TrimRight(string(l), " ")
		switch {
		case strings.HasPrefix(s, "["):
			bars = append(bars, s)
		case strings.HasPrefix(s, "job "):
			states = append(states, s)
		}
	}
	t.Logf("%d redraws; screen:\n%s", redraws, bytes.Join(scr.lines, []byte("\n")))
	if scr.wraps != 0 || len(bars) != 1 || redraws < 5 || !etaBeforeEnd {
		t.Fatalf("%d wraps, %d progress lines on the screen (want 1), %d redraws (want >= 5), ETA before the end %v", scr.wraps, len(bars), redraws, etaBeforeEnd)
	}
	if !strings.Contains(bars[0], "100%") || !slices.ContainsFunc(states, func(s string) bool { return strings.HasSuffix(s, ": succeeded") }) {
		t.Fatalf("final progress %q, states %q", bars[0], states)
	}
}
