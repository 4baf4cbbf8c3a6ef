package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/testenv"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// followers returns the running coordinators other than the leader.
func followers(c *clustertest.Cluster, leader *clustertest.Node) []*clustertest.Node {
	var out []*clustertest.Node
	for _, n := range c.Running() {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

func TestClusterForwardsWritesAndReads(t *testing.T) {
	c := clustertest.TestCluster(t, 3)
	leader := c.WaitForLeader(t)
	fs := followers(c, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	peers, err := fs[0].Cluster().ListPeers(ctx, &cohortv1.ListPeersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(peers.Peers) != 3 {
		t.Fatalf("peers = %v, want 3", peers.Peers)
	}
	for _, p := range peers.Peers {
		if !p.Voter || p.GrpcAddress == "" || p.Leader != (p.Id == leader.ID) {
			t.Errorf("peer %v: want a voter with a gRPC address, leader only for %s", p, leader.ID)
		}
	}

	// A write on a follower is forwarded to the leader.
	sub, err := fs[0].Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: fwd"), IdempotencyKey: "k-fwd"})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Created {
		t.Fatal("first submission not created")
	}
	// A retry through another coordinator returns the same job.
	again, err := fs[1].Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: fwd"), IdempotencyKey: "k-fwd"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.Job.Id != sub.Job.Id {
		t.Fatalf("retry: created=%v id=%s, want the first job %s", again.Created, again.Job.Id, sub.Job.Id)
	}
	// A consistent read on the other follower sees it at once.
	got, err := fs[1].Jobs().GetJob(ctx, &cohortv1.GetJobRequest{Id: sub.Job.Id})
	if err != nil {
		t.Fatalf("consistent read on a follower: %v", err)
	}
	if got.Job.IdempotencyKey != "k-fwd" {
		t.Fatalf("got %v", got.Job)
	}
	// A stale read is served locally; it catches up shortly.
	sctx := metadata.AppendToOutgoingContext(ctx, api.StaleReadHeader, "true")
	waitFor(t, "stale read on a follower", func() bool {
		r, err := fs[0].Jobs().ListJobs(sctx, &cohortv1.ListJobsRequest{})
		return err == nil && len(r.Jobs) == 1
	}, 10*time.Second)

	// Agents: register and heartbeat through a follower.
	node := registerNode(t, ctx, clientsOf(fs[0]), "w1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")
	if _, err := fs[1].Agent().Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: node.Id, RegistrationGeneration: node.RegistrationGeneration}); err != nil {
		t.Fatalf("heartbeat through a follower: %v", err)
	}
	// The follower's watch stream serves its local state.
	stream, err := fs[1].Agent().WatchAssignments(ctx, &cohortv1.WatchAssignmentsRequest{NodeId: node.Id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("watch assignments on a follower: %v", err)
	}
}

func clientsOf(n *clustertest.Node) clients {
	return clients{jobs: n.Jobs(), agent: n.Agent()}
}

// opIn and opOut are the porcupine model's operation input and output: a submission
// with an idempotency key (returning the job ID), or a read of the job ID stored for
// a key ("" when none).
type opIn struct {
	key  string
	read bool
}

type opOut struct{ id string }

// submitModel is a map from idempotency key to job ID, partitioned by key: the first
// submission of a key fixes its job ID, every later one must return it, and a read
// must return what is stored.
var submitModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(opIn).key
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(byKey))
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(st, in, out any) (bool, any) {
		cur, id := st.(string), out.(opOut).id
		switch {
		case in.(opIn).read:
			return id == cur, cur
		case cur == "":
			return id != "", id
		default:
			return id == cur, cur
		}
	},
	DescribeOperation: func(in, out any) string {
		if in.(opIn).read {
			return fmt.Sprintf("read(%s) -> %q", in.(opIn).key, out.(opOut).id)
		}
		return fmt.Sprintf("submit(%s) -> %q", in.(opIn).key, out.(opOut).id)
	},
}

