package audit

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ReasonMissing is the reason given for the excluded group of missing categories.
const ReasonMissing = "category unknown: counted apart, not in the ratios"

// missingValues are the spellings of an unknown category, compared case-insensitively
// after trimming spaces.
var missingValues = []string{"", "na", "n/a", "nan", "null", "?"}

// IsMissing reports whether a raw category is unknown: empty, NA, N/A, NaN, null or ?,
// in any case and with surrounding spaces.
func IsMissing(v string) bool {
	v = strings.TrimSpace(v)
	for _, m := range missingValues {
		if strings.EqualFold(v, m) {
			return true
		}
	}
	return false
}

// CheckSensitive refuses a sensitive column with more than MaxCategories distinct
// non-missing values: such a column (an age, a salary) must be binned with Bin first.
// For a numeric column the error suggests edges at its quartiles.
func CheckSensitive(name string, values []string) error {
	distinct := make(map[string]struct{})
	for _, v := range values {
		if !IsMissing(v) {
			distinct[v] = struct{}{}
		}
	}
	all := len(distinct)
	if all <= MaxCategories {
		return nil
	}
	if edges, ok := suggestEdges(values); ok {
		return fmt.Errorf("column %q has %d distinct values (more than %d); group it with spec.audit.bins.%s: %s",
			name, all, MaxCategories, name, edges)
	}
	return fmt.Errorf("column %q has %d distinct values (more than %d); map it to at most %d categories before the audit, or, if it is numeric, group it with spec.audit.bins.%s: [edges]",
		name, all, MaxCategories, MaxCategories, name)
}

