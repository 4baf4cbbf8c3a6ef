package main

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newNodeCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Inspect, drain and cordon cluster nodes"}
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Short:   "List registered nodes with their roles, resources and last heartbeat",
		Example: "  cohort node list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := jobCall(cmd.Context(), g, "list nodes", cohortv1.JobServiceClient.ListNodes, &cohortv1.ListNodesRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(stdout, string(b))
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLES\tSTATUS\tCPU USED/CAP\tMEMORY USED/CAP\tGPUS\tGPU MEMORY\tADDRESS\tLAST HEARTBEAT")
			now := time.Now()
			for _, n := range resp.GetNodes() {
				var roles []string
				for _, r := range n.GetRoles() {
					roles = append(roles, strings.ToLower(strings.TrimPrefix(r.String(), "NODE_ROLE_")))
				}
				st := nodeStatusName(n.GetStatus())
				if n.GetSchedulingIneligible() {
					st += ",ineligible"
				}
				cpu, mem, gpus, gpuMem := nodeUsageCells(n)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.GetId(), strings.Join(roles, ","),
					st, cpu, mem, gpus, gpuMem, cmp.Or(n.GetDataAddress(), "-"), heartbeatCell(n.GetLastHeartbeatUnixNano(), now))
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(newNodeDrainCmd(g), newNodeEligibilityCmd(g))
	return cmd
}

func newNodeDrainCmd(g *globalFlags) *cobra.Command {
	var deadline time.Duration
	var cancel bool
	cmd := &cobra.Command{
		Use:   "drain NODE_ID [--deadline D]",
		Short: "Stop placing tasks on a node and move its jobs elsewhere (they resume from their last checkpoint)",
		Long: `Drain marks the node draining: no new task is placed there. Its jobs keep running
until the deadline (at once without one), then go back to pending with a new generation
and resume elsewhere from their last checkpoint. --cancel ends the drain.`,
		Example: `  cohort node drain dev-worker-1
  cohort node drain gpu-07 --deadline 30m
  cohort node drain gpu-07 --cancel`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if deadline < 0 {
				return usageErr("--deadline must not be negative, got %s", deadline)
			}
			if deadline > 0 && deadline < time.Second {
				return usageErr("--deadline must be 0 or at least 1s, got %s", deadline)
			}
			resp, err := jobCall(cmd.Context(), g, "drain node", cohortv1.JobServiceClient.DrainNode, &cohortv1.DrainNodeRequest{
				NodeId: args[0], DeadlineSeconds: int64(deadline / time.Second), Cancel: cancel})
			if err != nil {
				return err
			}
			n := resp.GetNode()
			if g.output == "json" {
				return printJSON(stdout, map[string]any{"node_id": n.GetId(), "status": nodeStatusName(n.GetStatus()),
					"drain_deadline": drainDeadline(n)})
			}
			switch {
			case cancel:
				fmt.Fprintf(stdout, "node %s: drain cancelled (%s)\n", n.GetId(), nodeStatusName(n.GetStatus()))
			case n.GetDrainDeadlineUnixNano() == 0:
				fmt.Fprintf(stdout, "node %s: draining; its jobs were moved off\n", n.GetId())
			default:
				fmt.Fprintf(stdout, "node %s: draining; its jobs move off at %s\n", n.GetId(), drainDeadline(n))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&deadline, "deadline", 0, "how long the node's jobs may keep running before they are moved (0: at once)")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "end the drain: the node takes new tasks again")
	return cmd
}

func drainDeadline(n *cohortv1.Node) string {
	if n.GetDrainDeadlineUnixNano() == 0 {
		return ""
	}
	return time.Unix(0, n.GetDrainDeadlineUnixNano()).UTC().Format(time.RFC3339)
}

func nodeStatusName(s cohortv1.NodeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATUS_"))
}

func newNodeEligibilityCmd(g *globalFlags) *cobra.Command {
	var enable, disable bool
	cmd := &cobra.Command{
		Use:   "eligibility NODE_ID --enable|--disable",
		Short: "Allow or stop new tasks on a node (what runs there stays)",
		Example: `  cohort node eligibility gpu-07 --disable
  cohort node eligibility gpu-07 --enable`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if enable == disable {
				return usageErr("give exactly one of --enable and --disable")
			}
			resp, err := jobCall(cmd.Context(), g, "set node eligibility", cohortv1.JobServiceClient.SetNodeEligibility, &cohortv1.SetNodeEligibilityRequest{
				NodeId: args[0], Eligible: enable})
			if err != nil {
				return err
			}
			n := resp.GetNode()
			if g.output == "json" {
				return printJSON(stdout, map[string]any{"node_id": n.GetId(), "eligible": !n.GetSchedulingIneligible()})
			}
			state := "eligible"
			if n.GetSchedulingIneligible() {
				state = "ineligible"
			}
			fmt.Fprintf(stdout, "node %s: %s for new tasks\n", n.GetId(), state)
			return nil
		},
	}
	cmd.Flags().BoolVar(&enable, "enable", false, "allow new tasks on the node")
	cmd.Flags().BoolVar(&disable, "disable", false, "keep new tasks off the node")
	return cmd
}

// nodeUsageCells are a node's use against its capacity in human units: CPU cores
// ("0.8/2"), memory ("1.2 GiB/4.0 GiB"), GPUs with their busy fraction, and GPU
// memory in use; "-" for what the node has not reported (no heartbeat with usage yet,
// or down).
func nodeUsageCells(n *cohortv1.Node) (cpu, mem, gpus, gpuMem string) {
	c, u := n.GetCapacity(), n.GetUsage()
	capCores := strconv.FormatFloat(float64(c.GetCpuMillis())/1000, 'f', -1, 64)
	cpu, mem, gpus, gpuMem = "-/"+capCores, "-/"+humanBytes(c.GetMemoryBytes()), strconv.Itoa(int(c.GetGpus())), "-"
	if u == nil {
		return cpu, mem, gpus, gpuMem
	}
	cpu = fmt.Sprintf("%.1f/%s", u.GetCpuCores(), capCores)
	mem = humanBytes(u.GetMemoryBytes()) + "/" + humanBytes(c.GetMemoryBytes())
	if u.GetGpuPresent() {
		gpuMem = humanBytes(u.GetGpuMemoryBytes())
		if c.GetGpus() > 0 {
			gpus = fmt.Sprintf("%d (%.0f%% busy)", c.GetGpus(), 100*u.GetGpuUtilization())
		}
	}
	return cpu, mem, gpus, gpuMem
}

// heartbeatCell is a node's last heartbeat as a time and its age ("15:04:05Z (2s
// ago)"); the date is shown when it is not today's.
func heartbeatCell(ns int64, now time.Time) string {
	if ns <= 0 {
		return "never"
	}
	t := time.Unix(0, ns).UTC()
	at := t.Format("15:04:05Z")
	if y, m, d := t.Date(); y != now.UTC().Year() || m != now.UTC().Month() || d != now.UTC().Day() {
		at = t.Format(time.RFC3339)
	}
	age := now.Sub(t).Round(time.Second)
	if age < 0 {
		age = 0
	}
	return fmt.Sprintf("%s (%s ago)", at, age)
}
