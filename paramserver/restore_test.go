package paramserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// writeTestCheckpoint stores a checkpoint of total Adam parameters split into shards
// objects (value i is float32(i), moments i+0.5 and i+0.25) and returns its manifest.
func writeTestCheckpoint(t *testing.T, b storage.Blob, total uint64, shards int) *storage.Manifest {
	t.Helper()
	man := &storage.Manifest{FormatVersion: 1, JobID: "j", Step: 9, TotalParams: total, LayoutHash: "L"}
	for i, r := range Partition(total, shards) {
		ck := &ShardCheckpoint{JobID: "j", Shard: i, Step: 9, Range: r, TotalParams: total, LayoutHash: "L",
			Optimizer: OptimizerAdam, OptimizerStep: 9, State: [][]float32{make([]float32, r.Length), make([]float32, r.Length)}}
		for k := range r.Length {
			v := float32(r.Offset + k)
			ck.Params = append(ck.Params, v)
			ck.State[0][k], ck.State[1][k] = v+0.5, v+0.25
		}
		data, err := encodeShardCheckpoint(ck)
		if err != nil {
			t.Fatal(err)
		}
		key := CheckpointKey(storage.CheckpointPrefix("j", 9), i)
		if err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		man.Objects = append(man.Objects, storage.ManifestObject{Shard: i, Key: key, Size: int64(len(data)),
			SHA256: hex.EncodeToString(sum[:]), Offset: r.Offset, Length: r.Length})
	}
	return man
}

// TestLoadShardRangeAnyShardCount restores a checkpoint written by 3 shards into 1, 2,
// 3 and 5 shards: every range gets exactly its parameters and Adam moments.
func TestLoadShardRangeAnyShardCount(t *testing.T) {
	b := newMemBlob()
	man := writeTestCheckpoint(t, b, 23, 3)
	for _, shards := range []int{1, 2, 3, 5} {
		for i, r := range Partition(23, shards) {
			ck, err := LoadShardRange(context.Background(), b, man, i, r)
			if err != nil {
				t.Fatalf("%d shards, shard %d: %v", shards, i, err)
			}
			if ck.Step != 9 || ck.OptimizerStep != 9 || ck.Optimizer != OptimizerAdam || ck.Range != r || ck.Shard != i || ck.LayoutHash != "L" {
				t.Fatalf("%d shards, shard %d: header %+v", shards, i, ck)
			}
			for k := range r.Length {
				v := float32(r.Offset + k)
				if ck.Params[k] != v || ck.State[0][k] != v+0.5 || ck.State[1][k] != v+0.25 {
					t.Fatalf("%d shards, shard %d, value %d: %v %v %v", shards, i, k, ck.Params[k], ck.State[0][k], ck.State[1][k])
				}
			}
		}
	}
}

func TestLoadShardRangeRejects(t *testing.T) {
	b := newMemBlob()
	good := writeTestCheckpoint(t, b, 10, 2)
	for _, tc := range []struct {
		name  string
		edit  func(m *storage.Manifest)
		rng   Range
		wants string
	}{
		{"range outside", func(*storage.Manifest) {}, Range{Offset: 8, Length: 5}, "outside"},
		{"empty range", func(*storage.Manifest) {}, Range{Offset: 0, Length: 0}, "outside"},
		{"other step", func(m *storage.Manifest) { m.Step = 10 }, Range{Length: 10}, "holds step 9"},
		{"other job", func(m *storage.Manifest) { m.JobID = "k" }, Range{Length: 10}, "holds job"},
		{"other layout", func(m *storage.Manifest) { m.LayoutHash = "M" }, Range{Length: 10}, "layout"},
		{"checksum", func(m *storage.Manifest) { m.Objects[1].SHA256 = strings.Repeat("0", 64) }, Range{Length: 10}, "corrupt"},
		{"size", func(m *storage.Manifest) { m.Objects[0].Size++ }, Range{Length: 10}, "truncated"},
		{"swapped ranges", func(m *storage.Manifest) {
			m.Objects[0].Key, m.Objects[1].Key = m.Objects[1].Key, m.Objects[0].Key
			m.Objects[0].Size, m.Objects[1].Size = m.Objects[1].Size, m.Objects[0].Size
			m.Objects[0].SHA256, m.Objects[1].SHA256 = m.Objects[1].SHA256, m.Objects[0].SHA256
		}, Range{Length: 10}, "holds range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := *good
			m.Objects = append([]storage.ManifestObject(nil), good.Objects...)
			tc.edit(&m)
			_, err := LoadShardRange(context.Background(), b, &m, 0, tc.rng)
			if err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("LoadShardRange: %v, want an error mentioning %q", err, tc.wants)
			}
			if !strings.Contains(fmt.Sprint(err), ErrBadCheckpoint.Error()) {
				t.Errorf("error %v does not wrap ErrBadCheckpoint", err)
			}
		})
	}
}

// TestAsyncCheckpointAtReachedVersion: in async mode the version counts every push, so
// a checkpoint asked for at step 1 after three pushes writes version 3 and says so; in
// sync mode the same request is refused.
func TestAsyncCheckpointAtReachedVersion(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	store := newMemBlob()
	for _, mode := range []string{ModeAsync, ModeSync} {
		if err := srv.AddShard(ShardConfig{JobID: mode, Generation: 1, Workers: 1, Mode: mode, Store: store, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: mode, Generation: 1, TotalParams: 1, Mode: mode})
		if err := c.Init(ctx, []float32{0}); err != nil {
			t.Fatal(err)
		}
		for step := int64(0); step < 3; step++ {
			if err := c.Push(ctx, step, []float32{1}, 1); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := srv.Checkpoint(ctx, &cohortv1.CheckpointRequest{Ref: &cohortv1.ShardRef{JobId: mode, Generation: 1}, Step: 1, KeyPrefix: storage.CheckpointPrefix(mode, 1)})
		if mode == ModeSync {
			wantCode(t, err, codes.FailedPrecondition, "already at step 3")
			continue
		}
		if err != nil || resp.GetStep() != 3 {
			t.Fatalf("async checkpoint: %v, %v; want version 3 written", resp, err)
		}
		ck, err := ReadShardCheckpoint(bytes.NewReader(store.objs[resp.GetKey()]))
		if err != nil || ck.Step != 3 || ck.Params[0] != -3 {
			t.Fatalf("async checkpoint content %+v, %v", ck, err)
		}
	}
}
