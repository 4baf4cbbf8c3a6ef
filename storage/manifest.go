package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
)

// ManifestFormatVersion is the manifest format this package writes and reads.
const ManifestFormatVersion = 1

// MaxManifestSize bounds the bytes ReadManifest and DecodeManifest accept (16 MiB).
const MaxManifestSize = 16 << 20

// ManifestObject is one stored tensor object of a checkpoint: the parameters
// [Offset, Offset+Length) of the job's flat parameter vector, held by Shard.
type ManifestObject struct {
	Shard  int    `json:"shard"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex of the object's bytes
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
}

// Manifest is the commit record of a checkpoint. It is written last, create-only,
// after every object it lists; its key, recorded in Raft, is the only truth about the
// latest checkpoint of a job.
type Manifest struct {
	FormatVersion   int                `json:"formatVersion"`
	JobID           string             `json:"jobId"`
	Step            int64              `json:"step"`
	Epoch           int                `json:"epoch"`
	StepInEpoch     int64              `json:"stepInEpoch"`
	Generation      uint64             `json:"generation"`
	LayoutHash      string             `json:"layoutHash"`
	TotalParams     uint64             `json:"totalParams"`
	Seed            int64              `json:"seed"`
	Objects         []ManifestObject   `json:"objects"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	CreatedUnixNano int64              `json:"createdUnixNano"`

	// Workers and BatchSize are the world size and per-worker batch size of the run
	// that wrote the checkpoint (0: not recorded).
	Workers   int `json:"workers,omitempty"`
	BatchSize int `json:"batchSize,omitempty"`
	// DataPosition is how many rows of epoch Epoch's seeded permutation were trained
	// on before Step: a resumed run continues with the row after them.
	DataPosition int64 `json:"dataPosition,omitempty"`
	// TrainLossSum and TrainRows are the chief's running sum of row losses and row
	// count in the current epoch, so the resumed epoch reports the same training loss.
	TrainLossSum float64 `json:"trainLossSum,omitempty"`
	TrainRows    int64   `json:"trainRows,omitempty"`
	// RNG is the position of the random streams that are not a pure function of
	// (seed, epoch); nil when none was recorded.
	RNG *RNGState `json:"rng,omitempty"`
	// Consistency is the job's consistency mode: "" or "sync" (every object holds the
	// parameters at exactly Step), "async" or "bounded" (each shard's object holds the
	// version that shard had reached, at least Step: those versions count every
	// worker's pushes).
	Consistency string `json:"consistency,omitempty"`
	// Score is the checkpoint's score (spec.checkpoint.scoreBy), set on checkpoints the
	// chief wrote at an epoch end right after evaluating exactly these parameters; nil
	// on the others (and on manifests written before scores existed).
	Score *Score `json:"score,omitempty"`
	// EarlyStopping is spec.training.earlyStopping's state as of the last epoch
	// evaluated before Step, so a resumed job goes on counting its patience; nil when
	// the job does not stop early.
	EarlyStopping *EarlyStoppingState `json:"earlyStopping,omitempty"`
}

// Score directions (Score.Mode).
const (
	ScoreMax = "max"
	ScoreMin = "min"
)

// Score is how good a checkpoint's parameters are by one validation metric.
type Score struct {
	// Metric names the validation metric ("val_auc"); Mode is ScoreMax or ScoreMin.
	Metric string `json:"metric"`
	Mode   string `json:"mode"`
	// Value is the metric's value, taken when the checkpoint was written.
	Value float64 `json:"value"`
	// Epoch is the number of epochs trained when it was taken.
	Epoch int `json:"epoch"`
}

// Better reports whether s is strictly better than o by s's mode (a nil o is beaten by
// any score; scores of different metrics or modes are not compared: false).
func (s *Score) Better(o *Score) bool {
	switch {
	case s == nil:
		return false
	case o == nil:
		return true
	case s.Metric != o.Metric || s.Mode != o.Mode:
		return false
	case s.Mode == ScoreMin:
		return s.Value < o.Value
	}
	return s.Value > o.Value
}

