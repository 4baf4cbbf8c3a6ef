package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
)

// exampleSpec parses a job example with its file:// data URIs made absolute.
func exampleSpec(t testing.TB, name string) *jobs.TrainingJob {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "jobs", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.ReplaceAll(raw, []byte("file://jobs/"), []byte("file://"+filepath.ToSlash(root)+"/jobs/"))
	spec, err := jobs.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// chiefFor builds a chief for a spec with the given datasets, random parameters and a
// local store, at step 7.
func chiefFor(t testing.TB, spec *jobs.TrainingJob, ds *datasets, store storage.Blob) *chief {
	t.Helper()
	m, err := buildModel(&spec.Spec, ds, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := m.InitParams(1)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range p {
		p[i] += float32(rng.NormFloat64() * 0.1)
	}
	tr := &Trainer{cfg: TrainerConfig{Store: store}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), spec: spec, chief: true, world: 1,
		job: &cohortv1.Job{Id: "job-" + strings.ReplaceAll(spec.Metadata.Name, "-", ""), Name: spec.Metadata.Name}}
	return &chief{t: tr, m: m, ds: ds, params: p, total: 7, threshold: decisionThreshold(&spec.Spec)}
}

// TestArchitectureMatchesModel checks that the exported architecture of every example
// kind has exactly the layout worker/model trains.
func TestArchitectureMatchesModel(t *testing.T) {
	for _, tc := range []struct {
		example string
		ds      *datasets
	}{
		{"attrition-mlp.yaml", &datasets{inputs: 11, outputs: 1}},
		{"fashion-cnn.yaml", &datasets{inputs: 28 * 28, outputs: 10, image: data.ImageShape{Channels: 1, Height: 28, Width: 28}}},
		{"performance-lstm.yaml", &datasets{inputs: 12 * 7, outputs: 1, labelMean: 3, labelStd: 0.5}},
	} {
		t.Run(tc.example, func(t *testing.T) {
			spec := exampleSpec(t, tc.example)
			m, err := buildModel(&spec.Spec, tc.ds, 0)
			if err != nil {
				t.Fatal(err)
			}
			a, err := architectureOf(&spec.Spec, tc.ds)
			if err != nil {
				t.Fatal(err)
			}
			if a.LayoutHash() != m.LayoutHash() || a.NumParams() != m.NumParams() {
				t.Fatalf("architecture %+v: layout %s (%d params), model %s (%d params)", a, a.LayoutHash(), a.NumParams(), m.LayoutHash(), m.NumParams())
			}
		})
	}
}

// shardObject encodes a shard checkpoint object (format version 1, sgd: no state).
func shardObject(jobID string, shard int, step int64, off uint64, params []float32, total uint64) []byte {
	hdr, _ := json.Marshal(map[string]any{"job_id": jobID, "shard": shard, "step": step, "range_offset": off,
		"range_length": len(params), "total_params": total, "layout_hash": "", "optimizer": "sgd", "optimizer_step": step, "state_count": 0})
	b := []byte("COHORTCK")
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(b, hdr...)
	for _, v := range params {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// writeCheckpoint stores params as two shard objects and a manifest, as the chief and
// the parameter servers do, and returns the manifest URI.
func writeCheckpoint(t *testing.T, c *chief, store *storage.Local, step int64) string {
	t.Helper()
	ctx := context.Background()
	jobID := c.t.job.GetId()
	n := uint64(len(c.params))
	man := &storage.Manifest{JobID: jobID, Step: step, LayoutHash: c.m.LayoutHash(), TotalParams: n}
	cut := n / 2
	for shard, r := range [][2]uint64{{0, cut}, {cut, n}} {
		obj := shardObject(jobID, shard, step, r[0], c.params[r[0]:r[1]], n)
		key := storage.CheckpointPrefix(jobID, step) + "/shard-" + string(rune('0'+shard)) + ".ckpt"
		if err := store.Put(ctx, key, bytes.NewReader(obj), int64(len(obj))); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(obj)
		man.Objects = append(man.Objects, storage.ManifestObject{Shard: shard, Key: key, Size: int64(len(obj)),
			SHA256: hex.EncodeToString(sum[:]), Offset: r[0], Length: r[1] - r[0]})
	}
	key, err := storage.WriteManifest(ctx, store, man)
	if err != nil {
		t.Fatal(err)
	}
	return store.URI(key)
}

// TestExportAndCheckpointBundle runs the chief's export of a real tabular job, then
// rebuilds the same bundle from a checkpoint and the model card, and checks that
// corrupted, truncated and card-less checkpoints are refused with clear errors.
func TestExportAndCheckpointBundle(t *testing.T) {
	ctx := context.Background()
	spec := exampleSpec(t, "attrition-mlp.yaml")
	spec.Spec.Export.Formats = []string{"onnx", "safetensors"}
	ds, err := dataSource{ctx: ctx, roots: testDataRoots()}.loadData(&spec.Spec)
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := chiefFor(t, spec, ds, store)
	if err := c.saveModelCard(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.saveModelCard(ctx); err != nil { // a second checkpoint keeps the card
		t.Fatalf("second saveModelCard: %v", err)
	}
	uris, err := c.export(ctx, []byte(`{"format_version": 1}`), []byte("# card"))
	if err != nil {
		t.Fatal(err)
	}
	jobID := c.t.job.GetId()
	wantURIs := []string{
		store.URI(ExportPrefix(jobID) + "model.safetensors"),
		store.URI(ExportPrefix(jobID) + "attrition-mlp/1/model.onnx"),
	}
	if strings.Join(uris, " ") != strings.Join(wantURIs, " ") {
		t.Fatalf("exports %v, want %v", uris, wantURIs)
	}
	for _, key := range []string{"attrition-mlp/config.pbtxt", "report.json", "model_card.md", "preprocessing.json"} {
		if _, err := store.Stat(ctx, ExportPrefix(jobID)+key); err != nil {
			t.Fatalf("export file %s: %v", key, err)
		}
	}
	rc, err := store.Get(ctx, ExportPrefix(jobID)+"model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	exported, err := export.ReadModel(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var pre data.Preprocessor
	if err := json.Unmarshal([]byte(exported.Metadata[export.MetaPreprocessing]), &pre); err != nil || pre.Dim != ds.inputs || pre.Label != "Attrition" {
		t.Fatalf("preprocessing metadata %.80q: %v", exported.Metadata[export.MetaPreprocessing], err)
	}

	manifestURI := writeCheckpoint(t, c, store, 7)
	b, man, err := CheckpointBundle(ctx, manifestURI, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	if man.Step != 7 || b.Name != "attrition-mlp" || b.Arch.Kind != export.KindMLP {
		t.Fatalf("bundle %q kind %q from step %d", b.Name, b.Arch.Kind, man.Step)
	}
	off := 0
	for _, ts := range b.Tensors {
		for i, v := range ts.Data {
			if v != c.params[off+i] {
				t.Fatalf("tensor %s value %d = %v, want %v", ts.Name, i, v, c.params[off+i])
			}
		}
		off += len(ts.Data)
	}
	if b.Metadata[export.MetaPreprocessing] != exported.Metadata[export.MetaPreprocessing] {
		t.Fatal("checkpoint export's preprocessing differs from the chief's")
	}

	shardKey := man.Objects[1].Key
	shardPath := filepath.Join(store.Root(), filepath.FromSlash(shardKey))
	orig, err := os.ReadFile(shardPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func()
		want   string
	}{
		{"corrupted shard", func() {
			bad := bytes.Clone(orig)
			bad[len(bad)-1] ^= 1
			os.WriteFile(shardPath, bad, 0o644)
		}, "sha256"},
		{"truncated shard", func() { os.WriteFile(shardPath, orig[:len(orig)-4], 0o644) }, "truncated"},
		{"missing shard", func() { os.Remove(shardPath) }, "not found"},
		{"missing model card", func() {
			os.WriteFile(shardPath, orig, 0o644)
			os.Remove(filepath.Join(store.Root(), filepath.FromSlash(ModelCardKey(jobID))))
		}, "model card"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.mutate()
			_, _, err := CheckpointBundle(ctx, manifestURI, storage.S3Config{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.name != "missing model card" && !strings.Contains(err.Error(), shardKey) {
				t.Fatalf("error %v does not name the object %s", err, shardKey)
			}
		})
	}
}

// FuzzDecodeModelCard feeds arbitrary bytes to the model card decoder, which reads
// objects from storage: it must return a valid card or an error, never panic.
func FuzzDecodeModelCard(f *testing.F) {
	good := `{"formatVersion":1,"jobId":"j","name":"m","dataFormat":"csv","layoutHash":"%s","architecture":{"kind":"mlp","task":"regression","inputs":2,"outputs":1,"activation":"relu"},"preprocessing":{}}`
	a := export.Architecture{Kind: export.KindMLP, Task: export.TaskRegression, Inputs: 2, Outputs: 1, Activation: export.ActReLU}
	f.Add([]byte(strings.Replace(good, "%s", a.LayoutHash(), 1)))
	f.Add([]byte(`{"formatVersion":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeModelCard(bytes.NewReader(b))
		if err != nil {
			return
		}
		if c.Architecture.Validate() != nil || c.Architecture.LayoutHash() != c.LayoutHash {
			t.Fatalf("accepted an inconsistent card %+v", c)
		}
	})
}
