package data

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-dev/cohort/jobs"
)

// SeasonLength is the season of the seasonal-naive baseline: with monthly rows, the
// value twelve rows earlier.
const SeasonLength = 12

// MaxSequenceValues bounds the number of feature values (windows × lookback × features)
// one sequence dataset may hold, so that a long lookback over a big table fails with an
// error instead of exhausting memory.
const MaxSequenceValues = 1 << 28

// SequenceConfig says how a sequence_csv table becomes windows (see LoadSequences).
type SequenceConfig struct {
	// Lookback is the window length in rows (>= 1).
	Lookback int
	// Horizon is how many rows after the window's last row the target is (>= 1).
	Horizon int
	// Target is the column to predict; it must be numeric (for binary classification 0
	// or 1, for multiclass classification a class index 0, 1, ...).
	Target string
	// Features lists the input columns, in order. Empty means every numeric column
	// except Group and Time, in the table's order; the target's past values are then
	// features too.
	Features []string
	// Group is the entity column (for example EmployeeID); empty means the whole table is
	// one series.
	Group string
	// Time is the ordering column; required. Its values must sort like time: when every
	// value parses as a number they are compared as numbers, otherwise as strings, so
	// use sortable text such as 2024-01 or 2024-01-31 (not 1/2024).
	Time string
	// Task is binary_classification, multiclass_classification or regression.
	Task string
	// ValidationFraction is the share of the distinct time values, the latest ones, that
	// form the validation period, in [0, 1).
	ValidationFraction float64
	// Period is the season of the seasonal-naive forecast in rows (the target Period
	// rows earlier in the same series); 0 means SeasonLength.
	Period int
	// Baseline is BaselineSeasonalNaive (regression only) to make the model predict the
	// residual over the seasonal-naive forecast, or empty.
	Baseline string
	// Calendar lists calendar features (CalendarMonth, CalendarWeek) derived from the
	// Time column, which must then hold dates (2024-01 or 2024-01-31): each adds the sine
	// and cosine of its position in the year to every step.
	Calendar []string
}

// BaselineSeasonalNaive makes a regression model predict the residual over the
// seasonal-naive forecast: the target is y_t - y_{t-Period}, and the forecast adds
// y_{t-Period} back.
const BaselineSeasonalNaive = "seasonalNaive"

// Calendar features (SequenceConfig.Calendar).
const (
	// CalendarMonth is the month of the year (sin and cos of 2π·(month-1)/12).
	CalendarMonth = "month"
	// CalendarWeek is the ISO week of the year (sin and cos of 2π·(week-1)/53).
	CalendarWeek = "week"
)

// SequenceScaler is the fitted scaling of a sequence dataset and what is needed to cut
// windows from another table the same way. It is JSON-serializable and saved with the
// model for serving.
type SequenceScaler struct {
	// Features are the input columns, in the order of their values within a step.
	Features []string `json:"features"`
	// Mean holds each feature's training mean.
	Mean []float64 `json:"mean"`
	// Std holds each feature's training standard deviation (population; 1 when the
	// feature is constant in training).
	Std []float64 `json:"std"`
	// Target is the predicted column.
	Target string `json:"target"`
	// TargetMean is the training mean of a regression target (0 for classification).
	TargetMean float64 `json:"target_mean"`
	// TargetStd is the training standard deviation of a regression target (1 for
	// classification, and when the target is constant); Y = (target - TargetMean) /
	// TargetStd.
	TargetStd float64 `json:"target_std"`
	// Lookback is the window length in rows.
	Lookback int `json:"lookback"`
	// Horizon is how many rows after the window the target is.
	Horizon int `json:"horizon"`
	// Group is the entity column; empty means one series.
	Group string `json:"group,omitempty"`
	// Time is the ordering column.
	Time string `json:"time"`
	// Task is the task the scaler was fitted for.
	Task string `json:"task"`
	// Period is the season of the seasonal-naive forecast in rows (0: SeasonLength).
	Period int `json:"period,omitempty"`
	// Baseline is BaselineSeasonalNaive when the model predicts the residual over the
	// seasonal-naive forecast: a prediction in target units is then
	// Unscale(output) + the target Period rows before the predicted row (the value at
	// step Lookback-1+Horizon-Period of the window's Target feature, when the window
	// holds it; see NaiveStep).
	Baseline string `json:"baseline,omitempty"`
	// Calendar lists the calendar features appended to each step after Features, two
	// values each (sin, cos), derived from Time.
	Calendar []string `json:"calendar,omitempty"`
}