// validate checks the score's fields.
func (s *Score) validate() error {
	switch {
	case s.Metric == "":
		return errors.New("manifest: score.metric: empty")
	case s.Mode != ScoreMax && s.Mode != ScoreMin:
		return fmt.Errorf("manifest: score.mode %q: want max or min", s.Mode)
	case math.IsNaN(s.Value) || math.IsInf(s.Value, 0):
		return fmt.Errorf("manifest: score.value: not finite (%v)", s.Value)
	case s.Epoch < 0:
		return fmt.Errorf("manifest: score.epoch %d: negative", s.Epoch)
	}
	return nil
}

// EarlyStoppingState is where spec.training.earlyStopping stood after an epoch.
type EarlyStoppingState struct {
	// Epoch is the last epoch evaluated (epochs trained).
	Epoch int `json:"epoch"`
	// Best is the monitored metric's best value so far, reached after BestEpoch epochs
	// (0: none yet, every epoch so far was a warm-up epoch).
	Best      float64 `json:"best"`
	BestEpoch int     `json:"bestEpoch"`
	// Wait is the number of epochs since then that did not improve on Best.
	Wait int `json:"wait"`
}

// MaxManifestWorkers bounds len(RNGState.DropoutCalls).
const MaxManifestWorkers = 1 << 16

// RNGState records the random streams of a checkpoint. The data order needs nothing:
// every epoch's permutation is drawn from a PCG seeded with (seed, epoch).
type RNGState struct {
	// DropoutCalls[r] is how many gradient computations worker rank r had made: its
	// dropout masks of the k-th computation come from a PCG seeded with (seed+r, k).
	DropoutCalls []uint64 `json:"dropoutCalls,omitempty"`
}

// CheckpointPrefix is the key prefix of one checkpoint:
// "jobs/<jobID>/checkpoints/<step zero-padded to 12 digits>", so keys sort by step.
func CheckpointPrefix(jobID string, step int64) string {
	return fmt.Sprintf("jobs/%s/checkpoints/%012d", jobID, step)
}

// ManifestKey is the key of a checkpoint's manifest: CheckpointPrefix + "/manifest.json".
func ManifestKey(jobID string, step int64) string {
	return CheckpointPrefix(jobID, step) + "/manifest.json"
}

// File names of a job's audit and explanation report, which the chief writes under
// AuditPrefix whether or not the gate lets the model be exported (the coordinator reads
// ReportKey), and copies into the export.
const (
	// ReportFile is the report (report.json, see package audit).
	ReportFile = "report.json"
	// ModelCardFile is the Markdown model card.
	ModelCardFile = "model_card.md"
)

// AuditPrefix is the key prefix of a job's report: "jobs/<jobID>/audit/".
func AuditPrefix(jobID string) string { return "jobs/" + jobID + "/audit/" }

// ReportKey is the key of a job's report.json: AuditPrefix + ReportFile.
func ReportKey(jobID string) string { return AuditPrefix(jobID) + ReportFile }