// suggestEdges returns the quartiles of a numeric column, rounded to two significant
// digits, as a bins list ("[30, 40, 50]"); false when a value is not a number.
func suggestEdges(values []string) (string, bool) {
	var xs []float64
	for _, v := range values {
		if IsMissing(v) {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !finite(x) {
			return "", false
		}
		xs = append(xs, x)
	}
	slices.Sort(xs)
	var parts []string
	last := math.Inf(-1)
	for _, q := range []float64{0.25, 0.5, 0.75} {
		s := roundSignificant(percentile(xs, q))
		if e, _ := strconv.ParseFloat(s, 64); e > last {
			parts = append(parts, s)
			last = e
		}
	}
	return "[" + strings.Join(parts, ", ") + "]", true
}

// roundSignificant writes x rounded to two significant digits without an exponent.
func roundSignificant(x float64) string {
	if x == 0 {
		return "0"
	}
	e := int(math.Floor(math.Log10(math.Abs(x))))
	p := math.Pow(10, float64(e-1))
	return strconv.FormatFloat(math.Round(x/p)*p, 'f', max(0, 1-e), 64)
}

// Bin maps numeric strings to the labels of the intervals cut by edges, which must be
// finite and strictly increasing: "<e0", "[e0,e1)", ..., ">=en" (edges written as
// briefly as they round-trip, e.g. "<30", "[30,40)", ">=50"). Missing values (IsMissing)
// stay as they are; any other value that is not a number is an error naming it.
func Bin(values []string, edges []float64) ([]string, error) {
	if len(edges) == 0 {
		return nil, fmt.Errorf("audit: bin: no edges")
	}
	for i, e := range edges {
		if !finite(e) {
			return nil, fmt.Errorf("audit: bin: edge %g is not finite", e)
		}
		if i > 0 && !(e > edges[i-1]) {
			return nil, fmt.Errorf("audit: bin: edges must be strictly increasing: %g follows %g", e, edges[i-1])
		}
	}
	labels := make([]string, len(edges)+1)
	labels[0] = "<" + formatNumber(edges[0])
	for i := 1; i < len(edges); i++ {
		labels[i] = "[" + formatNumber(edges[i-1]) + "," + formatNumber(edges[i]) + ")"
	}
	labels[len(edges)] = ">=" + formatNumber(edges[len(edges)-1])
	out := make([]string, len(values))
	for i, v := range values {
		if IsMissing(v) {
			out[i] = v
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("audit: bin: value %q at row %d is not a number", v, i)
		}
		// The number of edges <= x is the interval's index.
		out[i] = labels[sort.Search(len(edges), func(j int) bool { return edges[j] > x })]
	}
	return out, nil
}

// attribute is one audited attribute (a column or an intersection of columns) with
// what the gate needs of it.
type attribute struct {
	name     string
	groups   []int   // indices into AuditSection.Groups
	rowGroup []int32 // per row, the index into groups of the row's group
	eligible int     // groups in the ratios
	maxSel   float64 // highest selection rate of the eligible groups (binary)
	maxScore float64 // highest score rate of the eligible groups
}

// groupAcc accumulates one group's rows.
type groupAcc struct {
	tuple    []string
	missing  bool
	count    int
	pos      int // binary: positive labels
	selected int // binary: score >= threshold
	tp, fp   int // binary: selected positives and negatives
	above    int // binary, regression: score above the split's median
	sumLabel float64
	sumPred  float64
	correct  int // multiclass
}

// auditGroups computes the group figures of every audited attribute.
func auditGroups(cfg Config, in Input, n int, ranked *rankedBinary) (*AuditSection, []attribute) {
	sec := &AuditSection{
		Split:            cfg.Split,
		Sensitive:        append([]string{}, cfg.Sensitive...),
		MinGroupFraction: cfg.MinGroupFraction,
		Groups:           []Group{},
	}
	if cfg.Task == TaskBinary {
		th := cfg.Threshold
		sec.Threshold = &th
	}
	median := math.NaN()
	switch cfg.Task {
	case TaskBinary:
		median = medianSorted(ranked.score)
	case TaskRegression:
		median = medianSorted(slices.Sorted(slices.Values(in.Scores)))
	}
	var attrs []attribute
	for _, cols := range combinations(len(cfg.Sensitive), cfg.Intersectional) {
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = cfg.Sensitive[c]
		}
		accs := make(map[string]*groupAcc)
		key := make([]string, len(cols))
		rowAcc := make([]*groupAcc, n)
		for row := range n {
			missing := false
			for i, c := range cols {
				key[i] = in.Groups[cfg.Sensitive[c]][row]
				if IsMissing(key[i]) {
					missing = true
				}
			}
			k := "\x00missing"
			if !missing {
				k = strings.Join(key, "\x00")
			}
			a := accs[k]
			if a == nil {
				a = &groupAcc{missing: missing}
				if !missing {
					a.tuple = slices.Clone(key)
				}
				accs[k] = a
			}
			addRow(a, cfg, in, row, median)
			rowAcc[row] = a
		}
		list := make([]*groupAcc, 0, len(accs))
		for _, a := range accs {
			list = append(list, a)
		}
		slices.SortFunc(list, func(a, b *groupAcc) int {
			if a.missing != b.missing {
				if a.missing {
					return 1
				}
				return -1
			}
			return slices.CompareFunc(a.tuple, b.tuple, compareCategories)
		})
		attr := attribute{name: strings.Join(names, ","), rowGroup: make([]int32, n)}
		index := make(map[*groupAcc]int32, len(list))
		for k, a := range list {
			index[a] = int32(k)
			attr.groups = append(attr.groups, len(sec.Groups))
			sec.Groups = append(sec.Groups, makeGroup(cfg, attr.name, a, n))
		}
		for row, a := range rowAcc {
			attr.rowGroup[row] = index[a]
		}
		sec.Notes = append(sec.Notes, setRatios(cfg, sec.Groups, list, &attr)...)
		attrs = append(attrs, attr)
	}
	setRatioIntervals(cfg, in, n, median, sec.Groups, attrs)
	return sec, attrs
}

