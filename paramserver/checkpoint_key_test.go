package paramserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// TestCheckpointKeyPrefixConfinedToJob is the regression test of security issue #16:
// a shard wrote its checkpoint under any key prefix it was sent, so one job's worker
// could overwrite another job's committed shard, and "/abs/x" was written inside the
// storage directory as abs/x/...
func TestCheckpointKeyPrefixConfinedToJob(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	store, err := storage.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, addr := startServer(t, 0)
	for _, job := range []string{"victim", "attacker"} {
		if err := srv.AddShard(ShardConfig{JobID: job, Generation: 1, Workers: 1, Store: store, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: job, Generation: 1, TotalParams: 1})
		if err := c.Init(ctx, []float32{0}); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint := func(job, prefix string) (*cohortv1.CheckpointResponse, error) {
		return srv.Checkpoint(ctx, &cohortv1.CheckpointRequest{Ref: &cohortv1.ShardRef{JobId: job, Generation: 1}, Step: 0, KeyPrefix: prefix})
	}
	// The victim commits its shard.
	victim := storage.CheckpointPrefix("victim", 0)
	resp, err := checkpoint("victim", victim)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(resp.GetKey())))
	if err != nil {
		t.Fatal(err)
	}
	before := listKeys(t, dir)

	for _, prefix := range []string{
		victim,
		victim + "/",
		"jobs/victim/checkpoints/999",
		"/abs/x",
		"/" + storage.CheckpointPrefix("attacker", 0),
		"jobs/attacker/checkpoints/../../victim/checkpoints/000000000000",
		"jobs/attacker/checkpoints/./x",
		"jobs/attacker/checkpoints//x",
		"jobs/attacker/checkpoints/x\\..\\y",
		"jobs/attacker/checkpoints/",
		"jobs/attacker/checkpoints",
		"jobs/attacker/checkpointsX/1",
		"jobs/attacker/1",
		"../x",
		"",
		"x",
	} {
		t.Run(prefix, func(t *testing.T) {
			_, err := checkpoint("attacker", prefix)
			wantCode(t, err, codes.InvalidArgument, "checkpoint key prefix")
		})
	}
	if after := listKeys(t, dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("refused checkpoints wrote objects: before %q, after %q", before, after)
	}
	if got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(resp.GetKey()))); err != nil || string(got) != string(committed) {
		t.Fatalf("the victim's committed shard changed (err %v)", err)
	}

	// The attacker's own prefix, as storage.CheckpointPrefix makes it, still works.
	for _, prefix := range []string{storage.CheckpointPrefix("attacker", 0), storage.CheckpointPrefix("attacker", 0) + "/"} {
		resp, err := checkpoint("attacker", prefix)
		if err != nil {
			t.Fatalf("own prefix %q: %v", prefix, err)
		}
		if want := storage.CheckpointPrefix("attacker", 0) + "/shard-000.ckpt"; resp.GetKey() != want {
			t.Fatalf("key %q, want %q", resp.GetKey(), want)
		}
	}
}

// listKeys lists every file below dir, slash-separated and relative to it.
func listKeys(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		keys = append(keys, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
