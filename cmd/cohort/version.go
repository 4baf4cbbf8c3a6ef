package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Example: "  cohort version\n  cohort version -o json",
		Args:    exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			if g.output == "json" {
				return printJSON(stdout, map[string]string{"version": version, "go": runtime.Version()})
			}
			fmt.Fprintf(stdout, "cohort %s (%s)\n", version, runtime.Version())
			return nil
		},
	}
}
