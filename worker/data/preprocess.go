package data

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cohort-dev/cohort/jobs"
)

// Task names, as in the job spec (spec.task); jobs defines them.
const (
	// TaskBinary is binary classification.
	TaskBinary = jobs.TaskBinary
	// TaskMulticlass is multiclass classification.
	TaskMulticlass = jobs.TaskMulticlass
	// TaskRegression is regression.
	TaskRegression = jobs.TaskRegression
)

// Column kinds of a ColumnTransform.
const (
	// KindNumeric is a standardized numeric column: one feature.
	KindNumeric = "numeric"
	// KindCategorical is a one-hot encoded column: one feature per category.
	KindCategorical = "categorical"
)

// Limits of the preprocessing.
const (
	// MaxCategories is the most distinct values a categorical feature column may have;
	// a column with more is dropped.
	MaxCategories = 1000
	// MaxClasses is the most label values a multiclass task may have.
	MaxClasses = 1000
)

// missingValues are the field values that mean "no value", compared case-insensitively.
var missingValues = []string{"", "NA", "N/A", "NaN", "null", "?"}

// IsMissing reports whether a field value means "no value": empty, NA, N/A, NaN, null or
// ?, in any case.
func IsMissing(v string) bool {
	for _, m := range missingValues {
		if strings.EqualFold(v, m) {
			return true
		}
	}
	return false
}

// TabularConfig says how to preprocess a table.
type TabularConfig struct {
	// Label is the target column.
	Label string
	// Positive is the positive class of a binary task; empty picks the lexically
	// greater of the two label values ("Yes" over "No", "1" over "0").
	Positive string
	// Task is binary_classification, multiclass_classification or regression.
	Task string
	// Exclude names columns that are not features (identifiers, leaks); each must exist.
	Exclude []string
}

// ColumnTransform is one input column's fitted transform. It is JSON-serializable and
// saved with the model for serving.
type ColumnTransform struct {
	// Name is the CSV column.
	Name string `json:"name"`
	// Kind is "numeric" or "categorical".
	Kind string `json:"kind"`
	// Mean is the training mean of a numeric column.
	Mean float64 `json:"mean,omitempty"`
	// Std is the training standard deviation (population) of a numeric column, > 0.
	Std float64 `json:"std,omitempty"`
	// Categories are a categorical column's training values, sorted; one feature each.
	Categories []string `json:"categories,omitempty"`
}

// Preprocessor turns raw rows into model features and labels, with statistics fitted on
// the training rows only. It is JSON-serializable and saved with the model for serving.
type Preprocessor struct {
	// Label is the target column.
	Label string `json:"label"`
	// Task is the task it was fitted for.
	Task string `json:"task"`
	// Positive is a binary task's positive label value.
	Positive string `json:"positive,omitempty"`
	// Classes are the label values: for multiclass, sorted, and a label's class index
	// is its position; for binary, the negative then the positive value.
	Classes []string `json:"classes,omitempty"`
	// Columns are the feature columns' transforms, in the table's column order; their
	// features are laid out one after another.
	Columns []ColumnTransform `json:"columns"`
	// Dim is the number of features per row.
	Dim int `json:"dim"`
	// LabelMean is the training mean of a regression target.
	LabelMean float64 `json:"label_mean,omitempty"`
	// LabelStd is the training standard deviation of a regression target (1 when the
	// target is constant); Labels returns (value - LabelMean) / LabelStd.
	LabelStd float64 `json:"label_std,omitempty"`
}

// columnList names a table's columns for messages, shortened for wide tables.
func columnList(cols []string) string {
	const show = 30
	names := make([]string, 0, show)
	for _, c := range cols[:min(len(cols), show)] {
		names = append(names, shortName(c))
	}
	if len(cols) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, ... (%d more)", strings.Join(names, ", "), len(cols)-show)
}

// shortName is a column name for a list in a message: cut to a short prefix (see
// Excerpt), unquoted.
func shortName(c string) string {
	if len(c) <= maxExcerpt {
		return c
	}
	cut := maxExcerpt
	for cut > 0 && !utf8.RuneStart(c[cut]) {
		cut--
	}
	return c[:cut] + "..."
}

// valueList names up to 5 distinct values for messages.
func valueList(vals []string) string {
	q := make([]string, 0, 5)
	for i, v := range vals {
		if i == 5 {
			q = append(q, fmt.Sprintf("... (%d more)", len(vals)-5))
			break
		}
		q = append(q, Excerpt(v))
	}
	return strings.Join(q, ", ")
}