// Validate checks the manifest's own consistency: a known format version, a job ID
// usable as one key segment, non-negative counters, finite metrics, and objects with
// valid keys, positive sizes and 64-hex-digit sha256 sums that cover the parameters
// [0, TotalParams) contiguously, without gaps or overlaps. The error names the field.
func (m *Manifest) Validate() error {
	if m == nil {
		return errors.New("manifest: nil")
	}
	if m.FormatVersion != ManifestFormatVersion {
		return fmt.Errorf("manifest: formatVersion %d: unsupported (want %d)", m.FormatVersion, ManifestFormatVersion)
	}
	if m.JobID == "" {
		return errors.New("manifest: jobId: empty")
	}
	if strings.Contains(m.JobID, "/") {
		return fmt.Errorf("manifest: jobId %q: contains '/'", m.JobID)
	}
	if err := ValidateKey(m.JobID); err != nil {
		return fmt.Errorf("manifest: jobId %q: %w", m.JobID, err)
	}
	if m.Step < 0 {
		return fmt.Errorf("manifest: step %d: negative", m.Step)
	}
	if m.Epoch < 0 {
		return fmt.Errorf("manifest: epoch %d: negative", m.Epoch)
	}
	if m.StepInEpoch < 0 {
		return fmt.Errorf("manifest: stepInEpoch %d: negative", m.StepInEpoch)
	}
	if m.TotalParams == 0 {
		return errors.New("manifest: totalParams: zero")
	}
	switch {
	case m.Workers < 0:
		return fmt.Errorf("manifest: workers %d: negative", m.Workers)
	case m.BatchSize < 0:
		return fmt.Errorf("manifest: batchSize %d: negative", m.BatchSize)
	case m.DataPosition < 0:
		return fmt.Errorf("manifest: dataPosition %d: negative", m.DataPosition)
	case m.TrainRows < 0:
		return fmt.Errorf("manifest: trainRows %d: negative", m.TrainRows)
	case math.IsNaN(m.TrainLossSum) || math.IsInf(m.TrainLossSum, 0):
		return fmt.Errorf("manifest: trainLossSum: not finite (%v)", m.TrainLossSum)
	case m.Consistency != "" && m.Consistency != "sync" && m.Consistency != "async" && m.Consistency != "bounded":
		return fmt.Errorf("manifest: consistency %q: want sync, async or bounded", m.Consistency)
	case m.RNG != nil && len(m.RNG.DropoutCalls) > MaxManifestWorkers:
		return fmt.Errorf("manifest: rng.dropoutCalls: %d entries, at most %d", len(m.RNG.DropoutCalls), MaxManifestWorkers)
	}
	if m.Score != nil {
		if err := m.Score.validate(); err != nil {
			return err
		}
	}
	if es := m.EarlyStopping; es != nil {
		switch {
		case es.Epoch < 0 || es.BestEpoch < 0 || es.Wait < 0 || es.BestEpoch > es.Epoch:
			return fmt.Errorf("manifest: earlyStopping: epoch %d, bestEpoch %d, wait %d: negative or out of order", es.Epoch, es.BestEpoch, es.Wait)
		case math.IsNaN(es.Best) || math.IsInf(es.Best, 0):
			return fmt.Errorf("manifest: earlyStopping.best: not finite (%v)", es.Best)
		}
	}
	for name, v := range m.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("manifest: metrics[%q]: not finite (%v)", name, v)
		}
	}
	if len(m.Objects) == 0 {
		return errors.New("manifest: objects: empty")
	}
	keys := make(map[string]int, len(m.Objects))
	order := make([]int, len(m.Objects))
	for i, o := range m.Objects {
		order[i] = i
		if err := ValidateKey(o.Key); err != nil {
			return fmt.Errorf("manifest: objects[%d].key: %w", i, err)
		}
		if j, dup := keys[o.Key]; dup {
			return fmt.Errorf("manifest: objects[%d].key %q: duplicate of objects[%d]", i, o.Key, j)
		}
		keys[o.Key] = i
		if o.Shard < 0 {
			return fmt.Errorf("manifest: objects[%d] (%s).shard %d: negative", i, o.Key, o.Shard)
		}
		if o.Size <= 0 {
			return fmt.Errorf("manifest: objects[%d] (%s).size %d: must be positive", i, o.Key, o.Size)
		}
		if !isHexSHA256(o.SHA256) {
			return fmt.Errorf("manifest: objects[%d] (%s).sha256 %q: want 64 lowercase hex digits", i, o.Key, o.SHA256)
		}
		if o.Length == 0 {
			return fmt.Errorf("manifest: objects[%d] (%s).length: zero", i, o.Key)
		}
		if o.Offset > math.MaxUint64-o.Length {
			return fmt.Errorf("manifest: objects[%d] (%s): offset %d + length %d overflows", i, o.Key, o.Offset, o.Length)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return m.Objects[order[a]].Offset < m.Objects[order[b]].Offset })
	var next uint64
	for _, i := range order {
		o := m.Objects[i]
		switch {
		case o.Offset > next:
			return fmt.Errorf("manifest: objects: parameters [%d, %d) are not covered (objects[%d] (%s) starts at %d)", next, o.Offset, i, o.Key, o.Offset)
		case o.Offset < next:
			return fmt.Errorf("manifest: objects[%d] (%s): range [%d, %d) overlaps the parameters before %d", i, o.Key, o.Offset, o.Offset+o.Length, next)
		}
		next = o.Offset + o.Length
	}
	if next != m.TotalParams {
		if next < m.TotalParams {
			return fmt.Errorf("manifest: objects: parameters [%d, %d) are not covered (totalParams %d)", next, m.TotalParams, m.TotalParams)
		}
		return fmt.Errorf("manifest: objects: cover [0, %d), beyond totalParams %d", next, m.TotalParams)
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// WriteManifest validates m and stores it at ManifestKey(m.JobID, m.Step) with
// PutIfAbsent. Call it only after every object of the checkpoint is stored: the
// manifest is the commit point. A manifest already at that key is never replaced; the
// error then wraps ErrExists. A FormatVersion of 0 is written as ManifestFormatVersion
// (m itself is not modified).
func WriteManifest(ctx context.Context, b Blob, m *Manifest) (key string, err error) {
	if m == nil {
		return "", errors.New("manifest: nil")
	}
	c := *m
	if c.FormatVersion == 0 {
		c.FormatVersion = ManifestFormatVersion
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("write manifest: %w", err)
	}
	data, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return "", fmt.Errorf("write manifest for job %q step %d: encode: %w", c.JobID, c.Step, err)
	}
	data = append(data, '\n')
	key = ManifestKey(c.JobID, c.Step)
	if err := b.PutIfAbsent(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return "", fmt.Errorf("write manifest %q: %w", key, err)
	}
	slog.Info("checkpoint manifest committed", "key", key, "job", c.JobID, "step", c.Step,
		"generation", c.Generation, "objects", len(c.Objects), "totalParams", c.TotalParams)
	return key, nil
}

