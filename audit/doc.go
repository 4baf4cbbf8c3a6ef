// Package audit computes the model audit and explanation report (report.json) that a
// training job writes for the model it exports. It is pure computation: predictions,
// labels and the sensitive columns of one evaluation split in, a Report out; the caller
// reads the data, runs the model and writes the file.
//
// What is computed:
//
//   - Metrics of the split (binary: AUC, accuracy, log loss; multiclass: accuracy, log
//     loss; regression: RMSE, MAE), each with a 95% percentile-bootstrap confidence
//     interval from a seeded, deterministic resampling of the rows (Evaluate).
//   - For binary classifiers, a reliability table of 10 equal-width bins with the
//     expected calibration error, and a confusion matrix at the decision threshold
//     (multiclass: at the most probable class).
//   - Group figures per sensitive attribute and, when asked, per intersection of two or
//     more attributes: counts, base rates, selection rates and their impact ratios,
//     true- and false-positive rates, and scoring rates and their impact ratios.
//   - A gate: the figures the model must reach to be exported.
//   - Permutation importance per raw input column (PermutationImportance).
//   - A Markdown model card of the report (ModelCard).
//
// References:
//
//   - The four-fifths rule of the US Uniform Guidelines on Employee Selection Procedures
//     (29 CFR 1607.4(D)): a selection rate for any group below four fifths (80%) of the
//     rate of the group with the highest rate is generally regarded as evidence of
//     adverse impact. Report impact ratios are those ratios; Gate.MinImpactRatio 0.8 is
//     the rule.
//   - New York City Local Law 144 of 2021 and its rules (6 RCNY 5-300) on automated
//     employment decision tools: the bias audit reports, per category and per
//     intersection of categories, the selection rate and the impact ratio (classifiers)
//     or the "scoring rate" — the share of a category scoring above the median score of
//     the sample — and its impact ratio (tools that output a score). Categories under 2%
//     of the data may be left out of the ratios (Config.MinGroupFraction) and unknown
//     categories are counted apart.
//   - M. Mitchell et al., "Model Cards for Model Reporting", FAT* 2019
//     (arXiv:1810.03993): the sections of ModelCard.
//
// No figure of a report is NaN or a 0/0: figures that are undefined for a group (a TPR
// without positives, a ratio when the highest rate is 0) are absent, and the report
// notes why.
package audit
