package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// manifestName is the last key segment of every checkpoint manifest.
const manifestName = "manifest.json"

// CheckpointsRoot is the key prefix under which all checkpoints of a job live:
// "jobs/<jobID>/checkpoints/".
func CheckpointsRoot(jobID string) string { return "jobs/" + jobID + "/checkpoints/" }

// KeyOfURI returns the key of b that uri names (the inverse of b.URI). A URI of
// another store, bucket or prefix is an error naming both.
func KeyOfURI(b Blob, uri string) (string, error) {
	const probe = "k"
	base := strings.TrimSuffix(b.URI(probe), probe)
	key, ok := strings.CutPrefix(uri, base)
	if !ok {
		return "", fmt.Errorf("storage: %q is not an object of this store (its URIs start with %q)", uri, base)
	}
	if err := ValidateKey(key); err != nil {
		return "", fmt.Errorf("storage: %q: %w", uri, err)
	}
	return key, nil
}

// OpenCheckpoint reads the manifest that uri names (a URI of b, as the job record
// holds it) and verifies that every object it lists exists with the recorded size and
// sha256. The error names the manifest or the first bad object; a missing object wraps
// ErrNotFound. Nothing is written.
func OpenCheckpoint(ctx context.Context, b Blob, uri string) (*Manifest, error) {
	key, err := KeyOfURI(b, uri)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", uri, err)
	}
	m, err := ReadManifest(ctx, b, key)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", uri, err)
	}
	if err := VerifyManifestObjects(ctx, b, m); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", uri, err)
	}
	return m, nil
}

