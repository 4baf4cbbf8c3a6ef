package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/audit"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newJobReportCmd(g *globalFlags) *cobra.Command {
	var id *jobIDArg
	var top int
	cmd := &cobra.Command{
		Use:   "report JOB_ID",
		Short: "Print a trained model's audit and explanations (report.json)",
		Long: `Report prints the report the job's chief wrote when training ended, for the model it
exported (or whose export its spec.audit.gate blocked), evaluated on the test set when
the job has one, else on the validation split: metrics with 95% bootstrap confidence
intervals, the calibration table and confusion matrix, the fairness audit per sensitive
group (selection rate, impact ratio, TPR, FPR, scoring rate; small and unknown groups
reported apart), the gate and any override, and the permutation importance of each
input column (for LSTMs also of each lag; for CNNs, integrated-gradients attribution
images are in the JSON). -o json prints report.json itself; README.md documents its
fields.`,
		Example: `  cohort job report attrition-mlp-1a2b3c4d
  cohort job report attrition-mlp-1a2b3c4d -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if top < 1 {
				return usageErr("--top: must be at least 1, got %d", top)
			}
			if err := checkOutput(g); err != nil {
				return err
			}
			jobID, err := id.resolve(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			resp, err := jobCallPrecondition(cmd.Context(), g, "job report", cohortv1.JobServiceClient.GetJobReport, &cohortv1.GetJobReportRequest{Id: jobID})
			if err != nil {
				return err
			}
			if g.output == "json" {
				var v any
				if err := json.Unmarshal(resp.GetReportJson(), &v); err != nil {
					return fmt.Errorf("job report: %s: %w", resp.GetUri(), err)
				}
				return printJSON(stdout, v)
			}
			r, err := audit.DecodeReport(bytes.NewReader(resp.GetReportJson()))
			if err != nil {
				return fmt.Errorf("job report: %s: %w", resp.GetUri(), err)
			}
			printReport(stdout, r, top)
			fmt.Fprintf(stdout, "\nreport: %s\n", resp.GetUri())
			return nil
		},
	}
	cmd.Flags().IntVar(&top, "top", 10, "how many importances to print")
	id = jobIDFlags(cmd, g)
	return cmd
}

// printGate prints a job's gate outcome.
func printGate(w io.Writer, g *gateJSON) {
	if g.Passed {
		fmt.Fprintln(w, "  gate: passed")
	} else {
		fmt.Fprintln(w, "  gate: FAILED, export blocked")
		for _, r := range g.Reasons {
			fmt.Fprintf(w, "    - %s\n", r)
		}
	}
	for _, o := range g.Overrides {
		fmt.Fprintf(w, "  gate overridden by %s at %s: %s\n", o.By, o.Time, o.Reason)
	}
}

// fmtRate prints an optional figure, "-" when absent.
func fmtRate(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *v)
}

// fmtRatio prints an optional ratio with its optional interval.
func fmtRatio(v *float64, ci *[2]float64) string {
	if v == nil || ci == nil {
		return fmtRate(v)
	}
	return fmt.Sprintf("%.3f [%.2f, %.2f]", *v, ci[0], ci[1])
}

// printReport prints r as tables.
func printReport(w io.Writer, r *audit.Report, top int) {
	fmt.Fprintf(w, "job %s (%s): %s model at step %d, evaluated on the %s split (%d rows)\n",
		r.JobID, r.Task, r.Model.Kind, r.Model.Step, r.Split, r.Rows)

	fmt.Fprintln(w, "\nmetrics (95% bootstrap CI):")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	names := make([]string, 0, len(r.Metrics))
	for n := range r.Metrics {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := r.Metrics[n]
		fmt.Fprintf(tw, "  %s\t%.4f\t[%.4f, %.4f]\n", n, m.Value, m.CI95[0], m.CI95[1])
	}
	tw.Flush()

	if c := r.Calibration; c != nil {
		fmt.Fprintf(w, "\ncalibration: expected calibration error %.4f (10 bins)\n", c.ECE)
	}
	if c := r.Confusion; c != nil {
		head := "confusion matrix (rows: true, columns: predicted)"
		if c.Threshold != nil {
			head += fmt.Sprintf(" at threshold %g", *c.Threshold)
		}
		fmt.Fprintf(w, "\n%s:\n", head)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\t%s\t\n", strings.Join(c.Labels, "\t"))
		for i, row := range c.Matrix {
			cells := make([]string, len(row))
			for j, v := range row {
				cells[j] = fmt.Sprint(v)
			}
			label := ""
			if i < len(c.Labels) {
				label = c.Labels[i]
			}
			fmt.Fprintf(tw, "  %s\t%s\t\n", label, strings.Join(cells, "\t"))
		}
		tw.Flush()
	}

	if a := r.Audit; a != nil {
		head := "fairness audit by " + strings.Join(a.Sensitive, ", ")
		if a.Threshold != nil {
			head += fmt.Sprintf(" (selection at threshold %g", *a.Threshold)
		} else {
			head += " ("
		}
		head += fmt.Sprintf("; groups under %g%% of rows excluded from the ratios)", 100*a.MinGroupFraction)
		fmt.Fprintf(w, "\n%s:\n", head)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ATTRIBUTE\tCATEGORY\tCOUNT\tBASE RATE\tSELECTION\tIMPACT RATIO [95% CI]\tTPR\tFPR\tSCORING RATE\tSCORING RATIO [95% CI]\tNOTE")
		for _, gr := range a.Groups {
			cat := gr.Category
			if gr.Missing {
				cat = "(unknown)"
			}
			note := ""
			if gr.Excluded {
				note = "excluded: " + gr.Reason
			}
			if gr.ImpactRatio != nil && *gr.ImpactRatio < 0.8 {
				note = strings.TrimPrefix(note+"; below four-fifths", "; ")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", gr.Attribute, cat, gr.Count,
				fmtRate(gr.BaseRate), fmtRate(gr.SelectionRate), fmtRatio(gr.ImpactRatio, gr.ImpactRatioCI95), fmtRate(gr.TPR), fmtRate(gr.FPR),
				fmtRate(gr.ScoreRate), fmtRatio(gr.ScoreImpactRatio, gr.ScoreImpactRatioCI95), note)
		}
		tw.Flush()
		for _, n := range a.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
		if gt := a.Gate; gt != nil {
			fmt.Fprintln(w)
			printGate(w, &gateJSON{Passed: gt.Passed, Reasons: gt.Reasons})
			if o := gt.Override; o != nil {
				fmt.Fprintf(w, "  gate overridden by %s at %s: %s\n", o.By, o.Time, o.Reason)
			}
		}
	}

	printImportance := func(title string, imp []audit.Importance) {
		if len(imp) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s (drop in %s when shuffled; mean ± std):\n", title, r.ImportanceMetric)
		maxMean := 0.0
		for _, i := range imp {
			maxMean = max(maxMean, i.Mean)
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for k, i := range imp {
			if k == top {
				fmt.Fprintf(tw, "  ... %d more\t\t\t\n", len(imp)-top)
				break
			}
			bar := ""
			if maxMean > 0 && i.Mean > 0 {
				bar = strings.Repeat("#", max(1, int(20*i.Mean/maxMean+0.5)))
			}
			fmt.Fprintf(tw, "  %s\t%.4f ± %.4f\t%s\n", i.Feature, i.Mean, i.Std, bar)
		}
		tw.Flush()
	}
	printImportance("permutation importance", r.Importance)
	printImportance("permutation importance by lag", r.ImportanceByLag)
	if at := r.Attribution; at != nil {
		fmt.Fprintf(w, "\nintegrated-gradients attributions (%d steps, baseline %s): %d class images of %dx%dx%d (in -o json)\n",
			at.Steps, at.Baseline, len(at.Classes), at.Channels, at.Height, at.Width)
	}
}
