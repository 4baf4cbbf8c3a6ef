package data

import (
	"io"
	"strings"
	"testing"
)

// endlessLine is a CSV body whose second line never ends: reading it must stop at
// MaxLineBytes rather than hold it (the 2 GB line drove a worker out of memory).
type endlessLine struct{ header string }

func (e *endlessLine) Read(p []byte) (int, error) {
	if e.header != "" {
		n := copy(p, e.header)
		e.header = e.header[n:]
		return n, nil
	}
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// countingReader counts what was read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestReadCSVLimits is the regression test of the CSV part of security issue #16.
func TestReadCSVLimits(t *testing.T) {
	line := func(n int) string { return strings.Repeat("y", n) }
	tests := []struct {
		name    string
		in      string
		wantErr string // "" accepts
	}{
		{name: "line at the limit", in: "a\n" + line(MaxLineBytes) + "\n1\n"},
		{name: "line over the limit", in: "a\n1\n" + line(MaxLineBytes+1) + "\n", wantErr: "data: CSV: line 3 is longer than the limit of 1048576 bytes"},
		{name: "header over the limit", in: line(MaxLineBytes+1) + "\n1\n", wantErr: "data: CSV header: line 1 is longer than the limit"},
		{name: "last line without a break", in: "a\n1\n" + line(MaxLineBytes+1), wantErr: "line 3 is longer"},
		{name: "CRLF lines", in: "a\r\n1\r\n" + line(MaxLineBytes+1) + "\r\n", wantErr: "line 3 is longer"},
		{name: "quoted field over the field limit", in: "a,b\n1,\"" + line(MaxFieldBytes/2) + "\n" + line(MaxFieldBytes/2) + "\n\"\n", wantErr: "data: CSV: line 2, column 2: a field of 1048578 bytes, more than the limit of 1048576"},
		{name: "row over the row limit", in: "a\n\"" + strings.Repeat(line(MaxLineBytes/2)+"\n", 2*MaxRowBytes/MaxLineBytes+2) + "\"\n", wantErr: "the row is longer than the limit of 4194304 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ReadCSV: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if len(err.Error()) > 256 {
				t.Fatalf("error of %d bytes quotes the file", len(err.Error()))
			}
		})
	}

	// An endless line is refused after about MaxLineBytes, not read to its end.
	cr := &countingReader{r: &endlessLine{header: "a,b\n1,2\n"}}
	_, err := ReadCSV(cr)
	if err == nil || !strings.Contains(err.Error(), "line 3 is longer than the limit") {
		t.Fatalf("endless line: error %v", err)
	}
	if cr.n > MaxLineBytes+64<<10 {
		t.Fatalf("read %d bytes of an endless line, want about %d", cr.n, MaxLineBytes)
	}
}

func TestExcerpt(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Yes", `"Yes"`},
		{strings.Repeat("a", 40), `"` + strings.Repeat("a", 40) + `"`},
		{strings.Repeat("a", 41), `"` + strings.Repeat("a", 40) + `"... (41 bytes)`},
		{strings.Repeat("a", 39) + "é", `"` + strings.Repeat("a", 39) + `"... (41 bytes)`},
	} {
		if got := Excerpt(tc.in); got != tc.want {
			t.Errorf("Excerpt(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestNonFiniteNumbersRefused is the regression test of the NaN/Inf part of security
// issue #16: "Inf" or "1e999" in a numeric column turned it silently categorical (or
// dropped it); such numbers are now refused with the column, their count and the first
// line. "NaN" stays a missing value, as IsMissing says.
func TestNonFiniteNumbersRefused(t *testing.T) {
	cfg := TabularConfig{Label: "y", Task: TaskBinary}
	tests := []struct {
		name, csv, wantErr string
	}{
		{"Inf", "x,y\n1,a\nInf,b\n2,a\n-Inf,b\n", `data: column "x" has 2 numbers that are not finite (the first, "Inf", on line 3)`},
		{"+Inf", "x,y\n1,a\n+Inf,b\n3,a\n", `(it is "+Inf", on line 3)`},
		{"infinity", "x,y\n1,a\n2,b\ninfinity,a\n", `(it is "infinity", on line 4)`},
		{"overflow", "x,y\n1,a\n1e999,b\n3,a\n", `data: column "x" has 1 number that is not finite (it is "1e999", on line 3)`},
		{"negative overflow", "x,y\n-1e999,a\n1,b\n3,a\n", `"-1e999", on line 2`},
		{"NaN is missing", "x,y\n1,a\nNaN,b\n3,a\n2,b\n", ""},
		{"text column with Inf is categorical", "x,y\nred,a\nInf,b\nred,b\nInf,a\n", ""},
		{"underflow is zero", "x,y\n1,a\n1e-999,b\n3,a\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tbl := mustTable(t, tc.csv)
			_, err := FitPreprocessor(tbl, allRowsOf(tbl), cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("FitPreprocessor: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}

	// A validation or test row is refused too, with its line.
	train := mustTable(t, "x,y\n1,a\n2,b\n3,a\n")
	p, err := FitPreprocessor(train, allRowsOf(train), cfg)
	if err != nil {
		t.Fatal(err)
	}
	val := mustTable(t, "x,y\n1,a\n-Inf,b\n")
	if _, err := p.Transform(val, allRowsOf(val)); err == nil || !strings.Contains(err.Error(), `line 3: data: column "x" is numeric, but the value "-Inf" is not a finite number`) {
		t.Fatalf("Transform: %v", err)
	}

	// Sequence data: an automatic feature column with Inf is refused, not skipped.
	seq := mustTable(t, "t,x,y\n1,1,1\n2,Inf,2\n3,3,3\n4,4,4\n5,5,5\n6,6,6\n")
	_, err = LoadSequences(seq, SequenceConfig{Lookback: 1, Horizon: 1, Target: "y", Time: "t", Task: TaskRegression, ValidationFraction: 0.3}, "s.csv")
	if err == nil || !strings.Contains(err.Error(), `data: s.csv: column "x" has 1 number that is not finite (it is "Inf", on line 3)`) {
		t.Fatalf("LoadSequences: %v", err)
	}
}

func allRowsOf(t *Table) []int {
	rows := make([]int, len(t.Rows))
	for i := range rows {
		rows[i] = i
	}
	return rows
}
