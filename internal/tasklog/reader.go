package tasklog

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cohort-dev/cohort/storage"
)

// Store is what reading task logs needs of a blob store; storage.Blob satisfies it.
type Store interface {
	List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error)
	Get(ctx context.Context, key string) (io.ReadCloser, error)
}

var _ Store = storage.Blob(nil)

// List returns the segments of job jobID, or of its task task when not empty, ordered
// by task (kind, then index), generation and seq. Other objects under the job's log
// prefix are skipped.
func List(ctx context.Context, s Store, jobID, task string) ([]Segment, error) {
	prefix := Prefix(jobID)
	if task != "" {
		prefix += task + "/"
	}
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("tasklog: list %s: %w", prefix, err)
	}
	segs := make([]Segment, 0, len(objs))
	for _, o := range objs {
		seg, err := ParseKey(jobID, o.Key)
		if err != nil {
			continue
		}
		seg.Size = o.Size
		segs = append(segs, seg)
	}
	slices.SortFunc(segs, compareSegments)
	return segs, nil
}

// compareSegments orders segments by task kind, task index, generation and seq.
func compareSegments(a, b Segment) int {
	ak, ai := splitTask(a.Task)
	bk, bi := splitTask(b.Task)
	return cmp.Or(cmp.Compare(ak, bk), cmp.Compare(ai, bi), cmp.Compare(a.Generation, b.Generation),
		cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Key, b.Key))
}

func splitTask(task string) (string, int) {
	kind, idx, _ := strings.Cut(task, "-")
	n, _ := strconv.Atoi(idx)
	return kind, n
}

// Read returns a segment's lines. A segment larger than MaxSegmentBytes is an error.
func Read(ctx context.Context, s Store, seg Segment) ([]string, error) {
	rc, err := s.Get(ctx, seg.Key)
	if err != nil {
		return nil, fmt.Errorf("tasklog: read %s: %w", seg.Key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxSegmentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tasklog: read %s: %w", seg.Key, err)
	}
	if len(data) > MaxSegmentBytes {
		return nil, fmt.Errorf("tasklog: segment %s is larger than %d bytes", seg.Key, MaxSegmentBytes)
	}
	return SplitLines(data), nil
}

// Line is one line of a task's log with the generation of its segment.
type Line struct {
	Generation uint64
	Text       string
}

// Tail returns the last n lines of segs (one task's segments, in order), reading
// segments from the newest back only as far as it needs.
func Tail(ctx context.Context, s Store, segs []Segment, n int) ([]Line, error) {
	var out []Line
	for i := len(segs) - 1; i >= 0 && len(out) < n; i-- {
		lines, err := Read(ctx, s, segs[i])
		if err != nil {
			return nil, err
		}
		if k := n - len(out); len(lines) > k {
			lines = lines[len(lines)-k:]
		}
		got := make([]Line, 0, len(lines)+len(out))
		for _, l := range lines {
			got = append(got, Line{Generation: segs[i].Generation, Text: l})
		}
		out = append(got, out...)
	}
	return out, nil
}