// history records client operations from many goroutines.
type history struct {
	mu  sync.Mutex
	ops []porcupine.Operation
}

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// TestLeaderKilledDuringSubmissions kills the leader while 200 submissions (each retried
// by its client against the other coordinators with the same idempotency key) and
// consistent reads are in flight. The history must be linearizable, every acknowledged
// job must be stored exactly once, and every FSM must end equal (the killed voter
// restarts from its durable log and catches up).
func TestLeaderKilledDuringSubmissions(t *testing.T) {
	const submissions, clientsN, killAfter = 200, 32, 60
	c := clustertest.TestCluster(t, 3)
	leader := c.WaitForLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var h history
	keys := make(chan string, submissions)
	for i := range submissions {
		keys <- fmt.Sprintf("key-%03d", i)
	}
	close(keys)
	var acked atomic.Int64
	killNow := make(chan struct{})
	var killOnce sync.Once
	ackedIDs := sync.Map{}
	// call tries fn against the coordinators in turn until one answers.
	call := func(start int, fn func(n *clustertest.Node) error) error {
		var err error
		for attempt := 0; ctx.Err() == nil; attempt++ {
			n := c.Nodes[(start+attempt)%len(c.Nodes)]
			if !n.Running() {
				continue
			}
			if err = fn(n); err == nil {
				return nil
			}
			if attempt%len(c.Nodes) == len(c.Nodes)-1 {
				select { // a full round failed: back off briefly
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
	}

	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := range clientsN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				begin := time.Now().UnixNano()
				var id string
				err := call(w, func(n *clustertest.Node) error {
					actx, acancel := context.WithTimeout(ctx, 5*time.Second)
					defer acancel()
					resp, err := n.Jobs().SubmitJob(actx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: lin"), IdempotencyKey: key})
					if err != nil {
						return err
					}
					id = resp.Job.Id
					return nil
				})
				if err != nil {
					failures.Add(1)
					t.Errorf("submission %s never acknowledged: %v", key, err)
					return
				}
				h.add(porcupine.Operation{ClientId: w, Input: opIn{key: key}, Output: opOut{id: id}, Call: begin, Return: time.Now().UnixNano()})
				ackedIDs.Store(key, id)
				if acked.Add(1) == killAfter {
					killOnce.Do(func() { close(killNow) })
				}
			}
		}()
	}
	readsDone := make(chan struct{})
	var rwg sync.WaitGroup
	for r := range 4 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for i := 0; ; i++ {
				select {
				case <-readsDone:
					return
				default:
				}
				n := c.Nodes[(r+i)%len(c.Nodes)]
				if !n.Running() {
					continue
				}
				begin := time.Now().UnixNano()
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := n.Jobs().ListJobs(rctx, &cohortv1.ListJobsRequest{})
				rcancel()
				if err != nil {
					continue // a failed read has no effect
				}
				end := time.Now().UnixNano()
				seen := map[string]string{}
				for _, j := range resp.Jobs {
					seen[j.IdempotencyKey] = j.Id
				}
				for k := range submissions {
					key := fmt.Sprintf("key-%03d", k)
					h.add(porcupine.Operation{ClientId: clientsN + r, Input: opIn{key: key, read: true}, Output: opOut{id: seen[key]}, Call: begin, Return: end})
				}
				if i > 200 {
					return
				}
			}
		}()
	}

	select {
	case <-killNow:
	case <-ctx.Done():
		t.Fatal("submissions stalled before the kill")
	}
	killedAt := time.Now()
	leader.Stop()
	newLeader := c.WaitForLeader(t)
	failover := time.Since(killedAt)
	wg.Wait()
	close(readsDone)
	rwg.Wait()
	if failures.Load() > 0 {
		t.FailNow()
	}
	t.Logf("leader %s killed after %d acks; new leader %s after %s", leader.ID, killAfter, newLeader.ID, failover)

	// Every acknowledged job is stored once, with the acknowledged ID.
	jobs, err := newLeader.Server().State().Jobs(nil)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]int{}
	for _, j := range jobs {
		byKey[j.IdempotencyKey]++
		if want, ok := ackedIDs.Load(j.IdempotencyKey); ok && want.(string) != j.Id {
			t.Errorf("key %s: stored job %s, acknowledged %s", j.IdempotencyKey, j.Id, want)
		}
	}
	if len(jobs) != submissions || len(byKey) != submissions {
		t.Errorf("stored %d jobs with %d distinct keys, want %d", len(jobs), len(byKey), submissions)
	}

	res, info := porcupine.CheckOperationsVerbose(submitModel, h.ops, 30*time.Second)
	if res != porcupine.Ok {
		path := filepath.Join(t.TempDir(), "history.html")
		_ = porcupine.VisualizePath(submitModel, info, path)
		t.Fatalf("history of %d operations is not linearizable (%v); visualization: %s", len(h.ops), res, path)
	}

	// The killed voter restarts from its durable log and converges.
	if err := leader.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every FSM to hold the same jobs", func() bool {
		var ref string
		for i, n := range c.Nodes {
			d := stateDigest(t, n.Server())
			if i == 0 {
				ref = d
			} else if d != ref {
				return false
			}
		}
		return true
	}, 30*time.Second)
}