// period returns the seasonal-naive period.
func (s *SequenceScaler) period() int {
	if s.Period > 0 {
		return s.Period
	}
	return SeasonLength
}

// StepWidth is the number of values per step: the features, then two per calendar
// feature.
func (s *SequenceScaler) StepWidth() int { return len(s.Features) + 2*len(s.Calendar) }

// NaiveStep returns the step of a window holding the seasonal-naive value of its
// prediction (the target Period rows before the predicted row) and the index of the
// target among Features, or ok false when the window does not hold it (the target is
// not a feature, or Period > Lookback+Horizon-1): serving then needs that value given.
func (s *SequenceScaler) NaiveStep() (step, feature int, ok bool) {
	feature = slices.Index(s.Features, s.Target)
	step = s.Lookback - 1 + s.Horizon - s.period()
	return step, feature, feature >= 0 && step >= 0 && step < s.Lookback
}

// SequenceData is a loaded sequence table: training and validation windows, split by
// time, and the scaling fitted on the training windows.
type SequenceData struct {
	// Train holds the training windows: Dim = Lookback × len(Features), each row
	// time-major (the oldest step's features first).
	Train *Dataset
	// Validation holds the validation windows (N = 0 when ValidationFraction is 0).
	Validation *Dataset
	// Scaler is the fitted scaling; use it to cut test tables (SequenceScaler.Windows).
	Scaler *SequenceScaler
	// SeasonalNaiveRMSE is the RMSE, in target units, of the seasonal-naive forecast
	// (the target SeasonLength rows earlier in the same series) on the validation
	// windows that have such a value; 0 when none has (see SeasonalNaiveWindows).
	SeasonalNaiveRMSE float64
	// SeasonalNaiveWindows is the number of validation windows SeasonalNaiveRMSE covers.
	SeasonalNaiveWindows int
	// SkippedNoNaive is the number of windows left out (with BaselineSeasonalNaive)
	// because their series has no target value a period before the predicted row.
	SkippedNoNaive int
	// TrainEnd is the last time value of the training period, as written in the table.
	TrainEnd string
}

// Unscale turns a regression prediction back into target units.
func (s *SequenceScaler) Unscale(y float64) float64 { return y*s.TargetStd + s.TargetMean }

// seqTable is a table resolved against a configuration: columns found, values parsed,
// rows grouped and sorted.
type seqTable struct {
	source   string
	t        *Table
	features []int       // column indices
	target   int         // column index
	values   [][]float64 // per row, per feature (NaN = missing)
	targets  []float64   // per row (NaN = missing)
	rank     []int       // per row: the rank of its time value among the distinct ones
	calendar [][]float64 // per row: the calendar features' values (sin, cos each)
	times    []string    // per rank: the time value as written (first occurrence)
	series   [][]int     // row indices of each group, in time order
	names    []string    // each series' group value ("" without a group column)
}

// window is one sample: the rows of series s at positions end-Lookback+1..end, and
// the target at position end+Horizon.
type window struct{ s, end int }

