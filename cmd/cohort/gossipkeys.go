package main

import (
	"encoding/base64"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// newGossipCmd is `cohort operator gossip keyring list|install|use|remove`.
func newGossipCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "gossip", Short: "Manage the memberlist gossip encryption"}
	kr := &cobra.Command{
		Use:   "keyring",
		Short: "List, install, use and remove gossip encryption keys",
		Long: `The cluster's gossip keyring: the coordinators keep it in Raft, sealed with a key
derived from the cluster CA's key, and every process with a certificate fetches it over
mutual TLS and follows changes within seconds. keys[0] (the primary) encrypts; every
key decrypts. To rotate: install a new key, wait for it to spread (about 10 s), use it,
wait again, then remove the old one. Keys are shown by fingerprint only.`,
	}
	kr.AddCommand(newKeyringListCmd(g), newKeyringInstallCmd(g), newKeyringUseCmd(g), newKeyringRemoveCmd(g))
	cmd.AddCommand(kr)
	return cmd
}

func gossipClient(g *globalFlags) (cohortv1.GossipServiceClient, func(), error) {
	conn, err := connect(g)
	if err != nil {
		return nil, nil, err
	}
	return cohortv1.NewGossipServiceClient(conn), func() { _ = conn.Close() }, nil
}

type gossipKeyJSON struct {
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"`
}

func printKeyring(g *globalFlags, keys []*cohortv1.GossipKeyInfo, version uint64) error {
	out := make([]gossipKeyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, gossipKeyJSON{k.GetFingerprint(), k.GetPrimary()})
	}
	if g.output == "json" {
		return printJSON(stdout, map[string]any{"keys": out, "version": version})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tPRIMARY")
	for _, k := range out {
		fmt.Fprintf(tw, "%s\t%v\n", k.Fingerprint, k.Primary)
	}
	return tw.Flush()
}

func newKeyringListCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the gossip keys (fingerprints; the primary encrypts)",
		Example: "  cohort operator gossip keyring list",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := gossipClient(g)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ListKeys(cmd.Context(), &cohortv1.ListGossipKeysRequest{})
			if err != nil {
				return rpcErr("gossip keyring list", err)
			}
			return printKeyring(g, resp.GetKeys(), resp.GetVersion())
		},
	}
}

func newKeyringInstallCmd(g *globalFlags) *cobra.Command {
	var keyB64 string
	cmd := &cobra.Command{
		Use:     "install [--key BASE64]",
		Short:   "Install a gossip key (a new random one unless --key); it decrypts at once, encrypts once used",
		Example: "  cohort operator gossip keyring install\n  cohort operator gossip keyring install --key c2l4dGVlbi1ieXRlLWtleQ==   # 16 bytes, base64",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var key []byte
			if keyB64 != "" {
				var err error
				if key, err = base64.StdEncoding.DecodeString(keyB64); err != nil {
					return usageErr("--key: not base64: %v", err)
				}
				if n := len(key); n != 16 && n != 24 && n != 32 {
					return usageErr("--key: %d bytes; a gossip key is 16, 24 or 32 bytes", n)
				}
			}
			return keyringChange(cmd, g, "gossip keyring install", func(c cohortv1.GossipServiceClient) (*cohortv1.GossipKeyringChange, error) {
				return c.InstallKey(cmd.Context(), &cohortv1.InstallGossipKeyRequest{Key: key})
			})
		},
	}
	cmd.Flags().StringVar(&keyB64, "key", "", "the key, base64 (16, 24 or 32 bytes; default: a new random 32-byte key)")
	return cmd
}

func newKeyringUseCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "use FINGERPRINT",
		Short:   "Make an installed gossip key the primary (it encrypts from then on)",
		Example: "  cohort operator gossip keyring use 3f9c0a1b2c3d4e5f",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyringChange(cmd, g, "gossip keyring use", func(c cohortv1.GossipServiceClient) (*cohortv1.GossipKeyringChange, error) {
				return c.UseKey(cmd.Context(), &cohortv1.UseGossipKeyRequest{Fingerprint: args[0]})
			})
		},
	}
}

func newKeyringRemoveCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "remove FINGERPRINT",
		Short:   "Remove a gossip key that is not the primary",
		Example: "  cohort operator gossip keyring remove 3f9c0a1b2c3d4e5f",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return keyringChange(cmd, g, "gossip keyring remove", func(c cohortv1.GossipServiceClient) (*cohortv1.GossipKeyringChange, error) {
				return c.RemoveKey(cmd.Context(), &cohortv1.RemoveGossipKeyRequest{Fingerprint: args[0]})
			})
		},
	}
}

func keyringChange(cmd *cobra.Command, g *globalFlags, what string, call func(cohortv1.GossipServiceClient) (*cohortv1.GossipKeyringChange, error)) error {
	c, done, err := gossipClient(g)
	if err != nil {
		return err
	}
	defer done()
	resp, err := call(c)
	if err != nil {
		return rpcErr(what, err)
	}
	if g.output != "json" {
		fmt.Fprintf(stdout, "%s: %s (keyring version %d)\n", what, resp.GetFingerprint(), resp.GetVersion())
		if n := resp.GetNote(); n != "" {
			fmt.Fprintf(stdout, "note: %s\n", n)
		}
	}
	return printKeyring(g, resp.GetKeys(), resp.GetVersion())
}