// stateDigest summarises a coordinator's jobs, nodes and allocations.
func stateDigest(t *testing.T, s *server.Server) string {
	t.Helper()
	snap := s.State().Snapshot()
	var b strings.Builder
	jobs, err := snap.Jobs(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Fprintf(&b, "job %s %s %s %d\n", j.Id, j.IdempotencyKey, j.State, j.ModifyIndex)
	}
	nodes, err := snap.Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "node %s %s %d\n", n.Id, n.Status, n.RegistrationGeneration)
	}
	allocs, err := snap.Allocs(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		fmt.Fprintf(&b, "alloc %s %s %s %d\n", a.Id, a.NodeId, a.State, a.ModifyIndex)
	}
	return b.String()
}

func peerIDs(t *testing.T, ctx context.Context, n *clustertest.Node) []string {
	t.Helper()
	resp, err := n.Cluster().ListPeers(ctx, &cohortv1.ListPeersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range resp.Peers {
		ids = append(ids, p.Id)
	}
	slices.Sort(ids)
	return ids
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("%s: got %v, want %s naming %q", what, err, code, msgPart)
	}
}

// TestMembershipBadInput: a duplicate ID or address, an unknown peer and the last voter
// are refused with a clear error and leave the configuration unchanged; transfer and
// removal work.
func TestMembershipBadInput(t *testing.T) {
	c := clustertest.TestCluster(t, 3)
	leader := c.WaitForLeader(t)
	f := followers(c, leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := []string{"c1", "c2", "c3"}

	_, err := f.Cluster().Join(ctx, &cohortv1.JoinRequest{Id: "c2", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"})
	wantCode(t, "join with a duplicate ID", err, codes.AlreadyExists, `ID "c2" is already used`)
	_, err = f.Cluster().Join(ctx, &cohortv1.JoinRequest{Id: "c9", RaftAddress: c.Nodes[2].RaftAddr, GrpcAddress: "127.0.0.1:2"})
	wantCode(t, "join with a duplicate address", err, codes.AlreadyExists, "already used by voter")
	_, err = f.Cluster().Join(ctx, &cohortv1.JoinRequest{Id: "c9"})
	wantCode(t, "join without addresses", err, codes.InvalidArgument, "raft_address is required")
	_, err = f.Cluster().RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: "nope"})
	wantCode(t, "remove an unknown peer", err, codes.NotFound, "not in the raft configuration")
	if got := peerIDs(t, ctx, f); !slices.Equal(got, all) {
		t.Fatalf("peers after refused changes = %v, want %v", got, all)
	}
	// Rejoining with the same ID and addresses is a no-op.
	if _, err := f.Cluster().Join(ctx, &cohortv1.JoinRequest{Id: f.ID, RaftAddress: f.RaftAddr, GrpcAddress: f.GRPCAddr}); err != nil {
		t.Fatalf("idempotent rejoin: %v", err)
	}

	// Transfer leadership to a named follower, through another coordinator.
	resp, err := leader.Cluster().TransferLeadership(ctx, &cohortv1.TransferLeadershipRequest{Id: f.ID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.LeaderId != f.ID {
		t.Fatalf("transfer: new leader %q, want %s", resp.LeaderId, f.ID)
	}
	if l := c.WaitForLeader(t); l.ID != f.ID {
		t.Fatalf("leader after transfer = %s, want %s", l.ID, f.ID)
	}
	_, err = leader.Cluster().TransferLeadership(ctx, &cohortv1.TransferLeadershipRequest{Id: "nope"})
	wantCode(t, "transfer to an unknown peer", err, codes.NotFound, "not a voter")

	// Remove both other voters, then the last one is refused.
	last := c.WaitForLeader(t)
	for _, n := range c.Nodes {
		if n == last {
			continue
		}
		if _, err := last.Cluster().RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: n.ID}); err != nil {
			t.Fatalf("remove %s: %v", n.ID, err)
		}
		n.Stop()
	}
	_, err = last.Cluster().RemovePeer(ctx, &cohortv1.RemovePeerRequest{Id: last.ID})
	wantCode(t, "remove the last voter", err, codes.FailedPrecondition, "cannot remove the last voter")
	if got := peerIDs(t, ctx, last); !slices.Equal(got, []string{last.ID}) {
		t.Fatalf("peers = %v, want only %s", got, last.ID)
	}
	// The single voter still commits.
	if _, err := last.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: alone")}); err != nil {
		t.Fatalf("submit on the last voter: %v", err)
	}
}