// DecodeManifest strictly decodes one JSON manifest from r (unknown fields, trailing
// data and more than MaxManifestSize bytes are errors) and validates it.
func DecodeManifest(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read: %w", err)
	}
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("manifest: larger than %d bytes", MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("manifest: decode: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// ReadManifest reads and validates the manifest stored at key. Besides the checks of
// DecodeManifest, key must be the manifest's own ManifestKey, so a manifest copied or
// renamed to another checkpoint's place is refused.
func ReadManifest(ctx context.Context, b Blob, key string) (*Manifest, error) {
	rc, err := b.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read manifest %q: %w", key, err)
	}
	defer rc.Close()
	m, err := DecodeManifest(rc)
	if err != nil {
		return nil, fmt.Errorf("read manifest %q: %w", key, err)
	}
	if want := ManifestKey(m.JobID, m.Step); key != want {
		return nil, fmt.Errorf("read manifest %q: content is job %q step %d, whose manifest key is %q", key, m.JobID, m.Step, want)
	}
	return m, nil
}

// VerifyManifestObjects checks that every object of m exists with the recorded size
// and sha256. The error names the first bad object; a missing one wraps ErrNotFound.
func VerifyManifestObjects(ctx context.Context, b Blob, m *Manifest) error {
	if m == nil {
		return errors.New("verify manifest: nil")
	}
	for i, o := range m.Objects {
		if err := verifyObject(ctx, b, o); err != nil {
			return fmt.Errorf("verify manifest of job %q step %d: objects[%d] (shard %d, %q): %w", m.JobID, m.Step, i, o.Shard, o.Key, err)
		}
	}
	return nil
}

func verifyObject(ctx context.Context, b Blob, o ManifestObject) error {
	info, err := b.Stat(ctx, o.Key)
	if err != nil {
		return err
	}
	if info.Size != o.Size {
		return fmt.Errorf("size %d, manifest records %d", info.Size, o.Size)
	}
	rc, err := b.Get(ctx, o.Key)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != o.Size {
		return fmt.Errorf("read %d bytes, manifest records %d", n, o.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.SHA256 {
		return fmt.Errorf("sha256 %s, manifest records %s", got, o.SHA256)
	}
	return nil
}
