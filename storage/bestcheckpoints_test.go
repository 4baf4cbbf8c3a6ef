package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/storage"
)

// commitScored commits a checkpoint of step with a val_auc score (none when score < 0).
func commitScored(t *testing.T, b storage.Blob, job string, step int64, score float64) string {
	t.Helper()
	m := storeCheckpoint(t, b, job, step, []uint64{4})
	m.StepInEpoch = 0
	if score >= 0 {
		m.Score = &storage.Score{Metric: "val_auc", Mode: storage.ScoreMax, Value: score, Epoch: int(step / 10)}
	}
	key, err := storage.WriteManifest(context.Background(), b, m)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestBestCheckpoints: ranking by score in the score's direction, earlier steps first
// among equal scores, unscored and unreadable checkpoints left out.
func TestBestCheckpoints(t *testing.T) {
	info := func(step int64, metric, mode string, v float64) storage.CheckpointInfo {
		in := storage.CheckpointInfo{ManifestKey: fmt.Sprint(step), Step: step}
		if metric != "" {
			in.Score = &storage.Score{Metric: metric, Mode: mode, Value: v}
		}
		return in
	}
	steps := func(infos []storage.CheckpointInfo) string {
		var out []string
		for _, in := range infos {
			out = append(out, fmt.Sprint(in.Step))
		}
		return strings.Join(out, " ")
	}
	broken := info(70, "val_auc", "max", 0.99)
	broken.Error = "unreadable"
	for _, tc := range []struct {
		name  string
		infos []storage.CheckpointInfo
		k     int
		want  string
	}{
		{"max", []storage.CheckpointInfo{info(10, "val_auc", "max", 0.7), info(20, "val_auc", "max", 0.9), info(30, "val_auc", "max", 0.8)}, 2, "20 30"},
		{"min", []storage.CheckpointInfo{info(10, "val_loss", "min", 0.7), info(20, "val_loss", "min", 0.9), info(30, "val_loss", "min", 0.8)}, 3, "10 30 20"},
		{"ties go to the earlier step", []storage.CheckpointInfo{info(10, "val_auc", "max", 0.8), info(20, "val_auc", "max", 0.9), info(30, "val_auc", "max", 0.9)}, 2, "20 30"},
		{"unscored and unreadable left out", []storage.CheckpointInfo{info(10, "", "", 0), info(20, "val_auc", "max", 0.5), broken, info(80, "", "", 0)}, 3, "20"},
		{"another metric left out", []storage.CheckpointInfo{info(10, "val_loss", "min", 0.1), info(20, "val_auc", "max", 0.5)}, 2, "20"},
		{"none scored", []storage.CheckpointInfo{info(10, "", "", 0)}, 1, ""},
		{"k zero", []storage.CheckpointInfo{info(10, "val_auc", "max", 0.5)}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := steps(storage.BestCheckpoints(tc.infos, tc.k)); got != tc.want {
				t.Errorf("best %d = [%s], want [%s]", tc.k, got, tc.want)
			}
		})
	}
}

// TestCollectCheckpointsKeepsBest: retention keeps the newest keep, the keepBest
// best-scored and the protected checkpoints, and ranks from the store alone, so a later
// collection (a resumed run's) keeps the same best ones; ListCheckpoints shows the scores
// and marks the best.
func TestCollectCheckpointsKeepsBest(t *testing.T) {
	ctx := context.Background()
	b := newLocal(t)
	const job = "best-job"
	scores := map[int64]float64{10: 0.70, 20: 0.85, 30: 0.80, 40: 0.86, 50: 0.75, 60: -1, 70: 0.74}
	keys := map[int64]string{}
	for step := int64(10); step <= 70; step += 10 {
		keys[step] = commitScored(t, b, job, step, scores[step])
	}
	gc := storage.GCConfig{JobID: job, Keep: 2, KeepBest: 2, Grace: time.Hour}
	res, err := storage.CollectCheckpoints(ctx, b, gc)
	if err != nil {
		t.Fatal(err)
	}
	if _, committed := stepsWithObjects(t, b, job); fmt.Sprint(committed) != "[20 40 60 70]" {
		t.Fatalf("after gc: committed %v, want [20 40 60 70] (best 40 and 20, newest 60 and 70)", committed)
	}
	if len(res.Kept) != 4 || len(res.Deleted) != 3 {
		t.Errorf("result %+v", res)
	}
	// The same collection again (a resumed run) deletes nothing more; a new best
	// displaces the worst of the two.
	if res, err = storage.CollectCheckpoints(ctx, b, gc); err != nil || len(res.Deleted) != 0 {
		t.Fatalf("second collection: %+v, %v", res, err)
	}
	commitScored(t, b, job, 80, 0.9)
	if _, err := storage.CollectCheckpoints(ctx, b, gc); err != nil {
		t.Fatal(err)
	}
	if _, committed := stepsWithObjects(t, b, job); fmt.Sprint(committed) != "[40 70 80]" {
		t.Fatalf("after a new best: committed %v, want [40 70 80] (best 80 and 40, newest 70 and 80)", committed)
	}
	infos, err := storage.ListCheckpoints(ctx, b, job)
	if err != nil {
		t.Fatal(err)
	}
	var bestSteps []int64
	for _, in := range infos {
		if in.Score == nil || in.Score.Metric != "val_auc" || in.Score.Value != scores[in.Step] && in.Step != 80 {
			t.Errorf("checkpoint %d: score %+v", in.Step, in.Score)
		}
		if in.Best {
			bestSteps = append(bestSteps, in.Step)
		}
	}
	if fmt.Sprint(bestSteps) != "[80]" {
		t.Errorf("best marked on %v, want [80]", bestSteps)
	}
	if _, err := storage.CollectCheckpoints(ctx, b, storage.GCConfig{JobID: job, Keep: 1, KeepBest: -1}); err == nil {
		t.Error("negative keepBest accepted")
	}
}

// TestManifestWithoutScoreStillReads: a manifest written before scores existed (no
// score or earlyStopping field) decodes, lists without a score and is never ranked.
func TestManifestWithoutScoreStillReads(t *testing.T) {
	const old = `{
  "formatVersion": 1, "jobId": "old", "step": 12, "epoch": 2, "stepInEpoch": 0, "generation": 1,
  "layoutHash": "l", "totalParams": 4, "seed": 42, "createdUnixNano": 1,
  "objects": [{"shard": 0, "key": "jobs/old/checkpoints/000000000012/shard-000.ckpt", "size": 16,
    "sha256": "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `", "offset": 0, "length": 4}],
  "metrics": {"val_auc": 0.8}
}`
	m, err := storage.DecodeManifest(strings.NewReader(old))
	if err != nil {
		t.Fatalf("decode a manifest without a score: %v", err)
	}
	if m.Score != nil || m.EarlyStopping != nil {
		t.Fatalf("score %+v, early stopping %+v", m.Score, m.EarlyStopping)
	}
	b := newLocal(t)
	if err := b.Put(context.Background(), storage.ManifestKey("old", 12), strings.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	infos, err := storage.ListCheckpoints(context.Background(), b, "old")
	if err != nil || len(infos) != 1 || infos[0].Score != nil || infos[0].Best || infos[0].Error != "" {
		t.Fatalf("listing %+v, %v", infos, err)
	}
}
