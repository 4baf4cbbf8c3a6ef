package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/modeldef"
	"github.com/cohort-dev/cohort/paramserver"
	"github.com/cohort-dev/cohort/storage"
)

// ModelCardVersion is the format version of the model card.
const ModelCardVersion = 1

// MaxModelCardSize bounds the model card ReadModelCard accepts (64 MiB: preprocessing
// with many categories is large).
const MaxModelCardSize = 64 << 20

// ModelCard is what a checkpoint alone does not hold and an export needs: the network
// and the fitted preprocessing. The chief stores it once per job, before the first
// checkpoint, at ModelCardKey (beside the checkpoints directory, so checkpoint retention
// and garbage collection never touch it).
type ModelCard struct {
	FormatVersion int                 `json:"formatVersion"`
	JobID         string              `json:"jobId"`
	Name          string              `json:"name"`
	DataFormat    string              `json:"dataFormat"`
	LayoutHash    string              `json:"layoutHash"`
	Architecture  export.Architecture `json:"architecture"`
	Preprocessing json.RawMessage     `json:"preprocessing"`
	// ONNXPreprocessing is spec.export.onnx.preprocessing, the form of an ONNX export
	// (empty in cards written before it existed: embedded).
	ONNXPreprocessing string `json:"onnxPreprocessing,omitempty"`
}

// ModelCardKey is the storage key of a job's model card: "jobs/<jobID>/model.json".
func ModelCardKey(jobID string) string { return "jobs/" + jobID + "/model.json" }

// ExportPrefix is the key prefix of a job's final export: "jobs/<jobID>/export/".
func ExportPrefix(jobID string) string { return "jobs/" + jobID + "/export/" }

// architectureOf describes the network buildModel builds for the spec and data:
// modeldef.FromSpec with the data's shape.
func architectureOf(s *jobs.Spec, ds *datasets) (export.Architecture, error) {
	return modeldef.FromSpec(s, modeldef.DataShape{
		Inputs: ds.inputs, Outputs: ds.outputs,
		Channels: ds.image.Channels, Height: ds.image.Height, Width: ds.image.Width,
		LabelMean: ds.labelMean, LabelStd: ds.labelStd,
	})
}

// modelCard builds the job's model card and checks that it describes the model being
// trained (same layout hash).
func (c *chief) modelCard() (*ModelCard, error) {
	t := c.t
	s := &t.spec.Spec
	arch, err := architectureOf(s, c.ds)
	if err != nil {
		return nil, fmt.Errorf("worker: export: %w", err)
	}
	if got, want := arch.LayoutHash(), c.m.LayoutHash(); got != want {
		return nil, fmt.Errorf("worker: export: the %s architecture's layout hash %s differs from the model's %s", arch.Kind, got, want)
	}
	pre, err := json.Marshal(c.ds.preprocessing)
	if err != nil {
		return nil, fmt.Errorf("worker: encode preprocessing: %w", err)
	}
	return &ModelCard{
		FormatVersion: ModelCardVersion, JobID: t.job.GetId(), Name: export.SanitizeName(t.job.GetName()),
		DataFormat: s.Data.Format, LayoutHash: arch.LayoutHash(), Architecture: arch, Preprocessing: pre,
		ONNXPreprocessing: s.Export.ONNX.Preprocessing,
	}, nil
}

// saveModelCard stores the model card create-only; one already there (an earlier
// checkpoint, or a run before a restart) is kept.
func (c *chief) saveModelCard(ctx context.Context) error {
	card, err := c.modelCard()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(card, "", "  ")
	if err != nil {
		return fmt.Errorf("worker: encode model card: %w", err)
	}
	key := ModelCardKey(card.JobID)
	if err := c.t.cfg.Store.PutIfAbsent(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil && !errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("worker: write model card %s: %w", key, err)
	}
	return nil
}

// bundle returns the export bundle of a model card and its flat parameters.
func (c *ModelCard) bundle(params []float32) (*export.Bundle, error) {
	if n := c.Architecture.NumParams(); n != len(params) {
		return nil, fmt.Errorf("export: the architecture has %d parameters, the checkpoint %d", n, len(params))
	}
	var tensors []export.Tensor
	off := 0
	for _, ts := range c.Architecture.Tensors() {
		n := 1
		for _, d := range ts.Shape {
			n *= d
		}
		tensors = append(tensors, export.Tensor{Name: ts.Name, Shape: ts.Shape, Data: params[off : off+n]})
		off += n
	}
	// The card is stored indented; the metadata holds the compact form.
	var pre bytes.Buffer
	if err := json.Compact(&pre, c.Preprocessing); err != nil {
		return nil, fmt.Errorf("export: preprocessing: %w", err)
	}
	return &export.Bundle{Name: c.Name, Arch: c.Architecture, Tensors: tensors, Metadata: map[string]string{
		export.MetaJobID:         c.JobID,
		export.MetaPreprocessing: pre.String(),
		export.MetaDataFormat:    c.DataFormat,
		"cohort.layout_hash":     c.LayoutHash,
	}, ONNXPreprocessing: c.ONNXPreprocessing}, nil
}

