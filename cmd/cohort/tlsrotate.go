package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// newOperatorTLSCmd is `cohort operator tls rotate-ca [--finish [--force]]|status`.
func newOperatorTLSCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Rotate the cluster CA and show the CAs trusted",
		Long: `The cluster CA signs every process's certificate. 'rotate-ca' makes a new CA,
cross-signed by the current one, and records it in Raft: every coordinator trusts both
CAs at once, signs with the new one from then on (its chains carry the cross-signed
certificate, so processes that still trust only the old CA accept them), and renews its
own certificate and the operator's; node agents renew onto the new CA within a minute
and take the new trust bundle with their certificate. The old CA stays trusted until
'rotate-ca --finish', which waits until every certificate it signed has been renewed
(24 h after the rotation) unless --force; the leader ends the rotation by itself then. Join tokens pin a CA: tokens minted before
the rotation still enroll until --finish; mint new ones after it.`,
	}
	cmd.AddCommand(newRotateCACmd(g), newTLSStatusCmd(g))
	return cmd
}

func newRotateCACmd(g *globalFlags) *cobra.Command {
	var finish, force bool
	c := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Start a CA rotation, or end one (--finish)",
		Example: `  cohort operator tls rotate-ca
  cohort operator tls rotate-ca --finish
  cohort operator tls rotate-ca --finish --force   # refuse the old CA's certificates now`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if force && !finish {
				return usageErr("--force goes with --finish")
			}
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			c := cohortv1.NewTLSServiceClient(conn)
			var resp *cohortv1.TLSStatusResponse
			what := "tls rotate-ca"
			if finish {
				what += " --finish"
				resp, err = c.FinishRotation(cmd.Context(), &cohortv1.FinishCARotationRequest{Force: force})
			} else {
				resp, err = c.RotateCA(cmd.Context(), &cohortv1.RotateCARequest{IdempotencyKey: newIdempotencyKey()})
			}
			if err != nil {
				return rpcErr(what, err)
			}
			return printTLSStatus(g, resp)
		},
	}
	c.Flags().BoolVar(&finish, "finish", false, "stop trusting every CA but the active one")
	c.Flags().BoolVar(&force, "force", false, "with --finish: do not wait for the old CA's certificates to be renewed")
	return c
}

func newTLSStatusCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the CAs the cluster trusts, their hashes and expiry",
		Example: "  cohort operator tls status",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := connect(g)
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := cohortv1.NewTLSServiceClient(conn).Status(cmd.Context(), &cohortv1.TLSStatusRequest{})
			if err != nil {
				return rpcErr("tls status", err)
			}
			return printTLSStatus(g, resp)
		},
	}
}

type trustedCAJSON struct {
	Hash     string    `json:"hash"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	Active   bool      `json:"active"`
}

func printTLSStatus(g *globalFlags, resp *cohortv1.TLSStatusResponse) error {
	cas := make([]trustedCAJSON, 0, len(resp.GetCas()))
	for _, c := range resp.GetCas() {
		cas = append(cas, trustedCAJSON{c.GetHash(), c.GetSubject(), time.Unix(0, c.GetNotAfterUnixNano()).UTC(), c.GetActive()})
	}
	var until time.Time
	if u := resp.GetOldCertificatesUntilUnixNano(); u != 0 {
		until = time.Unix(0, u).UTC()
	}
	if g.output == "json" {
		out := map[string]any{"cas": cas, "version": resp.GetVersion()}
		if !until.IsZero() {
			out["old_certificates_until"] = until
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CA HASH\tSUBJECT\tNOT AFTER\tACTIVE")
	for _, c := range cas {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", c.Hash, c.Subject, c.NotAfter.Format(time.RFC3339), c.Active)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !until.IsZero() {
		fmt.Fprintf(stdout, "rotation in progress: the old CA's certificates may be valid until %s; then `cohort operator tls rotate-ca --finish`\n", until.Format(time.RFC3339))
	}
	return nil
}