// setRatioIntervals sets the 95% bootstrap interval of every impact ratio (selection
// and scoring) with the metrics' resampling (same seed, so the same resamples): in each
// resample a group's weighted rate over the highest weighted rate of the attribute's
// eligible groups; a resample where the group has no row, or every eligible rate is 0,
// is left out.
func setRatioIntervals(cfg Config, in Input, n int, median float64, groups []Group, attrs []attribute) {
	if cfg.Resamples == 0 || cfg.Task == TaskMulticlass {
		return
	}
	selected, above := make([]bool, n), make([]bool, n)
	for row := range n {
		s := in.Scores[row]
		selected[row] = cfg.Task == TaskBinary && s >= cfg.Threshold
		above[row] = s > median
	}
	// bootstrapCI calls the stats in order with each resample's weights, so the first
	// stat of an attribute counts that attribute's groups for the resample and the
	// others read the counts.
	type counts struct{ rows, selected, above []float64 }
	var stats []rowStat
	var point []float64
	var dsts []**[2]float64
	for a := range attrs {
		attr := &attrs[a]
		m := len(attr.groups)
		c := &counts{rows: make([]float64, m), selected: make([]float64, m), above: make([]float64, m)}
		eligible := make([]bool, m)
		for k, i := range attr.groups {
			eligible[k] = !groups[i].Excluded
		}
		first := true
		for k, i := range attr.groups {
			g := &groups[i]
			for _, r := range []struct {
				ratio *float64
				dst   **[2]float64
				hits  []float64
			}{{g.ImpactRatio, &g.ImpactRatioCI95, c.selected}, {g.ScoreImpactRatio, &g.ScoreImpactRatioCI95, c.above}} {
				if r.ratio == nil {
					continue
				}
				count := first
				first = false
				hits := r.hits
				stats = append(stats, func(w []int32) (float64, bool) {
					if count {
						clear(c.rows)
						clear(c.selected)
						clear(c.above)
						for row, gk := range attr.rowGroup {
							wt := float64(w[row])
							c.rows[gk] += wt
							if selected[row] {
								c.selected[gk] += wt
							}
							if above[row] {
								c.above[gk] += wt
							}
						}
					}
					best := 0.0
					for j, ok := range eligible {
						if ok && c.rows[j] > 0 {
							best = max(best, hits[j]/c.rows[j])
						}
					}
					if c.rows[k] == 0 || best == 0 {
						return 0, false
					}
					return hits[k] / c.rows[k] / best, true
				})
				point = append(point, *r.ratio)
				dsts = append(dsts, r.dst)
			}
		}
	}
	if len(stats) == 0 {
		return
	}
	for t, iv := range bootstrapCI(n, cfg.Resamples, cfg.Seed, point, stats) {
		ci := iv.ci
		*dsts[t] = &ci
	}
}

// addRow adds one row to a group.
func addRow(a *groupAcc, cfg Config, in Input, row int, median float64) {
	a.count++
	switch cfg.Task {
	case TaskBinary:
		s, pos := in.Scores[row], in.Labels[row] == 1
		sel := s >= cfg.Threshold
		if pos {
			a.pos++
		}
		if sel {
			a.selected++
			if pos {
				a.tp++
			} else {
				a.fp++
			}
		}
		if s > median {
			a.above++
		}
	case TaskRegression:
		a.sumLabel += in.Labels[row]
		a.sumPred += in.Scores[row]
		if in.Scores[row] > median {
			a.above++
		}
	case TaskMulticlass:
		k := len(in.Classes)
		if argmax(in.Scores[row*k:(row+1)*k]) == int(in.Labels[row]) {
			a.correct++
		}
	}
}

// makeGroup turns an accumulated group into its report entry, without the ratios.
func makeGroup(cfg Config, attr string, a *groupAcc, n int) Group {
	g := Group{
		Attribute: attr,
		Category:  strings.Join(a.tuple, ","),
		Missing:   a.missing,
		Count:     a.count,
		Fraction:  float64(a.count) / float64(n),
	}
	c := float64(a.count)
	switch cfg.Task {
	case TaskBinary:
		g.Positives = ptr(a.pos)
		g.BaseRate = ptr(float64(a.pos) / c)
		g.SelectionRate = ptr(float64(a.selected) / c)
		if a.pos > 0 {
			g.TPR = ptr(float64(a.tp) / float64(a.pos))
		}
		if neg := a.count - a.pos; neg > 0 {
			g.FPR = ptr(float64(a.fp) / float64(neg))
		}
		g.ScoreRate = ptr(float64(a.above) / c)
	case TaskRegression:
		g.MeanLabel = ptr(a.sumLabel / c)
		g.MeanPrediction = ptr(a.sumPred / c)
		g.ScoreRate = ptr(float64(a.above) / c)
	case TaskMulticlass:
		g.Accuracy = ptr(float64(a.correct) / c)
	}
	switch {
	case a.missing:
		g.Excluded, g.Reason = true, ReasonMissing
	case g.Fraction < cfg.MinGroupFraction:
		f, m := formatPercents(g.Fraction, cfg.MinGroupFraction)
		g.Excluded, g.Reason = true, fmt.Sprintf("%s%% of rows < minGroupFraction %s%%", f, m)
	}
	return g
}