// MetaThresholdObjective is the export metadata key naming what a fitted threshold
// (export.MetaThreshold) optimised on the validation split ("f1", "youden",
// "precisionAtRecall 0.8"); absent for a fixed threshold.
const MetaThresholdObjective = "cohort.threshold_objective"

// export writes the exported model (the best checkpoint's parameters, in c.params) in
// the spec's export.formats under ExportPrefix (the
// Triton model repository for onnx, model.safetensors always), with the fitted
// preprocessing in the files' metadata, next to the model's report.json and model card
// and preprocessing.json, and returns the URIs of the model files it wrote.
func (c *chief) export(ctx context.Context, report, modelCard []byte) ([]string, error) {
	t := c.t
	s := &t.spec.Spec
	card, err := c.modelCard()
	if err != nil {
		return nil, err
	}
	b, err := card.bundle(c.params)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	step := c.total
	if e := c.exported; e != nil {
		step = e.GetStep()
	}
	b.Metadata["cohort.step"] = fmt.Sprint(step)
	if s.Task == jobs.TaskBinary {
		// The decision threshold behind the label output (spec.export.threshold, fixed
		// or fitted on the validation split): in the embedded ONNX graph's label and in
		// every format's metadata, which serving reads.
		b.Threshold = c.threshold
		b.Metadata[export.MetaThreshold] = strconv.FormatFloat(c.threshold, 'g', -1, 64)
		if th := s.Export.Threshold; th != nil && th.Optimize != nil {
			b.Metadata[MetaThresholdObjective] = th.String()
		}
	}
	files, err := b.Files(s.Export.Formats)
	if err != nil {
		return nil, fmt.Errorf("worker: spec.export.formats: %w", err)
	}
	pre, err := json.MarshalIndent(card.Preprocessing, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("worker: encode preprocessing.json: %w", err)
	}
	prefix := ExportPrefix(t.job.GetId())
	var uris []string
	for _, f := range files {
		key := prefix + f.Path
		if err := t.cfg.Store.Put(ctx, key, bytes.NewReader(f.Data), int64(len(f.Data))); err != nil {
			return nil, fmt.Errorf("worker: write %s: %w", key, err)
		}
		if !strings.HasSuffix(f.Path, export.TritonConfigFile) {
			uris = append(uris, t.cfg.Store.URI(key))
		}
	}
	for _, f := range []export.File{{Path: storage.ReportFile, Data: report}, {Path: storage.ModelCardFile, Data: modelCard}, {Path: "preprocessing.json", Data: pre}} {
		if err := t.cfg.Store.Put(ctx, prefix+f.Path, bytes.NewReader(f.Data), int64(len(f.Data))); err != nil {
			return nil, fmt.Errorf("worker: write %s: %w", prefix+f.Path, err)
		}
	}
	t.log.Info("model exported", "formats", s.Export.Formats, "name", b.Name, "files", len(files))
	return uris, nil
}