// LoadSequences cuts the table into windows: rows are grouped by cfg.Group (or form
// one series), each group is sorted by cfg.Time, and a window ending at a group's
// row e holds the features of rows e-Lookback+1..e and predicts the target of row
// e+Horizon (positions count rows, so the rows should be evenly spaced in time).
//
// The split is by time: the distinct time values are ordered and the last
// ValidationFraction of them (rounded, at least one when the fraction is positive)
// form the validation period. A window whose target time is in the validation period is
// a validation window; every other window has its target and all its inputs before it
// and is a training window, so no validation value reaches training. Feature means and
// standard deviations (and the target's, for regression) are fitted on the rows the
// training windows use; a missing feature value (see IsMissing) becomes the mean, a
// window whose target is missing is skipped.
//
// Errors name source and, for a bad value, its line and column: a missing column, a
// value that is not a number, a duplicate (group, time), a group with fewer than
// Lookback+Horizon rows, no training windows.
func LoadSequences(t *Table, cfg SequenceConfig, source string) (*SequenceData, error) {
	if err := cfg.validate(source); err != nil {
		return nil, err
	}
	s := &SequenceScaler{
		Target: cfg.Target, Lookback: cfg.Lookback, Horizon: cfg.Horizon,
		Group: cfg.Group, Time: cfg.Time, Task: cfg.Task, TargetStd: 1,
		Period: cfg.Period, Baseline: cfg.Baseline, Calendar: slices.Clone(cfg.Calendar),
	}
	features := cfg.Features
	if len(features) == 0 {
		var err error
		if features, err = numericColumns(t, cfg, source); err != nil {
			return nil, err
		}
	}
	s.Features = slices.Clone(features)
	st, err := s.resolve(t, source)
	if err != nil {
		return nil, err
	}

	// The validation period: the last ValidationFraction of the distinct times.
	nt := len(st.times)
	nval := 0
	if cfg.ValidationFraction > 0 {
		nval = max(1, int(math.Round(cfg.ValidationFraction*float64(nt))))
	}
	if nval >= nt {
		return nil, fmt.Errorf("data: %s: no training windows: the table has %d distinct %s values and validation fraction %v leaves none before the validation period", source, nt, cfg.Time, cfg.ValidationFraction)
	}
	cut := nt - nval // ranks >= cut are in the validation period
	var train, val []window
	all := st.windows(s)
	var skipped int
	if s.Baseline == BaselineSeasonalNaive {
		all, skipped = st.withNaive(s, all)
	}
	for _, w := range all {
		row := st.series[w.s][w.end+cfg.Horizon]
		if st.rank[row] >= cut {
			val = append(val, w)
		} else {
			train = append(train, w)
		}
	}
	if len(train) == 0 {
		if cut == nt {
			return nil, fmt.Errorf("data: %s: no training windows: every window of lookback %d + horizon %d has a missing target", source, cfg.Lookback, cfg.Horizon)
		}
		return nil, fmt.Errorf("data: %s: no training windows: every window of lookback %d + horizon %d has its target at or after %s %s (the validation period), or a missing target", source, cfg.Lookback, cfg.Horizon, cfg.Time, st.times[cut])
	}
	if err := s.fit(st, train); err != nil {
		return nil, err
	}
	d := &SequenceData{Scaler: s, TrainEnd: st.times[cut-1], SkippedNoNaive: skipped}
	if d.Train, err = s.dataset(st, train); err != nil {
		return nil, err
	}
	if d.Validation, err = s.dataset(st, val); err != nil {
		return nil, err
	}
	d.SeasonalNaiveRMSE, d.SeasonalNaiveWindows = st.seasonalNaive(s, val)
	slog.Debug("data: sequence windows", "source", source, "train", len(train), "validation", len(val),
		"features", len(s.Features), "train_end", d.TrainEnd, "seasonal_naive_rmse", d.SeasonalNaiveRMSE)
	return d, nil
}

