package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func init() {
	registerCommand(newQuotaCmd)
	registerCommand(newQueueCmd)
}

func newQuotaCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Set and list per-namespace quotas (admin)"}
	cmd.AddCommand(newQuotaSetCmd(g), newQuotaDeleteCmd(g), newQuotaListCmd(g))
	return cmd
}

func newQuotaSetCmd(g *globalFlags) *cobra.Command {
	var cpu, memory string
	var gpus int
	cmd := &cobra.Command{
		Use:   "set NAMESPACE",
		Short: "Limit what a namespace's running jobs may hold together (unset: unlimited)",
		Example: `  cohort quota set team-a --gpus 16 --cpu 64 --memory 256Gi
  cohort quota set default --gpus 4`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			limit := &cohortv1.Resources{}
			if gpus < 0 {
				return usageErr("--gpus must be 0 (unlimited) or more, got %d", gpus)
			}
			limit.Gpus = int32(gpus)
			if cpu != "" {
				m, err := jobs.ParseCPU(cpu)
				if err != nil || m <= 0 {
					return usageErr("--cpu %q: want a positive amount such as 8 or 500m", cpu)
				}
				limit.CpuMillis = m
			}
			if memory != "" {
				b, err := jobs.ParseMemory(memory)
				if err != nil || b <= 0 {
					return usageErr("--memory %q: want a positive amount such as 64Gi", memory)
				}
				limit.MemoryBytes = b
			}
			resp, err := jobCall(cmd.Context(), g, "set quota", cohortv1.JobServiceClient.SetQuota, &cohortv1.SetQuotaRequest{
				Quota: &cohortv1.Quota{Namespace: args[0], Limit: limit}})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, quotaJSON(resp.GetQuota()))
			}
			fmt.Fprintf(stdout, "quota of namespace %s: %s\n", args[0], formatLimit(resp.GetQuota().GetLimit()))
			return nil
		},
	}
	cmd.Flags().IntVar(&gpus, "gpus", 0, "most GPUs the namespace's tasks may hold (0: unlimited)")
	cmd.Flags().StringVar(&cpu, "cpu", "", "most CPU, e.g. 64 or 500m (empty: unlimited)")
	cmd.Flags().StringVar(&memory, "memory", "", "most memory, e.g. 256Gi (empty: unlimited)")
	return cmd
}

func newQuotaDeleteCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAMESPACE",
		Short:   "Remove a namespace's quota",
		Example: "  cohort quota delete research",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := jobCall(cmd.Context(), g, "delete quota", cohortv1.JobServiceClient.SetQuota, &cohortv1.SetQuotaRequest{
				Quota: &cohortv1.Quota{Namespace: args[0]}, Delete: true})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "quota of namespace %s removed\n", args[0])
			return nil
		},
	}
}

func newQuotaListCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List namespace quotas",
		Example: "  cohort quota list\n  cohort quota list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := jobCall(cmd.Context(), g, "list quotas", cohortv1.JobServiceClient.ListQuotas, &cohortv1.ListQuotasRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := []map[string]any{}
				for _, q := range resp.GetQuotas() {
					out = append(out, quotaJSON(q))
				}
				return printJSON(stdout, out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tLIMIT")
			for _, q := range resp.GetQuotas() {
				fmt.Fprintf(tw, "%s\t%s\n", q.GetNamespace(), formatLimit(q.GetLimit()))
			}
			return tw.Flush()
		},
	}
}

func quotaJSON(q *cohortv1.Quota) map[string]any {
	l := q.GetLimit()
	return map[string]any{"namespace": q.GetNamespace(), "gpus": l.GetGpus(), "cpu_millis": l.GetCpuMillis(), "memory_bytes": l.GetMemoryBytes()}
}

func formatLimit(l *cohortv1.Resources) string {
	part := func(v int64, unit string) string {
		if v == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d%s", v, unit)
	}
	return fmt.Sprintf("gpus %s, cpu %s, memory %s", part(int64(l.GetGpus()), ""), part(l.GetCpuMillis(), "m"), part(l.GetMemoryBytes(), "B"))
}

func newQueueCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Set and list scheduling queues' fair-share weights (admin)"}
	set := &cobra.Command{
		Use:     "set NAME --weight W",
		Short:   "Set a queue's weight (queues share the cluster in proportion to their weights)",
		Example: "  cohort queue set research --weight 3",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, _ := cmd.Flags().GetInt32("weight")
			_, err := jobCall(cmd.Context(), g, "set queue", cohortv1.JobServiceClient.SetQueue, &cohortv1.SetQueueRequest{Queue: &cohortv1.Queue{Name: args[0], Weight: w}})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "queue %s: weight %d\n", args[0], w)
			return nil
		},
	}
	set.Flags().Int32("weight", 1, "fair-share weight, 1..1000")
	list := &cobra.Command{
		Use:     "list",
		Short:   "List queues with a weight (others have weight 1)",
		Example: "  cohort queue list\n  cohort queue list -o yaml",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := jobCall(cmd.Context(), g, "list queues", cohortv1.JobServiceClient.ListQueues, &cohortv1.ListQueuesRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := []map[string]any{}
				for _, q := range resp.GetQueues() {
					out = append(out, map[string]any{"name": q.GetName(), "weight": q.GetWeight()})
				}
				return printJSON(stdout, out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "QUEUE\tWEIGHT")
			for _, q := range resp.GetQueues() {
				fmt.Fprintf(tw, "%s\t%d\n", q.GetName(), q.GetWeight())
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(set, list)
	return cmd
}