// TestJoinNonCoordinator: --join at an address that is not a coordinator fails with an
// error naming it, and nothing joins.
func TestJoinNonCoordinator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A gRPC server without the ClusterService.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	// An HTTP server.
	hs := httptest.NewServer(http.NotFoundHandler())
	defer hs.Close()
	// A closed port.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	_ = closed.Close()

	req := &cohortv1.JoinRequest{Id: "x", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"}
	// Plaintext: these servers speak no TLS, and what is tested is how a join classifies
	// what answers.
	plaintext := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	_, err = api.JoinCluster(ctx, []string{lis.Addr().String()}, req, plaintext...)
	if !errors.Is(err, api.ErrNotCoordinator) || !strings.Contains(err.Error(), lis.Addr().String()) {
		t.Fatalf("join at a plain gRPC server: %v", err)
	}
	hostport := strings.TrimPrefix(hs.URL, "http://")
	_, err = api.JoinCluster(ctx, []string{hostport}, req, plaintext...)
	if !errors.Is(err, api.ErrNotCoordinator) {
		t.Fatalf("join at an HTTP server: %v, want ErrNotCoordinator", err)
	}
	for _, addr := range []string{hostport, closedAddr} {
		_, err = api.JoinCluster(ctx, []string{addr}, req, plaintext...)
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Fatalf("join at %s: %v, want an error naming it", addr, err)
		}
	}
}

// TestSnapshotSaveRestore saves a snapshot through a follower and restores it onto a
// fresh cluster (through a follower too): every job and node comes back on every
// voter. A corrupt or truncated snapshot is refused and changes nothing.
func TestSnapshotSaveRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src := clustertest.TestCluster(t, 3)
	sl := src.WaitForLeader(t)
	sf := followers(src, sl)[0]
	for i := range 5 {
		if _, err := sf.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(fmt.Sprintf("name: snap-%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	registerNode(t, ctx, clientsOf(sf), "ps-1", cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "127.0.0.1:9")
	registerNode(t, ctx, clientsOf(sf), "w-1", cohortv1.NodeRole_NODE_ROLE_WORKER, "")

	stream, err := sf.Cluster().SnapshotSave(ctx, &cohortv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var snap []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		snap = append(snap, chunk.Data...)
	}
	if err := sl.Server().ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
	want := userDigest(t, sl.Server())

	dst := clustertest.TestCluster(t, 3)
	dl := dst.WaitForLeader(t)
	df := followers(dst, dl)[1]
	if _, err := df.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: before-restore")}); err != nil {
		t.Fatal(err)
	}
	if err := dl.Server().ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
	before := userDigest(t, dl.Server())
	restore := func(data []byte) error {
		up, err := df.Cluster().SnapshotRestore(ctx)
		if err != nil {
			return err
		}
		for len(data) > 0 {
			k := min(len(data), 1000)
			if err := up.Send(&cohortv1.SnapshotChunk{Data: data[:k]}); err != nil {
				break // the server answered early; CloseAndRecv has its error
			}
			data = data[k:]
		}
		_, err = up.CloseAndRecv()
		return err
	}
	for name, bad := range map[string][]byte{
		"garbage":   []byte("definitely not a snapshot"),
		"truncated": snap[:len(snap)-7],
		"empty":     nil,
	} {
		err := restore(bad)
		wantCode(t, "restore a "+name+" snapshot", err, codes.InvalidArgument, "bad snapshot")
	}
	if got := userDigest(t, dl.Server()); got != before {
		t.Fatalf("state changed by refused restores:\n%s\nwant\n%s", got, before)
	}

	if err := restore(snap); err != nil {
		t.Fatalf("restore: %v", err)
	}
	for _, n := range dst.Nodes {
		ok := false
		for deadline := time.Now().Add(20 * time.Second); !ok && time.Now().Before(deadline); {
			ok = userDigest(t, n.Server()) == want
			if !ok {
				time.Sleep(10 * time.Millisecond) // polling with a deadline
			}
		}
		if !ok {
			t.Fatalf("state of %s after restore:\n%s\nwant\n%s", n.ID, userDigest(t, n.Server()), want)
		}
	}
	// The restored cluster still forwards (its own coordinator records were kept) and
	// commits.
	if _, err := df.Jobs().SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: after-restore")}); err != nil {
		t.Fatalf("submit after restore: %v", err)
	}
	list, err := df.Jobs().ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != 6 {
		t.Fatalf("jobs after restore and one submit = %d, want 6", len(list.Jobs))
	}
}