// Windows cuts every window of another table (a separate validation or test file) and
// scales it with the fitted statistics. The table must have the scaler's columns and
// obey the rules of LoadSequences.
func (s *SequenceScaler) Windows(t *Table, source string) (*Dataset, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("data: %s: sequence scaler: %w", source, err)
	}
	st, err := s.resolve(t, source)
	if err != nil {
		return nil, err
	}
	ws := st.windows(s)
	if s.Baseline == BaselineSeasonalNaive {
		ws, _ = st.withNaive(s, ws)
	}
	return s.dataset(st, ws)
}

// naive returns the seasonal-naive forecast of window w's target: the target Period
// rows before it in its series, NaN when there is none.
func (st *seqTable) naive(s *SequenceScaler, w window) float64 {
	rows := st.series[w.s]
	p := w.end + s.Horizon - s.period()
	if p < 0 {
		return math.NaN()
	}
	return st.targets[rows[p]]
}

// withNaive keeps the windows that have a seasonal-naive forecast and counts the rest.
func (st *seqTable) withNaive(s *SequenceScaler, ws []window) ([]window, int) {
	out := ws[:0:0]
	for _, w := range ws {
		if !math.IsNaN(st.naive(s, w)) {
			out = append(out, w)
		}
	}
	return out, len(ws) - len(out)
}

