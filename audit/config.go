package audit

import (
	"fmt"
	"math"
	"strings"

	"github.com/cohort-dev/cohort/jobs"
)

// The tasks Evaluate knows (the job spec's spec.task values); Config.Task and
// Report.Task hold one of them.
const (
	// TaskBinary is a binary classifier that outputs P(positive).
	TaskBinary = jobs.TaskBinary
	// TaskMulticlass is a classifier that outputs one probability per class.
	TaskMulticlass = jobs.TaskMulticlass
	// TaskRegression is a regressor that outputs a prediction in target units.
	TaskRegression = jobs.TaskRegression
)

// The evaluated splits and their metric-name prefixes.
const (
	// SplitValidation is the validation split; its metrics are prefixed PrefixValidation.
	SplitValidation = "validation"
	// SplitTest is the test split; its metrics are prefixed PrefixTest.
	SplitTest = "test"
	// PrefixValidation prefixes the validation split's metric names.
	PrefixValidation = "val_"
	// PrefixTest prefixes the test split's metric names.
	PrefixTest = "test_"
)

// MaxCategories is the most distinct non-missing values a sensitive column may have;
// a column with more must be binned (Bin) or grouped first.
const MaxCategories = 50

// Config is the setting of one evaluation.
type Config struct {
	// Task is TaskBinary, TaskMulticlass or TaskRegression.
	Task string
	// Split is SplitValidation or SplitTest.
	Split string
	// Prefix is the split's metric-name prefix: PrefixValidation or PrefixTest, to
	// match Split.
	Prefix string
	// Threshold is the decision threshold on P(positive) for accuracy, the confusion
	// matrix, selection rates, TPR and FPR (binary); in (0, 1), default 0.5.
	Threshold float64
	// MinGroupFraction is the share of rows under which a group is reported but left
	// out of the impact ratios; in [0, 0.5), default 0.02 (NYC Local Law 144).
	MinGroupFraction float64
	// Intersectional also audits every combination of two or more sensitive columns.
	Intersectional bool
	// Sensitive lists the audited columns, each a key of Input.Groups.
	Sensitive []string
	// Gate sets the figures the model must reach; all optional.
	Gate GateConfig
	// Resamples is the number of bootstrap resamples of the confidence intervals;
	// default 1000, 0 for none.
	Resamples int
	// Seed seeds the bootstrap.
	Seed int64
}

// GateConfig is the export gate: each figure is optional, and an absent one is not
// checked. Metric figures are compared with the metrics' point estimates.
type GateConfig struct {
	// MinImpactRatio is the lowest impact ratio any eligible group may have (0.8 is the
	// four-fifths rule): of selection rates for a binary task, of scoring rates for
	// regression. It cannot be evaluated, and so fails, for a multiclass task, without
	// sensitive columns, or for an attribute without an eligible group or whose highest
	// rate is 0.
	MinImpactRatio *float64
	// MinAUC is the lowest AUC (binary tasks only).
	MinAUC *float64
	// MinAccuracy is the lowest accuracy (classifiers only).
	MinAccuracy *float64
	// MaxRMSE is the highest RMSE in target units (regression only).
	MaxRMSE *float64
}

// set reports whether any figure of the gate is set.
func (g GateConfig) set() bool {
	return g.MinImpactRatio != nil || g.MinAUC != nil || g.MinAccuracy != nil || g.MaxRMSE != nil
}

// DefaultConfig returns the setting of a binary classifier evaluated on the validation
// split with the defaults: threshold 0.5, groups under 2% excluded, 1000 bootstrap
// resamples with seed 1, no sensitive columns and no gate.
func DefaultConfig() Config {
	return Config{
		Task:             TaskBinary,
		Split:            SplitValidation,
		Prefix:           PrefixValidation,
		Threshold:        0.5,
		MinGroupFraction: 0.02,
		Resamples:        1000,
		Seed:             1,
	}
}

// validate checks the config on its own (Evaluate checks it against the input).
func (c Config) validate() error {
	switch c.Task {
	case TaskBinary, TaskMulticlass, TaskRegression:
	default:
		return fmt.Errorf("audit: unknown task %q (want %s, %s or %s)", c.Task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	switch {
	case c.Split == SplitValidation && c.Prefix == PrefixValidation, c.Split == SplitTest && c.Prefix == PrefixTest:
	case c.Split != SplitValidation && c.Split != SplitTest:
		return fmt.Errorf("audit: unknown split %q (want %s or %s)", c.Split, SplitValidation, SplitTest)
	default:
		return fmt.Errorf("audit: prefix %q does not match split %q (want %q or %q)", c.Prefix, c.Split, PrefixValidation, PrefixTest)
	}
	if !(c.Threshold > 0 && c.Threshold < 1) {
		return fmt.Errorf("audit: threshold %g not in (0, 1)", c.Threshold)
	}
	if !(c.MinGroupFraction >= 0 && c.MinGroupFraction < 0.5) {
		return fmt.Errorf("audit: min group fraction %g not in [0, 0.5)", c.MinGroupFraction)
	}
	if c.Resamples < 0 {
		return fmt.Errorf("audit: negative bootstrap resamples %d", c.Resamples)
	}
	seen := make(map[string]bool, len(c.Sensitive))
	for _, s := range c.Sensitive {
		switch {
		case s == "":
			return fmt.Errorf("audit: empty sensitive column name")
		case strings.Contains(s, ","):
			return fmt.Errorf("audit: sensitive column name %q contains a comma (commas join intersections)", s)
		case seen[s]:
			return fmt.Errorf("audit: sensitive column %q listed twice", s)
		}
		seen[s] = true
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{
		{"min impact ratio", c.Gate.MinImpactRatio},
		{"min AUC", c.Gate.MinAUC},
		{"min accuracy", c.Gate.MinAccuracy},
		{"max RMSE", c.Gate.MaxRMSE},
	} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			return fmt.Errorf("audit: gate %s is %g", f.name, *f.v)
		}
	}
	return nil
}
