package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
)

func init() { registerCommand(newLoginCmd) }

// newLoginCmd is `cohort login --address ADDR --token T`: enroll a person with a join
// token and keep the client certificate under ~/.config/cohort.
func newLoginCmd(g *globalFlags) *cobra.Command {
	var name, dir string
	cmd := &cobra.Command{
		Use:   "login --address ADDR --token COH1...",
		Short: "Get a client certificate with a join token (written under ~/.config/cohort)",
		Long: `Log in with a join token of role client (cohort token create --role client, or the
bootstrap-token file a bootstrapping coordinator writes). The CLI fetches the cluster CA
without trusting it, checks its key against the hash in the token (and sends nothing if
they differ), then sends a certificate request authenticated by the token. The key never
leaves this machine. The certificate is short-lived (24 h) and renewed by later commands
once two thirds of its life have passed; log in again once it has expired.`,
		Example: `  cohort login --address 10.0.0.1:7070 --token "$(cat /var/lib/cohort/c1/bootstrap-token)"
  cohort login --address 10.0.0.1:7070 --token COH1... --name alice --dir ./alice-tls`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.token == "" {
				return usageErr("--token is required: a join token (COH1...) of role client")
			}
			tok, err := pki.ParseToken(g.token)
			if err != nil {
				return usageErr("--token: %v", err)
			}
			addrs := splitAddrs(g.address)
			if len(addrs) == 0 {
				return usageErr("--address: no coordinator address given")
			}
			if dir == "" {
				if dir = configDir(); dir == "" {
					return usageErr("no home directory to keep the certificate in; give --dir")
				}
			}
			if name == "" {
				name = loginName()
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			e, err := node.EnrollWithToken(ctx, addrs, tok, name, nil)
			if err != nil {
				if errors.Is(err, pki.ErrCAHashMismatch) {
					return fmt.Errorf("login refused before sending the token's secret: %w", err)
				}
				return fmt.Errorf("login: %w", err)
			}
			if e.Identity.Role != pki.RoleClient {
				return usageErr("the token is for a %s, not a person; use it with --join on that process", e.Identity.Role)
			}
			if err := e.Save(dir, "client"); err != nil {
				return fmt.Errorf("login: %w", err)
			}
			leaf, _ := tls.X509KeyPair(e.CertPEM, e.KeyPEM)
			until := ""
			if leaf.Leaf != nil {
				until = leaf.Leaf.NotAfter.UTC().Format(time.RFC3339)
			}
			if g.output == "json" {
				return printJSON(stdout, map[string]any{"identity": e.Identity.String(), "dir": dir, "not_after": until, "ca_hash": tok.CAHash})
			}
			fmt.Fprintf(stdout, "logged in as %s; certificate in %s (valid until %s)\n", e.Identity, dir, until)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the name the certificate carries (default: your user name)")
	cmd.Flags().StringVar(&dir, "dir", "", "where to write ca.crt, client.crt and client.key (default ~/.config/cohort)")
	return cmd
}

// splitAddrs splits a comma-separated address list.
func splitAddrs(address string) []string {
	var addrs []string
	for _, a := range strings.Split(address, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// loginName is the user's name, made fit for a certificate.
func loginName() string {
	n := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		n = u.Username
	}
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r) {
			return r
		}
		return '-'
	}, n)
	n = strings.TrimLeft(n, "._@-")
	if n == "" {
		return "user"
	}
	return n
}

// renewClientCert renews the client certificate in dir over the network when two
// thirds of its life have passed (and it has not expired): what keeps a login alive
// without a restart. A failure is a warning; the current certificate is still used.
func renewClientCert(ctx context.Context, g *globalFlags, dir string) {
	certPath, keyPath := filepath.Join(dir, pki.ClientCertFile), filepath.Join(dir, pki.ClientKeyFile)
	certs, err := pki.LoadReloader(certPath, keyPath)
	if err != nil {
		return
	}
	now := time.Now()
	if leaf := certs.Leaf(); now.Before(pki.RenewAt(leaf)) || !now.Before(leaf.NotAfter) {
		return
	}
	pool, err := pki.LoadCAPool(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return
	}
	newCert, newKey, bundle, err := node.RenewWithBundle(ctx, splitAddrs(g.address), pool, certs)
	if err == nil && len(bundle) > 0 {
		err = pki.SaveCACert(dir, bundle) // after a CA rotation: the new CA, and the old until it is dropped
	}
	if err == nil {
		err = pki.SaveKeyPair(dir, "client", newCert, newKey)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "warning: renewing the client certificate in %s failed: %v\n", dir, err)
	}
}

// joinedAgentTLSDir is the TLS directory of a node agent that joins with a token and
// names none: cohort-data/tls/<node-id>, next to the default storage directory.
func joinedAgentTLSDir(nodeID string) string { return filepath.Join("cohort-data", "tls", nodeID) }
