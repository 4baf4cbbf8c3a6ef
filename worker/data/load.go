package data

import (
	"fmt"
	"io"
)

// Dataset is preprocessed data: N rows of Dim features (X, row-major) and N labels (Y).
type Dataset struct {
	// X holds N*Dim features, row-major.
	X []float32
	// Y holds N labels, as Preprocessor.Labels returns them.
	Y []float32
	// N is the number of rows.
	N int
	// Dim is the number of features per row.
	Dim int
	// Naive holds, for sequence windows, each row's seasonal-naive forecast in target
	// units (the target a period earlier; NaN where the series has none); nil for other
	// data.
	Naive []float64
	// Residual says that Y is the scaled residual over Naive (sequence_csv.baseline:
	// seasonalNaive): a prediction in target units is unscale(output) + Naive.
	Residual bool
}

// LoadTabular reads a CSV, checks its labels on all rows, splits it (SplitIndices over
// the label values; regression is never stratified), fits the preprocessing on the
// training rows and transforms both parts. val has N = 0 when fraction <= 0.
func LoadTabular(r io.Reader, cfg TabularConfig, fraction float64, seed int64, stratify bool) (train, val *Dataset, p *Preprocessor, err error) {
	t, err := ReadCSV(r)
	if err != nil {
		return nil, nil, nil, err
	}
	train, val, p, _, err = SplitTable(t, cfg, fraction, seed, stratify)
	return train, val, p, err
}

// SplitTable is LoadTabular on a table already read; it also returns the table rows of
// the validation split, in the order of val's rows (the audit reads their raw columns).
func SplitTable(t *Table, cfg TabularConfig, fraction float64, seed int64, stratify bool) (train, val *Dataset, p *Preprocessor, valRows []int, err error) {
	li, err := labelColumn(t, cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if len(t.Rows) == 0 {
		return nil, nil, nil, nil, fmt.Errorf("data: the CSV has a header but no data rows")
	}
	all := make([]int, len(t.Rows))
	for i := range all {
		all[i] = i
	}
	// Checks the labels of every row, so that the messages are about the whole file.
	if err := fitLabel(&Preprocessor{}, t, all, li, cfg); err != nil {
		return nil, nil, nil, nil, err
	}
	labels := make([]string, len(t.Rows))
	for i, row := range t.Rows {
		labels[i] = row[li]
	}
	split := SplitIndices(labels, fraction, seed, stratify && cfg.Task != TaskRegression)
	if len(split.Train) == 0 {
		return nil, nil, nil, nil, fmt.Errorf("data: no training rows after the validation split (%d rows, validation fraction %v)", len(t.Rows), fraction)
	}
	if p, err = FitPreprocessor(t, split.Train, cfg); err != nil {
		return nil, nil, nil, nil, err
	}
	if train, err = p.dataset(t, split.Train); err != nil {
		return nil, nil, nil, nil, err
	}
	if val, err = p.dataset(t, split.Validation); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("validation rows: %w", err)
	}
	return train, val, p, split.Validation, nil
}

// dataset transforms the rows of t into a Dataset.
func (p *Preprocessor) dataset(t *Table, rows []int) (*Dataset, error) {
	x, err := p.Transform(t, rows)
	if err != nil {
		return nil, err
	}
	y, err := p.Labels(t, rows)
	if err != nil {
		return nil, err
	}
	return &Dataset{X: x, Y: y, N: len(rows), Dim: p.Dim}, nil
}
