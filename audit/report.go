package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// FormatVersion is the version of the report.json format that this package writes and
// reads (format_version).
const FormatVersion = 1

// MaxReportSize is the largest report.json DecodeReport accepts, in bytes.
const MaxReportSize = 16 << 20

// Report is report.json: the audit and explanation report of one exported model. Evaluate
// fills the evaluation parts; the caller fills JobID, Name, Model and the explanations.
type Report struct {
	// FormatVersion is FormatVersion.
	FormatVersion int `json:"format_version"`
	// JobID is the training job's id.
	JobID string `json:"job_id"`
	// Name is the job's name.
	Name string `json:"name"`
	// Task is TaskBinary, TaskMulticlass or TaskRegression.
	Task string `json:"task"`
	// Model says which model the report is about.
	Model ModelInfo `json:"model"`
	// Split is the evaluated split: "validation", or "test" when the job has test data.
	Split string `json:"split"`
	// Rows is the number of evaluated rows.
	Rows int `json:"rows"`
	// Classes are a classifier's label values; index = class id.
	Classes []string `json:"classes,omitempty"`
	// Metrics maps metric names, prefixed with the split ("val_auc", "test_rmse"), to
	// their values and 95% confidence intervals.
	Metrics map[string]Metric `json:"metrics"`
	// Bootstrap is how the confidence intervals were resampled; absent when they were
	// not (then every CI95 is [value, value]).
	Bootstrap *BootstrapInfo `json:"bootstrap,omitempty"`
	// Calibration is the reliability table of a binary classifier.
	Calibration *Calibration `json:"calibration,omitempty"`
	// Confusion is a classifier's confusion matrix.
	Confusion *Confusion `json:"confusion,omitempty"`
	// Audit holds the group figures and the gate.
	Audit *AuditSection `json:"audit,omitempty"`
	// ImportanceMetric is the score permutation importance measures the change of:
	// "auc", "accuracy" or "rmse".
	ImportanceMetric string `json:"importance_metric,omitempty"`
	// Importance is the permutation importance per raw input column, by mean descending.
	Importance []Importance `json:"importance,omitempty"`
	// ImportanceByLag is an LSTM's importance per time step ("lag 1" = most recent).
	ImportanceByLag []Importance `json:"importance_by_lag,omitempty"`
	// Attribution is a CNN's integrated-gradients attribution per class.
	Attribution *Attribution `json:"attribution,omitempty"`
	// Explain records the settings of the explanations.
	Explain *Explain `json:"explain,omitempty"`
	// Training describes the training run's data, for the model card.
	Training *TrainingInfo `json:"training,omitempty"`
}

// TrainingInfo describes the data a model was trained on.
type TrainingInfo struct {
	// Data is the training data's URI.
	Data string `json:"data"`
	// Rows is the number of training rows (windows, images).
	Rows int `json:"rows"`
	// Features lists the model's raw input columns (tabular and sequence models).
	Features []string `json:"features,omitempty"`
	// Date is the day training ended (YYYY-MM-DD, UTC).
	Date string `json:"date,omitempty"`
}

// ModelInfo identifies the reported model.
type ModelInfo struct {
	// Kind is the model kind: "mlp", "lstm", "cnn".
	Kind string `json:"kind"`
	// Step is the training step of the reported weights.
	Step int64 `json:"step"`
	// Checkpoint is the URI of the checkpoint manifest the weights come from.
	Checkpoint string `json:"checkpoint,omitempty"`
}

// Metric is one metric on the evaluated split.
type Metric struct {
	// Value is the metric on all rows of the split.
	Value float64 `json:"value"`
	// CI95 is the 95% percentile-bootstrap confidence interval [low, high].
	CI95 [2]float64 `json:"ci95"`
}

// BootstrapInfo records the resampling of the confidence intervals.
type BootstrapInfo struct {
	// Resamples is the number of bootstrap resamples.
	Resamples int `json:"resamples"`
	// Seed seeds the resampling.
	Seed int64 `json:"seed"`
}

// Calibration is a binary classifier's reliability table.
type Calibration struct {
	// Bins are 10 equal-width bins of the predicted probability on [0, 1]: [lower,
	// upper), the last one closed. Empty bins are kept with count 0.
	Bins []CalibrationBin `json:"bins"`
	// ECE is the expected calibration error: the sum over bins of count/rows times
	// |mean_predicted - fraction_positive|.
	ECE float64 `json:"ece"`
}

