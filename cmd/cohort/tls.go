package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
)

// tlsDirUsage is the help of the global --tls-dir flag.
const tlsDirUsage = "TLS directory: for the CLI, the cluster CA and a client certificate (ca.crt with client.crt and client.key, " +
	"or admin.crt and admin.key) (env COHORT_TLS_DIR, else ~/.config/cohort when it holds them); for coordinator, " +
	"worker and paramserver, this node's ca.crt, node.crt and node.key (a coordinator's default: DATA_DIR/tls)"

// insecureUsage is the help of the --insecure flag of the node commands.
const insecureUsage = "turn TLS off: plaintext on every connection, even off loopback (logged every minute); " +
	"without it a node with no certificate serves and calls only loopback addresses, and plain HTTP stays on loopback"

// clientTLSDir is the TLS directory the CLI's calls use: --tls-dir, else COHORT_TLS_DIR,
// else ~/.config/cohort when it holds client credentials; "" for plaintext. A directory
// named explicitly must hold credentials (bad input otherwise).
func clientTLSDir(g *globalFlags) (string, error) {
	dir, flag := g.tlsDir, "--tls-dir"
	if !g.tlsDirSet {
		dir, flag = os.Getenv("COHORT_TLS_DIR"), "COHORT_TLS_DIR"
	}
	if dir == "" {
		if d := configDir(); d != "" {
			if _, _, _, ok := node.ClientTLSFiles(d); ok {
				return d, nil
			}
		}
		return "", nil
	}
	if _, _, _, ok := node.ClientTLSFiles(dir); !ok {
		return "", usageErr("%s %s: no client credentials there (want %s with %s and %s, or %s and %s)", flag, dir,
			pki.CACertFile, pki.ClientCertFile, pki.ClientKeyFile, pki.AdminCertFile, pki.AdminKeyFile)
	}
	return dir, nil
}

// clientCredentials are the CLI's transport credentials: mutual TLS with the client
// certificate of clientTLSDir, or nil (plaintext) without one.
func clientCredentials(g *globalFlags) (credentials.TransportCredentials, error) {
	dir, err := clientTLSDir(g)
	if err != nil || dir == "" {
		return nil, err
	}
	renewClientCert(context.Background(), g, dir)
	creds, err := node.ClientTLSCredentials(dir)
	if err != nil {
		return nil, usageErr("TLS directory %s: %v", dir, err)
	}
	return creds, nil
}

// nodeTLSConfig is the TLS section of a node command: --tls-dir when given on the command
// line (COHORT_TLS_DIR names the CLI's credentials, never a node's), and --insecure.
func nodeTLSConfig(g *globalFlags, insecure bool) *node.TLSConfig {
	c := &node.TLSConfig{Insecure: insecure}
	if g.tlsDirSet {
		c.Dir = g.tlsDir
	}
	if node.IsJoinToken(g.token) {
		c.JoinToken = g.token
	}
	return c
}

// aclToken is the ACL token a node sends: the global --token unless it is a join token
// (COH1...), which goes to the enrollment instead (nodeTLSConfig).
func aclToken(g *globalFlags) string {
	if node.IsJoinToken(g.token) {
		return ""
	}
	return g.token
}