// ReadCheckpointObject reads one object of a manifest into memory and checks its size
// and sha256 against the manifest; it never reads more than o.Size+1 bytes. A missing
// object wraps ErrNotFound.
func ReadCheckpointObject(ctx context.Context, b Blob, o ManifestObject) ([]byte, error) {
	if o.Size <= 0 {
		return nil, fmt.Errorf("checkpoint object %q: size %d must be positive", o.Key, o.Size)
	}
	rc, err := b.Get(ctx, o.Key)
	if err != nil {
		return nil, fmt.Errorf("checkpoint object %q (shard %d): %w", o.Key, o.Shard, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(min(o.Size, 64<<20)))
	n, err := io.Copy(&buf, io.LimitReader(rc, o.Size+1))
	if err != nil {
		return nil, fmt.Errorf("checkpoint object %q (shard %d): read: %w", o.Key, o.Shard, err)
	}
	if n != o.Size {
		return nil, fmt.Errorf("checkpoint object %q (shard %d): %d bytes, manifest records %d (truncated or replaced)", o.Key, o.Shard, n, o.Size)
	}
	sum := sha256.Sum256(buf.Bytes())
	if got := hex.EncodeToString(sum[:]); got != o.SHA256 {
		return nil, fmt.Errorf("checkpoint object %q (shard %d): sha256 %s, manifest records %s (corrupt)", o.Key, o.Shard, got, o.SHA256)
	}
	return buf.Bytes(), nil
}

// CheckpointInfo describes one committed checkpoint of a job.
type CheckpointInfo struct {
	// ManifestKey is the manifest's key; URI its URI in the store.
	ManifestKey string `json:"manifestKey"`
	URI         string `json:"uri"`
	Step        int64  `json:"step"`
	Epoch       int    `json:"epoch"`
	StepInEpoch int64  `json:"stepInEpoch"`
	Generation  uint64 `json:"generation"`
	// Created is when the manifest was written.
	Created time.Time `json:"created"`
	// Size is the bytes of the manifest and every object it lists.
	Size    int64 `json:"sizeBytes"`
	Objects int   `json:"objects"`
	// Score is the manifest's score (nil: none); Best marks the best-scored checkpoint
	// of the listing (BestCheckpoint).
	Score *Score `json:"score,omitempty"`
	Best  bool   `json:"best,omitempty"`
	// Error is set (and the fields above from the listing only) when the manifest
	// cannot be read or decoded.
	Error string `json:"error,omitempty"`
}

// checkpointDir is one directory under a job's CheckpointsRoot.
type checkpointDir struct {
	name     string // the segment after the root: the zero-padded step
	objects  []ObjectInfo
	manifest *ObjectInfo
}

// listCheckpointDirs groups the objects under root by their first segment, sorted by
// that segment (zero-padded steps sort by step).
func listCheckpointDirs(ctx context.Context, b Blob, root string) ([]*checkpointDir, error) {
	objs, err := b.List(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	byName := map[string]*checkpointDir{}
	var dirs []*checkpointDir
	for i, o := range objs {
		dir, file, ok := strings.Cut(strings.TrimPrefix(o.Key, root), "/")
		if !ok {
			continue
		}
		d := byName[dir]
		if d == nil {
			d = &checkpointDir{name: dir}
			byName[dir] = d
			dirs = append(dirs, d)
		}
		d.objects = append(d.objects, o)
		if file == manifestName {
			d.manifest = &objs[i]
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].name < dirs[j].name })
	return dirs, nil
}

// ListCheckpoints returns the committed checkpoints of a job (those with a manifest),
// oldest first. Each manifest is read and validated; one that cannot be is listed with
// Error set rather than failing the listing.
func ListCheckpoints(ctx context.Context, b Blob, jobID string) ([]CheckpointInfo, error) {
	if err := ValidateKey(jobID); err != nil || strings.Contains(jobID, "/") {
		return nil, fmt.Errorf("list checkpoints: job id %q: not a single key segment", jobID)
	}
	dirs, err := listCheckpointDirs(ctx, b, CheckpointsRoot(jobID))
	if err != nil {
		return nil, fmt.Errorf("list checkpoints of job %s: %w", jobID, err)
	}
	sizes := map[string]int64{}
	out := []CheckpointInfo{}
	for _, d := range dirs {
		if d.manifest == nil {
			continue
		}
		for _, o := range d.objects {
			sizes[o.Key] = o.Size
		}
		info := CheckpointInfo{ManifestKey: d.manifest.Key, URI: b.URI(d.manifest.Key), Created: d.manifest.ModTime, Size: d.manifest.Size}
		m, err := ReadManifest(ctx, b, d.manifest.Key)
		if err != nil {
			info.Error = err.Error()
			out = append(out, info)
			continue
		}
		info.Step, info.Epoch, info.StepInEpoch, info.Generation = m.Step, m.Epoch, m.StepInEpoch, m.Generation
		info.Objects, info.Score = len(m.Objects), m.Score
		if m.CreatedUnixNano > 0 {
			info.Created = time.Unix(0, m.CreatedUnixNano).UTC()
		}
		for _, o := range m.Objects {
			info.Size += o.Size
		}
		out = append(out, info)
	}
	if best := BestCheckpoints(out, 1); len(best) == 1 {
		for i := range out {
			out[i].Best = out[i].ManifestKey == best[0].ManifestKey
		}
	}
	return out, nil
}

// BestCheckpoints returns the k best-scored checkpoints of infos, best first: those with
// a score and no error, ranked by Score.Better; of equal scores the earlier step ranks
// first (it reached the score first). Scores of another metric or mode than the newest
// scored checkpoint's are left out.
func BestCheckpoints(infos []CheckpointInfo, k int) []CheckpointInfo {
	var scored []CheckpointInfo
	var ref *Score
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].Error == "" && infos[i].Score != nil {
			ref = infos[i].Score
			break
		}
	}
	for _, in := range infos {
		if in.Error == "" && in.Score != nil && in.Score.Metric == ref.Metric && in.Score.Mode == ref.Mode {
			scored = append(scored, in)
		}
	}
	sort.SliceStable(scored, func(i, j int) bool {
		a, b := scored[i], scored[j]
		if a.Score.Better(b.Score) || b.Score.Better(a.Score) {
			return a.Score.Better(b.Score)
		}
		return a.Step < b.Step
	})
	return scored[:min(k, len(scored))]
}