// CalibrationBin is one bin of a reliability table.
type CalibrationBin struct {
	// Lower is the bin's lower edge (included).
	Lower float64 `json:"lower"`
	// Upper is the bin's upper edge (excluded, except for the last bin).
	Upper float64 `json:"upper"`
	// Count is the number of rows whose predicted probability falls in the bin.
	Count int `json:"count"`
	// MeanPredicted is the bin's mean predicted probability; absent when Count is 0.
	MeanPredicted *float64 `json:"mean_predicted,omitempty"`
	// FractionPositive is the share of the bin's rows with a positive label; absent
	// when Count is 0.
	FractionPositive *float64 `json:"fraction_positive,omitempty"`
}

// Confusion is a classifier's confusion matrix.
type Confusion struct {
	// Threshold is the decision threshold on P(positive) (binary); absent for a
	// multiclass model, which predicts its most probable class.
	Threshold *float64 `json:"threshold,omitempty"`
	// Labels names the rows and columns: the classes.
	Labels []string `json:"labels"`
	// Matrix counts rows by [true class][predicted class].
	Matrix [][]int `json:"matrix"`
}

// AuditSection is the fairness audit: figures per sensitive group and the gate.
type AuditSection struct {
	// Split is the evaluated split.
	Split string `json:"split"`
	// Threshold is the decision threshold of the selection rates (binary only).
	Threshold *float64 `json:"threshold,omitempty"`
	// Sensitive lists the audited columns.
	Sensitive []string `json:"sensitive"`
	// MinGroupFraction is the share of rows under which a group is left out of the
	// impact ratios.
	MinGroupFraction float64 `json:"min_group_fraction"`
	// Groups holds one entry per category of each attribute (and intersection of
	// attributes), attribute by attribute; within one, categories in ascending order
	// and the missing category last.
	Groups []Group `json:"groups"`
	// Notes explain what the figures leave out and why.
	Notes []string `json:"notes,omitempty"`
	// Gate is the export gate; absent when none was configured.
	Gate *Gate `json:"gate,omitempty"`
}

// Group is the figures of one category of a sensitive attribute. Figures that do not
// apply to the task, or are undefined for the group, are absent.
type Group struct {
	// Attribute is the sensitive column, or for an intersection the columns joined
	// with ",".
	Attribute string `json:"attribute"`
	// Category is the group's value, or for an intersection the values joined with
	// ","; "" for the missing group. (Rows are grouped by their values, so a value
	// holding a comma only makes the written label ambiguous.)
	Category string `json:"category"`
	// Missing marks the group of rows whose category is unknown (see IsMissing).
	Missing bool `json:"missing,omitempty"`
	// Count is the group's number of rows.
	Count int `json:"count"`
	// Fraction is Count over the split's rows.
	Fraction float64 `json:"fraction"`
	// Positives is the number of positive labels (binary).
	Positives *int `json:"positives,omitempty"`
	// BaseRate is the share of positive labels (binary).
	BaseRate *float64 `json:"base_rate,omitempty"`
	// SelectionRate is the share of rows with P(positive) >= threshold (binary).
	SelectionRate *float64 `json:"selection_rate,omitempty"`
	// ImpactRatio is SelectionRate over the attribute's highest selection rate among
	// eligible groups (binary, eligible groups only).
	ImpactRatio *float64 `json:"impact_ratio,omitempty"`
	// ImpactRatioCI95 is the 95% percentile-bootstrap interval of ImpactRatio (rows
	// resampled as for the metrics, the eligible groups kept fixed); absent without
	// ImpactRatio or bootstrap.
	ImpactRatioCI95 *[2]float64 `json:"impact_ratio_ci95,omitempty"`
	// TPR is the true-positive rate at the threshold; absent without positives.
	TPR *float64 `json:"tpr,omitempty"`
	// FPR is the false-positive rate at the threshold; absent without negatives.
	FPR *float64 `json:"fpr,omitempty"`
	// ScoreRate is the share of rows whose score is above the split's median score
	// (binary and regression).
	ScoreRate *float64 `json:"score_rate,omitempty"`
	// ScoreImpactRatio is ScoreRate over the attribute's highest score rate among
	// eligible groups (eligible groups only).
	ScoreImpactRatio *float64 `json:"score_impact_ratio,omitempty"`
	// ScoreImpactRatioCI95 is the 95% bootstrap interval of ScoreImpactRatio.
	ScoreImpactRatioCI95 *[2]float64 `json:"score_impact_ratio_ci95,omitempty"`
	// MeanLabel is the group's mean target (regression).
	MeanLabel *float64 `json:"mean_label,omitempty"`
	// MeanPrediction is the group's mean prediction (regression).
	MeanPrediction *float64 `json:"mean_prediction,omitempty"`
	// Accuracy is the group's accuracy (multiclass).
	Accuracy *float64 `json:"accuracy,omitempty"`
	// Excluded marks a group left out of the impact ratios: missing or too small.
	Excluded bool `json:"excluded"`
	// Reason says why the group is excluded.
	Reason string `json:"reason,omitempty"`
}

