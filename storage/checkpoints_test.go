package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
)

// commitCheckpoint stores a checkpoint's objects and its manifest.
func commitCheckpoint(t *testing.T, b storage.Blob, job string, step int64) string {
	t.Helper()
	m := storeCheckpoint(t, b, job, step, []uint64{8, 8})
	key, err := storage.WriteManifest(context.Background(), b, m)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// keysUnder lists the keys under prefix.
func keysUnder(t *testing.T, b storage.Blob, prefix string) []string {
	t.Helper()
	objs, err := b.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

// stepsWithObjects returns the checkpoint steps (directory names) that still hold
// objects, and those that hold a manifest.
func stepsWithObjects(t *testing.T, b storage.Blob, job string) (dirs, committed []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, k := range keysUnder(t, b, storage.CheckpointsRoot(job)) {
		dir, file, _ := strings.Cut(strings.TrimPrefix(k, storage.CheckpointsRoot(job)), "/")
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, strings.TrimLeft(dir, "0"))
		}
		if file == "manifest.json" {
			committed = append(committed, strings.TrimLeft(dir, "0"))
		}
	}
	return dirs, committed
}

// testCollectCheckpoints runs the retention rules on one store: five committed
// checkpoints (steps 10..50), the record pointing at step 20, keep 2, and the objects
// of an interrupted checkpoint at step 60 without a manifest.
func testCollectCheckpoints(t *testing.T, b storage.Blob) {
	ctx := context.Background()
	const job = "gc-job"
	var keys []string
	for step := int64(10); step <= 50; step += 10 {
		keys = append(keys, commitCheckpoint(t, b, job, step))
	}
	storeCheckpoint(t, b, job, 60, []uint64{8, 8}) // no manifest: interrupted
	other := commitCheckpoint(t, b, "other-job", 10)
	pointer := keys[1] // step 20

	// Young uncommitted objects survive: a checkpoint may be being written.
	res, err := storage.CollectCheckpoints(ctx, b, storage.GCConfig{JobID: job, Keep: 2, Protect: []string{pointer}, Grace: time.Hour})
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	dirs, committed := stepsWithObjects(t, b, job)
	if fmt.Sprint(committed) != "[20 40 50]" || fmt.Sprint(dirs) != "[20 40 50 60]" {
		t.Fatalf("after gc: committed %v, directories %v; want committed [20 40 50] (newest 2 and the pointer) and 60 kept within the grace period", committed, dirs)
	}
	if fmt.Sprint(res.Deleted) != fmt.Sprint([]string{keys[0], keys[2]}) || res.Orphans != 0 {
		t.Errorf("result %+v", res)
	}
	// What is kept is whole and verifies.
	for _, k := range []string{pointer, keys[3], keys[4]} {
		m, err := storage.ReadManifest(ctx, b, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.VerifyManifestObjects(ctx, b, m); err != nil {
			t.Errorf("kept checkpoint %s: %v", k, err)
		}
	}

	// Past the grace period the interrupted checkpoint's objects go; the pointer stays
	// even with keep 1.
	res, err = storage.CollectCheckpoints(ctx, b, storage.GCConfig{JobID: job, Keep: 1, Protect: []string{pointer}, Grace: time.Minute, Now: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	dirs, committed = stepsWithObjects(t, b, job)
	if fmt.Sprint(committed) != "[20 50]" || fmt.Sprint(dirs) != "[20 50]" || res.Orphans != 2 {
		t.Fatalf("after gc past the grace: committed %v, directories %v, orphans %d; want [20 50], [20 50], 2", committed, dirs, res.Orphans)
	}
	if got := keysUnder(t, b, "jobs/other-job/"); len(got) != 3 || !slices.Contains(got, other) {
		t.Errorf("another job's checkpoint was touched: %v", got)
	}

	infos, err := storage.ListCheckpoints(ctx, b, job)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Step != 20 || infos[1].Step != 50 || infos[0].Epoch != 2 || infos[0].Objects != 2 ||
		infos[0].Size <= 2*32 || infos[0].URI != b.URI(pointer) || infos[0].Created.IsZero() {
		t.Errorf("ListCheckpoints = %+v", infos)
	}

	for _, bad := range []storage.GCConfig{{JobID: job, Keep: 0}, {JobID: "a/b", Keep: 1}, {JobID: job, Keep: 1, Grace: -1}} {
		if _, err := storage.CollectCheckpoints(ctx, b, bad); err == nil {
			t.Errorf("CollectCheckpoints(%+v) succeeded", bad)
		}
	}
}

func TestCollectCheckpointsLocal(t *testing.T) {
	testCollectCheckpoints(t, newLocal(t))
}

func TestCollectCheckpointsS3(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.Prefix = "cluster"
	s := newS3(t, cfg)
	testCollectCheckpoints(t, s)

	// A writer that died in the middle of a multipart upload: the upload is aborted
	// once stale, never while young.
	ctx := context.Background()
	core := minio.Core{Client: srv.Client(t)}
	name := "cluster/" + storage.CheckpointPrefix("gc-job", 70) + "/shard-000.ckpt"
	other := "cluster/jobs/other-job/data.bin" // another writer's upload: never touched
	for _, n := range []string{name, other} {
		id, err := core.NewMultipartUpload(ctx, srv.Bucket, n, minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		part := bytes.Repeat([]byte("p"), 1024)
		if _, err := core.PutObjectPart(ctx, srv.Bucket, n, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := storage.CollectCheckpoints(ctx, s, storage.GCConfig{JobID: "gc-job", Keep: 1, Grace: time.Hour})
	if err != nil || res.AbortedUploads != 0 {
		t.Fatalf("young upload: %+v, %v; want none aborted", res, err)
	}
	res, err = storage.CollectCheckpoints(ctx, s, storage.GCConfig{JobID: "gc-job", Keep: 1, Grace: time.Hour, UploadGrace: time.Nanosecond})
	if err != nil || res.AbortedUploads != 1 {
		t.Fatalf("stale upload: %+v, %v; want it aborted", res, err)
	}
	var left []string
	for up := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
		left = append(left, up.Key)
	}
	if fmt.Sprint(left) != "["+other+"]" {
		t.Errorf("uploads left %v, want only %s", left, other)
	}

	// The store of an s3:// manifest URI, as `cohort checkpoint list` opens it: the
	// URI's bucket and prefix, the flags' endpoint and credentials.
	infos, err := storage.ListCheckpoints(ctx, s, "gc-job")
	if err != nil || len(infos) == 0 {
		t.Fatalf("ListCheckpoints: %v, %v", infos, err)
	}
	conn := srv.Config()
	conn.Bucket, conn.Prefix = "ignored", "ignored"
	opened, key, err := storage.OpenManifestStore(ctx, infos[0].URI, conn)
	if err != nil || key != infos[0].ManifestKey || opened.URI(key) != infos[0].URI {
		t.Fatalf("OpenManifestStore(%s) = %v, %q, %v", infos[0].URI, opened, key, err)
	}
	again, err := storage.ListCheckpoints(ctx, opened, "gc-job")
	if err != nil || fmt.Sprint(again) != fmt.Sprint(infos) {
		t.Fatalf("listing through the opened store: %v, %v; want %v", again, err, infos)
	}
}

// TestCollectCheckpointsKeepsUnreadableKept: a kept checkpoint whose manifest cannot
// be read keeps its whole directory.
func TestCollectCheckpointsKeepsUnreadableKept(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	k := commitCheckpoint(t, l, "j", 10)
	if err := os.WriteFile(filepath.Join(l.Root(), filepath.FromSlash(k)), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.CollectCheckpoints(ctx, l, storage.GCConfig{JobID: "j", Keep: 1, Now: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := keysUnder(t, l, "jobs/j/"); len(got) != 3 {
		t.Errorf("objects of a kept but unreadable checkpoint deleted: left %v", got)
	}
	infos, err := storage.ListCheckpoints(ctx, l, "j")
	if err != nil || len(infos) != 1 || infos[0].Error == "" {
		t.Errorf("ListCheckpoints of an unreadable manifest = %+v, %v; want it listed with its error", infos, err)
	}
}

func TestDiscardUncommitted(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	var keys []string
	for _, step := range []int64{4, 8, 12} {
		keys = append(keys, commitCheckpoint(t, l, "j", step))
	}
	got, err := storage.DiscardUncommitted(ctx, l, "j", 4)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(keys[1:]) {
		t.Fatalf("DiscardUncommitted(4) = %v, %v; want %v", got, err, keys[1:])
	}
	if _, committed := stepsWithObjects(t, l, "j"); fmt.Sprint(committed) != "[4]" {
		t.Fatalf("committed after discard: %v", committed)
	}
	if dirs, _ := stepsWithObjects(t, l, "j"); fmt.Sprint(dirs) != "[4]" {
		t.Fatalf("directories after discard: %v", dirs)
	}
	got, err = storage.DiscardUncommitted(ctx, l, "j", -1)
	if err != nil || len(got) != 1 {
		t.Fatalf("DiscardUncommitted(-1) = %v, %v", got, err)
	}
}

func TestOpenCheckpointAndKeyOfURI(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	key := commitCheckpoint(t, l, "j", 10)
	uri := l.URI(key)
	if got, err := storage.KeyOfURI(l, uri); err != nil || got != key {
		t.Fatalf("KeyOfURI = %q, %v", got, err)
	}
	if _, err := storage.KeyOfURI(l, "s3://b/"+key); err == nil {
		t.Fatal("KeyOfURI accepted another store's URI")
	}
	m, err := storage.OpenCheckpoint(ctx, l, uri)
	if err != nil || m.Step != 10 {
		t.Fatalf("OpenCheckpoint = %+v, %v", m, err)
	}
	store, gotKey, err := storage.OpenManifestStore(ctx, uri, storage.S3Config{})
	if err != nil || gotKey != key || store.URI(key) != uri {
		t.Fatalf("OpenManifestStore = %v, %q, %v", store, gotKey, err)
	}
	if _, _, err := storage.OpenManifestStore(ctx, l.URI("jobs/j/checkpoints/000000000099/manifest.json"), storage.S3Config{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("OpenManifestStore of a missing manifest: %v", err)
	}
	if _, _, err := storage.OpenManifestStore(ctx, l.URI("jobs/j/x.json"), storage.S3Config{}); err == nil {
		t.Error("OpenManifestStore accepted a URI that is not a manifest")
	}
	// A manifest naming a missing object is an error naming it; nothing is written.
	obj := m.Objects[1]
	if err := l.Delete(ctx, obj.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.OpenCheckpoint(ctx, l, uri); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), obj.Key) {
		t.Errorf("OpenCheckpoint with a missing object: %v", err)
	}
	if _, err := storage.ReadCheckpointObject(ctx, l, obj); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadCheckpointObject of a missing object: %v", err)
	}
}

func FuzzSplitManifestURI(f *testing.F) {
	f.Add("file:///data/jobs/j/checkpoints/000000000200/manifest.json")
	f.Add("s3://bucket/prefix/jobs/j/checkpoints/000000000200/manifest.json")
	f.Add("s3://bucket/jobs/../checkpoints/000000000200/manifest.json")
	f.Add("file://rel/jobs/j/checkpoints/1/manifest.json")
	f.Fuzz(func(t *testing.T, uri string) {
		base, key, err := storage.SplitManifestURI(uri)
		if err != nil {
			return
		}
		if base+key != uri || storage.ValidateKey(key) != nil || !strings.HasPrefix(key, "jobs/") || !strings.HasSuffix(key, "/manifest.json") {
			t.Fatalf("SplitManifestURI(%q) = %q, %q", uri, base, key)
		}
	})
}

// TestCollectCheckpointsKeepFromStep: nothing at or after KeepFromStep is deleted,
// committed or not, whatever Keep says (a chief that wakes after its job was requeued
// must not delete what the new run wrote); what is older is collected as usual.
func TestCollectCheckpointsKeepFromStep(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	for _, step := range []int64{4, 8, 12, 16} {
		commitCheckpoint(t, l, "j", step)
	}
	storeCheckpoint(t, l, "j", 2, []uint64{8})  // uncommitted, before the bound
	storeCheckpoint(t, l, "j", 20, []uint64{8}) // uncommitted, after it (the new run's)
	res, err := storage.CollectCheckpoints(ctx, l, storage.GCConfig{JobID: "j", Keep: 1, KeepFromStep: 8, Now: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dirs, committed := stepsWithObjects(t, l, "j")
	if fmt.Sprint(committed) != "[8 12 16]" || fmt.Sprint(dirs) != "[8 12 16 20]" {
		t.Errorf("after gc with keepFromStep 8: committed %v, directories %v; want [8 12 16] and [8 12 16 20]", committed, dirs)
	}
	if len(res.Deleted) != 1 || res.Orphans != 1 {
		t.Errorf("gc result %+v: want the manifest of step 4 and the one object of step 2 deleted", res)
	}
	if _, err := storage.CollectCheckpoints(ctx, l, storage.GCConfig{JobID: "j", Keep: 1, KeepFromStep: -1}); err == nil {
		t.Error("a negative keepFromStep was accepted")
	}
}