// printClientCredentials tells the operator where the client credentials a coordinator
// wrote are, and how to use them.
func printClientCredentials(n *node.Node) {
	if p := n.BootstrapTokenPath(); p != "" {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		fmt.Fprintf(os.Stderr, "bootstrap admin join token: %s (mode 0600); elsewhere, log in with:\n  cohort login --address ADDR --token \"$(cat %s)\"\n", p, p)
	}
	dir := n.ClientTLSDir()
	if dir == "" {
		return
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	fmt.Fprintf(os.Stderr, "client credentials: %s (ca.crt, %s, %s); use them with:\n  export COHORT_TLS_DIR=%s\n",
		dir, pki.AdminCertFile, pki.AdminKeyFile, dir)
}

func init() { registerCommand(newTLSCmd) }

type tlsIssueFlags struct {
	caDir      string
	out        string
	role       string
	name       string
	aclRole    string
	namespaces []string
	hosts      []string
	ttl        time.Duration
}

func newTLSCmd(*globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Issue certificates from the cluster CA",
		Long: `Every connection of a cluster is mutual TLS. A coordinator that bootstraps creates the
cluster CA in DATA_DIR/tls (ca.crt, ca.key), issues its own certificate there at every
start, and writes an admin client certificate for the operator (admin.crt, admin.key).

'tls issue' gives the other processes theirs, offline, from a copy of the CA: a joining
coordinator (role coordinator; or give it a copy of ca.crt and ca.key in its DATA_DIR/tls,
and it issues its own), a worker or parameter server (role agent; --tls-dir), a person or
tool (role client with an ACL role; --tls-dir or COHORT_TLS_DIR). Until join tokens land,
these certificates are not renewed over the network: they live --ttl (a year).`,
		Args: exactArgs(0),
	}
	f := &tlsIssueFlags{}
	issue := &cobra.Command{
		Use:   "issue",
		Short: "Issue a certificate from the CA in --ca-dir and write a TLS directory for it",
		Example: `  cohort tls issue --ca-dir demo/c1/tls --role agent --name w1 --out demo/w1/tls
  cohort tls issue --ca-dir demo/c1/tls --role coordinator --name c2 --host 10.0.0.2 --out demo/c2/tls
  cohort tls issue --ca-dir demo/c1/tls --role client --name alice --acl-role submit --namespace team-a --out ~/.config/cohort`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error { return runTLSIssue(f) },
	}
	fl := issue.Flags()
	fl.StringVar(&f.caDir, "ca-dir", "", "directory holding the cluster CA (ca.crt, ca.key): a bootstrapped coordinator's DATA_DIR/tls (required)")
	fl.StringVar(&f.out, "out", "", "directory to write ca.crt and node.crt/node.key (client.crt/client.key for a client) to (required)")
	fl.StringVar(&f.role, "role", "", "coordinator|agent|client (required)")
	fl.StringVar(&f.name, "name", "", "the node ID or user name the certificate names (required)")
	fl.StringVar(&f.aclRole, "acl-role", "", "ACL role of a client (admin, submit, read; default admin) or agent (default agent)")
	fl.StringArrayVar(&f.namespaces, "namespace", nil, "namespace a client's ACL role is limited to (repeatable)")
	fl.StringArrayVar(&f.hosts, "host", nil, "IP address or DNS name the certificate is valid for (repeatable; 127.0.0.1 and localhost are always added; not for clients)")
	fl.DurationVar(&f.ttl, "ttl", node.FileCertTTL, "how long the certificate is valid")
	cmd.AddCommand(issue)
	return cmd
}

func runTLSIssue(f *tlsIssueFlags) error {
	switch {
	case f.caDir == "":
		return usageErr("--ca-dir is required: the directory holding the cluster CA (ca.crt, ca.key)")
	case f.out == "":
		return usageErr("--out is required")
	case f.name == "":
		return usageErr("--name is required")
	}
	role, err := pki.ParseRole(f.role)
	if err != nil {
		return usageErr("--role %q: want coordinator, agent or client", f.role)
	}
	id := pki.Identity{Name: f.name, Role: role, ACLRole: f.aclRole, Namespaces: f.namespaces}
	var hosts []string
	switch role {
	case pki.RoleClient:
		if len(f.hosts) > 0 {
			return usageErr("--host: a client certificate names no hosts")
		}
		if id.ACLRole == "" {
			id.ACLRole = "admin"
		}
	case pki.RoleAgent:
		if id.ACLRole == "" {
			id.ACLRole = "agent"
		}
		fallthrough
	default:
		hosts = append([]string{"127.0.0.1", "::1", "localhost"}, f.hosts...)
	}
	if err := id.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if f.ttl <= 0 || f.ttl > pki.MaxCertTTL {
		return usageErr("--ttl %s: must be positive and at most %s", f.ttl, pki.MaxCertTTL)
	}
	files, err := node.IssueFiles(f.caDir, f.out, id, hosts, f.ttl)
	if err != nil {
		return usageErr("%v", err)
	}
	fmt.Fprintf(os.Stderr, "issued %s, valid %s: %s\n", id, f.ttl, strings.Join(files, ", "))
	return nil
}

// httpsUsage is the help of --https on coordinator, worker and paramserver.
const httpsUsage = "serve --http-addr (metrics, health, dashboard) over TLS with this node's certificate from the cluster CA " +
	"(clients verify it with ca.crt; no client certificate needed); required for an --http-addr off loopback, unless --insecure"

// withHTTPS sets TLSConfig.HTTPS from the command's --https flag.
func withHTTPS(cmd *cobra.Command, c *node.TLSConfig) *node.TLSConfig {
	if on, err := cmd.Flags().GetBool("https"); err == nil && on {
		c.HTTPS = true
	}
	return c
}

// tokenFileUsage is the help of --token-file.
const tokenFileUsage = "file holding the join token (COH1...), read at the first start (waiting for it to appear); keeps the token off the command line"
