package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/storage"
)

// storeCheckpoint writes one object per shard (sizes in parameters) and returns a
// manifest describing them.
func storeCheckpoint(t *testing.T, b storage.Blob, jobID string, step int64, shardParams []uint64) *storage.Manifest {
	t.Helper()
	m := &storage.Manifest{
		FormatVersion: storage.ManifestFormatVersion,
		JobID:         jobID,
		Step:          step,
		Epoch:         2,
		StepInEpoch:   17,
		Generation:    3,
		LayoutHash:    "layout-abc",
		Seed:          42,
		Metrics:       map[string]float64{"val_loss": 0.25},
	}
	var off uint64
	for shard, n := range shardParams {
		data := bytes.Repeat([]byte{byte(shard + 1)}, int(n*4))
		key := fmt.Sprintf("%s/shard-%d.bin", storage.CheckpointPrefix(jobID, step), shard)
		if err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		m.Objects = append(m.Objects, storage.ManifestObject{
			Shard: shard, Key: key, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Offset: off, Length: n,
		})
		off += n
	}
	m.TotalParams = off
	return m
}

func TestCheckpointKeys(t *testing.T) {
	tests := []struct {
		job        string
		step       int64
		wantPrefix string
	}{
		{"j1", 0, "jobs/j1/checkpoints/000000000000"},
		{"attrition-mlp-7", 200, "jobs/attrition-mlp-7/checkpoints/000000000200"},
		{"x", 123456789012, "jobs/x/checkpoints/123456789012"},
	}
	for _, tc := range tests {
		t.Run(tc.wantPrefix, func(t *testing.T) {
			if got := storage.CheckpointPrefix(tc.job, tc.step); got != tc.wantPrefix {
				t.Fatalf("CheckpointPrefix = %q, want %q", got, tc.wantPrefix)
			}
			if got := storage.ManifestKey(tc.job, tc.step); got != tc.wantPrefix+"/manifest.json" {
				t.Fatalf("ManifestKey = %q", got)
			}
		})
	}
	if !(storage.ManifestKey("j", 9) < storage.ManifestKey("j", 10)) {
		t.Fatal("manifest keys do not sort by step")
	}
}

func TestManifestWriteReadVerify(t *testing.T) {
	ctx := context.Background()
	b := newLocal(t)
	m := storeCheckpoint(t, b, "job-1", 200, []uint64{10, 7, 1})
	key, err := storage.WriteManifest(ctx, b, m)
	if err != nil {
		t.Fatalf("WriteManifest: %v", err)
	}
	if key != storage.ManifestKey("job-1", 200) {
		t.Fatalf("key = %q", key)
	}
	got, err := storage.ReadManifest(ctx, b, key)
	if err != nil {
		t.Fatalf("ReadManifest: %v", err)
	}
	wantJSON, _ := json.Marshal(m)
	gotJSON, _ := json.Marshal(got)
	if !bytes.Equal(wantJSON, gotJSON) {
		t.Fatalf("round trip changed the manifest:\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if err := storage.VerifyManifestObjects(ctx, b, got); err != nil {
		t.Fatalf("VerifyManifestObjects: %v", err)
	}

	// Create-only: a second manifest for the same step is refused, the first stays.
	m2 := *m
	m2.Generation = 99
	if _, err := storage.WriteManifest(ctx, b, &m2); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second WriteManifest = %v, want ErrExists", err)
	}
	again, err := storage.ReadManifest(ctx, b, key)
	if err != nil || again.Generation != 3 {
		t.Fatalf("manifest replaced: generation %v, err %v", again, err)
	}
}

func TestWriteManifestConcurrentOneCommit(t *testing.T) {
	ctx := context.Background()
	b := newLocal(t)
	m := storeCheckpoint(t, b, "race", 5, []uint64{4})
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := *m
			c.Generation = uint64(i)
			_, errs[i] = storage.WriteManifest(ctx, b, &c)
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, storage.ErrExists) {
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers committed, want exactly 1", wins)
	}
}

func TestWriteManifestDefaultsFormatVersion(t *testing.T) {
	b := newLocal(t)
	m := storeCheckpoint(t, b, "j", 1, []uint64{3})
	m.FormatVersion = 0
	key, err := storage.WriteManifest(context.Background(), b, m)
	if err != nil {
		t.Fatal(err)
	}
	if m.FormatVersion != 0 {
		t.Fatal("WriteManifest modified its argument")
	}
	got, err := storage.ReadManifest(context.Background(), b, key)
	if err != nil || got.FormatVersion != storage.ManifestFormatVersion {
		t.Fatalf("ReadManifest = %+v, %v", got, err)
	}
}

