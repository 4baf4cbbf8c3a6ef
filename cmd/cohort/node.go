package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func newNodeCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Inspect cluster nodes"}
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Short:   "List registered nodes with their roles, resources and last heartbeat",
		Example: "  cohort node list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := cohortv1.NewJobServiceClient(conn).ListNodes(cmd.Context(), &cohortv1.ListNodesRequest{})
			if err != nil {
				return rpcErr("list nodes", err)
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
			fmt.Fprintln(tw, "ID\tROLES\tSTATUS\tCPU\tMEMORY\tGPUS\tADDRESS\tLAST HEARTBEAT")
			for _, n := range resp.GetNodes() {
				var roles []string
				for _, r := range n.GetRoles() {
					roles = append(roles, strings.ToLower(strings.TrimPrefix(r.String(), "NODE_ROLE_")))
				}
				c := n.GetCapacity()
				fmt.Fprintf(tw, "%s\t%s\t%s\t%dm\t%dMi\t%d\t%s\t%s\n", n.GetId(), strings.Join(roles, ","),
					strings.ToLower(strings.TrimPrefix(n.GetStatus().String(), "NODE_STATUS_")),
					c.GetCpuMillis(), c.GetMemoryBytes()>>20, c.GetGpus(), n.GetDataAddress(),
					time.Unix(0, n.GetLastHeartbeatUnixNano()).Format(time.RFC3339))
			}
			return tw.Flush()
		},
	})
	return cmd
}
