package worker

import (
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/storage"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fullShardStore is a store whose shard checkpoint objects (*.ckpt) cannot be written
// while full is set: Put fails with ENOSPC as a full local disk does.
type fullShardStore struct {
	storage.Blob
	full  atomic.Bool
	fails atomic.Int64
}

func (s *fullShardStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if s.full.Load() && strings.HasSuffix(key, ".ckpt") {
		s.fails.Add(1)
		return &os.PathError{Op: "write", Path: key, Err: syscall.ENOSPC}
	}
	return s.Blob.Put(ctx, key, r, size)
}

// TestCheckpointSkippedWhileStorageFull: the parameter server's store fills up after
// the job's first checkpoint. The next checkpoints fail with "no space left on device"
// in the real parameter server (over gRPC); the chief skips them without pausing,
// says so in its task message (naming the step, the cause and the last committed
// checkpoint), and training goes on. While the storage is full the last committed
// checkpoint verifies and stays the newest manifest (nothing half-written is
// committed); once there is room again the next checkpoint commits, and the job ends
// with exactly the parameters of an undisturbed run.
func TestCheckpointSkippedWhileStorageFull(t *testing.T) {
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &fullShardStore{Blob: local}
	c := newTestCluster(t, store)
	want := uninterrupted(t, c)

	ctx := context.Background()
	var mu sync.Mutex
	var first string      // the checkpoint committed before the disk filled
	var skipped []string  // the skip messages
	var committed []int64 // the steps committed after the disk filled
	paused := 0           // pause reports (waiting the disk out as an outage)
	res, err := c.run(c.job("full"), runOpts{configure: func(cfg *TrainerConfig) {
		// Waiting the disk out as an outage would fail the job within 2 s.
		cfg.StorageRetryBackoff, cfg.StoragePause = 10*time.Millisecond, 2*time.Second
	}, onReport: func(rep *cohortv1.TaskReport, _ func()) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case rep.GetCheckpoint() != "" && first == "":
			first = rep.GetCheckpoint()
			store.full.Store(true)
		case rep.GetCheckpoint() != "":
			committed = append(committed, checkpointStep(t, rep.GetCheckpoint()))
		case strings.HasPrefix(rep.GetMessage(), "paused at step"):
			paused++
		case strings.Contains(rep.GetMessage(), "not written: storage full"):
			skipped = append(skipped, rep.GetMessage())
			// The last good checkpoint is whole while the disk is full.
			man, err := storage.OpenCheckpoint(ctx, store, first)
			if err != nil {
				t.Errorf("last committed checkpoint %s while the disk is full: %v", first, err)
			} else if err := storage.VerifyManifestObjects(ctx, store, man); err != nil {
				t.Errorf("last committed checkpoint %s does not verify while the disk is full: %v", first, err)
			}
			if len(skipped) == 2 {
				store.full.Store(false)
			}
		}
	}})
	if err != nil {
		t.Fatalf("job with a full checkpoint disk: %v", err)
	}
	if paused != 0 {
		t.Fatalf("the job paused %d times for a full disk; it should skip the checkpoint and train on", paused)
	}
	if len(skipped) != 2 || store.fails.Load() == 0 {
		t.Fatalf("%d skip messages, %d failed writes; want 2 and some: %q", len(skipped), store.fails.Load(), skipped)
	}
	firstStep := checkpointStep(t, first)
	for _, want := range []string{"no space left on device", "training goes on", "last committed checkpoint: step " + strconv.FormatInt(firstStep, 10)} {
		if !strings.Contains(skipped[0], want) {
			t.Fatalf("skip message %q does not say %q", skipped[0], want)
		}
	}
	if len(committed) == 0 || committed[0] <= firstStep {
		t.Fatalf("checkpoints committed after the disk had room again: %v (first %d)", committed, firstStep)
	}
	// No manifest for a skipped step: every manifest verifies, and none lies strictly
	// between the first checkpoint and the first one after the heal.
	objs, err := store.List(ctx, "jobs/full/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/manifest.json") {
			continue
		}
		man, err := storage.ReadManifest(ctx, store, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.VerifyManifestObjects(ctx, store, man); err != nil {
			t.Fatalf("checkpoint %s does not verify: %v", o.Key, err)
		}
		if man.Step > firstStep && man.Step < committed[0] {
			t.Fatalf("a manifest for skipped step %d was committed", man.Step)
		}
	}
	sameBits(t, "after skipped checkpoints", finalState(t, c.store, res.Checkpoint), want)
	t.Logf("skipped: %s", skipped[0])
}