// rate is a share of a group's rows as a fraction of counts, so that ratios of rates
// are computed with one rounding (3/5 over 4/5 is exactly 0.75).
type rate struct{ num, den int }

// less reports whether r < o.
func (r rate) less(o rate) bool { return r.num*o.den < o.num*r.den }

// over returns r / o; o.num > 0.
func (r rate) over(o rate) float64 { return float64(r.num*o.den) / float64(r.den*o.num) }

// setRatios fills the impact ratios of one attribute's eligible groups (accs in the
// order of attr.groups) and returns the notes on ratios it could not compute.
func setRatios(cfg Config, groups []Group, accs []*groupAcc, attr *attribute) []string {
	if cfg.Task == TaskMulticlass {
		return nil
	}
	var maxSel, maxScore rate
	for k, i := range attr.groups {
		if groups[i].Excluded {
			continue
		}
		a := accs[k]
		sel, score := rate{a.selected, a.count}, rate{a.above, a.count}
		if attr.eligible == 0 || maxSel.less(sel) {
			maxSel = sel
		}
		if attr.eligible == 0 || maxScore.less(score) {
			maxScore = score
		}
		attr.eligible++
	}
	if attr.eligible == 0 {
		return []string{fmt.Sprintf("%s: not enough data (no group reaches minGroupFraction %s): no impact ratios",
			attr.name, formatNumber(cfg.MinGroupFraction))}
	}
	attr.maxSel = float64(maxSel.num) / float64(maxSel.den)
	attr.maxScore = float64(maxScore.num) / float64(maxScore.den)
	binary := cfg.Task == TaskBinary
	var notes []string
	if binary && maxSel.num == 0 {
		notes = append(notes, fmt.Sprintf("%s: every selection rate is 0 (no score >= threshold %s): impact ratios undefined, omitted",
			attr.name, formatNumber(cfg.Threshold)))
	}
	if maxScore.num == 0 {
		notes = append(notes, fmt.Sprintf("%s: every score rate is 0 (no score above the median): scoring impact ratios undefined, omitted", attr.name))
	}
	for k, i := range attr.groups {
		g := &groups[i]
		if g.Excluded {
			continue
		}
		a := accs[k]
		if binary && maxSel.num > 0 {
			g.ImpactRatio = ptr(rate{a.selected, a.count}.over(maxSel))
		}
		if maxScore.num > 0 {
			g.ScoreImpactRatio = ptr(rate{a.above, a.count}.over(maxScore))
		}
	}
	return notes
}

// evaluateGate checks the configured figures. The reasons come in the order of the
// GateConfig fields; impact ratios attribute by attribute, group by group.
func evaluateGate(cfg Config, ms map[string]Metric, groups []Group, attrs []attribute) *Gate {
	var reasons []string
	g := cfg.Gate
	if g.MinImpactRatio != nil {
		reasons = append(reasons, impactReasons(cfg, *g.MinImpactRatio, groups, attrs)...)
	}
	metric := func(name string, limit *float64, tasks []string, below bool) {
		if limit == nil {
			return
		}
		full := cfg.Prefix + name
		m, ok := ms[full]
		switch {
		case !slices.Contains(tasks, cfg.Task):
			reasons = append(reasons, fmt.Sprintf("%s: not available for %s", full, cfg.Task))
		case !ok:
			reasons = append(reasons, fmt.Sprintf("%s: not available (the %s split has only one class)", full, cfg.Split))
		case below && m.Value < *limit:
			reasons = append(reasons, fmt.Sprintf("%s %s < %s", full, formatAgainst(m.Value, *limit), formatNumber(*limit)))
		case !below && m.Value > *limit:
			reasons = append(reasons, fmt.Sprintf("%s %s > %s", full, formatAgainst(m.Value, *limit), formatNumber(*limit)))
		}
	}
	metric(metricAUC, g.MinAUC, []string{TaskBinary}, true)
	metric(metricAccuracy, g.MinAccuracy, []string{TaskBinary, TaskMulticlass}, true)
	metric(metricRMSE, g.MaxRMSE, []string{TaskRegression}, false)
	return &Gate{Passed: len(reasons) == 0, Reasons: reasons}
}

