package tasklog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

func localStore(t *testing.T) storage.Blob {
	t.Helper()
	s, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// readAll returns every line of the job's logs of task, in order.
func readAll(t *testing.T, s Store, job, task string) ([]string, []Segment) {
	t.Helper()
	segs, err := List(context.Background(), s, job, task)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, seg := range segs {
		l, err := Read(context.Background(), s, seg)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l...)
	}
	return lines, segs
}

func TestSegmentKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		task     string
		gen, seq uint64
		final    bool
	}{{"worker-0", 1, 0, false}, {"ps-12", 9_999_999_999, 99_999_999, true}, {"worker-3", 0, 7, true}} {
		key := SegmentKey("job-1", tc.task, tc.gen, tc.seq, tc.final)
		seg, err := ParseKey("job-1", key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if seg.Task != tc.task || seg.Generation != tc.gen || seg.Seq != tc.seq || seg.Final != tc.final || seg.Key != key {
			t.Errorf("%s parsed as %+v", key, seg)
		}
	}
	for _, key := range []string{
		"jobs/job-1/logs/worker-0/0000000001-00000000.txt",
		"jobs/job-1/logs/worker-0/0000000001-0000000.log",
		"jobs/job-1/logs/worker-0/+000000001-00000000.log",
		"jobs/job-1/logs/chief-0/0000000001-00000000.log",
		"jobs/job-1/logs/worker-01/0000000001-00000000.log",
		"jobs/job-2/logs/worker-0/0000000001-00000000.log",
		"jobs/job-1/logs/worker-0/x/0000000001-00000000.log",
		"jobs/job-1/checkpoints/000000000040/manifest.json",
	} {
		if _, err := ParseKey("job-1", key); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKey(%q): %v, want ErrBadKey", key, err)
		}
	}
	if TaskName(cohortv1.TaskKind_TASK_KIND_PS_SHARD, 2) != "ps-2" || TaskName(cohortv1.TaskKind_TASK_KIND_WORKER, 0) != "worker-0" {
		t.Error("TaskName")
	}
}

// TestWriterSegments: lines become segments on Flush and a final one on Close; a second
// writer of the same task and generation takes the next free seq; lines are read back
// in order, with tail reading from the newest segment back.
func TestWriterSegments(t *testing.T) {
	for name, store := range map[string]func(t *testing.T) storage.Blob{
		"local": localStore,
		"s3": func(t *testing.T) storage.Blob {
			srv := s3test.Start(t)
			s, err := storage.NewS3(context.Background(), srv.Config())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := store(t)
			cfg := Config{Store: s, Logger: quiet()}
			w, err := cfg.Open("job-1", "worker-0", 2)
			if err != nil {
				t.Fatal(err)
			}
			log := w.Logger(quiet())
			log.Info("first", "step", 1)
			log.Debug("not kept: below Info")
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			log.Warn("second", "text", "a b")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			log.Info("after close: dropped")
			// The task started again in the same generation: its segments follow.
			w2, err := cfg.Open("job-1", "worker-0", 2)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(w2, `{"msg":"third"}`)
			if err := w2.Close(); err != nil {
				t.Fatal(err)
			}
			lines, segs := readAll(t, s, "job-1", "worker-0")
			if len(segs) != 3 || segs[0].Final || !segs[1].Final || !segs[2].Final || segs[2].Seq != 2 {
				t.Fatalf("segments %+v, want seq 0, 1 (final), 2 (final, of the second writer)", segs)
			}
			if len(lines) != 3 || !strings.Contains(lines[0], `"msg":"first"`) || !strings.Contains(lines[0], `"step":1`) ||
				!strings.Contains(lines[1], `"level":"WARN"`) || lines[2] != `{"msg":"third"}` {
				t.Fatalf("lines %q", lines)
			}
			tail, err := Tail(context.Background(), s, segs, 2)
			if err != nil || len(tail) != 2 || tail[1].Text != lines[2] || tail[0].Text != lines[1] || tail[0].Generation != 2 {
				t.Fatalf("tail 2: %+v %v", tail, err)
			}
			if all, _ := List(context.Background(), s, "job-1", ""); len(all) != 3 {
				t.Fatalf("List of the job: %d segments", len(all))
			}
		})
	}
}

