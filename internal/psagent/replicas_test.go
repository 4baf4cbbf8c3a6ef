package psagent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// TestReplicatedShardAssignments: a primary assignment whose peer_address names its
// backup's server forwards every step there; the backup assignment (replica 1) hosts
// the shard as a backup that refuses workers; when the coordinator promotes it (replica
// 0 under generation 2) the runner promotes the shard in place: a worker at generation
// 2 pulls the values of the steps the primary acknowledged, without a checkpoint.
func TestReplicatedShardAssignments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const total = 9
	psrv, paddr := serve(t)
	bsrv, baddr := serve(t)
	pr, _ := psagent.New(psagent.Config{Server: psrv, Store: store})
	br, _ := psagent.New(psagent.Config{Server: bsrv, Store: store})
	job := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 1), WorkerCount: 1, ShardCount: 1, ShardReplicas: 2, Generation: 1}
	primary := assignment(job, 0)
	primary.PeerAddress, primary.PeerNodeId = baddr, "node-b"
	backup := assignment(job, 0)
	backup.Allocation.Id += "-b"
	backup.Allocation.Replica = 1
	backup.PeerAddress, backup.PeerNodeId = paddr, "node-a"
	reports := make(chan *cohortv1.TaskReport, 2)
	br.Start(ctx, backup, func(rep *cohortv1.TaskReport) { reports <- rep })
	pr.Start(ctx, primary, func(rep *cohortv1.TaskReport) { reports <- rep })
	for range 2 {
		if rep := <-reports; rep.GetState() != cohortv1.TaskState_TASK_STATE_RUNNING {
			t.Fatalf("report %v", rep)
		}
	}
	c, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: []string{paddr}, JobID: "j", Generation: 1, TotalParams: total, LayoutHash: "L"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	init, grad := make([]float32, total), make([]float32, total)
	for i := range init {
		init[i], grad[i] = float32(i), float32(i%3)-1
	}
	if err := c.Init(ctx, init); err != nil {
		t.Fatal(err)
	}
	const steps = 5
	for k := range int64(steps) {
		if err := c.Push(ctx, k, grad, 4); err != nil {
			t.Fatal(err)
		}
	}
	want := make([]float32, total)
	if _, err := c.Pull(ctx, steps, want); err != nil {
		t.Fatal(err)
	}
	if v, isBackup, err := bsrv.ShardVersion("j", 0); err != nil || !isBackup || v != steps {
		t.Fatalf("backup at version %d (backup %v, %v), want %d", v, isBackup, err, steps)
	}

	// The coordinator promotes the backup: its allocation becomes replica 0 at
	// generation 2, with no peer yet.
	promoted := proto.Clone(backup).(*cohortv1.Assignment)
	promoted.Allocation.Replica, promoted.Allocation.Generation = 0, 2
	promoted.Job.Generation = 2
	promoted.PeerAddress, promoted.PeerNodeId = "", ""
	br.Update(promoted)
	if _, isBackup, _ := bsrv.ShardVersion("j", 0); isBackup {
		t.Fatal("the backup was not promoted")
	}
	c2, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: []string{baddr}, JobID: "j", Generation: 2, TotalParams: total, LayoutHash: "L"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got := make([]float32, total)
	if v, err := c2.Pull(ctx, steps, got); err != nil || v != steps {
		t.Fatalf("pull from the promoted shard: version %d, %v", v, err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("promoted shard value %d = %v, the primary acknowledged %v", i, got[i], want[i])
		}
	}
}