func TestManifestValidate(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	valid := func() *storage.Manifest {
		return &storage.Manifest{
			FormatVersion: 1, JobID: "j", Step: 1, TotalParams: 10,
			Objects: []storage.ManifestObject{
				{Shard: 1, Key: "k/1", Size: 24, SHA256: sum, Offset: 4, Length: 6},
				{Shard: 0, Key: "k/0", Size: 16, SHA256: sum, Offset: 0, Length: 4},
			},
		}
	}
	tests := []struct {
		name    string
		mutate  func(m *storage.Manifest)
		wantErr string
	}{
		{"valid, objects out of offset order", func(m *storage.Manifest) {}, ""},
		{"format version", func(m *storage.Manifest) { m.FormatVersion = 2 }, "formatVersion 2"},
		{"empty job", func(m *storage.Manifest) { m.JobID = "" }, "jobId: empty"},
		{"job with slash", func(m *storage.Manifest) { m.JobID = "a/b" }, "contains '/'"},
		{"job dotdot", func(m *storage.Manifest) { m.JobID = ".." }, `jobId ".."`},
		{"negative step", func(m *storage.Manifest) { m.Step = -1 }, "step -1"},
		{"negative epoch", func(m *storage.Manifest) { m.Epoch = -1 }, "epoch -1"},
		{"negative step in epoch", func(m *storage.Manifest) { m.StepInEpoch = -1 }, "stepInEpoch -1"},
		{"zero params", func(m *storage.Manifest) { m.TotalParams = 0 }, "totalParams: zero"},
		{"nan metric", func(m *storage.Manifest) { m.Metrics = map[string]float64{"val_loss": math.NaN()} }, `metrics["val_loss"]`},
		{"no objects", func(m *storage.Manifest) { m.Objects = nil }, "objects: empty"},
		{"bad key", func(m *storage.Manifest) { m.Objects[0].Key = "../x" }, "objects[0].key"},
		{"duplicate key", func(m *storage.Manifest) { m.Objects[0].Key = "k/0" }, "objects[1].key \"k/0\": duplicate of objects[0]"},
		{"negative shard", func(m *storage.Manifest) { m.Objects[0].Shard = -1 }, "shard -1"},
		{"zero size", func(m *storage.Manifest) { m.Objects[1].Size = 0 }, "(k/0).size 0"},
		{"short sha", func(m *storage.Manifest) { m.Objects[0].SHA256 = "abc" }, "(k/1).sha256"},
		{"upper-case sha", func(m *storage.Manifest) { m.Objects[0].SHA256 = strings.Repeat("AB", 32) }, "sha256"},
		{"non-hex sha", func(m *storage.Manifest) { m.Objects[0].SHA256 = strings.Repeat("zz", 32) }, "sha256"},
		{"zero length", func(m *storage.Manifest) { m.Objects[0].Length = 0 }, "length: zero"},
		{"gap at start", func(m *storage.Manifest) { m.Objects[1].Offset = 1; m.Objects[1].Length = 3 }, "[0, 1) are not covered"},
		{"gap in middle", func(m *storage.Manifest) { m.Objects[0].Offset = 5; m.Objects[0].Length = 5 }, "[4, 5) are not covered"},
		{"overlap", func(m *storage.Manifest) { m.Objects[0].Offset = 3; m.Objects[0].Length = 7 }, "overlaps"},
		{"short of total", func(m *storage.Manifest) { m.TotalParams = 11 }, "[10, 11) are not covered"},
		{"beyond total", func(m *storage.Manifest) { m.TotalParams = 9 }, "beyond totalParams 9"},
		{"overflow", func(m *storage.Manifest) { m.Objects[0].Offset = math.MaxUint64 - 2 }, "overflows"},
		{"valid score and early stopping", func(m *storage.Manifest) {
			m.Score = &storage.Score{Metric: "val_auc", Mode: storage.ScoreMax, Value: 0.8, Epoch: 3}
			m.EarlyStopping = &storage.EarlyStoppingState{Epoch: 3, Best: 0.8, BestEpoch: 2, Wait: 1}
		}, ""},
		{"score without metric", func(m *storage.Manifest) { m.Score = &storage.Score{Mode: storage.ScoreMax} }, "score.metric: empty"},
		{"score mode", func(m *storage.Manifest) { m.Score = &storage.Score{Metric: "val_auc", Mode: "up"} }, `score.mode "up"`},
		{"nan score", func(m *storage.Manifest) { m.Score = &storage.Score{Metric: "val_auc", Mode: "max", Value: math.NaN()} }, "score.value: not finite"},
		{"early stopping out of order", func(m *storage.Manifest) { m.EarlyStopping = &storage.EarlyStoppingState{Epoch: 2, BestEpoch: 3} }, "earlyStopping: epoch 2, bestEpoch 3"},
		{"infinite early stopping best", func(m *storage.Manifest) {
			m.EarlyStopping = &storage.EarlyStoppingState{Epoch: 2, BestEpoch: 1, Best: math.Inf(1)}
		}, "earlyStopping.best: not finite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			tc.mutate(m)
			err := m.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate error = %v, want containing %q", err, tc.wantErr)
			}
			// WriteManifest refuses what Validate refuses, before writing anything.
			b := newLocal(t)
			if _, err := storage.WriteManifest(context.Background(), b, m); err == nil {
				t.Fatal("WriteManifest accepted an invalid manifest")
			}
			if objs, _ := b.List(context.Background(), ""); len(objs) != 0 {
				t.Fatalf("WriteManifest wrote %v for an invalid manifest", objs)
			}
		})
	}
}