// uploadAborter is implemented by stores with multipart uploads (S3).
type uploadAborter interface {
	AbortStaleUploadsUnder(ctx context.Context, keyPrefix string, olderThan time.Duration) (int, error)
}

// GCConfig configures CollectCheckpoints.
type GCConfig struct {
	// JobID names the job whose checkpoints are collected.
	JobID string
	// Keep is how many committed checkpoints to keep, newest first (at least 1).
	Keep int
	// KeepBest is how many of the best-scored committed checkpoints (BestCheckpoints)
	// are kept besides the newest Keep (0: none).
	KeepBest int
	// Protect lists manifest keys that are never deleted whatever Keep says: the one
	// the job record (Raft) points at, and any it may still point at.
	Protect []string
	// KeepFromStep, when positive, leaves every checkpoint directory at or after that
	// step alone, committed or not, whatever Keep says. A chief passes the oldest
	// checkpoint it still needs (the one the job record was last seen at), so a chief
	// that was paused and wakes after its job was requeued never deletes what the new
	// run wrote since (its listing may be newer than its view of the record).
	KeepFromStep int64
	// Grace is the age below which objects without a committed manifest are left alone
	// (a checkpoint being written has no manifest yet).
	Grace time.Duration
	// UploadGrace is the age of an incomplete multipart upload after which it is
	// aborted (stores with multipart uploads only; 0: Grace).
	UploadGrace time.Duration
	// Now is the current time (zero: time.Now()).
	Now time.Time
	// Logger receives what was deleted (nil: slog.Default()).
	Logger *slog.Logger
}

// GCResult says what CollectCheckpoints did.
type GCResult struct {
	// Kept and Deleted are the manifest keys of the committed checkpoints kept and
	// deleted.
	Kept, Deleted []string
	// Orphans is the number of objects without a committed manifest deleted.
	Orphans int
	// AbortedUploads is the number of stale multipart uploads aborted.
	AbortedUploads int
}

