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
	attr := &cobra.Command{
		Use:     "attrition",
		Short:   "Synthetic HR attrition table (the IBM HR Analytics columns)",
		Example: `  cohort data gen attrition --rows 5000 --seed 7 --out attrition.csv`,
		Args:    exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			if rows <= 0 || rows > 100_000_000 {
				return usageErr("--rows: must be between 1 and 100000000, got %d", rows)
			}
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
			if err := hrdata.GenerateAttrition(bw, hrdata.AttritionConfig{Rows: rows, Seed: seed}); err != nil {
				return fmt.Errorf("generate attrition data: %w", err)
			}
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			if f != nil {
				return f.Close()
			}
			return nil
		},
	}
	attr.Flags().IntVar(&rows, "rows", 3000, "number of rows")
	attr.Flags().Int64Var(&seed, "seed", 42, "random seed (the same seed gives the same file)")
	attr.Flags().StringVar(&out, "out", "-", "output file (- for stdout)")
	gen.AddCommand(attr)
	cmd.AddCommand(gen)
	return cmd
}
