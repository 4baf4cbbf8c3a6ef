// Package tasklog keeps the log lines of a job's tasks (workers and parameter-server
// shards) in storage, through the same storage.Blob as checkpoints, so that `cohort job
// logs` can read them from any coordinator after the task's node is gone.
//
// Object storage has no append, so a task's lines are written as segment objects:
//
//	jobs/<job>/logs/<task>/<generation>-<seq>.log      lines flushed while the task runs
//	jobs/<job>/logs/<task>/<generation>-<seq>-end.log  the last segment, written at exit
//
// <task> is "worker-<rank>" or "ps-<shard>"; <generation> (10 digits) and <seq> (8
// digits) are zero-padded, so key order is write order. A segment holds whole lines,
// each ending in '\n' (JSON, one slog record a line). Segments are created with
// PutIfAbsent: a second writer of the same task and generation (a task started again)
// takes the next free seq instead of overwriting.
package tasklog

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Limits on what a reader accepts and a writer writes.
const (
	// MaxLineBytes bounds one line; a writer cuts a longer one.
	MaxLineBytes = 64 << 10
	// MaxSegmentBytes bounds one segment; a reader refuses a larger object.
	MaxSegmentBytes = 8 << 20
	maxGeneration   = 9_999_999_999
	maxSeq          = 99_999_999
)

// ErrBadKey marks a key that is not a task log segment's.
var ErrBadKey = errors.New("tasklog: not a task log segment key")

// The kinds of task names: a name is the kind, "-" and the task's index.
const (
	workerTask = "worker" // "worker-<rank>"
	psTask     = "ps"     // "ps-<shard>"
)

// taskRE is a task name: the task kind and its index.
var taskRE = regexp.MustCompile(`^(` + workerTask + `|` + psTask + `)-(0|[1-9][0-9]{0,5})$`)

// ValidTask reports whether task is a task name ("worker-0", "ps-3").
func ValidTask(task string) bool { return taskRE.MatchString(task) }

// TaskName is the name of an allocation's task in logs: "worker-<rank>" or "ps-<shard>".
func TaskName(kind cohortv1.TaskKind, index int32) string {
	if kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
		return taskName(psTask, int(index))
	}
	return taskName(workerTask, int(index))
}

// taskName is the one format of task names.
func taskName(kind string, index int) string { return kind + "-" + strconv.Itoa(index) }

// Prefix is the key prefix of every log segment of a job: "jobs/<job>/logs/".
func Prefix(jobID string) string { return "jobs/" + jobID + "/logs/" }

// Segment is one log object of a task.
type Segment struct {
	Key        string
	Task       string
	Generation uint64
	Seq        uint64
	// Final marks the task's last segment, written when its writer closed.
	Final bool
	Size  int64
}

// SegmentKey is the key of a segment.
func SegmentKey(jobID, task string, generation, seq uint64, final bool) string {
	end := ""
	if final {
		end = "-end"
	}
	return fmt.Sprintf("%s%s/%010d-%08d%s.log", Prefix(jobID), task, generation, seq, end)
}

// ParseKey parses a segment key of jobID. Keys of other jobs, malformed task names,
// numbers that are not zero-padded to their width, and any other suffix are errors
// wrapping ErrBadKey.
func ParseKey(jobID, key string) (Segment, error) {
	bad := func(why string) (Segment, error) {
		return Segment{}, fmt.Errorf("%w: %q: %s", ErrBadKey, key, why)
	}
	rest, ok := strings.CutPrefix(key, Prefix(jobID))
	if !ok || jobID == "" || strings.Contains(jobID, "/") {
		return bad("not under " + Prefix(jobID))
	}
	task, name, ok := strings.Cut(rest, "/")
	if !ok || !ValidTask(task) {
		return bad("no task name (worker-N or ps-N)")
	}
	name, ok = strings.CutSuffix(name, ".log")
	if !ok {
		return bad("no .log suffix")
	}
	name, final := strings.CutSuffix(name, "-end")
	gen, seq, ok := strings.Cut(name, "-")
	if !ok || len(gen) != 10 || len(seq) != 8 {
		return bad("not <generation:10 digits>-<seq:8 digits>")
	}
	g, err1 := parseDigits(gen)
	s, err2 := parseDigits(seq)
	if err1 != nil || err2 != nil {
		return bad("generation and seq must be decimal digits")
	}
	return Segment{Key: key, Task: task, Generation: g, Seq: s, Final: final}, nil
}

// parseDigits parses a run of ASCII digits (strconv alone accepts a sign).
func parseDigits(s string) (uint64, error) {
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// SplitLines splits a segment's content into its lines, without their '\n'. A last
// line without a newline (a segment cut short) is kept; empty lines are dropped; a
// line longer than MaxLineBytes is cut to it.
func SplitLines(data []byte) []string {
	var out []string
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = trimCR(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > MaxLineBytes {
			line = line[:MaxLineBytes]
		}
		out = append(out, strings.ToValidUTF8(string(line), "\uFFFD"))
	}
	return out
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}