// CollectCheckpoints applies a job's checkpoint retention: it keeps the newest Keep
// committed checkpoints, the KeepBest best-scored ones (every committed manifest is read
// for its score, so the ranking is the store's, whichever run wrote them), every
// protected one and everything at or after KeepFromStep, deletes the other committed ones
// (manifest first, so a half-deleted checkpoint is never taken for a committed one),
// deletes objects in checkpoint directories without a manifest once they are older
// than Grace, and aborts the job's checkpoint multipart uploads older than UploadGrace
// where the store has them. Objects named by a kept manifest are never deleted, wherever they live. It
// goes on after a failed delete and returns the errors joined.
func CollectCheckpoints(ctx context.Context, b Blob, cfg GCConfig) (GCResult, error) {
	var res GCResult
	switch {
	case cfg.Keep < 1:
		return res, fmt.Errorf("checkpoint gc: keep %d: must be at least 1", cfg.Keep)
	case cfg.KeepBest < 0:
		return res, fmt.Errorf("checkpoint gc: keepBest %d: negative", cfg.KeepBest)
	case cfg.KeepFromStep < 0:
		return res, fmt.Errorf("checkpoint gc: keepFromStep %d: negative", cfg.KeepFromStep)
	case cfg.Grace < 0 || cfg.UploadGrace < 0:
		return res, fmt.Errorf("checkpoint gc: grace %v / upload grace %v: negative", cfg.Grace, cfg.UploadGrace)
	case ValidateKey(cfg.JobID) != nil || strings.Contains(cfg.JobID, "/"):
		return res, fmt.Errorf("checkpoint gc: job id %q: not a single key segment", cfg.JobID)
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	if cfg.UploadGrace == 0 {
		cfg.UploadGrace = cfg.Grace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("job", cfg.JobID)
	root := CheckpointsRoot(cfg.JobID)
	dirs, err := listCheckpointDirs(ctx, b, root)
	if err != nil {
		return res, fmt.Errorf("checkpoint gc of job %s: %w", cfg.JobID, err)
	}
	protected := map[string]bool{}
	for _, k := range cfg.Protect {
		protected[k] = true
	}
	var committed []*checkpointDir
	for _, d := range dirs {
		if d.manifest != nil {
			committed = append(committed, d)
		}
	}
	best := map[string]bool{}
	if cfg.KeepBest > 0 {
		var infos []CheckpointInfo
		for _, d := range committed {
			m, err := ReadManifest(ctx, b, d.manifest.Key)
			if err != nil {
				// Unranked: kept only when newest or protected (an unreadable manifest
				// among the kept ones leaves its directory alone, below).
				continue
			}
			infos = append(infos, CheckpointInfo{ManifestKey: d.manifest.Key, Step: m.Step, Score: m.Score})
		}
		for _, in := range BestCheckpoints(infos, cfg.KeepBest) {
			best[in.ManifestKey] = true
		}
	}
	var keepFrom string // directories at or after it are left alone ("": none)
	if cfg.KeepFromStep > 0 {
		keepFrom = fmt.Sprintf("%012d", cfg.KeepFromStep)
	}
	bounded := func(d *checkpointDir) bool { return keepFrom != "" && d.name >= keepFrom }
	keepDir := map[string]bool{}
	referenced := map[string]bool{}
	for i, d := range committed {
		if i < len(committed)-cfg.Keep && !protected[d.manifest.Key] && !best[d.manifest.Key] && !bounded(d) {
			continue
		}
		keepDir[d.name] = true
		res.Kept = append(res.Kept, d.manifest.Key)
		referenced[d.manifest.Key] = true
		m, err := ReadManifest(ctx, b, d.manifest.Key)
		if err != nil {
			// Unreadable: keep its whole directory, delete nothing it might need.
			log.Warn("checkpoint gc: kept manifest unreadable; its directory is left alone", "manifest", d.manifest.Key, "err", err)
			for _, o := range d.objects {
				referenced[o.Key] = true
			}
			continue
		}
		for _, o := range m.Objects {
			referenced[o.Key] = true
		}
	}
	var errs []error
	del := func(key string) bool {
		if referenced[key] {
			return false
		}
		if err := b.Delete(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint gc: delete %s: %w", key, err))
			return false
		}
		return true
	}
	cutoff := cfg.Now.Add(-cfg.Grace)
	for _, d := range dirs {
		switch {
		case keepDir[d.name], bounded(d):
			continue
		case d.manifest != nil:
			if !del(d.manifest.Key) {
				continue // never leave objects of a manifest that is still there
			}
			res.Deleted = append(res.Deleted, d.manifest.Key)
			n := 0
			for _, o := range d.objects {
				if o.Key != d.manifest.Key && del(o.Key) {
					n++
				}
			}
			log.Info("checkpoint deleted by retention", "manifest", d.manifest.Key, "objects", n, "keep", cfg.Keep, "keep_best", cfg.KeepBest)
		default:
			n := 0
			for _, o := range d.objects {
				if o.ModTime.Before(cutoff) && del(o.Key) {
					n++
				}
			}
			if n > 0 {
				res.Orphans += n
				log.Info("uncommitted checkpoint objects deleted", "dir", root+d.name, "objects", n, "grace", cfg.Grace)
			}
		}
	}
	if a, ok := b.(uploadAborter); ok {
		n, err := a.AbortStaleUploadsUnder(ctx, root, cfg.UploadGrace)
		res.AbortedUploads = n
		if err != nil {
			errs = append(errs, fmt.Errorf("checkpoint gc: %w", err))
		}
	}
	return res, errors.Join(errs...)
}

// DiscardUncommitted deletes the manifests of a job's checkpoints newer than
// pointerStep (-1: every manifest), with their objects. The job record is the only
// truth about the latest checkpoint, so such manifests are leftovers of a run that
// stopped after writing a manifest and before the record pointed at it; a resumed run
// reaching that step again must be able to commit its own. It returns the manifest
// keys it deleted.
func DiscardUncommitted(ctx context.Context, b Blob, jobID string, pointerStep int64) ([]string, error) {
	if ValidateKey(jobID) != nil || strings.Contains(jobID, "/") {
		return nil, fmt.Errorf("discard uncommitted checkpoints: job id %q: not a single key segment", jobID)
	}
	root := CheckpointsRoot(jobID)
	dirs, err := listCheckpointDirs(ctx, b, root)
	if err != nil {
		return nil, fmt.Errorf("discard uncommitted checkpoints of job %s: %w", jobID, err)
	}
	var deleted []string
	for _, d := range dirs {
		if d.manifest == nil || (pointerStep >= 0 && d.name <= fmt.Sprintf("%012d", pointerStep)) {
			continue
		}
		if err := b.Delete(ctx, d.manifest.Key); err != nil {
			return deleted, fmt.Errorf("discard uncommitted checkpoint %s: %w", d.manifest.Key, err)
		}
		deleted = append(deleted, d.manifest.Key)
		for _, o := range d.objects {
			if o.Key == d.manifest.Key {
				continue
			}
			if err := b.Delete(ctx, o.Key); err != nil {
				return deleted, fmt.Errorf("discard uncommitted checkpoint object %s: %w", o.Key, err)
			}
		}
	}
	return deleted, nil
}

// manifestKeyRE matches the key of a checkpoint manifest at the end of a URI.
var manifestKeyRE = regexp.MustCompile(`(^|/)(jobs/[^/]+/checkpoints/[0-9]{12}/manifest\.json)$`)

// SplitManifestURI splits the URI of a checkpoint manifest into the URI of its store
// ("file:///dir/" or "s3://bucket/prefix/") and the manifest's key
// ("jobs/<job>/checkpoints/<step>/manifest.json").
func SplitManifestURI(uri string) (base, key string, err error) {
	m := manifestKeyRE.FindStringSubmatch(uri)
	if m == nil {
		return "", "", fmt.Errorf("storage: %q is not a checkpoint manifest URI (…/jobs/<job>/checkpoints/<step>/manifest.json)", uri)
	}
	key = m[2]
	base = strings.TrimSuffix(uri, key)
	if !strings.HasPrefix(base, "file:///") && !strings.HasPrefix(base, "s3://") {
		return "", "", fmt.Errorf("storage: %q: want a file:/// or s3:// URI", uri)
	}
	if err := ValidateKey(key); err != nil {
		return "", "", fmt.Errorf("storage: %q: %w", uri, err)
	}
	return base, key, nil
}

// OpenManifestStore opens the store that holds the checkpoint manifest a job record
// points at, and returns it with the manifest's key: for "file:///dir/jobs/…" a Local
// rooted at /dir (which must exist), for "s3://bucket/prefix/jobs/…" an S3 store of
// that bucket and prefix, reached with s3's endpoint, credentials, region and
// addressing style (s3.Bucket and s3.Prefix are ignored). The manifest itself is
// opened with OpenURI first, so a missing one is an error wrapping ErrNotFound.
func OpenManifestStore(ctx context.Context, uri string, s3 S3Config) (Blob, string, error) {
	base, key, err := SplitManifestURI(uri)
	if err != nil {
		return nil, "", err
	}
	rc, err := OpenURI(ctx, uri, s3)
	if err != nil {
		return nil, "", err
	}
	_ = rc.Close()
	switch {
	case strings.HasPrefix(base, "file://"):
		dir := strings.TrimPrefix(base, "file://")
		if dir == "" || !filepath.IsAbs(filepath.FromSlash(dir)) {
			return nil, "", fmt.Errorf("storage: %q: want an absolute file:/// URI", uri)
		}
		l, err := NewLocal(filepath.FromSlash(dir))
		if err != nil {
			return nil, "", err
		}
		return l, key, nil
	case strings.HasPrefix(base, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(base, "s3://"), "/")
		s3.Bucket, s3.Prefix, s3.CreateBucket = bucket, prefix, false
		st, err := NewS3(ctx, s3)
		if err != nil {
			return nil, "", fmt.Errorf("storage: open the store of %q: %w", uri, err)
		}
		return st, key, nil
	}
	return nil, "", fmt.Errorf("storage: %q: unsupported URI (want file:// or s3://)", uri)
}
