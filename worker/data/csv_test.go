package data

import (
	"slices"
	"strings"
	"testing"
)

func TestReadCSV(t *testing.T) {
	wide := strings.Repeat("c,", MaxColumns) + "last\n"
	tests := []struct {
		name    string
		in      string
		cols    []string
		rows    [][]string
		lines   []int
		wantErr string
	}{
		{name: "basic", in: "a,b\n1,2\n3,4\n", cols: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}, lines: []int{2, 3}},
		{name: "trims spaces", in: " a , b\n 1 ,\" x \"\n", cols: []string{"a", "b"}, rows: [][]string{{"1", "x"}}},
		{name: "BOM", in: "\ufeffAge,Attrition\n41,Yes\n", cols: []string{"Age", "Attrition"}, rows: [][]string{{"41", "Yes"}}},
		{name: "CRLF and no final newline", in: "a,b\r\n1,2\r\n3,4", cols: []string{"a", "b"}, rows: [][]string{{"1", "2"}, {"3", "4"}}},
		{name: "header only", in: "a,b\n", cols: []string{"a", "b"}},
		{name: "blank lines skipped", in: "a\n\n1\n\n2\n", cols: []string{"a"}, rows: [][]string{{"1"}, {"2"}}, lines: []int{3, 5}},
		{name: "quoted newline keeps line numbers", in: "a,b\n\"x\ny\",1\n2,3\n", cols: []string{"a", "b"}, rows: [][]string{{"x\ny", "1"}, {"2", "3"}}, lines: []int{2, 4}},
		{name: "empty file", in: "", wantErr: "empty CSV file"},
		{name: "ragged row", in: "a,b\n1,2\n3\n", wantErr: "CSV line 3: 1 fields, but the header has 2 columns"},
		{name: "ragged after multiline field", in: "a,b\n\"x\ny\",1\n2,3,4\n", wantErr: "CSV line 4: 3 fields"},
		{name: "duplicate column", in: "a,b,a\n1,2,3\n", wantErr: `column name "a" appears twice (columns 1 and 3)`},
		{name: "duplicate after trim", in: "a, a\n1,2\n", wantErr: `column name "a" appears twice`},
		{name: "empty column name", in: "a,,c\n1,2,3\n", wantErr: "column 2 has an empty name"},
		{name: "too many columns", in: wide, wantErr: "4097 columns, more than the limit of 4096"},
		{name: "bad quote", in: "a,b\n1,\"2\n", wantErr: "data: CSV:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, err := ReadCSV(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadCSV: %v", err)
			}
			if !slices.Equal(tbl.Columns, tt.cols) {
				t.Errorf("columns = %q, want %q", tbl.Columns, tt.cols)
			}
			if !slices.EqualFunc(tbl.Rows, tt.rows, slices.Equal) {
				t.Errorf("rows = %q, want %q", tbl.Rows, tt.rows)
			}
			for i, want := range tt.lines {
				if got := tbl.Line(i); got != want {
					t.Errorf("Line(%d) = %d, want %d", i, got, want)
				}
			}
		})
	}
}

func FuzzReadCSV(f *testing.F) {
	for _, seed := range []string{
		"a,b\n1,2\n",
		"\ufeffAge,Attrition\n41,Yes\n49,No\n",
		"a,b\n1\n",
		"a,a\n",
		"",
		"\"x\ny\",z\n1,2\n",
		"a,\"b\nc\",d\n1,\"2\"\"\",3\n",
		" a ; b \n",
		"a\n\n\n1\n",
		// The limits: a line just over MaxLineBytes, a quoted field over MaxFieldBytes
		// across lines, a long duplicate column name (quoted only as an excerpt).
		"a\n1\n" + strings.Repeat("x", MaxLineBytes+1) + "\n",
		"a,b\n1,\"" + strings.Repeat("y\n", MaxFieldBytes/2+1) + "\"\n",
		strings.Repeat("n", 100) + "," + strings.Repeat("n", 100) + "\n1,2\n",
		"x,y\nInf,1\n1e999,2\nNaN,3\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tbl, err := ReadCSV(strings.NewReader(string(in)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "data: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			if len(err.Error()) > 256 {
				t.Fatalf("error of %d bytes: it quotes more than an excerpt of the file", len(err.Error()))
			}
			return
		}
		if len(tbl.Columns) == 0 || len(tbl.Columns) > MaxColumns {
			t.Fatalf("%d columns", len(tbl.Columns))
		}
		seen := map[string]bool{}
		for _, c := range tbl.Columns {
			if c == "" || c != strings.TrimSpace(c) || seen[c] {
				t.Fatalf("bad column name %q in %q", c, tbl.Columns)
			}
			seen[c] = true
		}
		prev := 1
		for i, r := range tbl.Rows {
			if len(r) != len(tbl.Columns) {
				t.Fatalf("row %d has %d fields for %d columns", i, len(r), len(tbl.Columns))
			}
			if l := tbl.Line(i); l <= prev {
				t.Fatalf("row %d on line %d, not after line %d", i, l, prev)
			}
			prev = tbl.Line(i)
		}
	})
}
