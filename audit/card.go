package audit

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DefaultIntendedUse is the intended-use text of a model card whose CardInfo gives none.
const DefaultIntendedUse = "Decision support for HR analytics: the model's scores inform people who " +
	"review each case, with a human in the loop who makes and owns every decision. It is not " +
	"intended to make or automate employment decisions (hiring, promotion, pay, termination) " +
	"about individuals, nor for use on populations unlike its training data."

// CardInfo holds the free-text parts of a model card that the report does not.
type CardInfo struct {
	// Date is when the model was trained or exported, as the card should print it.
	Date string
	// Version is the model's version.
	Version string
	// TrainingData is where the training data came from (its URI).
	TrainingData string
	// TrainingRows is the number of training rows.
	TrainingRows int
	// Features lists the model's raw input columns.
	Features []string
	// IntendedUse describes the intended use and users; DefaultIntendedUse when empty.
	IntendedUse string
}

// cardTopImportance is how many importance rows a model card shows.
const cardTopImportance = 10

// ModelCard renders the report as a Markdown model card (fields of info left empty are
// taken from the report's training section) with the sections of Mitchell
// et al. 2019: model details, intended use, factors, metrics, evaluation data, training
// data, quantitative analyses, ethical considerations, caveats and recommendations.
func ModelCard(r *Report, info CardInfo) string {
	if t := r.Training; t != nil {
		// What info leaves empty comes from the report.
		if info.TrainingData == "" {
			info.TrainingData = t.Data
		}
		if info.TrainingRows == 0 {
			info.TrainingRows = t.Rows
		}
		if len(info.Features) == 0 {
			info.Features = t.Features
		}
		if info.Date == "" {
			info.Date = t.Date
		}
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	name := r.Name
	if name == "" {
		name = r.JobID
	}
	p("# Model card: %s\n\n", mdText(name))

	p("## Model details\n\n")
	p("- Name: %s\n", orNone(r.Name))
	p("- Job ID: %s\n", orNone(r.JobID))
	p("- Kind: %s\n", orNone(r.Model.Kind))
	p("- Task: %s\n", orNone(r.Task))
	p("- Training step: %d\n", r.Model.Step)
	if r.Model.Checkpoint != "" {
		p("- Checkpoint: %s\n", mdText(r.Model.Checkpoint))
	}
	p("- Date: %s\n", orNone(info.Date))
	p("- Version: %s\n", orNone(info.Version))
	p("- Report format version: %d\n\n", r.FormatVersion)

	p("## Intended use\n\n")
	use := info.IntendedUse
	if use == "" {
		use = DefaultIntendedUse
	}
	p("%s\n\n", mdText(use))

	a := r.Audit
	p("## Factors\n\n")
	if a == nil || len(a.Sensitive) == 0 {
		p("No sensitive attributes were audited.\n\n")
	} else {
		p("Sensitive attributes audited: %s.", mdText(strings.Join(a.Sensitive, ", ")))
		if attrs := attributes(a.Groups); len(attrs) > len(a.Sensitive) {
			p(" Intersections: %s.", mdText(strings.Join(attrs[len(a.Sensitive):], "; ")))
		}
		p(" Groups under %s%% of the rows are reported but left out of the impact ratios.\n\n", formatNumber(a.MinGroupFraction*100))
	}

	p("## Metrics\n\n")
	if len(r.Metrics) == 0 {
		p("No metrics.\n\n")
	} else {
		p("| Metric | Value | 95%% CI |\n|---|---|---|\n")
		for _, k := range sortedKeys(r.Metrics) {
			m := r.Metrics[k]
			p("| %s | %s | [%s, %s] |\n", mdText(k), num(m.Value), num(m.CI95[0]), num(m.CI95[1]))
		}
		if bs := r.Bootstrap; bs != nil {
			p("\nIntervals: percentile bootstrap, %d resamples, seed %d.\n\n", bs.Resamples, bs.Seed)
		} else {
			p("\nNo bootstrap: the intervals are the values themselves.\n\n")
		}
		if a != nil && a.Threshold != nil {
			p("Decision threshold: P(positive) >= %s.\n\n", formatNumber(*a.Threshold))
		}
	}

	p("## Evaluation data\n\n")
	p("- Split: %s\n- Rows: %d\n", orNone(r.Split), r.Rows)
	if len(r.Classes) > 0 {
		p("- Classes: %s\n", mdText(strings.Join(r.Classes, ", ")))
	}
	p("\n## Training data\n\n")
	p("- Data: %s\n", orNone(info.TrainingData))
	if info.TrainingRows > 0 {
		p("- Rows: %d\n", info.TrainingRows)
	} else {
		p("- Rows: not recorded\n")
	}
	if len(info.Features) > 0 {
		p("- Features (%d): %s\n", len(info.Features), mdText(strings.Join(info.Features, ", ")))
	} else {
		p("- Features: not recorded\n")
	}

	p("\n## Quantitative analyses\n\n")
	if a != nil {
		for _, attr := range attributes(a.Groups) {
			p("### %s\n\n", mdText(attr))
			writeGroupTable(&b, r.Task, a.Groups, attr)
			p("\n")
		}
	}
	if len(r.Importance) > 0 {
		p("### Permutation importance (%s)\n\n", orNone(r.ImportanceMetric))
		p("| Feature | Mean | Std |\n|---|---|---|\n")
		for _, im := range r.Importance[:min(len(r.Importance), cardTopImportance)] {
			p("| %s | %s | %s |\n", mdText(im.Feature), num(im.Mean), num(im.Std))
		}
		if len(r.Importance) > cardTopImportance {
			p("\n(top %d of %d features)\n", cardTopImportance, len(r.Importance))
		}
		p("\n")
	}
	if c := r.Calibration; c != nil {
		p("### Calibration\n\nExpected calibration error (%d equal-width bins): %s.\n\n", len(c.Bins), num(c.ECE))
	}

	p("## Ethical considerations\n\n")
	switch {
	case a == nil || a.Gate == nil:
		p("No export gate was configured.\n\n")
	case a.Gate.Passed:
		p("Export gate: passed.\n\n")
	default:
		p("Export gate: **failed**.\n\n")
		for _, reason := range a.Gate.Reasons {
			p("- %s\n", mdText(reason))
		}
		p("\n")
	}
	if a != nil && a.Gate != nil {
		overrides := a.Gate.Overrides
		if len(overrides) == 0 && a.Gate.Override != nil {
			overrides = []GateOverride{*a.Gate.Override}
		}
		for _, o := range overrides {
			p("The gate was overridden by %s at %s: %s.\n\n", mdText(o.By), mdText(o.Time), mdText(o.Reason))
		}
	}
	p("Impact ratios compare each group's selection rate (binary) or scoring rate — the share " +
		"of the group scoring above the median score (NYC Local Law 144) — with the highest rate " +
		"of the attribute's groups. Under the four-fifths rule (29 CFR 1607.4(D)) a ratio below 0.8 " +
		"is generally regarded as evidence of adverse impact. Equal ratios do not establish that " +
		"the model is fair, and the figures of small groups are uncertain.\n\n")

	p("## Caveats and recommendations\n\n")
	var caveats []string
	if a != nil {
		for _, g := range a.Groups {
			switch {
			case g.Missing:
				caveats = append(caveats, fmt.Sprintf("%s: %s with an unknown category, counted apart and not in the ratios.", mdText(g.Attribute), rows(g.Count)))
			case g.Excluded:
				caveats = append(caveats, fmt.Sprintf("%s=%s excluded from the ratios: %s.", mdText(g.Attribute), mdText(g.Category), mdText(g.Reason)))
			}
		}
		for _, n := range a.Notes {
			caveats = append(caveats, mdText(n)+".")
		}
	}
	caveats = append(caveats, "The figures describe one evaluation split; monitor them on the data the model meets in use and review the model when they drift.")
	for _, c := range caveats {
		p("- %s\n", c)
	}
	return b.String()
}

// writeGroupTable writes the table of one attribute's groups, with the columns of the
// task.
func writeGroupTable(b *strings.Builder, task string, groups []Group, attr string) {
	type column struct {
		head string
		cell func(g Group) string
	}
	cols := []column{
		{"Category", func(g Group) string {
			if g.Missing {
				return "(missing)"
			}
			return mdText(g.Category)
		}},
		{"Count", func(g Group) string { return strconv.Itoa(g.Count) }},
		{"Fraction", func(g Group) string { return num(g.Fraction) }},
	}
	switch task {
	case TaskBinary:
		cols = append(cols,
			column{"Base rate", func(g Group) string { return numPtr(g.BaseRate) }},
			column{"Selection rate", func(g Group) string { return numPtr(g.SelectionRate) }},
			column{"Impact ratio [95% CI]", func(g Group) string { return withCI(g.ImpactRatio, g.ImpactRatioCI95) }},
			column{"TPR", func(g Group) string { return numPtr(g.TPR) }},
			column{"FPR", func(g Group) string { return numPtr(g.FPR) }},
			column{"Score rate", func(g Group) string { return numPtr(g.ScoreRate) }},
			column{"Scoring impact ratio [95% CI]", func(g Group) string { return withCI(g.ScoreImpactRatio, g.ScoreImpactRatioCI95) }})
	case TaskRegression:
		cols = append(cols,
			column{"Mean label", func(g Group) string { return numPtr(g.MeanLabel) }},
			column{"Mean prediction", func(g Group) string { return numPtr(g.MeanPrediction) }},
			column{"Score rate", func(g Group) string { return numPtr(g.ScoreRate) }},
			column{"Scoring impact ratio [95% CI]", func(g Group) string { return withCI(g.ScoreImpactRatio, g.ScoreImpactRatioCI95) }})
	case TaskMulticlass:
		cols = append(cols, column{"Accuracy", func(g Group) string { return numPtr(g.Accuracy) }})
	}
	cols = append(cols, column{"Excluded", func(g Group) string {
		if !g.Excluded {
			return "no"
		}
		return "yes: " + mdText(g.Reason)
	}})
	row := func(cell func(c column) string) {
		b.WriteString("|")
		for _, c := range cols {
			b.WriteString(" " + cell(c) + " |")
		}
		b.WriteString("\n")
	}
	row(func(c column) string { return c.head })
	row(func(column) string { return "---" })
	for _, g := range groups {
		if g.Attribute == attr {
			row(func(c column) string { return c.cell(g) })
		}
	}
}

// rows writes a row count: "1 row", "3 rows".
func rows(n int) string {
	if n == 1 {
		return "1 row"
	}
	return strconv.Itoa(n) + " rows"
}

// attributes returns the attributes of the groups in their order of appearance.
func attributes(groups []Group) []string {
	var out []string
	for _, g := range groups {
		if !slices.Contains(out, g.Attribute) {
			out = append(out, g.Attribute)
		}
	}
	return out
}

// sortedKeys returns the metric names in order.
func sortedKeys(m map[string]Metric) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// num writes a figure with 3 decimals.
func num(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// numPtr writes an optional figure, "n/a" when absent.
func numPtr(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return num(*v)
}

// orNone writes a text, or "not recorded" when empty.
func orNone(s string) string {
	if s == "" {
		return "not recorded"
	}
	return mdText(s)
}

// mdText makes text safe inside a Markdown line and a table cell: line breaks become
// spaces and the characters that start markup or end a cell are escaped.
func mdText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\n', '\r':
			b.WriteByte(' ')
		case '|', '\\', '*', '_', '`', '[', ']', '<', '>', '#':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// withCI formats an optional ratio with its optional interval: "0.75 [0.52, 1.02]".
func withCI(v *float64, ci *[2]float64) string {
	if v == nil || ci == nil {
		return numPtr(v)
	}
	return fmt.Sprintf("%s [%s, %s]", numPtr(v), num(ci[0]), num(ci[1]))
}
