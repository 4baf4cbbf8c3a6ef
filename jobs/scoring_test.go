package jobs

import (
	"testing"
)

// TestScoreByAndEarlyStoppingDefaults covers checkpoint.scoreBy, checkpoint.keepBest and
// training.earlyStopping as written and as defaulted: the task's primary metric with its
// direction, the short (string) form, and the early-stopping monitor following scoreBy.
func TestScoreByAndEarlyStoppingDefaults(t *testing.T) {
	tests := []struct {
		name     string
		edits    []edit
		scoreBy  ScoreBy
		keepBest int
		early    *EarlyStopping
	}{
		{"binary default", nil, ScoreBy{"val_auc", ModeMax}, 1, nil},
		{"multiclass default", []edit{{Line: 6, Text: "  task: multiclass_classification"}}, ScoreBy{"val_accuracy", ModeMax}, 1, nil},
		{"regression default", []edit{{Line: 6, Text: "  task: regression"}}, ScoreBy{"val_rmse", ModeMin}, 1, nil},
		{"string form", []edit{{Line: 23, Text: "    scoreBy: val_loss\n    keepBest: 2", Insert: true}}, ScoreBy{"val_loss", ModeMin}, 2, nil},
		{"mapping form", []edit{{Line: 23, Text: "    scoreBy: {metric: val_loss, mode: min}", Insert: true}}, ScoreBy{"val_loss", ModeMin}, 1, nil},
		{"mapping without mode", []edit{{Line: 23, Text: "    scoreBy:\n      metric: val_accuracy", Insert: true}}, ScoreBy{"val_accuracy", ModeMax}, 1, nil},
		{"early stopping defaults", []edit{{Line: 14, Text: "    earlyStopping: {}", Insert: true}}, ScoreBy{"val_auc", ModeMax}, 1,
			&EarlyStopping{Monitor: "val_auc", Mode: ModeMax, Patience: DefaultPatience}},
		{"early stopping follows scoreBy", []edit{{Line: 14, Text: "    earlyStopping: {patience: 0}", Insert: true}, {Line: 23, Text: "    scoreBy: val_loss", Insert: true}},
			ScoreBy{"val_loss", ModeMin}, 1, &EarlyStopping{Monitor: "val_loss", Mode: ModeMin}},
		{"early stopping as the issue writes it", []edit{{Line: 14, Text: "    earlyStopping: {monitor: val_auc, mode: max, patience: 5, minDelta: 0.001, startEpoch: 2}", Insert: true}},
			ScoreBy{"val_auc", ModeMax}, 1, &EarlyStopping{Monitor: "val_auc", Mode: ModeMax, Patience: 5, MinDelta: 0.001, StartEpoch: 2}},
		{"early stopping monitors another metric", []edit{{Line: 14, Text: "    earlyStopping: {monitor: val_loss, minDelta: 0.01}", Insert: true}},
			ScoreBy{"val_auc", ModeMax}, 1, &EarlyStopping{Monitor: "val_loss", Mode: ModeMin, Patience: DefaultPatience, MinDelta: 0.01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := mustParse(t, editSpec(t, tt.edits...))
			c := j.Spec.Checkpoint
			if c.ScoreBy != tt.scoreBy || c.KeepBest != tt.keepBest {
				t.Errorf("checkpoint = %+v, want scoreBy %+v keepBest %d", c, tt.scoreBy, tt.keepBest)
			}
			es := j.Spec.Training.EarlyStopping
			switch {
			case (es == nil) != (tt.early == nil):
				t.Errorf("earlyStopping = %+v, want %+v", es, tt.early)
			case es != nil && *es != *tt.early:
				t.Errorf("earlyStopping = %+v, want %+v", *es, *tt.early)
			}
			assertRoundTrip(t, j)
		})
	}
}

