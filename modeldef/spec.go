package modeldef

import (
	"errors"
	"fmt"

	"github.com/cohort-dev/cohort/jobs"
)

// DataShape is what the data, not the spec, decides about a network: its loaders fill
// it in after reading and preprocessing the training set.
type DataShape struct {
	// Inputs is the number of feature values per row (for images Channels*Height*Width,
	// for sequence windows lookback*features).
	Inputs int
	// Outputs is 1 (binary, regression) or the number of classes.
	Outputs int
	// Channels, Height and Width give an image's shape (idx data only).
	Channels, Height, Width int
	// LabelMean and LabelStd unscale a regression output (std 0: not scaled); ignored
	// for other tasks.
	LabelMean, LabelStd float64
}

// FromSpec returns the network a job spec describes for data of the given shape: the
// one translation from spec.model (and spec.task, spec.data.sequence_csv.lookback) to
// an Architecture, used for training, export and serving alike. Defaults are applied as
// jobs does (activation relu, stride 1). The architecture is validated; an error names
// the spec field ("spec.model.cnn: conv[1]: ...").
func FromSpec(s *jobs.Spec, shape DataShape) (Architecture, error) {
	a := Architecture{Task: s.Task, Inputs: shape.Inputs, Outputs: shape.Outputs}
	if s.Task == jobs.TaskRegression {
		a.LabelMean, a.LabelStd = shape.LabelMean, shape.LabelStd
	}
	orReLU := func(act string) string {
		if act == "" {
			return ActReLU
		}
		return act
	}
	var field string
	switch m := &s.Model; {
	case m.MLP != nil:
		field = "spec.model.mlp"
		a.Kind, a.Activation = KindMLP, orReLU(m.MLP.Activation)
		a.Hidden = append([]int(nil), m.MLP.Hidden...)
	case m.CNN != nil:
		c := m.CNN
		field = "spec.model.cnn"
		a.Kind, a.Activation, a.Pool = KindCNN, orReLU(c.Activation), c.Pool
		a.Channels, a.Height, a.Width = shape.Channels, shape.Height, shape.Width
		a.Dense = append([]int(nil), c.Dense...)
		for _, l := range c.Conv {
			stride := l.Stride
			if stride == 0 {
				stride = 1
			}
			a.Conv = append(a.Conv, Conv{Filters: l.Filters, Kernel: l.Kernel, Stride: stride, Padding: l.Padding})
		}
	case m.LSTM != nil:
		field = "spec.model.lstm"
		sc := s.Data.SequenceCSV
		if sc == nil || sc.Lookback <= 0 || shape.Inputs%sc.Lookback != 0 {
			return Architecture{}, errors.New("spec.model.lstm: needs sequence_csv data with a lookback")
		}
		a.Kind, a.Steps, a.Features = KindLSTM, sc.Lookback, shape.Inputs/sc.Lookback
		a.Hidden = append([]int(nil), m.LSTM.Hidden...)
		a.Dense = append([]int(nil), m.LSTM.Dense...)
	default:
		return Architecture{}, errors.New("spec.model: no model kind set")
	}
	if err := a.check(); err != nil {
		return Architecture{}, fmt.Errorf("%s: %w", field, err)
	}
	return a, nil
}
