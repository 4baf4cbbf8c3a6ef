package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cohort-dev/cohort/coordinator/scheduler"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
)

// Preflight configures the data pre-flight of SubmitJob and PlanJob: where the
// coordinator can read a job's data (file:// under DataRoots, s3:// through S3) it
// checks that each data URI exists, that its header and a bounded sample parse, and
// that the label and every column the spec names are in it. A problem refuses the job
// (InvalidArgument, each line naming the spec field); data it cannot read is a warning
// in the response, and the job's first step checks it.
type Preflight struct {
	// DataRoots are the directories whose file:// data the coordinator reads (the data
	// roots its workers have when they share its file system, as in `cohort dev`).
	// Empty: file:// data is not checked (a warning).
	DataRoots []string
	// S3 reads s3:// data. Nil: s3:// data is not checked (a warning).
	S3 *storage.S3Config
	// SampleBytes bounds what is read of each object: its header and the complete
	// records within this many bytes; 0 means DefaultPreflightSampleBytes.
	SampleBytes int64
	// Timeout bounds the whole check; 0 means DefaultPreflightTimeout. Data not read
	// in time is a warning.
	Timeout time.Duration
}

// Defaults of Preflight.
const (
	DefaultPreflightSampleBytes = 1 << 20
	DefaultPreflightTimeout     = 5 * time.Second
)

// PreflightError is a job the pre-flight refuses: each problem names its spec field.
// It wraps ErrInvalidArgument; its message is the problems, one a line.
type PreflightError struct{ Problems []string }

func (e *PreflightError) Error() string { return strings.Join(e.Problems, "\n") }

// Unwrap returns ErrInvalidArgument.
func (e *PreflightError) Unwrap() error { return ErrInvalidArgument }

// check runs the pre-flight on a spec the admission has accepted (a nil Preflight
// checks nothing). A spec that
// is not a TrainingJob (a Search) is not checked. It returns the warnings, or a
// *PreflightError.
func (p *Preflight) check(ctx context.Context, raw []byte) ([]string, error) {
	if p == nil {
		return nil, nil
	}
	spec, err := jobs.Parse(raw)
	if err != nil {
		return nil, nil // admission accepted it under its own parser: nothing to check here
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPreflightTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &spec.Spec.Data
	var warnings, problems []string
	type split struct{ field, name, uri string }
	splits := []split{{"spec.data.train", "data.train", d.Train}}
	if d.Validation.URI != "" {
		splits = append(splits, split{"spec.data.validation.uri", "data.validation", d.Validation.URI})
	}
	if d.Test != "" {
		splits = append(splits, split{"spec.data.test", "data.test", d.Test})
	}
	for _, sp := range splits {
		cols, warn, err := p.readColumns(ctx, sp.field, sp.uri, d.Format)
		switch {
		case warn != "":
			warnings = append(warnings, warn)
			continue
		case err != nil:
			problems = append(problems, err.Error())
			continue
		case cols == nil: // a format without named columns (idx)
			continue
		}
		for _, c := range namedColumns(&spec.Spec, sp.name == "data.train") {
			if !slices.Contains(cols, c.name) {
				problems = append(problems, fmt.Sprintf("%s: column %q not in %s%s", c.field, c.name, sp.name, jobs.DidYouMean(c.name, cols)))
			}
		}
	}
	if len(problems) > 0 {
		return warnings, &PreflightError{Problems: problems}
	}
	return warnings, nil
}

// specColumn is a column a spec names, with the field that names it.
type specColumn struct{ field, name string }

// namedColumns are the columns the spec names that every CSV split must have (the
// label, the sequence target), and with train those only the training set must have
// (excluded columns, sequence features, group and time, audited columns).
func namedColumns(s *jobs.Spec, train bool) []specColumn {
	d := &s.Data
	var out []specColumn
	switch d.Format {
	case jobs.FormatCSV:
		if d.Label != "" {
			out = append(out, specColumn{"spec.data.label", d.Label})
		}
		if train {
			for i, c := range d.Exclude {
				out = append(out, specColumn{fmt.Sprintf("spec.data.exclude[%d]", i), c})
			}
			if s.Audit != nil {
				for i, c := range s.Audit.Sensitive {
					out = append(out, specColumn{fmt.Sprintf("spec.audit.sensitive[%d]", i), c})
				}
			}
		}
	case jobs.FormatSequenceCSV:
		sq := d.SequenceCSV
		if sq == nil {
			return nil
		}
		if sq.Target != "" {
			out = append(out, specColumn{"spec.data.sequence_csv.target", sq.Target})
		}
		if train {
			for i, c := range sq.Features {
				out = append(out, specColumn{fmt.Sprintf("spec.data.sequence_csv.features[%d]", i), c})
			}
			if sq.Group != "" {
				out = append(out, specColumn{"spec.data.sequence_csv.group", sq.Group})
			}
			if sq.Time != "" {
				out = append(out, specColumn{"spec.data.sequence_csv.time", sq.Time})
			}
		}
	}
	return out
}

// readColumns opens a data URI and, for the CSV formats, reads its header and checks
// the records of a bounded sample. It returns the columns (nil for idx), or a warning
// when the coordinator cannot read the data, or an error naming field when the data
// is missing or does not parse.
func (p *Preflight) readColumns(ctx context.Context, field, uri, format string) (cols []string, warning string, err error) {
	rc, warning, err := p.open(ctx, field, uri)
	if rc == nil {
		return nil, warning, err
	}
	defer rc.Close()
	if format != jobs.FormatCSV && format != jobs.FormatSequenceCSV {
		return nil, "", nil
	}
	limit := p.SampleBytes
	if limit <= 0 {
		limit = DefaultPreflightSampleBytes
	}
	cols, err = sampleCSV(io.LimitReader(rc, limit), limit)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Sprintf("%s: %s was not read in time (%v); the job's first step checks it", field, uri, ctx.Err()), nil
		}
		return nil, "", fmt.Errorf("%s: %s: %w", field, uri, err)
	}
	return cols, "", nil
}