// Gate is the result of the export gate.
type Gate struct {
	// Passed is true when every configured figure is reached.
	Passed bool `json:"passed"`
	// Reasons lists each figure missed, or that could not be evaluated.
	Reasons []string `json:"reasons,omitempty"`
	// Override records a person who allowed the export of a model that failed: the
	// latest of Overrides.
	Override *GateOverride `json:"override,omitempty"`
	// Overrides lists every override, oldest first. (Not in the schema's example; the
	// coordinator adds it with Override when it serves a report.)
	Overrides []GateOverride `json:"overrides,omitempty"`
}

// GateOverride records who overrode a failed gate, why, and when.
type GateOverride struct {
	// By names the person.
	By string `json:"by"`
	// Reason is their justification.
	Reason string `json:"reason"`
	// Time is when, in RFC 3339.
	Time string `json:"time"`
}

// Importance is the permutation importance of one input column (or LSTM lag): the
// change of the importance metric when the column is shuffled, over the repeats.
type Importance struct {
	// Feature names the raw input column (or "lag N").
	Feature string `json:"feature"`
	// Mean is the mean drop of the score (rise, for RMSE).
	Mean float64 `json:"mean"`
	// Std is the population standard deviation over the repeats.
	Std float64 `json:"std"`
}

// Attribution is a CNN's integrated-gradients attribution, averaged per class.
type Attribution struct {
	// Method is "integrated_gradients".
	Method string `json:"method"`
	// Baseline describes the baseline input, e.g. "all-zero image".
	Baseline string `json:"baseline"`
	// Steps is the number of points on the path from the baseline.
	Steps int `json:"steps"`
	// Channels is the number of image channels.
	Channels int `json:"channels"`
	// Height is the image height in pixels.
	Height int `json:"height"`
	// Width is the image width in pixels.
	Width int `json:"width"`
	// Classes holds one mean attribution image per class.
	Classes []ClassAttribution `json:"classes"`
}

// ClassAttribution is the mean absolute attribution of the images of one class.
type ClassAttribution struct {
	// Class is the class id.
	Class int `json:"class"`
	// Label is the class's label value.
	Label string `json:"label"`
	// Images is the number of images averaged.
	Images int `json:"images"`
	// MeanAbs holds Channels*Height*Width values, channel-major.
	MeanAbs []float64 `json:"mean_abs"`
}

// Explain records the settings of the explanations.
type Explain struct {
	// Permutation is the setting of permutation importance.
	Permutation *PermutationInfo `json:"permutation,omitempty"`
}

// PermutationInfo records the setting of permutation importance.
type PermutationInfo struct {
	// Repeats is the number of shuffles per column.
	Repeats int `json:"repeats"`
	// Seed seeds the shuffles.
	Seed int64 `json:"seed"`
}

// EncodeReport writes r as report.json: indented, and without HTML escaping, so that a
// reason reads "< 0.8" rather than "\u003c 0.8". It refuses a report whose
// format_version is not FormatVersion.
func EncodeReport(w io.Writer, r *Report) error {
	if r.FormatVersion != FormatVersion {
		return fmt.Errorf("audit: report format_version %d, want %d", r.FormatVersion, FormatVersion)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("audit: encode report: %w", err)
	}
	return nil
}

// DecodeReport reads one report.json strictly: unknown fields, data after the report,
// a report larger than MaxReportSize, a format_version other than FormatVersion and an
// override time that is not RFC 3339 are errors.
func DecodeReport(r io.Reader) (*Report, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxReportSize+1))
	if err != nil {
		return nil, fmt.Errorf("audit: read report: %w", err)
	}
	if len(data) > MaxReportSize {
		return nil, fmt.Errorf("audit: report larger than %d bytes", MaxReportSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("audit: decode report: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("audit: decode report: data after the report")
	}
	if rep.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("audit: report format_version %d, want %d", rep.FormatVersion, FormatVersion)
	}
	if a := rep.Audit; a != nil && a.Gate != nil {
		overrides := a.Gate.Overrides
		if o := a.Gate.Override; o != nil {
			overrides = append([]GateOverride{*o}, overrides...)
		}
		for _, o := range overrides {
			if _, err := time.Parse(time.RFC3339, o.Time); err != nil {
				return nil, fmt.Errorf("audit: report gate override time %q is not RFC 3339", o.Time)
			}
		}
	}
	return &rep, nil
}