// impactReasons returns the MinImpactRatio reasons.
func impactReasons(cfg Config, limit float64, groups []Group, attrs []attribute) []string {
	label, rate := "impact ratio", "selection rate"
	switch cfg.Task {
	case TaskMulticlass:
		return []string{fmt.Sprintf("impact ratio: not available for %s", cfg.Task)}
	case TaskRegression:
		label, rate = "scoring impact ratio", "score rate"
	}
	if len(attrs) == 0 {
		return []string{label + ": no sensitive columns to audit"}
	}
	var reasons []string
	for _, a := range attrs {
		maxRate := a.maxSel
		if cfg.Task == TaskRegression {
			maxRate = a.maxScore
		}
		switch {
		case a.eligible == 0:
			reasons = append(reasons, fmt.Sprintf("%s for %s: not enough data (no group reaches minGroupFraction %s)",
				label, a.name, formatNumber(cfg.MinGroupFraction)))
			continue
		case maxRate == 0:
			reasons = append(reasons, fmt.Sprintf("%s for %s: undefined (every %s is 0)", label, a.name, rate))
			continue
		}
		for _, i := range a.groups {
			grp := &groups[i]
			r := grp.ImpactRatio
			if cfg.Task == TaskRegression {
				r = grp.ScoreImpactRatio
			}
			if r != nil && *r < limit {
				reasons = append(reasons, fmt.Sprintf("%s %s for %s=%s < %s",
					label, formatAgainst(*r, limit), grp.Attribute, grp.Category, formatNumber(limit)))
			}
		}
	}
	return reasons
}

// combinations returns the audited column sets: each column alone, then, when
// intersectional, every combination of two or more columns by size and then in the
// columns' order.
func combinations(k int, intersectional bool) [][]int {
	var out [][]int
	for c := range k {
		out = append(out, []int{c})
	}
	if !intersectional {
		return out
	}
	for size := 2; size <= k; size++ {
		var rec func(start int, cur []int)
		rec = func(start int, cur []int) {
			if len(cur) == size {
				out = append(out, slices.Clone(cur))
				return
			}
			for c := start; c < k; c++ {
				rec(c+1, append(cur, c))
			}
		}
		rec(0, nil)
	}
	return out
}

// medianSorted returns the median of ascending values (the mean of the middle two for
// an even count).
func medianSorted(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return s[n/2-1]/2 + s[n/2]/2
}

// compareCategories orders categories: binned intervals and numbers by their lower
// bound ("<30", "[30,40)", ">=50"), before other categories in byte order.
func compareCategories(a, b string) int {
	ka, oka := categoryBound(a)
	kb, okb := categoryBound(b)
	switch {
	case oka && okb:
		if c := cmp.Compare(ka, kb); c != 0 {
			return c
		}
	case oka:
		return -1
	case okb:
		return 1
	}
	return strings.Compare(a, b)
}

// categoryBound returns the lower bound of a Bin label or the value of a number.
func categoryBound(s string) (float64, bool) {
	switch {
	case strings.HasPrefix(s, "<"):
		if _, err := strconv.ParseFloat(s[1:], 64); err == nil {
			return math.Inf(-1), true
		}
	case strings.HasPrefix(s, ">="):
		if v, err := strconv.ParseFloat(s[2:], 64); err == nil {
			return v, true
		}
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, ")"):
		lo, _, ok := strings.Cut(s[1:len(s)-1], ",")
		if v, err := strconv.ParseFloat(lo, 64); ok && err == nil {
			return v, true
		}
	default:
		if v, err := strconv.ParseFloat(s, 64); err == nil && finite(v) {
			return v, true
		}
	}
	return 0, false
}

// formatPercents writes a fraction and a limit as percentages with one decimal, or
// more where one decimal would write them the same.
func formatPercents(f, limit float64) (string, string) {
	for d := 1; d <= 6; d++ {
		a := trimZeros(strconv.FormatFloat(f*100, 'f', d, 64))
		b := trimZeros(strconv.FormatFloat(limit*100, 'f', d, 64))
		if a != b || f == limit {
			return a, b
		}
	}
	return formatNumber(f * 100), formatNumber(limit * 100)
}

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }
