package main

import (
	"cmp"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func init() { registerCommand(newTokenCmd) }

// newTokenCmd is `cohort token create|list|revoke`: join tokens (issue #16).
func newTokenCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Join tokens: create, list and revoke the tokens that buy a certificate",
		Long: `A join token (COH1<CA hash>::<id>.<secret>) lets a coordinator (--join ADDR --token T),
a node agent (--join ADDR --token T) or a person (cohort login --address ADDR --token T)
get a short-lived certificate naming it and the token's role. The joiner checks the
cluster CA against the hash in the token before it sends the secret; the coordinators
keep only a hash of the secret, in Raft. Admins only.`,
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

// tokenJSON is a token record as -o json prints it.
type tokenJSON struct {
	ID          string   `json:"id"`
	Role        string   `json:"role"`
	ACLRole     string   `json:"acl_role,omitempty"`
	Namespaces  []string `json:"namespaces,omitempty"`
	NodeName    string   `json:"node_name,omitempty"`
	Created     string   `json:"created"`
	Expires     string   `json:"expires,omitempty"`
	Revoked     bool     `json:"revoked"`
	Description string   `json:"description,omitempty"`
	Token       string   `json:"token,omitempty"`
}

func tokenOf(t *cohortv1.JoinToken) tokenJSON {
	j := tokenJSON{
		ID: t.GetId(), Role: t.GetRole(), ACLRole: t.GetAclRole(), Namespaces: t.GetNamespaces(), NodeName: t.GetNodeName(),
		Created: time.Unix(0, t.GetCreatedUnixNano()).UTC().Format(time.RFC3339), Revoked: t.GetRevoked(), Description: t.GetDescription(),
	}
	if t.GetExpiresUnixNano() != 0 {
		j.Expires = time.Unix(0, t.GetExpiresUnixNano()).UTC().Format(time.RFC3339)
	}
	return j
}

func tokenClient(g *globalFlags) (cohortv1.TokenServiceClient, func(), error) {
	conn, err := connect(g)
	if err != nil {
		return nil, nil, err
	}
	return cohortv1.NewTokenServiceClient(conn), func() { _ = conn.Close() }, nil
}

func newTokenCreateCmd(g *globalFlags) *cobra.Command {
	var role, aclRole, nodeName, desc string
	var namespaces []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create --role agent|coordinator|client",
		Short: "Mint a join token; it is printed once and stored nowhere",
		Long: `Mint a join token. --role client tokens carry an ACL role (--acl-role, default submit;
admin, submit or read) and optionally namespaces; --role coordinator tokens also hand the
joiner the cluster CA's key, so give them only to new voters. --ttl 0 never expires.`,
		Example: `  cohort token create --role agent --ttl 1h > agent.token
  cohort token create --role client --acl-role submit --namespace team-a --ttl 24h
  cohort token create --role coordinator --node-name c2 --ttl 30m`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role == "" {
				return usageErr("--role is required: agent, coordinator or client")
			}
			if ttl < 0 {
				return usageErr("--ttl %v: must not be negative", ttl)
			}
			c, done, err := tokenClient(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.CreateToken(cmd.Context(), &cohortv1.CreateTokenRequest{
				Role: role, AclRole: aclRole, Namespaces: namespaces, NodeName: nodeName,
				TtlSeconds: int64(ttl / time.Second), Description: desc,
			})
			if err != nil {
				return rpcErr("token create", err)
			}
			if g.output == "json" {
				j := tokenOf(resp.GetRecord())
				j.Token = resp.GetToken()
				return printJSON(stdout, j)
			}
			_, err = fmt.Fprintln(stdout, resp.GetToken())
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&role, "role", "", "what the token enrolls: agent, coordinator or client")
	fl.StringVar(&aclRole, "acl-role", "", "a client token's ACL role: admin, submit or read (default submit)")
	fl.StringSliceVar(&namespaces, "namespace", nil, "namespace the token's certificate is limited to (repeatable)")
	fl.StringVar(&nodeName, "node-name", "", "the only name the token may enroll (default: any)")
	fl.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token may be used (0: never expires)")
	fl.StringVar(&desc, "description", "", "a note shown by token list")
	return cmd
}

func newTokenListCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the join tokens (never their secrets)",
		Example: "  cohort token list\n  cohort token list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := tokenClient(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ListTokens(cmd.Context(), &cohortv1.ListTokensRequest{})
			if err != nil {
				return rpcErr("token list", err)
			}
			out := make([]tokenJSON, 0, len(resp.GetTokens()))
			for _, t := range resp.GetTokens() {
				out = append(out, tokenOf(t))
			}
			if g.output == "json" {
				return printJSON(stdout, out)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tACL\tNAMESPACES\tNODE\tEXPIRES\tREVOKED\tDESCRIPTION")
			for _, t := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", t.ID, t.Role, dash(t.ACLRole), dash(strings.Join(t.Namespaces, ",")),
					dash(t.NodeName), cmp.Or(t.Expires, "never"), t.Revoked, t.Description)
			}
			return tw.Flush()
		},
	}
}

func newTokenRevokeCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a join token: it enrolls nobody from then on",
		Example: "  cohort token revoke k3x9q2",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := tokenClient(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.RevokeToken(cmd.Context(), &cohortv1.RevokeTokenRequest{Id: args[0]})
			if err != nil {
				return rpcErr("token revoke", err)
			}
			if g.output == "json" {
				return printJSON(stdout, tokenOf(resp.GetToken()))
			}
			_, err = fmt.Fprintf(stdout, "revoked %s\n", resp.GetToken().GetId())
			return err
		},
	}
}

func dash(s string) string { return cmp.Or(s, "-") }
