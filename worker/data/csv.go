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
	"strings"
)

// MaxColumns is the most columns ReadCSV accepts.
const MaxColumns = 4096

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
// file, an empty or duplicate column name, more than MaxColumns columns, and a row whose
// field count differs from the header's (naming its line).
func ReadCSV(r io.Reader) (*Table, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(head, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // checked below, with a clearer message
	cr.ReuseRecord = false

	header, err := cr.Read()
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
			return nil, fmt.Errorf("data: CSV header: column name %q appears twice (columns %d and %d)", name, j+1, i+1)
		}
		seen[name] = i
		t.Columns[i] = name
	}
	for {
		rec, err := cr.Read()
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