// TestWriterKeepsLinesWhileStorageFails: a segment that cannot be written keeps its
// lines for the next attempt, up to MaxBufferedBytes (the oldest are dropped, and the
// next segment says how much).
func TestWriterKeepsLinesWhileStorageFails(t *testing.T) {
	fb := &storagetest.FaultBlob{Blob: localStore(t)}
	down := errors.New("storage down")
	fb.SetBeforeWrite(func(string, string) error { return down })
	w, err := Config{Store: fb, Logger: quiet(), MaxBufferedBytes: 100}.Open("j", "ps-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		fmt.Fprintf(w, `{"msg":"line %d"}`+"\n", i) // 17 bytes each
	}
	if err := w.Flush(); !errors.Is(err, down) {
		t.Fatalf("flush while down: %v", err)
	}
	for i := 6; i < 10; i++ {
		fmt.Fprintf(w, `{"msg":"line %d"}`+"\n", i)
	}
	fb.SetBeforeWrite(nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines, _ := readAll(t, fb, "j", "ps-1")
	if len(lines) < 2 || !strings.Contains(lines[0], "dropped") || lines[len(lines)-1] != `{"msg":"line 9"}` {
		t.Fatalf("lines %q", lines)
	}
	var b bytes.Buffer
	for _, l := range lines[1:] {
		b.WriteString(l + "\n")
	}
	if b.Len() > 100 {
		t.Errorf("%d bytes kept, limit 100", b.Len())
	}
}

// TestRouterSendsShardLogsToTheirTask: records of a logger carrying job and shard go to
// that shard's open task log as well as to the base handler; others only to the base.
func TestRouterSendsShardLogsToTheirTask(t *testing.T) {
	s := localStore(t)
	var base bytes.Buffer
	r := NewRouter(slog.NewTextHandler(&base, nil), Config{Store: s, Logger: quiet()})
	log := slog.New(r).With("component", "paramserver")
	w, err := r.OpenShard("job-1", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	log.With("job", "job-1", "shard", 1).Info("shard restored", "step", 40)
	log.With("job", "job-1", "shard", 0).Info("another shard's")
	log.Info("the server's own")
	log.With("job", "job-1").WithGroup("g").With("shard", 1).Info("shard inside a group: not routed")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	log.With("job", "job-1", "shard", 1).Info("after close")
	lines, segs := readAll(t, s, "job-1", "ps-1")
	if len(segs) != 1 || segs[0].Generation != 3 || len(lines) != 1 ||
		!strings.Contains(lines[0], `"msg":"shard restored"`) || !strings.Contains(lines[0], `"component":"paramserver"`) {
		t.Fatalf("ps-1 log %q (segments %+v)", lines, segs)
	}
	if n := strings.Count(base.String(), "\n"); n != 5 {
		t.Errorf("base handler got %d lines, want 5:\n%s", n, base.String())
	}
}

// FuzzParseKey: a key either parses into a segment whose key is rebuilt exactly, or is
// an ErrBadKey error.
func FuzzParseKey(f *testing.F) {
	f.Add("jobs/j/logs/worker-0/0000000001-00000000.log")
	f.Add("jobs/j/logs/ps-3/0000000002-00000005-end.log")
	f.Add("jobs/j/logs/ps-3/00000000-2-00000005-end.log")
	f.Add("jobs/j/logs/worker-0/")
	f.Fuzz(func(t *testing.T, key string) {
		seg, err := ParseKey("j", key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("%q: %v", key, err)
			}
			return
		}
		if got := SegmentKey("j", seg.Task, seg.Generation, seg.Seq, seg.Final); got != key {
			t.Fatalf("%q parsed as %+v, which is %q", key, seg, got)
		}
	})
}

// FuzzSplitLines: the lines of any segment are non-empty, valid UTF-8, without a
// newline, at most MaxLineBytes, and a segment of clean lines round-trips.
func FuzzSplitLines(f *testing.F) {
	f.Add([]byte("{\"msg\":\"a\"}\n{\"msg\":\"b\"}\n"))
	f.Add([]byte("no newline"))
	f.Add([]byte("\r\n\n\xff\xfe\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := SplitLines(data)
		for _, l := range lines {
			if l == "" || strings.ContainsRune(l, '\n') || !utf8.ValidString(l) || len(l) > MaxLineBytes*3 {
				t.Fatalf("bad line %q", l)
			}
		}
		if utf8.Valid(data) && !bytes.Contains(data, []byte("\r")) && !bytes.Contains(data, []byte("\n\n")) &&
			len(data) > 0 && data[0] != '\n' && data[len(data)-1] == '\n' && len(data) < MaxLineBytes {
			if got := strings.Join(lines, "\n") + "\n"; got != string(data) {
				t.Fatalf("round trip %q -> %q", data, got)
			}
		}
	})
}