// validate checks the configuration.
func (c SequenceConfig) validate(source string) error {
	switch {
	case c.Lookback < 1:
		return fmt.Errorf("data: %s: sequence_csv.lookback must be >= 1, got %d", source, c.Lookback)
	case c.Horizon < 1:
		return fmt.Errorf("data: %s: sequence_csv.horizon must be >= 1, got %d", source, c.Horizon)
	case c.Target == "":
		return fmt.Errorf("data: %s: sequence_csv.target: no target column given", source)
	case c.Time == "":
		return fmt.Errorf("data: %s: sequence_csv.time: no time column given; rows must be ordered by a column such as Month", source)
	case c.Group != "" && c.Group == c.Time:
		return fmt.Errorf("data: %s: sequence_csv.group and sequence_csv.time are both %q", source, c.Time)
	case math.IsNaN(c.ValidationFraction) || c.ValidationFraction < 0 || c.ValidationFraction >= 1:
		return fmt.Errorf("data: %s: validation fraction must be in [0, 1), got %v", source, c.ValidationFraction)
	case c.Period < 0:
		return fmt.Errorf("data: %s: sequence_csv.period must be >= 1, got %d", source, c.Period)
	case c.Baseline != "" && c.Baseline != BaselineSeasonalNaive:
		return fmt.Errorf("data: %s: sequence_csv.baseline: %q is not %s", source, c.Baseline, BaselineSeasonalNaive)
	case c.Baseline != "" && c.Task != TaskRegression:
		return fmt.Errorf("data: %s: sequence_csv.baseline applies only to regression, not %s", source, c.Task)
	}
	for i, f := range c.Calendar {
		if f != CalendarMonth && f != CalendarWeek {
			return fmt.Errorf("data: %s: sequence_csv.calendar[%d]: %q is not %s or %s", source, i, f, CalendarMonth, CalendarWeek)
		}
		if slices.Index(c.Calendar, f) != i {
			return fmt.Errorf("data: %s: sequence_csv.calendar[%d]: %q is listed twice", source, i, f)
		}
	}
	switch c.Task {
	case TaskBinary, TaskMulticlass, TaskRegression:
	default:
		return fmt.Errorf("data: %s: task %q is not one of %s, %s, %s", source, c.Task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	seen := map[string]bool{}
	for i, f := range c.Features {
		if seen[f] {
			return fmt.Errorf("data: %s: sequence_csv.features[%d]: %q is listed twice", source, i, f)
		}
		seen[f] = true
	}
	return nil
}

// validate checks a scaler, which may come from a file.
func (s *SequenceScaler) validate() error {
	c := SequenceConfig{Lookback: s.Lookback, Horizon: s.Horizon, Target: s.Target, Features: s.Features, Group: s.Group, Time: s.Time, Task: s.Task,
		Period: s.Period, Baseline: s.Baseline, Calendar: s.Calendar}
	if err := c.validate("scaler"); err != nil {
		return err
	}
	if len(s.Features) == 0 || len(s.Mean) != len(s.Features) || len(s.Std) != len(s.Features) {
		return fmt.Errorf("%d features with %d means and %d standard deviations", len(s.Features), len(s.Mean), len(s.Std))
	}
	for i := range s.Features {
		if !finite(s.Mean[i]) || !finite(s.Std[i]) || s.Std[i] <= 0 {
			return fmt.Errorf("feature %q: mean %v, std %v", s.Features[i], s.Mean[i], s.Std[i])
		}
	}
	if !finite(s.TargetMean) || !finite(s.TargetStd) || s.TargetStd <= 0 {
		return fmt.Errorf("target %q: mean %v, std %v", s.Target, s.TargetMean, s.TargetStd)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// numericColumns lists the columns other than group and time whose non-missing values
// all parse as numbers, in table order.
func numericColumns(t *Table, cfg SequenceConfig, source string) ([]string, error) {
	var out []string
	for ci, name := range t.Columns {
		if name == cfg.Group || name == cfg.Time {
			continue
		}
		numeric, present := true, false
		var bad nonFiniteCells
		for r, row := range t.Rows {
			if IsMissing(row[ci]) {
				continue
			}
			present = true
			if !bad.add(row[ci], t.Line(r)) {
				numeric = false
				break
			}
		}
		if numeric {
			if err := bad.err(name); err != nil {
				return nil, fmt.Errorf("data: %s: %w", source, err)
			}
		}
		if numeric && present {
			out = append(out, name)
		} else {
			slog.Debug("data: sequence column is not a numeric feature", "source", source, "column", name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("data: %s: no numeric feature columns besides %q and %q (columns: %s)", source, cfg.Group, cfg.Time, columnList(t.Columns))
	}
	return out, nil
}

// column returns the index of a column the configuration names, or an error naming it.
func column(t *Table, source, field, name string) (int, error) {
	ci := t.ColumnIndex(name)
	if ci < 0 {
		return -1, fmt.Errorf("data: %s: %s: column %q not found%s (columns: %s)", source, field, name, jobs.DidYouMean(name, t.Columns), columnList(t.Columns))
	}
	return ci, nil
}

// resolve finds the columns, parses the values, and groups and sorts the rows.
func (s *SequenceScaler) resolve(t *Table, source string) (*seqTable, error) {
	if len(t.Rows) == 0 {
		return nil, fmt.Errorf("data: %s: the CSV has a header but no data rows", source)
	}
	st := &seqTable{source: source, t: t}
	var err error
	if st.target, err = column(t, source, "sequence_csv.target", s.Target); err != nil {
		return nil, err
	}
	ti, err := column(t, source, "sequence_csv.time", s.Time)
	if err != nil {
		return nil, err
	}
	gi := -1
	if s.Group != "" {
		if gi, err = column(t, source, "sequence_csv.group", s.Group); err != nil {
			return nil, err
		}
	}
	for i, f := range s.Features {
		ci, err := column(t, source, fmt.Sprintf("sequence_csv.features[%d]", i), f)
		if err != nil {
			return nil, err
		}
		st.features = append(st.features, ci)
	}

	st.values = make([][]float64, len(t.Rows))
	st.targets = make([]float64, len(t.Rows))
	flat := make([]float64, len(t.Rows)*len(st.features))
	for r, row := range t.Rows {
		st.values[r] = flat[r*len(st.features) : (r+1)*len(st.features)]
		for j, ci := range st.features {
			if st.values[r][j], err = st.number(r, ci); err != nil {
				return nil, err
			}
		}
		if st.targets[r], err = st.number(r, st.target); err != nil {
			return nil, err
		}
		if v := st.targets[r]; !math.IsNaN(v) {
			switch {
			case s.Task == TaskBinary && v != 0 && v != 1:
				return nil, fmt.Errorf("data: %s: line %d, column %s: binary_classification needs a target of 0 or 1, got %s", source, t.Line(r), s.Target, Excerpt(row[st.target]))
			case s.Task == TaskMulticlass && (v < 0 || v != math.Trunc(v) || v >= MaxClasses):
				return nil, fmt.Errorf("data: %s: line %d, column %s: multiclass_classification needs a class index 0..%d, got %s", source, t.Line(r), s.Target, MaxClasses-1, Excerpt(row[st.target]))
			}
		}
	}
	if err := st.order(ti, gi); err != nil {
		return nil, err
	}
	if len(s.Calendar) > 0 {
		if err := st.calendarValues(s, ti); err != nil {
			return nil, err
		}
	}
	need := s.Lookback + s.Horizon
	for i, rows := range st.series {
		if len(rows) < need {
			what := "the table"
			if gi >= 0 {
				what = fmt.Sprintf("group %s", st.names[i])
			}
			return nil, fmt.Errorf("data: %s: %s has %d rows; lookback %d + horizon %d needs at least %d", source, what, len(rows), s.Lookback, s.Horizon, need)
		}
	}
	return st, nil
}

// number parses row r's value in column ci: NaN when missing, an error naming the line
// and column when not a number.
func (st *seqTable) number(r, ci int) (float64, error) {
	v := st.t.Rows[r][ci]
	if IsMissing(v) {
		return math.NaN(), nil
	}
	f, ok := parseNumber(v)
	if !ok {
		return 0, fmt.Errorf("data: %s: line %d, column %s: %s is not a number", st.source, st.t.Line(r), shortName(st.t.Columns[ci]), Excerpt(v))
	}
	return f, nil
}

// order ranks the time values, groups the rows (groups in order of first appearance)
// and sorts each group by time, refusing missing times and duplicate (group, time).
func (st *seqTable) order(ti, gi int) error {
	t := st.t
	numeric := true
	nums := make([]float64, len(t.Rows))
	for r, row := range t.Rows {
		if IsMissing(row[ti]) {
			return fmt.Errorf("data: %s: line %d, column %s: missing time value %q", st.source, t.Line(r), t.Columns[ti], row[ti])
		}
		if numeric {
			var ok bool
			if nums[r], ok = parseNumber(row[ti]); !ok {
				numeric = false
			}
		}
	}
	// Distinct time keys, sorted; rank[r] is the position of row r's key.
	byKey := make([]int, len(t.Rows)) // rows sorted by time key, stable
	for i := range byKey {
		byKey[i] = i
	}
	cmp := func(a, b int) int { return compareStrings(t.Rows[a][ti], t.Rows[b][ti]) }
	if numeric {
		cmp = func(a, b int) int { return compareFloats(nums[a], nums[b]) }
	}
	slices.SortStableFunc(byKey, cmp)
	st.rank = make([]int, len(t.Rows))
	for i, r := range byKey {
		if i == 0 || cmp(byKey[i-1], r) != 0 {
			st.times = append(st.times, t.Rows[r][ti])
		}
		st.rank[r] = len(st.times) - 1
	}

	index := map[string]int{}
	for r, row := range t.Rows {
		g := ""
		if gi >= 0 {
			g = row[gi]
		}
		i, ok := index[g]
		if !ok {
			i = len(st.series)
			index[g] = i
			st.series = append(st.series, nil)
			st.names = append(st.names, g)
		}
		st.series[i] = append(st.series[i], r)
	}
	for i, rows := range st.series {
		slices.SortStableFunc(rows, func(a, b int) int { return st.rank[a] - st.rank[b] })
		for k := 1; k < len(rows); k++ {
			if a, b := rows[k-1], rows[k]; st.rank[a] == st.rank[b] {
				what := "the table"
				if gi >= 0 {
					what = fmt.Sprintf("group %s", st.names[i])
				}
				return fmt.Errorf("data: %s: lines %d and %d: %s has two rows for %s %s", st.source, t.Line(a), t.Line(b), what, t.Columns[ti], t.Rows[b][ti])
			}
		}
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareFloats(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// windows lists every window whose target is present, series by series.
func (st *seqTable) windows(s *SequenceScaler) []window {
	var out []window
	for i, rows := range st.series {
		for end := s.Lookback - 1; end+s.Horizon < len(rows); end++ {
			if !math.IsNaN(st.targets[rows[end+s.Horizon]]) {
				out = append(out, window{s: i, end: end})
			}
		}
	}
	return out
}

// fit computes the feature statistics over the distinct rows the windows read, and
// the target's over their targets (regression only).
func (s *SequenceScaler) fit(st *seqTable, ws []window) error {
	nf := len(st.features)
	used := make([]bool, len(st.t.Rows))
	var ys []float64
	for _, w := range ws {
		rows := st.series[w.s]
		for p := w.end - s.Lookback + 1; p <= w.end; p++ {
			used[rows[p]] = true
		}
		y := st.targets[rows[w.end+s.Horizon]]
		if s.Baseline == BaselineSeasonalNaive {
			y -= st.naive(s, w)
		}
		ys = append(ys, y)
	}
	s.Mean, s.Std = make([]float64, nf), make([]float64, nf)
	col := make([]float64, 0, len(used))
	for j := range nf {
		col = col[:0]
		for r, u := range used {
			if v := st.values[r][j]; u && !math.IsNaN(v) {
				col = append(col, v)
			}
		}
		name := s.Features[j]
		if len(col) == 0 {
			slog.Debug("data: sequence feature has no training value; it will be 0", "source", st.source, "column", name)
			s.Mean[j], s.Std[j] = 0, 1
			continue
		}
		mean, std := meanStd(col)
		if !finite(mean) {
			return fmt.Errorf("data: %s: column %s: the training values overflow (mean %v)", st.source, name, mean)
		}
		if std == 0 {
			std = 1
		}
		s.Mean[j], s.Std[j] = mean, std
	}
	if s.Task == TaskRegression {
		mean, std := meanStd(ys)
		if !finite(mean) {
			return fmt.Errorf("data: %s: column %s: the training targets overflow (mean %v)", st.source, s.Target, mean)
		}
		if std == 0 {
			std = 1
		}
		s.TargetMean, s.TargetStd = mean, std
	}
	return nil
}

// errRange is wrapped by scaling errors.
var errRange = errors.New("out of range after scaling")

// dataset scales the windows into a Dataset.
func (s *SequenceScaler) dataset(st *seqTable, ws []window) (*Dataset, error) {
	nf := s.StepWidth()
	dim := s.Lookback * nf
	if len(ws) > 0 && dim > MaxSequenceValues/len(ws) {
		return nil, fmt.Errorf("data: %s: %d windows of %d steps × %d features exceed %d values", st.source, len(ws), s.Lookback, nf, MaxSequenceValues)
	}
	d := &Dataset{X: make([]float32, len(ws)*dim), Y: make([]float32, len(ws)), N: len(ws), Dim: dim,
		Naive: make([]float64, len(ws)), Residual: s.Baseline == BaselineSeasonalNaive}
	for i, w := range ws {
		rows := st.series[w.s]
		x := d.X[i*dim : (i+1)*dim]
		for step := range s.Lookback {
			r := rows[w.end-s.Lookback+1+step]
			for j, v := range st.values[r] {
				if math.IsNaN(v) {
					continue // missing: the mean, 0 after scaling
				}
				z := (v - s.Mean[j]) / s.Std[j]
				if !(math.Abs(z) <= math.MaxFloat32) {
					return nil, fmt.Errorf("data: %s: line %d, column %s: %s is %w", st.source, st.t.Line(r), s.Features[j], strconv.Quote(st.t.Rows[r][st.features[j]]), errRange)
				}
				x[step*nf+j] = float32(z)
			}
			if st.calendar != nil {
				for j, v := range st.calendar[r] {
					x[step*nf+len(s.Features)+j] = float32(v)
				}
			}
		}
		r := rows[w.end+s.Horizon]
		d.Naive[i] = st.naive(s, w)
		target := st.targets[r]
		if d.Residual {
			target -= d.Naive[i]
		}
		y := (target - s.TargetMean) / s.TargetStd
		if !(math.Abs(y) <= math.MaxFloat32) {
			return nil, fmt.Errorf("data: %s: line %d, column %s: %s is %w", st.source, st.t.Line(r), s.Target, strconv.Quote(st.t.Rows[r][st.target]), errRange)
		}
		d.Y[i] = float32(y)
	}
	return d, nil
}

// seasonalNaive returns the RMSE of predicting each window's target by the target
// SeasonLength rows earlier in its series, over the windows where that value exists,
// and the number of those windows.
func (st *seqTable) seasonalNaive(s *SequenceScaler, ws []window) (float64, int) {
	var ss float64
	n := 0
	for _, w := range ws {
		rows := st.series[w.s]
		p := w.end + s.Horizon
		if p-s.period() < 0 {
			continue
		}
		prev := st.targets[rows[p-s.period()]]
		if math.IsNaN(prev) {
			continue
		}
		d := st.targets[rows[p]] - prev
		ss += d * d
		n++
	}
	if n == 0 {
		return 0, 0
	}
	return math.Sqrt(ss / float64(n)), n
}

// calendarValues parses the Time column as dates and fills st.calendar with the
// scaler's calendar features of every row.
func (st *seqTable) calendarValues(s *SequenceScaler, ti int) error {
	st.calendar = make([][]float64, len(st.t.Rows))
	flat := make([]float64, len(st.t.Rows)*2*len(s.Calendar))
	for r, row := range st.t.Rows {
		tm, err := parseDate(row[ti])
		if err != nil {
			return fmt.Errorf("data: %s: line %d, column %s: sequence_csv.calendar needs dates such as 2024-01 or 2024-01-31: %w",
				st.source, st.t.Line(r), st.t.Columns[ti], err)
		}
		vals := flat[r*2*len(s.Calendar) : (r+1)*2*len(s.Calendar)]
		s.calendarOf(tm, vals)
		st.calendar[r] = vals
	}
	return nil
}

// calendarOf writes the calendar features of the date tm into dst (two per feature:
// sine and cosine of the position in the year).
func (s *SequenceScaler) calendarOf(tm time.Time, dst []float64) {
	for j, f := range s.Calendar {
		var angle float64
		switch f {
		case CalendarMonth:
			angle = 2 * math.Pi * float64(tm.Month()-1) / 12
		case CalendarWeek:
			_, wk := tm.ISOWeek()
			angle = 2 * math.Pi * float64(wk-1) / 53
		}
		dst[2*j], dst[2*j+1] = math.Sin(angle), math.Cos(angle)
	}
}

// CalendarStep writes the calendar features of one step's time value (a date such as
// 2024-01 or 2024-01-31) into dst, 2·len(Calendar) values as training computes them;
// serving uses it.
func (s *SequenceScaler) CalendarStep(v string, dst []float64) error {
	tm, err := parseDate(v)
	if err != nil {
		return err
	}
	s.calendarOf(tm, dst)
	return nil
}

// parseDate reads a time value as a date: 2024-01, 2024-01-31 or RFC 3339.
func parseDate(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	for _, layout := range []string{"2006-01", "2006-01-02", time.RFC3339, "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not a date", Excerpt(v))
}