// userDigest summarises the user-visible state: jobs and nodes, without indexes.
func userDigest(t *testing.T, s *server.Server) string {
	t.Helper()
	var b strings.Builder
	jobs, err := s.State().Jobs(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Fprintf(&b, "job %s %s %s\n", j.Id, j.IdempotencyKey, j.Name) // state moves with the scheduler
	}
	nodes, err := s.State().Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "node %s %v %s\n", n.Id, n.Roles, n.DataAddress)
	}
	return b.String()
}

// TestMinorityPartitionCannotCommit cuts the leader off from both followers (raft's
// in-memory transport, so the cut is exact): it cannot commit, the majority elects a
// new leader and commits, and after the partition heals the old leader's proposal is
// gone everywhere.
func TestMinorityPartitionCannotCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type member struct {
		id    string
		addr  raft.ServerAddress
		trans *raft.InmemTransport
		s     *server.Server
	}
	var ms []*member
	for i := range 3 {
		addr, trans := raft.NewInmemTransport("")
		ms = append(ms, &member{id: fmt.Sprintf("p%d", i+1), addr: addr, trans: trans})
	}
	connect := func(a, b *member) { a.trans.Connect(b.addr, b.trans); b.trans.Connect(a.addr, a.trans) }
	disconnect := func(a, b *member) { a.trans.Disconnect(b.addr); b.trans.Disconnect(a.addr) }
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			connect(a, b)
		}
	}
	// Each voter logs (Raft's own lines included) into a buffer that a failure prints:
	// this test has flaked waiting for an election under the race detector.
	logs := make([]*testenv.Buffer, len(ms))
	for i, m := range ms {
		logs[i] = &testenv.Buffer{}
		m.s = startServer(t, t.TempDir(), func(c *server.Config) {
			clustertest.TestRaftConfig(c)
			c.NodeID, c.Transport, c.Bootstrap = m.id, m.trans, i == 0
			c.Logger = slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, m := range ms {
			jobs, _ := m.s.State().Jobs(nil)
			var ids []string
			for _, j := range jobs {
				ids = append(ids, j.Id)
			}
			t.Logf("%s: state %s, leader %q, jobs %v, stats %v", m.id, m.s.Raft().State(), m.s.LeaderAddr(), ids, m.s.Raft().Stats())
			lines := strings.Split(strings.TrimSpace(logs[i].String()), "\n")
			t.Logf("%s: last %d log lines:\n%s", m.id, min(len(lines), 150), strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	})
	// Adding a voter can lose leadership on a loaded host (the 100 ms test lease runs out
	// while the new voter catches up): add it again through whoever leads then; AddVoter
	// is idempotent.
	for i, m := range ms[1:] {
		for {
			var leader *server.Server
			waitFor(t, "a leader to add "+m.id, func() bool {
				for _, c := range ms[:i+1] {
					if c.s.IsLeader() {
						leader = c.s
						return true
					}
				}
				return false
			}, 20*time.Second)
			err := leader.AddVoter(ctx, m.id, string(m.addr), "")
			if err == nil {
				break
			}
			if !errors.Is(err, server.ErrNotLeader) || ctx.Err() != nil {
				t.Fatal(err)
			}
			t.Logf("adding %s: %v; retrying on the new leader", m.id, err)
		}
	}
	submit := func(s *server.Server, ctx context.Context, key string) error {
		_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
			Job: &cohortv1.Job{Id: key, Name: key, Namespace: "default", IdempotencyKey: key, State: cohortv1.JobState_JOB_STATE_PENDING,
				WorkerCount: 1, ShardCount: 1},
		}}})
		return err
	}
	// The voter that leads now commits a write, then is isolated.
	var old *member
	for old == nil {
		var cur *member
		waitFor(t, "a leader", func() bool {
			i := slices.IndexFunc(ms, func(m *member) bool { return m.s.IsLeader() })
			if i >= 0 {
				cur = ms[i]
			}
			return i >= 0
		}, 20*time.Second)
		err := submit(cur.s, ctx, "before")
		switch {
		case err == nil:
			old = cur
		case !errors.Is(err, server.ErrNotLeader) || ctx.Err() != nil:
			t.Fatal(err)
		}
	}
	others := slices.DeleteFunc(slices.Clone(ms), func(m *member) bool { return m == old })
	// Both followers must hold everything the leader has before it is cut off. A follower
	// that missed the entry adding the third voter rejects that voter's vote requests
	// (hashicorp/raft refuses candidates outside its own configuration), and itself needs
	// the cut-off leader's vote: no leader can ever be elected. Seen in CI under load as
	// "timed out waiting for a leader in the majority", with p2 at index 4 knowing only
	// {p1, p2} and p3 at index 6 knowing all three.
	last := old.s.Raft().LastIndex()
	waitFor(t, "the followers to catch up with the leader", func() bool {
		for _, m := range others {
			if m.s.Raft().AppliedIndex() < last {
				return false
			}
		}
		return true
	}, 20*time.Second)
	for _, m := range others {
		disconnect(old, m)
	}
	// The isolated leader cannot commit.
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	err := submit(old.s, pctx, "minority")
	pcancel()
	if err == nil {
		t.Fatal("the isolated leader committed a write")
	}
	// The majority elects a leader and commits. An election normally takes well under a
	// second; one took over 20 s in CI under the race detector, so a slow one is logged
	// with every voter's log lines (evidence for the liveness issue) before failing at 40 s.
	var leader *server.Server
	cut := time.Now()
	waitFor(t, "a leader in the majority", func() bool {
		for _, m := range others {
			if m.s.IsLeader() {
				leader = m.s
				return true
			}
		}
		return false
	}, 40*time.Second)
	if took := time.Since(cut); took > 5*time.Second {
		t.Logf("the majority took %s to elect a leader", took)
		for i, m := range ms {
			lines := strings.Split(strings.TrimSpace(logs[i].String()), "\n")
			t.Logf("%s: last %d log lines:\n%s", m.id, min(len(lines), 150), strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	}
	if err := submit(leader, ctx, "majority"); err != nil {
		t.Fatalf("majority commit: %v", err)
	}
	// Heal: the old leader steps down, drops its uncommitted entry and catches up.
	for _, m := range others {
		connect(old, m)
	}
	waitFor(t, "every voter to hold exactly the committed jobs", func() bool {
		for _, m := range ms {
			jobs, err := m.s.State().Jobs(nil)
			if err != nil || len(jobs) != 2 {
				return false
			}
			for _, j := range jobs {
				if j.Id == "minority" {
					return false
				}
			}
		}
		return true
	}, 30*time.Second)
	if old.s.IsLeader() && !slices.ContainsFunc(others, func(m *member) bool { return m.s.IsLeader() }) {
		t.Log("old leader re-elected after healing (allowed)")
	}
	if j, _ := old.s.State().JobByID(nil, "minority"); j != nil {
		t.Fatal("the minority's write survived")
	}
}