// open opens a data URI where the coordinator can read it: nil with a warning where it
// cannot, nil with an error where the object is missing.
func (p *Preflight) open(ctx context.Context, field, uri string) (io.ReadCloser, string, error) {
	scheme, _, _, err := jobs.ParseURI(uri)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", field, err)
	}
	cannot := func(why string) (io.ReadCloser, string, error) {
		return nil, fmt.Sprintf("%s: %s not checked: %s; the job's first step checks it", field, uri, why), nil
	}
	var rc io.ReadCloser
	switch scheme {
	case jobs.SchemeFile:
		if len(p.DataRoots) == 0 {
			return cannot("the coordinator reads no file:// data (it may not share the workers' file system)")
		}
		norm := jobs.SchemeFile + "://" + uri[len("file://"):]
		rc, _, err = storage.OpenFileURIWithin(norm, p.DataRoots)
		if errors.Is(err, storage.ErrOutsideRoots) {
			return cannot("it is outside the coordinator's data roots")
		}
		if errors.Is(err, storage.ErrNotFound) {
			return nil, "", fmt.Errorf("%s: %s does not exist%s", field, uri, siblingHint(norm))
		}
	case jobs.SchemeS3:
		if p.S3 == nil {
			return cannot("the coordinator has no S3 endpoint configured")
		}
		rc, err = storage.OpenURI(ctx, uri, *p.S3)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, "", fmt.Errorf("%s: %s does not exist", field, uri)
		}
	default:
		return cannot("the coordinator cannot read " + scheme + ":// data")
	}
	if err != nil {
		return cannot(fmt.Sprintf("the coordinator could not read it (%v)", err))
	}
	return rc, "", nil
}

// siblingHint is ` (did you mean "file://…"?)` for a file next to a missing file://
// path whose name is close to it, or "".
func siblingHint(uri string) string {
	p := strings.TrimPrefix(uri, "file://")
	dir, base := filepath.Split(p)
	entries, err := os.ReadDir(filepath.Clean(cmp.Or(dir, ".")))
	if err != nil || len(entries) > 10000 {
		return ""
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	hint := jobs.DidYouMean(base, names)
	if hint == "" {
		return ""
	}
	// DidYouMean gives ` (did you mean "name"?)`: show the whole URI instead.
	name := strings.TrimSuffix(strings.TrimPrefix(hint, ` (did you mean "`), `"?)`)
	return fmt.Sprintf(" (did you mean %q?)", "file://"+dir+name)
}

// utf8BOM is the byte-order mark a CSV file may start with.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// sampleCSV reads a CSV header and the complete records of r (at most limit bytes of
// the object): the header's names, trimmed, must be non-empty and distinct, and every
// record must have as many fields. A record cut off by the limit is not checked.
func sampleCSV(r io.Reader, limit int64) ([]string, error) {
	cr := &countingReader{r: r}
	br := bufio.NewReader(cr)
	if head, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(head, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	rd := csv.NewReader(br)
	rd.FieldsPerRecord = -1
	header, err := rd.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file: a CSV header row is required")
	}
	if err != nil {
		return nil, fmt.Errorf("not a CSV file: header: %w", err)
	}
	cols := make([]string, len(header))
	seen := map[string]int{}
	for i, name := range header {
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("CSV header: column %d has an empty name", i+1)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("CSV header: column name %q appears twice (columns %d and %d)", name, j+1, i+1)
		}
		seen[name] = i
		cols[i] = name
	}
	for {
		rec, err := rd.Read()
		cut := cr.n >= limit // the sample ends inside the object: its last record may be cut
		if errors.Is(err, io.EOF) {
			return cols, nil
		}
		if err != nil {
			if cut {
				return cols, nil
			}
			return nil, fmt.Errorf("not a valid CSV file: %w", err)
		}
		if len(rec) != len(cols) && !cut {
			line, _ := rd.FieldPos(0)
			return nil, fmt.Errorf("line %d has %d fields, the header has %d", line, len(rec), len(cols))
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// noNodes is the never-run reason of a cluster where no node has registered at all,
// which scheduler.NeverFits leaves unsaid (it cannot tell "none yet" from "none").
func noNodes(snap scheduler.Snapshot) ([]string, error) {
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return nil, fmt.Errorf("api: read nodes: %w", err)
	}
	if len(nodes) > 0 {
		return nil, nil
	}
	return []string{"no node has registered with the cluster (start `cohort worker` and `cohort paramserver` nodes with --join, or use `cohort dev`)"}, nil
}