func TestReadManifestRejects(t *testing.T) {
	ctx := context.Background()
	b := newLocal(t)
	m := storeCheckpoint(t, b, "j", 7, []uint64{2})
	good, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     string
		body    string
		wantErr string
	}{
		{"unknown field", storage.ManifestKey("j", 7), strings.Replace(string(good), `"jobId"`, `"surprise":1,"jobId"`, 1), `unknown field "surprise"`},
		{"trailing data", storage.ManifestKey("j", 7), string(good) + "{}", "trailing data"},
		{"not json", storage.ManifestKey("j", 7), "manifest", "decode"},
		{"wrong type", storage.ManifestKey("j", 7), strings.Replace(string(good), `"step":7`, `"step":"7"`, 1), "decode"},
		{"invalid content", storage.ManifestKey("j", 7), strings.Replace(string(good), `"totalParams":2`, `"totalParams":3`, 1), "not covered"},
		{"misplaced", storage.ManifestKey("j", 8), string(good), "whose manifest key is"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.Put(ctx, tc.key, strings.NewReader(tc.body), int64(len(tc.body))); err != nil {
				t.Fatal(err)
			}
			_, err := storage.ReadManifest(ctx, b, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("ReadManifest error = %v, want naming %q and containing %q", err, tc.key, tc.wantErr)
			}
		})
	}
	if _, err := storage.ReadManifest(ctx, b, storage.ManifestKey("j", 99)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ReadManifest of a missing key = %v, want ErrNotFound", err)
	}
}

func TestVerifyManifestObjects(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		damage   func(t *testing.T, b storage.Blob, m *storage.Manifest)
		wantErr  string
		notFound bool
	}{
		{"intact", func(*testing.T, storage.Blob, *storage.Manifest) {}, "", false},
		{"missing object", func(t *testing.T, b storage.Blob, m *storage.Manifest) {
			if err := b.Delete(ctx, m.Objects[1].Key); err != nil {
				t.Fatal(err)
			}
		}, "objects[1] (shard 1", true},
		{"wrong size", func(t *testing.T, b storage.Blob, m *storage.Manifest) {
			if err := b.Put(ctx, m.Objects[0].Key, strings.NewReader("short"), 5); err != nil {
				t.Fatal(err)
			}
		}, "size 5, manifest records 40", false},
		{"same size, different bytes", func(t *testing.T, b storage.Blob, m *storage.Manifest) {
			data := make([]byte, m.Objects[2].Size)
			if err := b.Put(ctx, m.Objects[2].Key, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
		}, "objects[2] (shard 2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newLocal(t)
			m := storeCheckpoint(t, b, "v", 1, []uint64{10, 5, 3})
			tc.damage(t, b, m)
			err := storage.VerifyManifestObjects(ctx, b, m)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyManifestObjects: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tc.wantErr)
			}
			if errors.Is(err, storage.ErrNotFound) != tc.notFound {
				t.Fatalf("errors.Is(err, ErrNotFound) = %v, want %v", !tc.notFound, tc.notFound)
			}
		})
	}
}

func FuzzDecodeManifest(f *testing.F) {
	sum := strings.Repeat("0f", 32)
	seed := storage.Manifest{
		FormatVersion: 1, JobID: "j", Step: 3, TotalParams: 6,
		Objects: []storage.ManifestObject{
			{Shard: 0, Key: "a", Size: 8, SHA256: sum, Offset: 0, Length: 2},
			{Shard: 1, Key: "b", Size: 16, SHA256: sum, Offset: 2, Length: 4},
		},
		Metrics: map[string]float64{"val_auc": 0.8},
	}
	good, _ := json.Marshal(seed)
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"formatVersion":1,"jobId":"j","totalParams":1,"objects":[{"key":"k","size":1,"sha256":"` + sum + `","offset":0,"length":1}]}`))
	f.Add([]byte(`{"formatVersion":1,"objects":[{"offset":18446744073709551615,"length":2}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := storage.DecodeManifest(bytes.NewReader(data))
		if err != nil {
			if m != nil {
				t.Fatal("non-nil manifest with an error")
			}
			return
		}
		// Whatever decodes is valid and survives a write/read cycle unchanged.
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := storage.DecodeManifest(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		enc2, _ := json.Marshal(m2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("not stable:\n%s\n%s", enc, enc2)
		}
	})
}