// checkRows refuses row indices outside the table.
func checkRows(t *Table, rows []int) error {
	for _, r := range rows {
		if r < 0 || r >= len(t.Rows) {
			return fmt.Errorf("data: row index %d outside the table's %d rows", r, len(t.Rows))
		}
	}
	return nil
}

// labelColumn validates cfg against the table and returns the label's column index.
func labelColumn(t *Table, cfg TabularConfig) (int, error) {
	switch cfg.Task {
	case TaskBinary, TaskMulticlass, TaskRegression:
	default:
		return -1, fmt.Errorf("data.task: %q is not one of %s, %s, %s", cfg.Task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	if cfg.Label == "" {
		return -1, fmt.Errorf("data.label: no label column given (columns: %s)", columnList(t.Columns))
	}
	li := t.ColumnIndex(cfg.Label)
	if li < 0 {
		return -1, fmt.Errorf("data.label: column %q not found in the CSV%s (columns: %s)", cfg.Label, jobs.DidYouMean(cfg.Label, t.Columns), columnList(t.Columns))
	}
	for _, e := range cfg.Exclude {
		if e == cfg.Label {
			return -1, fmt.Errorf("data.exclude: %q is the label column", e)
		}
		if t.ColumnIndex(e) < 0 {
			return -1, fmt.Errorf("data.exclude: column %q not found in the CSV%s (columns: %s)", e, jobs.DidYouMean(e, t.Columns), columnList(t.Columns))
		}
	}
	if cfg.Positive != "" && cfg.Task != TaskBinary {
		return -1, fmt.Errorf("data.positive: only a binary_classification task has a positive class, not %s", cfg.Task)
	}
	return li, nil
}

// labelValues returns the sorted distinct label values of rows, refusing a missing one.
func labelValues(t *Table, rows []int, li int, label string) ([]string, error) {
	seen := map[string]struct{}{}
	for _, r := range rows {
		v := t.Rows[r][li]
		if IsMissing(v) {
			return nil, fmt.Errorf("data.label: column %q has a missing value (%s) on line %d", label, Excerpt(v), t.Line(r))
		}
		seen[v] = struct{}{}
	}
	vals := make([]string, 0, len(seen))
	for v := range seen {
		vals = append(vals, v)
	}
	slices.Sort(vals)
	return vals, nil
}

// fitLabel fills the label fields of p from the training rows.
func fitLabel(p *Preprocessor, t *Table, rows []int, li int, cfg TabularConfig) error {
	if len(rows) == 0 {
		return fmt.Errorf("data: no training rows")
	}
	vals, err := labelValues(t, rows, li, cfg.Label)
	if err != nil {
		return err
	}
	switch cfg.Task {
	case TaskBinary:
		if len(vals) != 2 {
			return fmt.Errorf("data.label: binary_classification needs exactly 2 distinct values in column %q, found %d: %s", cfg.Label, len(vals), valueList(vals))
		}
		pos := cfg.Positive
		if pos == "" {
			pos = vals[1]
		}
		switch pos {
		case vals[0]:
			p.Classes = []string{vals[1], vals[0]}
		case vals[1]:
			p.Classes = []string{vals[0], vals[1]}
		default:
			return fmt.Errorf("data.positive: %q is not a value of column %q (values: %s)", pos, cfg.Label, valueList(vals))
		}
		p.Positive = pos
	case TaskMulticlass:
		if len(vals) < 2 || len(vals) > MaxClasses {
			return fmt.Errorf("data.label: multiclass_classification needs 2 to %d distinct values in column %q, found %d: %s", MaxClasses, cfg.Label, len(vals), valueList(vals))
		}
		p.Classes = vals
	case TaskRegression:
		xs := make([]float64, len(rows))
		for i, r := range rows {
			v, ok := parseNumber(t.Rows[r][li])
			if !ok {
				return fmt.Errorf("data.label: regression needs numbers, but column %q has %s on line %d", cfg.Label, Excerpt(t.Rows[r][li]), t.Line(r))
			}
			xs[i] = v
		}
		p.LabelMean, p.LabelStd = meanStd(xs)
		if p.LabelStd == 0 {
			p.LabelStd = 1
		}
	}
	return nil
}

// parseNumber parses a finite float.
func parseNumber(v string) (float64, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// nonFinite reports whether v is a number that is not finite: "Inf", "+Inf", "-Inf",
// "Infinity" (any case), or one outside the float64 range such as "1e999". ("NaN" is
// a missing value, see IsMissing.)
func nonFinite(v string) bool {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		var ne *strconv.NumError
		return errors.As(err, &ne) && ne.Err == strconv.ErrRange && math.IsInf(f, 0)
	}
	return math.IsInf(f, 0) || math.IsNaN(f)
}

// nonFiniteCells counts the non-finite numbers of a column whose other values are
// all numbers or missing.
type nonFiniteCells struct {
	count int
	first string // the first one's value
	line  int    // and line
}

// add records value v of the given line: it reports false when v is neither a finite
// number, a non-finite one nor missing (the column is not numeric).
func (n *nonFiniteCells) add(v string, line int) bool {
	if IsMissing(v) {
		return true
	}
	if _, ok := parseNumber(v); ok {
		return true
	}
	if !nonFinite(v) {
		return false
	}
	if n.count == 0 {
		n.first, n.line = v, line
	}
	n.count++
	return true
}

// err refuses the column's non-finite numbers (nil when it has none), naming the
// column, their count and the first one's line.
func (n *nonFiniteCells) err(column string) error {
	if n.count == 0 {
		return nil
	}
	what := "numbers that are not finite (the first,"
	if n.count == 1 {
		what = "number that is not finite (it is"
	}
	return fmt.Errorf("column %s has %d %s %s, on line %d): write finite numbers, or leave a cell empty (or NaN, NA) for a missing value",
		Excerpt(column), n.count, what, Excerpt(n.first), n.line)
}

// meanStd returns the mean and population standard deviation (two passes).
func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	std = math.Sqrt(ss / float64(len(xs)))
	// A column whose spread is only rounding noise is constant.
	if std <= 1e-12*math.Max(1, math.Abs(mean)) || math.IsInf(std, 0) || math.IsNaN(std) {
		std = 0
	}
	return mean, std
}

// FitPreprocessor fits the preprocessing of cfg on the given (training) rows of t.
//
// Every column except the label and Exclude is a feature. A column is numeric when every
// non-missing training value parses as a finite number: it is standardized with the
// training mean and standard deviation, and a missing value becomes 0 (the mean). Other
// columns are categorical: one-hot over the sorted training values, with missing and
// unseen values all zeros. Dropped (logged at debug level): columns with no training
// value, numeric columns with zero spread, categorical columns with one value and no
// missing ones, more than MaxCategories values, or a distinct value in every row
// (ID-like).
//
// Label checks: the label column must exist and no training row may miss its label; a
// binary task needs exactly two label values, Positive among them; a multiclass task
// needs 2 to MaxClasses; a regression target must be numeric.
func FitPreprocessor(t *Table, rows []int, cfg TabularConfig) (*Preprocessor, error) {
	li, err := labelColumn(t, cfg)
	if err != nil {
		return nil, err
	}
	if err := checkRows(t, rows); err != nil {
		return nil, err
	}
	p := &Preprocessor{Label: cfg.Label, Task: cfg.Task, Columns: []ColumnTransform{}}
	if err := fitLabel(p, t, rows, li, cfg); err != nil {
		return nil, err
	}
	for ci, name := range t.Columns {
		if ci == li || slices.Contains(cfg.Exclude, name) {
			continue
		}
		ct, ok, err := fitColumn(t, rows, ci)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		p.Columns = append(p.Columns, ct)
		if ct.Kind == KindNumeric {
			p.Dim++
		} else {
			p.Dim += len(ct.Categories)
		}
	}
	if p.Dim == 0 {
		return nil, fmt.Errorf("data: no usable feature columns (every column besides the label %q is excluded, empty, constant or ID-like)", cfg.Label)
	}
	return p, nil
}

// fitColumn fits one feature column, or reports that it is dropped. A column of
// numbers that holds non-finite ones (Inf, 1e999) is an error.
func fitColumn(t *Table, rows []int, ci int) (ColumnTransform, bool, error) {
	name := t.Columns[ci]
	numeric := true
	var nums []float64
	var bad nonFiniteCells
	present := 0
	for _, r := range rows {
		v := t.Rows[r][ci]
		if IsMissing(v) {
			continue
		}
		present++
		if numeric {
			if f, ok := parseNumber(v); ok {
				nums = append(nums, f)
			} else if !bad.add(v, t.Line(r)) {
				numeric, nums = false, nil
			}
		}
	}
	if present == 0 {
		slog.Debug("data: dropped feature column with no values", "column", name)
		return ColumnTransform{}, false, nil
	}
	if numeric {
		if err := bad.err(name); err != nil {
			return ColumnTransform{}, false, fmt.Errorf("data: %w", err)
		}
		mean, std := meanStd(nums)
		if std == 0 {
			slog.Debug("data: dropped constant numeric column", "column", name, "value", mean)
			return ColumnTransform{}, false, nil
		}
		return ColumnTransform{Name: name, Kind: KindNumeric, Mean: mean, Std: std}, true, nil
	}
	seen := map[string]struct{}{}
	for _, r := range rows {
		if v := t.Rows[r][ci]; !IsMissing(v) {
			seen[v] = struct{}{}
			if len(seen) > MaxCategories {
				slog.Debug("data: dropped categorical column with too many values", "column", name, "limit", MaxCategories)
				return ColumnTransform{}, false, nil
			}
		}
	}
	switch {
	case len(seen) == 1 && present == len(rows):
		slog.Debug("data: dropped constant categorical column", "column", name)
		return ColumnTransform{}, false, nil
	case present >= 2 && len(seen) == present:
		slog.Debug("data: dropped ID-like categorical column (every value distinct)", "column", name, "values", present)
		return ColumnTransform{}, false, nil
	}
	cats := make([]string, 0, len(seen))
	for v := range seen {
		cats = append(cats, v)
	}
	slices.Sort(cats)
	return ColumnTransform{Name: name, Kind: KindCategorical, Categories: cats}, true, nil
}

// Validate checks a Preprocessor's consistency (for one decoded from JSON).
func (p *Preprocessor) Validate() error {
	dim := 0
	for i, c := range p.Columns {
		switch c.Kind {
		case KindNumeric:
			if !(c.Std > 0) || math.IsInf(c.Std, 0) || math.IsNaN(c.Mean) || math.IsInf(c.Mean, 0) {
				return fmt.Errorf("data: preprocessing columns[%d] (%s): numeric needs a finite mean and std > 0, got mean %v std %v", i, Excerpt(c.Name), c.Mean, c.Std)
			}
			dim++
		case KindCategorical:
			if len(c.Categories) == 0 || !slices.IsSorted(c.Categories) || len(slices.Compact(slices.Clone(c.Categories))) != len(c.Categories) {
				return fmt.Errorf("data: preprocessing columns[%d] (%s): categories must be non-empty, sorted and unique", i, Excerpt(c.Name))
			}
			dim += len(c.Categories)
		default:
			return fmt.Errorf("data: preprocessing columns[%d] (%s): kind %s is not numeric or categorical", i, Excerpt(c.Name), Excerpt(c.Kind))
		}
	}
	if dim != p.Dim {
		return fmt.Errorf("data: preprocessing dim is %d, but its columns make %d features", p.Dim, dim)
	}
	return nil
}

// TransformRow writes the Dim features of one raw row into dst; get returns a column's
// raw value and whether the row has that column. A missing column is an error naming
// it; a non-numeric value in a numeric column is an error; missing values and unseen
// categories are not.
func (p *Preprocessor) TransformRow(get func(column string) (string, bool), dst []float32) error {
	if len(dst) != p.Dim {
		return fmt.Errorf("data: feature buffer has %d values, the preprocessing makes %d", len(dst), p.Dim)
	}
	off := 0
	for _, c := range p.Columns {
		v, ok := get(c.Name)
		if !ok {
			return fmt.Errorf("data: column %s is missing from the row", Excerpt(c.Name))
		}
		n, err := c.write(strings.TrimSpace(v), dst[off:])
		if err != nil {
			return err
		}
		off += n
	}
	if off != p.Dim {
		return fmt.Errorf("data: preprocessing dim is %d, but its columns make %d features", p.Dim, off)
	}
	return nil
}

// write writes the column's features of value v to the front of dst and returns how
// many it wrote.
func (c *ColumnTransform) write(v string, dst []float32) (int, error) {
	switch c.Kind {
	case KindNumeric:
		if len(dst) < 1 {
			return 0, fmt.Errorf("data: preprocessing dim is too small for column %q", c.Name)
		}
		if IsMissing(v) {
			dst[0] = 0
			return 1, nil
		}
		f, ok := parseNumber(v)
		if !ok {
			return 0, fmt.Errorf("data: column %s is numeric, but the value %s is not a finite number", Excerpt(c.Name), Excerpt(v))
		}
		z := (f - c.Mean) / c.Std
		if math.IsInf(z, 0) || math.IsNaN(z) || math.Abs(z) > math.MaxFloat32 {
			return 0, fmt.Errorf("data: column %s: value %s standardizes to %v (std %v)", Excerpt(c.Name), Excerpt(v), z, c.Std)
		}
		dst[0] = float32(z)
		return 1, nil
	case KindCategorical:
		k := len(c.Categories)
		if len(dst) < k {
			return 0, fmt.Errorf("data: preprocessing dim is too small for column %q", c.Name)
		}
		clear(dst[:k])
		if !IsMissing(v) {
			if i, found := slices.BinarySearch(c.Categories, v); found {
				dst[i] = 1
			}
		}
		return k, nil
	}
	return 0, fmt.Errorf("data: column %s has unknown kind %s", Excerpt(c.Name), Excerpt(c.Kind))
}

// Transform returns the features of the given rows of t, row-major, len(rows)*Dim.
// Errors name the column and line.
func (p *Preprocessor) Transform(t *Table, rows []int) ([]float32, error) {
	if err := checkRows(t, rows); err != nil {
		return nil, err
	}
	idx := make([]int, len(p.Columns))
	for i, c := range p.Columns {
		if idx[i] = t.ColumnIndex(c.Name); idx[i] < 0 {
			return nil, fmt.Errorf("data: feature column %s not found in the CSV (columns: %s)", Excerpt(c.Name), columnList(t.Columns))
		}
	}
	x := make([]float32, len(rows)*p.Dim)
	for ri, r := range rows {
		dst := x[ri*p.Dim : (ri+1)*p.Dim]
		off := 0
		for i := range p.Columns {
			n, err := p.Columns[i].write(t.Rows[r][idx[i]], dst[off:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", t.Line(r), err)
			}
			off += n
		}
		if off != p.Dim {
			return nil, fmt.Errorf("data: preprocessing dim is %d, but its columns make %d features", p.Dim, off)
		}
	}
	return x, nil
}

// Labels returns the targets of the given rows: for binary classification 1 for
// Positive and 0 for the other class; for multiclass the class index into Classes; for
// regression (value - LabelMean) / LabelStd. A missing label, or a class value not seen
// in training, is an error naming the line.
func (p *Preprocessor) Labels(t *Table, rows []int) ([]float32, error) {
	if err := checkRows(t, rows); err != nil {
		return nil, err
	}
	li := t.ColumnIndex(p.Label)
	if li < 0 {
		return nil, fmt.Errorf("data.label: column %q not found in the CSV%s (columns: %s)", p.Label, jobs.DidYouMean(p.Label, t.Columns), columnList(t.Columns))
	}
	y := make([]float32, len(rows))
	for i, r := range rows {
		v := t.Rows[r][li]
		if IsMissing(v) {
			return nil, fmt.Errorf("data.label: column %q has a missing value (%s) on line %d", p.Label, Excerpt(v), t.Line(r))
		}
		switch p.Task {
		case TaskBinary:
			switch {
			case v == p.Positive:
				y[i] = 1
			case len(p.Classes) == 0 || slices.Contains(p.Classes, v):
				y[i] = 0
			default:
				return nil, fmt.Errorf("data.label: value %s on line %d is not one of the training classes %s", Excerpt(v), t.Line(r), valueList(p.Classes))
			}
		case TaskMulticlass:
			k, found := slices.BinarySearch(p.Classes, v)
			if !found {
				return nil, fmt.Errorf("data.label: value %s on line %d is not one of the training classes %s", Excerpt(v), t.Line(r), valueList(p.Classes))
			}
			y[i] = float32(k)
		case TaskRegression:
			f, ok := parseNumber(v)
			if !ok {
				return nil, fmt.Errorf("data.label: regression needs numbers, but column %q has %s on line %d", p.Label, Excerpt(v), t.Line(r))
			}
			std := p.LabelStd
			if std == 0 {
				std = 1
			}
			z := (f - p.LabelMean) / std
			if math.IsNaN(z) || math.Abs(z) > math.MaxFloat32 {
				return nil, fmt.Errorf("data.label: regression target %s on line %d standardizes to %v, outside float32 range", Excerpt(v), t.Line(r), z)
			}
			y[i] = float32(z)
		default:
			return nil, fmt.Errorf("data.task: %q is not one of %s, %s, %s", p.Task, TaskBinary, TaskMulticlass, TaskRegression)
		}
	}
	return y, nil
}
