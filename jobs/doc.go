// Package jobs defines the TrainingJob spec that ML engineers submit to Cohort: its Go types,
// strict YAML parsing, defaults and validation, and the conversion to the coordinator's
// cohortv1.Job record.
//
// Parsing is strict. An unknown field, a duplicate key, a value of the wrong type, a null where
// a value is required or an out-of-range value is reported as a FieldError that names the
// field's path ("spec.training.epochs") and the line it is on, and every problem in a spec is
// reported at once in one *SpecError. Every role parses the spec it receives with Parse, so the
// defaults applied here are the only defaults.
package jobs
