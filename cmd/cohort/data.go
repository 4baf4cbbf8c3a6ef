package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/internal/hrdata"
)

func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Generate data sets"}
	gen := &cobra.Command{Use: "gen", Short: "Generate a synthetic data set"}
	var rows int
	var seed int64
	var out string
	var disparity float64
	attr := &cobra.Command{
		Use:   "attrition",
		Short: "Synthetic HR attrition table (the IBM HR Analytics columns)",
		Long: `attrition writes employees with the IBM HR Analytics columns and an Attrition label
drawn from a documented logistic model (see the internal/hrdata package documentation).
Gender carries no signal unless --disparity D (0..1) is given: then each woman without
overtime gets overtime with probability D, so a model that never sees Gender still
flags women more often through that proxy. Use it to drive a job's spec.audit gate to
fail (--disparity 0.6) and to pass (--disparity 0).`,
		Example: `  cohort data gen attrition --rows 5000 --seed 7 --out attrition.csv
  cohort data gen attrition --rows 3000 --disparity 0.6 --out biased.csv`,
		Args: exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			if rows <= 0 || rows > hrdata.MaxAttritionRows {
				return usageErr("--rows: must be between 1 and %d, got %d", hrdata.MaxAttritionRows, rows)
			}
			if !(disparity >= 0 && disparity <= 1) {
				return usageErr("--disparity: must be between 0 and 1, got %v", disparity)
			}
			return writeGenerated(out, func(w io.Writer) error {
				return hrdata.GenerateAttrition(w, hrdata.AttritionConfig{Rows: rows, Seed: seed, Disparity: disparity})
			})
		},
	}
	attr.Flags().IntVar(&rows, "rows", 3000, "number of rows")
	attr.Flags().Float64Var(&disparity, "disparity", 0, "0..1: how much more often women work overtime (a proxy the model learns; see --help)")
	attr.Flags().Int64Var(&seed, "seed", 42, "random seed (the same seed gives the same file)")
	attr.Flags().StringVar(&out, "out", "-", "output file (- for stdout)")
	var employees, months int
	var pseed int64
	var pout string
	perf := &cobra.Command{
		Use:   "performance",
		Short: "Synthetic monthly work-history table per employee (for LSTM forecasting)",
		Long: `performance writes one row per employee per month: EmployeeID, Month, HoursWorked,
OvertimeHours, ProjectsActive, TrainingHours, AbsenceDays, PeerFeedback and
PerformanceScore, with trend, seasonality and noise. The score three months ahead depends
on recent training (positively, lagged), sustained overtime (negatively, lagged), absences
and peer feedback; see the internal/hrdata package documentation for the exact model.`,
		Example: `  cohort data gen performance --employees 200 --months 48 --seed 42 --out performance.csv`,
		Args:    exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			if employees <= 0 || months <= 0 {
				return usageErr("--employees and --months: must be positive, got %d and %d", employees, months)
			}
			return writeGenerated(pout, func(w io.Writer) error {
				return hrdata.GeneratePerformance(w, hrdata.PerformanceConfig{Employees: employees, Months: months, Seed: pseed})
			})
		},
	}
	perf.Flags().IntVar(&employees, "employees", 200, "number of employees")
	perf.Flags().IntVar(&months, "months", 48, "months of history per employee")
	perf.Flags().Int64Var(&pseed, "seed", 42, "random seed (the same seed gives the same file)")
	perf.Flags().StringVar(&pout, "out", "-", "output file (- for stdout)")
	var smonths int
	var sseed int64
	var sout string
	seasonal := &cobra.Command{
		Use:   "seasonal",
		Short: "Synthetic monthly series with a yearly season and a trend (for seasonal forecasts)",
		Long: `seasonal writes one monthly series, Month and Headcount (hires per month), with a
strong yearly season, a linear trend and autocorrelated noise; see the internal/hrdata
package documentation (GenerateSeasonal) for the exact model.`,
		Example: `  cohort data gen seasonal --months 144 --seed 7 --out hiring-seasonal.csv`,
		Args:    exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			return writeGenerated(sout, func(w io.Writer) error {
				return hrdata.GenerateSeasonal(w, hrdata.SeasonalConfig{Months: smonths, Seed: sseed})
			})
		},
	}
	seasonal.Flags().IntVar(&smonths, "months", 144, "months in the series (24 or more)")
	seasonal.Flags().Int64Var(&sseed, "seed", 7, "random seed (the same seed gives the same file)")
	seasonal.Flags().StringVar(&sout, "out", "-", "output file (- for stdout)")
	gen.AddCommand(attr, perf, seasonal)
	cmd.AddCommand(gen)
	return cmd
}

// writeGenerated runs gen into the file out ("-" or "" for stdout).
func writeGenerated(out string, gen func(io.Writer) error) error {
	var w io.Writer = os.Stdout
	var f *os.File
	if out != "" && out != "-" {
		var err error
		if f, err = os.Create(out); err != nil {
			return usageErr("--out: %v", err)
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	if err := gen(bw); err != nil {
		return fmt.Errorf("generate data: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if f != nil {
		return f.Close()
	}
	return nil
}
