// Package data loads tabular CSV training data and turns it into model inputs:
// reading (ReadCSV), fitting and applying the preprocessing (FitPreprocessor,
// Preprocessor.Transform), validation splits (SplitIndices) and per-epoch data shards
// of the workers (ShardIndices). Everything is deterministic given its seed.
package data

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of ReadCSV, so that one malformed or hostile file cannot exhaust a worker's
// memory before it is refused.
const (
	// MaxColumns is the most columns ReadCSV accepts.
	MaxColumns = 4096
	// MaxLineBytes is the longest line (up to its line break) ReadCSV accepts: 1 MiB.
	MaxLineBytes = 1 << 20
	// MaxRowBytes is the most bytes of one row when a quoted field spans several
	// lines: 4 MiB (enforced to within the reader's 4 KiB read-ahead).
	MaxRowBytes = 4 << 20
	// MaxFieldBytes is the longest field ReadCSV accepts: 1 MiB.
	MaxFieldBytes = 1 << 20
	// maxExcerpt bounds the bytes of a file's content that an error message quotes.
	maxExcerpt = 40
)

// Table is a CSV file in memory: the header's column names and the data rows, every
// field trimmed of surrounding spaces. Every row has len(Columns) fields.
type Table struct {
	// Columns holds the header's column names, unique and non-empty.
	Columns []string
	// Rows holds the data rows, in file order.
	Rows [][]string

	// lines[i] is the line of the file where Rows[i] starts (nil for a Table built by
	// hand: then row i is assumed on line i+2).
	lines []int
}

// Line returns the 1-based line of the CSV file where data row i starts, for messages.
func (t *Table) Line(i int) int {
	if i >= 0 && i < len(t.lines) {
		return t.lines[i]
	}
	return i + 2
}

// ColumnIndex returns the index of the named column, or -1.
func (t *Table) ColumnIndex(name string) int {
	for i, c := range t.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// utf8BOM is the byte-order mark some spreadsheet programs write at the start of a file.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ReadCSV reads a comma-separated file with a header row. Fields are trimmed of
// surrounding spaces and a leading UTF-8 byte-order mark is skipped. It refuses an empty
// file, an empty or duplicate column name, more than MaxColumns columns, a line longer
// than MaxLineBytes, a row longer than MaxRowBytes, a field longer than MaxFieldBytes
// and a row whose field count differs from the header's (naming its line). Its errors
// quote at most a short excerpt of the file (see Excerpt).
func ReadCSV(r io.Reader) (*Table, error) {
	lim := &limitReader{r: r, line: 1}
	br := bufio.NewReader(lim)
	if head, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(head, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // checked below, with a clearer message
	cr.ReuseRecord = false
	// read reads one record and starts the row budget of the next one at its end.
	read := func() ([]string, error) {
		rec, err := cr.Read()
		if lim.err != nil {
			return nil, lim.err
		}
		lim.rowStart = lim.total - int64(br.Buffered())
		if err == nil {
			err = checkFields(cr, rec)
		}
		return rec, err
	}

	header, err := read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("data: empty CSV file: a header row is required")
	}
	if err != nil {
		return nil, fmt.Errorf("data: CSV header: %w", err)
	}
	if len(header) > MaxColumns {
		return nil, fmt.Errorf("data: CSV header has %d columns, more than the limit of %d", len(header), MaxColumns)
	}
	t := &Table{Columns: make([]string, len(header))}
	seen := make(map[string]int, len(header))
	for i, name := range header {
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("data: CSV header: column %d has an empty name", i+1)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("data: CSV header: column name %s appears twice (columns %d and %d)", Excerpt(name), j+1, i+1)
		}
		seen[name] = i
		t.Columns[i] = name
	}
	for {
		rec, err := read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			return nil, fmt.Errorf("data: CSV line %d: %d fields, but the header has %d columns", line, len(rec), len(header))
		}
		for i, f := range rec {
			rec[i] = strings.TrimSpace(f)
		}
		t.Rows = append(t.Rows, rec)
		t.lines = append(t.lines, line)
	}
	return t, nil
}

// checkFields refuses a field longer than MaxFieldBytes, naming its line and column.
func checkFields(cr *csv.Reader, rec []string) error {
	for i, f := range rec {
		if len(f) > MaxFieldBytes {
			line, _ := cr.FieldPos(i)
			return fmt.Errorf("line %d, column %d: a field of %d bytes, more than the limit of %d", line, i+1, len(f), MaxFieldBytes)
		}
	}
	return nil
}

// limitReader passes a CSV file through while refusing a line longer than
// MaxLineBytes and a row (which a quoted field may stretch over several lines) longer
// than MaxRowBytes, so that neither is ever held in memory whole.
type limitReader struct {
	r io.Reader
	// line is the 1-based line being read and lineLen the bytes of it so far.
	line    int
	lineLen int
	// total counts the bytes read; rowStart is the offset where the current row
	// begins (set by ReadCSV after each record).
	total, rowStart int64
	err             error
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	for rest := p[:n]; ; {
		i := bytes.IndexByte(rest, '\n')
		seg := len(rest)
		if i >= 0 {
			seg = i
		}
		if l.lineLen+seg > MaxLineBytes {
			l.err = fmt.Errorf("line %d is longer than the limit of %d bytes", l.line, MaxLineBytes)
			return 0, l.err
		}
		if i < 0 {
			l.lineLen += seg
			break
		}
		l.line++
		l.lineLen = 0
		rest = rest[i+1:]
	}
	l.total += int64(n)
	// The bufio.Reader above holds up to its buffer's worth of the next rows.
	if l.total-l.rowStart > MaxRowBytes+bufferSize {
		l.err = fmt.Errorf("line %d: the row is longer than the limit of %d bytes (a quoted field spans lines)", l.line, MaxRowBytes)
		return 0, l.err
	}
	return n, err
}

// bufferSize is the read-ahead of ReadCSV's bufio.Reader (its default size).
const bufferSize = 4096

// Excerpt quotes a value read from a data file for an error message: at most a short
// prefix (40 bytes, cut at a character boundary), marked when cut, so that no message
// carries more than a bounded excerpt of a file.
func Excerpt(v string) string {
	if len(v) <= maxExcerpt {
		return strconv.Quote(v)
	}
	cut := maxExcerpt
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}