// TestScoreByAndEarlyStoppingErrors: bad values are refused with the field named.
func TestScoreByAndEarlyStoppingErrors(t *testing.T) {
	tests := []struct {
		name     string
		edits    []edit
		wantPath string
		wantLine int
		wantMsg  string
	}{
		{"scoreBy unknown metric", []edit{{Line: 23, Text: "    scoreBy: val_f2", Insert: true}}, "spec.checkpoint.scoreBy.metric", 24,
			`"val_f2" is not a validation metric of task binary_classification; one of val_auc, val_accuracy, val_loss, val_f1, val_precision, val_recall`},
		{"scoreBy metric of another task", []edit{{Line: 6, Text: "  task: regression"}, {Line: 23, Text: "    scoreBy: {metric: val_auc}", Insert: true}},
			"spec.checkpoint.scoreBy.metric", 24, `"val_auc" is not a validation metric of task regression`},
		{"scoreBy test metric", []edit{{Line: 23, Text: "    scoreBy: test_auc", Insert: true}}, "spec.checkpoint.scoreBy.metric", 24,
			"only the validation split"},
		{"scoreBy empty metric", []edit{{Line: 23, Text: "    scoreBy: {metric: \"\"}", Insert: true}}, "spec.checkpoint.scoreBy.metric", 24, "required"},
		{"scoreBy empty string", []edit{{Line: 23, Text: "    scoreBy: \"\"", Insert: true}}, "spec.checkpoint.scoreBy.metric", 24, "required; one of val_auc"},
		{"scoreBy wrong direction", []edit{{Line: 23, Text: "    scoreBy: {metric: val_loss, mode: max}", Insert: true}}, "spec.checkpoint.scoreBy.mode", 24,
			`"max" is the wrong direction for val_loss (lower is better): use min or leave mode out`},
		{"scoreBy unknown mode", []edit{{Line: 23, Text: "    scoreBy:\n      metric: val_auc\n      mode: maximize", Insert: true}}, "spec.checkpoint.scoreBy.mode", 26,
			`"maximize" is not one of max, min`},
		{"scoreBy unknown field", []edit{{Line: 23, Text: "    scoreBy: {metric: val_auc, direction: max}", Insert: true}}, "spec.checkpoint.scoreBy.direction", 24,
			`unknown field "direction"`},
		{"scoreBy wrong type", []edit{{Line: 23, Text: "    scoreBy: [val_auc]", Insert: true}}, "spec.checkpoint.scoreBy", 24,
			"expected a metric name or a mapping {metric, mode}, got a list"},
		{"scoreBy number", []edit{{Line: 23, Text: "    scoreBy: 1", Insert: true}}, "spec.checkpoint.scoreBy", 24,
			"expected a metric name or a mapping {metric, mode}, got the integer 1"},
		{"keepBest zero", []edit{{Line: 23, Text: "    keepBest: 0", Insert: true}}, "spec.checkpoint.keepBest", 24, "must be greater than 0"},
		{"keepBest too many", []edit{{Line: 23, Text: "    keepBest: 1001", Insert: true}}, "spec.checkpoint.keepBest", 24, "at most 1000"},
		{"earlyStopping unknown monitor", []edit{{Line: 14, Text: "    earlyStopping: {monitor: auc}", Insert: true}}, "spec.training.earlyStopping.monitor", 15,
			`"auc" is not a validation metric of task binary_classification`},
		{"earlyStopping train loss", []edit{{Line: 14, Text: "    earlyStopping: {monitor: loss}", Insert: true}}, "spec.training.earlyStopping.monitor", 15,
			"only the validation split"},
		{"earlyStopping wrong direction", []edit{{Line: 14, Text: "    earlyStopping: {monitor: val_accuracy, mode: min}", Insert: true}}, "spec.training.earlyStopping.mode", 15,
			`"min" is the wrong direction for val_accuracy (higher is better): use max`},
		{"earlyStopping negative patience", []edit{{Line: 14, Text: "    earlyStopping:\n      patience: -1", Insert: true}}, "spec.training.earlyStopping.patience", 16,
			"must be between 0 and 100000, got -1"},
		{"earlyStopping negative minDelta", []edit{{Line: 14, Text: "    earlyStopping:\n      minDelta: -0.001", Insert: true}}, "spec.training.earlyStopping.minDelta", 16,
			"must be 0 or more, got -0.001"},
		{"earlyStopping startEpoch past the end", []edit{{Line: 14, Text: "    earlyStopping:\n      startEpoch: 5", Insert: true}}, "spec.training.earlyStopping.startEpoch", 16,
			"must be less than spec.training.epochs (5), got 5"},
		{"earlyStopping negative startEpoch", []edit{{Line: 14, Text: "    earlyStopping: {startEpoch: -1}", Insert: true}}, "spec.training.earlyStopping.startEpoch", 15,
			"must be 0 or more"},
		{"earlyStopping unknown field", []edit{{Line: 14, Text: "    earlyStopping: {patient: 3}", Insert: true}}, "spec.training.earlyStopping.patient", 15,
			`did you mean "patience"`},
		{"earlyStopping not a mapping", []edit{{Line: 14, Text: "    earlyStopping: true", Insert: true}}, "spec.training.earlyStopping", 15,
			"expected a mapping, got the boolean true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertOneProblem(t, editSpec(t, tt.edits...), tt.wantPath, tt.wantLine, tt.wantMsg)
		})
	}
}

// TestGoBuiltJobScoring: SetDefaults gives a Go-built job the task's score and keepBest.
func TestGoBuiltJobScoring(t *testing.T) {
	j := &TrainingJob{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "built"}, Spec: Spec{
		Task: TaskRegression, Model: Model{MLP: &MLP{Hidden: []int{8}}}, Data: Data{Train: "s3://bkt/train.csv", Label: "y"},
		Training: Training{EarlyStopping: &EarlyStopping{Patience: 3}},
	}}
	j.SetDefaults()
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	if c := j.Spec.Checkpoint; c.ScoreBy != (ScoreBy{"val_rmse", ModeMin}) || c.KeepBest != DefaultKeepBest {
		t.Errorf("checkpoint %+v", c)
	}
	if es := *j.Spec.Training.EarlyStopping; es != (EarlyStopping{Monitor: "val_rmse", Mode: ModeMin, Patience: 3}) {
		t.Errorf("earlyStopping %+v", es)
	}
}
