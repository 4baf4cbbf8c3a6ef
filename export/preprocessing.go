package export

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/cohort-dev/cohort/worker/data"
)

// Data formats of MetaDataFormat (spec.data.format).
const (
	// DataCSV is tabular data; its preprocessing is a data.Preprocessor.
	DataCSV = "csv"
	// DataIDX is images; its preprocessing is an ImagePreprocessing.
	DataIDX = "idx"
	// DataSequenceCSV is windows of a time series; its preprocessing is a
	// data.SequenceScaler.
	DataSequenceCSV = "sequence_csv"
)

// ImagePreprocessing is the preprocessing record of an image (idx) model, as the worker
// writes it: a pixel p in [0, 255] becomes the feature p * Scale.
type ImagePreprocessing struct {
	Channels int     `json:"channels"`
	Height   int     `json:"height"`
	Width    int     `json:"width"`
	Scale    float64 `json:"scale"`
	Classes  int     `json:"classes"`
	Layout   string  `json:"layout"`
}

// Preprocessing is a model's fitted preprocessing, decoded from its metadata and checked
// against its architecture: exactly one of Tabular, Image and Sequence is set, by
// Format.
type Preprocessing struct {
	// Format is DataCSV, DataIDX or DataSequenceCSV.
	Format   string
	Tabular  *data.Preprocessor
	Image    *ImagePreprocessing
	Sequence *data.SequenceScaler
}

// DecodePreprocessing strictly decodes the preprocessing record raw of the data format
// (unknown fields and trailing data are errors) and checks that it produces the
// features the architecture takes: the same checks `cohort serve` makes when it loads a
// model.
func DecodePreprocessing(format, raw string, a *Architecture) (*Preprocessing, error) {
	strict := func(v any) error {
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("preprocessing: %w", err)
		}
		if dec.More() {
			return fmt.Errorf("preprocessing: trailing data after the JSON object")
		}
		return nil
	}
	p := &Preprocessing{Format: format}
	switch format {
	case DataCSV:
		var t data.Preprocessor
		if err := strict(&t); err != nil {
			return nil, err
		}
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("preprocessing: %s", strings.TrimPrefix(err.Error(), "data: "))
		}
		if a.Kind != KindMLP || t.Dim != a.Inputs {
			return nil, fmt.Errorf("preprocessing: the tabular preprocessing makes %d features, the %s takes %d", t.Dim, a.Kind, a.Inputs)
		}
		seen := map[string]bool{}
		for i, c := range t.Columns {
			if c.Name == "" || seen[c.Name] {
				return nil, fmt.Errorf("preprocessing: columns[%d]: name %q is empty or given twice", i, c.Name)
			}
			seen[c.Name] = true
		}
		if err := checkClasses(t.Classes, a); err != nil {
			return nil, err
		}
		p.Tabular = &t
	case DataIDX:
		var img ImagePreprocessing
		if err := strict(&img); err != nil {
			return nil, err
		}
		if a.Kind != KindCNN || img.Channels != a.Channels || img.Height != a.Height || img.Width != a.Width {
			return nil, fmt.Errorf("preprocessing: images of %dx%dx%d, the %s takes %dx%dx%d", img.Channels, img.Height, img.Width, a.Kind, a.Channels, a.Height, a.Width)
		}
		if !(img.Scale > 0) || math.IsInf(img.Scale, 0) || math.IsInf(1/img.Scale, 0) {
			return nil, fmt.Errorf("preprocessing: image scale %v: want a positive number", img.Scale)
		}
		p.Image = &img
	case DataSequenceCSV:
		var s data.SequenceScaler
		if err := strict(&s); err != nil {
			return nil, err
		}
		if a.Kind != KindLSTM || len(s.Features) == 0 || len(s.Mean) != len(s.Features) || len(s.Std) != len(s.Features) || s.Lookback != a.Steps || len(s.Features) != a.Features {
			return nil, fmt.Errorf("preprocessing: the sequence preprocessing (%d features, lookback %d) does not fit the %s (%d features, %d steps)", len(s.Features), s.Lookback, a.Kind, a.Features, a.Steps)
		}
		seen := map[string]bool{}
		for i, name := range s.Features {
			if name == "" || seen[name] {
				return nil, fmt.Errorf("preprocessing: features[%d]: name %q is empty or given twice", i, name)
			}
			seen[name] = true
			if std := s.Std[i]; !(std > 0) || math.IsInf(std, 0) || math.IsNaN(s.Mean[i]) || math.IsInf(s.Mean[i], 0) {
				return nil, fmt.Errorf("preprocessing: feature %q: mean %v, std %v", name, s.Mean[i], std)
			}
		}
		p.Sequence = &s
	default:
		return nil, fmt.Errorf("data format %q is not one of %s, %s, %s", format, DataCSV, DataIDX, DataSequenceCSV)
	}
	return p, nil
}

// checkClasses checks a tabular model's class names against its outputs.
func checkClasses(classes []string, a *Architecture) error {
	if len(classes) == 0 {
		return nil
	}
	switch a.Task {
	case TaskBinary:
		if len(classes) != 2 {
			return fmt.Errorf("preprocessing: a binary model needs 2 class names, has %d", len(classes))
		}
	case TaskMulticlass:
		if len(classes) != a.Outputs {
			return fmt.Errorf("preprocessing: %d class names for %d outputs", len(classes), a.Outputs)
		}
	}
	seen := map[string]bool{}
	for _, c := range classes {
		if seen[c] {
			return fmt.Errorf("preprocessing: class %q is given twice", c)
		}
		seen[c] = true
	}
	return nil
}

// ClassNames returns the label values a classifier's label output takes, by output
// index, as `cohort serve` names them: a tabular model's fitted classes (binary: the
// negative, then the positive value), otherwise "0", "1", ... (nil for regression).
func (p *Preprocessing) ClassNames(a *Architecture) []string {
	if a.Task == TaskRegression {
		return nil
	}
	if p.Tabular != nil && len(p.Tabular.Classes) > 0 {
		return p.Tabular.Classes
	}
	k := max(a.Outputs, 2)
	names := make([]string, k)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	return names
}