// DecodeModelCard strictly decodes a model card (unknown fields, trailing data and
// more than MaxModelCardSize bytes are errors) and validates it.
func DecodeModelCard(r io.Reader) (*ModelCard, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxModelCardSize+1))
	if err != nil {
		return nil, fmt.Errorf("model card: read: %w", err)
	}
	if len(data) > MaxModelCardSize {
		return nil, fmt.Errorf("model card: larger than %d bytes", MaxModelCardSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c ModelCard
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("model card: decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("model card: trailing data after the JSON object")
	}
	switch {
	case c.FormatVersion != ModelCardVersion:
		return nil, fmt.Errorf("model card: formatVersion %d: unsupported (want %d)", c.FormatVersion, ModelCardVersion)
	case c.Name != export.SanitizeName(c.Name):
		return nil, fmt.Errorf("model card: name %q: not a valid model name", c.Name)
	case len(c.Preprocessing) == 0 || !json.Valid(c.Preprocessing):
		return nil, errors.New("model card: preprocessing: missing or not JSON")
	case c.ONNXPreprocessing != "" && c.ONNXPreprocessing != export.ONNXEmbedded && c.ONNXPreprocessing != export.ONNXSeparate:
		return nil, fmt.Errorf("model card: onnxPreprocessing %q: not one of %s, %s", c.ONNXPreprocessing, export.ONNXEmbedded, export.ONNXSeparate)
	}
	if err := c.Architecture.Validate(); err != nil {
		return nil, fmt.Errorf("model card: %w", err)
	}
	if got := c.Architecture.LayoutHash(); got != c.LayoutHash {
		return nil, fmt.Errorf("model card: layoutHash %s does not match the architecture's %s", c.LayoutHash, got)
	}
	return &c, nil
}

// CheckpointBundle reads a committed checkpoint through its manifest URI (file:// or
// s3://, read with s3's endpoint and credentials) and returns the export bundle of its
// parameters: the manifest, every shard object (sizes and SHA-256 checked against the
// manifest) and the job's model card, which must describe the same layout. Errors name
// the object at fault.
func CheckpointBundle(ctx context.Context, manifestURI string, s3 storage.S3Config) (*export.Bundle, *storage.Manifest, error) {
	rc, err := storage.OpenURI(ctx, manifestURI, s3)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	man, err := storage.DecodeManifest(rc)
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", manifestURI, err)
	}
	root, ok := strings.CutSuffix(manifestURI, storage.ManifestKey(man.JobID, man.Step))
	if !ok {
		return nil, nil, fmt.Errorf("checkpoint %s: the manifest of job %q step %d should be at a URI ending in %s", manifestURI, man.JobID, man.Step, storage.ManifestKey(man.JobID, man.Step))
	}
	cardURI := root + ModelCardKey(man.JobID)
	rc, err = storage.OpenURI(ctx, cardURI, s3)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil, fmt.Errorf("checkpoint %s: the job's model card %s is missing (jobs trained before model cards existed cannot be exported from a checkpoint): %w", manifestURI, cardURI, err)
		}
		return nil, nil, fmt.Errorf("checkpoint %s: %w", manifestURI, err)
	}
	card, err := DecodeModelCard(rc)
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cardURI, err)
	}
	if card.LayoutHash != man.LayoutHash || uint64(card.Architecture.NumParams()) != man.TotalParams {
		return nil, nil, fmt.Errorf("checkpoint %s: layout %s with %d parameters, but the model card %s describes layout %s with %d", manifestURI, man.LayoutHash, man.TotalParams, cardURI, card.LayoutHash, card.Architecture.NumParams())
	}
	params := make([]float32, man.TotalParams)
	for i, o := range man.Objects {
		if err := readShardObject(ctx, root+o.Key, o, man, s3, params); err != nil {
			return nil, nil, fmt.Errorf("checkpoint %s: objects[%d] (shard %d): %w", manifestURI, i, o.Shard, err)
		}
	}
	b, err := card.bundle(params)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", manifestURI, err)
	}
	b.Metadata["cohort.step"] = fmt.Sprint(man.Step)
	return b, man, nil
}

// readShardObject reads one shard object, checks it against its manifest entry and
// copies its parameters into params.
func readShardObject(ctx context.Context, uri string, o storage.ManifestObject, man *storage.Manifest, s3 storage.S3Config, params []float32) error {
	rc, err := storage.OpenURI(ctx, uri, s3)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, o.Size+1))
	if err != nil {
		return fmt.Errorf("%s: read: %w", uri, err)
	}
	if int64(len(data)) != o.Size {
		return fmt.Errorf("%s: %d bytes, the manifest records %d (truncated or replaced)", uri, len(data), o.Size)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != o.SHA256 {
		return fmt.Errorf("%s: sha256 %s, the manifest records %s (corrupted)", uri, got, o.SHA256)
	}
	ck, err := paramserver.ReadShardCheckpoint(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %w", uri, err)
	}
	if ck.JobID != man.JobID || ck.Range.Offset != o.Offset || ck.Range.Length != o.Length || uint64(len(ck.Params)) != o.Length {
		return fmt.Errorf("%s: holds job %q parameters [%d, +%d), the manifest records job %q [%d, +%d)", uri, ck.JobID, ck.Range.Offset, ck.Range.Length, man.JobID, o.Offset, o.Length)
	}
	copy(params[o.Offset:o.Offset+o.Length], ck.Params)
	return nil
}
