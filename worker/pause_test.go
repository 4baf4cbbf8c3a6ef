package worker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestJobPausesWhileS3IsDown: S3 (versitygw behind a fault proxy) answers every
// object upload with 503 SlowDown for a while, longer than the S3 client's own retries.
// The chief pauses the job at its checkpoint, says so to the coordinator, resumes when
// S3 answers again, and ends with exactly the parameters of an undisturbed run; every
// committed checkpoint verifies.
func TestJobPausesWhileS3IsDown(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := storage.NewS3(ctx, proxy.Config())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCluster(t, store)
	want := uninterrupted(t, c)

	// 3 attempts per upload in the client (Retries 2), so 8 refusals fail at least two
	// whole checkpoint attempts before an upload gets through.
	proxy.Inject(s3test.IsObjectPut, 8, s3test.SlowDown)
	var mu sync.Mutex
	var paused []string
	res, err := c.run(c.job("paused"), runOpts{
		configure: func(cfg *TrainerConfig) { cfg.StorageRetryBackoff = 10 * time.Millisecond },
		onReport: func(rep *cohortv1.TaskReport, _ func()) {
			if strings.HasPrefix(rep.GetMessage(), "paused at step") {
				mu.Lock()
				paused = append(paused, rep.GetMessage())
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatalf("job did not survive the S3 outage: %v", err)
	}
	if _, faults := proxy.Counts(); faults != 8 {
		t.Fatalf("%d faults injected, want 8", faults)
	}
	if len(paused) < 2 || !strings.Contains(paused[0], "giving up after 3 attempts") {
		t.Fatalf("pause reports %q: want at least two naming the exhausted S3 retries", paused)
	}
	got := finalState(t, c.store, res.Checkpoint)
	sameBits(t, "after an S3 outage", got, want)
	objs, err := store.List(ctx, storage.CheckpointPrefix("paused", 0)[:len("jobs/paused/")])
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/manifest.json") {
			man, err := storage.ReadManifest(ctx, store, o.Key)
			if err != nil {
				t.Fatal(err)
			}
			if err := storage.VerifyManifestObjects(ctx, store, man); err != nil {
				t.Fatalf("committed checkpoint %s does not verify: %v", o.Key, err)
			}
		}
	}
	t.Logf("paused %d times, first: %s", len(paused), paused[0])
}

// TestJobFailsWhenS3StaysDown: past StoragePause the job fails with the storage
// error instead of waiting forever.
func TestJobFailsWhenS3StaysDown(t *testing.T) {
	srv := s3test.Start(t)
	proxy := srv.StartFaultProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := storage.NewS3(ctx, proxy.Config())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCluster(t, store)
	proxy.Inject(s3test.IsObjectPut, -1, s3test.SlowDown)
	_, err = c.run(c.job("down"), runOpts{configure: func(cfg *TrainerConfig) {
		cfg.StorageRetryBackoff, cfg.StoragePause = 10*time.Millisecond, 200*time.Millisecond
	}})
	if err == nil || !strings.Contains(err.Error(), "giving up after 3 attempts") {
		t.Fatalf("error %v, want the storage error once the pause is over", err)
	}
}
