package audit

import (
	"strings"
	"testing"
)

func TestModelCard(t *testing.T) {
	rep := fixtureReport(t)
	card := ModelCard(rep, CardInfo{
		Date: "2026-12-07", Version: "3", TrainingData: "s3://hr/attrition.csv", TrainingRows: 1470,
		Features: []string{"Age", "OverTime"},
	})
	sections := []string{"# Model card: attrition-mlp", "## Model details", "## Intended use", "## Factors",
		"## Metrics", "## Evaluation data", "## Training data", "## Quantitative analyses",
		"## Ethical considerations", "## Caveats and recommendations"}
	last := -1
	for _, s := range sections {
		i := strings.Index(card, s+"\n")
		if i < 0 || i < last {
			t.Errorf("section %q missing or out of order", s)
		}
		last = i
	}
	for _, want := range []string{
		"- Job ID: attrition-mlp-1a2b3c4d", "- Kind: mlp", "- Training step: 2250", "- Date: 2026-12-07", "- Version: 3",
		"human in the loop",
		"Sensitive attributes audited: Gender, Band. Intersections: Gender,Band.",
		"| val\\_auc | 0.800 | [", "percentile bootstrap, 200 resamples, seed 1",
		"- Split: validation\n- Rows: 12", "- Data: s3://hr/attrition.csv", "- Rows: 1470", "- Features (2): Age, OverTime",
		"### Gender\n", "| Category | Count | Fraction | Base rate | Selection rate | Impact ratio [95% CI] | TPR | FPR | Score rate | Scoring impact ratio [95% CI] | Excluded |",
		"| F | 5 | 0.417 | 0.600 | 0.600 | 0.750 [",
		"| X | 1 | 0.083 | 0.000 | 0.000 | n/a | n/a | 0.000 | 0.000 | n/a | yes: 8.3% of rows \\< minGroupFraction 10% |",
		"| (missing) | 1 |", "### Gender,Band\n", "| F,B | 3 |",
		"### Permutation importance (auc)", "| OverTime | 0.061 | 0.008 |",
		"Expected calibration error (10 equal-width bins):",
		"Export gate: **failed**.", "- impact ratio 0.75 for Gender=F \\< 0.8", "overridden by alice at 2026-12-07T10:00:00Z: reviewed by HR legal.",
		"four-fifths rule",
		"- Gender: 1 row with an unknown category", "- Gender=X excluded from the ratios: 8.3% of rows \\< minGroupFraction 10%.",
	} {
		if !strings.Contains(card, want) {
			t.Errorf("card lacks %q", want)
		}
	}
	t.Run("defaults and escaping", func(t *testing.T) {
		r := &Report{FormatVersion: 1, Task: TaskMulticlass, Name: "a|b", Metrics: map[string]Metric{},
			Audit: &AuditSection{Sensitive: []string{"G"}, Groups: []Group{{Attribute: "G", Category: "x|y\nz", Count: 2, Fraction: 1, Accuracy: ptr(0.5)}}}}
		card := ModelCard(r, CardInfo{})
		for _, want := range []string{"# Model card: a\\|b", DefaultIntendedUse, "| x\\|y z | 2 | 1.000 | 0.500 | no |",
			"No export gate was configured.", "- Data: not recorded", "- Features: not recorded"} {
			if !strings.Contains(card, want) {
				t.Errorf("card lacks %q:\n%s", want, card)
			}
		}
	})
}
