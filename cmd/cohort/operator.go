package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// operatorTimeout bounds one operator call.
const operatorTimeout = 60 * time.Second

func newOperatorCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Cluster operator verbs: raft peers and snapshots"}
	raftCmd := &cobra.Command{Use: "raft", Short: "Inspect and change the coordinators' Raft configuration"}
	raftCmd.AddCommand(newListPeersCmd(g), newAddVoterCmd(g), newRemovePeerCmd(g), newTransferLeadershipCmd(g))
	snapCmd := &cobra.Command{Use: "snapshot", Short: "Save or restore the whole coordinator state"}
	snapCmd.AddCommand(newSnapshotSaveCmd(g), newSnapshotRestoreCmd(g))
	cmd.AddCommand(raftCmd, snapCmd, newGossipCmd(g), newOperatorTLSCmd(g))
	return cmd
}

// clusterClient dials --address and returns a ClusterService client.
func clusterClient(g *globalFlags) (cohortv1.ClusterServiceClient, func(), error) {
	conn, err := connect(g)
	if err != nil {
		return nil, nil, err
	}
	return cohortv1.NewClusterServiceClient(conn), func() { _ = conn.Close() }, nil
}

// peerJSON is the contract's list-peers object.
type peerJSON struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	Leader      bool   `json:"leader"`
	Voter       bool   `json:"voter"`
	GRPCAddress string `json:"grpc_address,omitempty"`
}

func newListPeersCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list-peers",
		Short:   "List the Raft peers (-o json: [{id, address, leader, voter}])",
		Example: "  cohort operator raft list-peers -o json --address 10.0.0.1:7070,10.0.0.2:7070",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), operatorTimeout)
			defer cancel()
			resp, err := c.ListPeers(ctx, &cohortv1.ListPeersRequest{})
			if err != nil {
				return rpcErr("list peers", err)
			}
			peers := make([]peerJSON, 0, len(resp.GetPeers()))
			for _, p := range resp.GetPeers() {
				peers = append(peers, peerJSON{ID: p.GetId(), Address: p.GetAddress(), Leader: p.GetLeader(), Voter: p.GetVoter(), GRPCAddress: p.GetGrpcAddress()})
			}
			if g.output == "json" {
				return printJSON(stdout, peers)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tGRPC ADDRESS\tLEADER\tVOTER")
			for _, p := range peers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%t\n", p.ID, p.Address, p.GRPCAddress, p.Leader, p.Voter)
			}
			return tw.Flush()
		},
	}
}

func newAddVoterCmd(g *globalFlags) *cobra.Command {
	var grpcAddr string
	cmd := &cobra.Command{
		Use:     "add-voter ID RAFT_ADDR",
		Short:   "Add a coordinator as a voter (coordinators started with --join do this themselves)",
		Example: "  cohort operator raft add-voter c4 10.0.0.4:7000 --grpc-addr 10.0.0.4:7070",
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkHostPort("RAFT_ADDR", args[1]); err != nil {
				return err
			}
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), operatorTimeout)
			defer cancel()
			if _, err := c.AddVoter(ctx, &cohortv1.AddVoterRequest{Id: args[0], RaftAddress: args[1], GrpcAddress: grpcAddr}); err != nil {
				return rpcErr("add voter", err)
			}
			fmt.Fprintf(stdout, "voter %s added\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&grpcAddr, "grpc-addr", "", "the voter's gRPC API address (lets the others forward to it)")
	return cmd
}

func newRemovePeerCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "remove-peer ID",
		Short:   "Remove a peer from the Raft configuration (the last voter cannot be removed)",
		Example: "  cohort operator raft remove-peer c3",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), operatorTimeout)
			defer cancel()
			resp, err := c.RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: args[0]})
			if err != nil {
				return operatorErr("remove peer", err)
			}
			if n := resp.GetNote(); n != "" {
				fmt.Fprintf(stdout, "peer %s removed (note: %s)\n", args[0], n)
				return nil
			}
			fmt.Fprintf(stdout, "peer %s removed\n", args[0])
			return nil
		},
	}
}

func newTransferLeadershipCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leadership [ID]",
		Short: "Hand leadership to a voter (any up-to-date voter without ID)",
		Example: `  cohort operator raft transfer-leadership
  cohort operator raft transfer-leadership c2`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), operatorTimeout)
			defer cancel()
			req := &cohortv1.TransferLeadershipRequest{Id: id}
			if id == "" {
				// Name the leader the transfer moves away from: a call the client
				// retries at another coordinator (its first try's answer lost) then
				// finds leadership moved instead of moving it again.
				peers, err := c.ListPeers(ctx, &cohortv1.ListPeersRequest{})
				if err != nil {
					return operatorErr("transfer leadership", err)
				}
				for _, p := range peers.GetPeers() {
					if p.GetLeader() {
						req.FromLeader = p.GetId()
					}
				}
			}
			resp, err := c.TransferLeadership(ctx, req)
			if err != nil {
				return operatorErr("transfer leadership", err)
			}
			if n := resp.GetNote(); n != "" {
				fmt.Fprintf(stdout, "leadership is with %s (note: %s)\n", resp.GetLeaderId(), n)
				return nil
			}
			fmt.Fprintf(stdout, "leadership transferred to %s\n", resp.GetLeaderId())
			return nil
		},
	}
}

func newSnapshotSaveCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "save FILE",
		Short:   "Save a snapshot of the whole coordinator state to FILE",
		Example: "  cohort operator snapshot save backup.snap",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*operatorTimeout)
			defer cancel()
			stream, err := c.SnapshotSave(ctx, &cohortv1.SnapshotSaveRequest{})
			if err != nil {
				return rpcErr("snapshot save", err)
			}
			tmp, err := os.CreateTemp(filepath.Dir(args[0]), ".cohort-snapshot-*")
			if err != nil {
				return usageErr("snapshot save %s: %v", args[0], err)
			}
			defer func() { _ = os.Remove(tmp.Name()) }()
			var n int64
			for {
				chunk, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					_ = tmp.Close()
					return rpcErr("snapshot save", err)
				}
				k, err := tmp.Write(chunk.GetData())
				n += int64(k)
				if err != nil {
					_ = tmp.Close()
					return fmt.Errorf("snapshot save: write %s: %w", tmp.Name(), err)
				}
			}
			if err := tmp.Sync(); err != nil {
				return fmt.Errorf("snapshot save: %w", err)
			}
			if err := tmp.Close(); err != nil {
				return fmt.Errorf("snapshot save: %w", err)
			}
			if err := os.Rename(tmp.Name(), args[0]); err != nil {
				return fmt.Errorf("snapshot save: %w", err)
			}
			fmt.Fprintf(stdout, "snapshot saved to %s (%d bytes)\n", args[0], n)
			return nil
		},
	}
}

func newSnapshotRestoreCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "restore FILE",
		Short:   "Replace the whole coordinator state with a saved snapshot (for disaster recovery onto a fresh cluster)",
		Example: "  cohort operator snapshot restore backup.snap --address 127.0.0.1:7370",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := os.Open(args[0])
			if err != nil {
				return usageErr("snapshot restore: %v", err)
			}
			defer in.Close()
			c, closeFn, err := clusterClient(g)
			if err != nil {
				return err
			}
			defer closeFn()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*operatorTimeout)
			defer cancel()
			up, err := c.SnapshotRestore(ctx)
			if err != nil {
				return rpcErr("snapshot restore", err)
			}
			buf := make([]byte, 1<<20)
			for {
				n, rerr := in.Read(buf)
				if n > 0 {
					if err := up.Send(&cohortv1.SnapshotChunk{Data: buf[:n]}); err != nil {
						break // the server answered early: CloseAndRecv returns why
					}
				}
				if errors.Is(rerr, io.EOF) {
					break
				}
				if rerr != nil {
					return fmt.Errorf("snapshot restore: read %s: %w", args[0], rerr)
				}
			}
			resp, err := up.CloseAndRecv()
			if err != nil {
				return rpcErr("snapshot restore "+args[0], err)
			}
			fmt.Fprintf(stdout, "snapshot %s restored at raft index %d\n", args[0], resp.GetIndex())
			return nil
		},
	}
}

// operatorErr is rpcErr, with a refused membership change (last voter, unknown peer)
// being bad input (exit 2).
func operatorErr(what string, err error) error {
	cerr := rpcErr(what, err)
	var ee *exitError
	if errors.As(cerr, &ee) {
		return cerr
	}
	if st, ok := grpcStatus(err); ok && (st == "FailedPrecondition" || st == "AlreadyExists") {
		return &exitError{code: 2, err: cerr}
	}
	return cerr
}

// grpcStatus returns the name of err's gRPC status code.
func grpcStatus(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	return st.Code().String(), true
}
