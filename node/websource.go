package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/tfevents"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/web"
	"github.com/cohort-dev/cohort/worker"
)

// webSource backs the dashboard with the coordinator's gRPC API, like any other API
// client: whichever coordinator serves the dashboard forwards to the leader as needed.
// What the API does not serve (the chief's per-epoch TensorBoard records, the listing
// of a job's checkpoint manifests) it reads from the coordinator's storage, for jobs
// the API has just answered for.
type webSource struct {
	jobs     cohortv1.JobServiceClient
	cluster  cohortv1.ClusterServiceClient
	searches cohortv1.SearchServiceClient
	// stale makes every read a local read of the coordinator's replicated state
	// (api.StaleReadHeader), never forwarded to the leader.
	stale bool
	// store is the coordinator's storage, the node agents' (nil: none, and the job page
	// says that epochs and checkpoints are not available).
	store storage.Blob
}

// callCtx marks ctx's calls as stale reads when s.stale is set.
func (s *webSource) callCtx(ctx context.Context) context.Context {
	if !s.stale {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, api.StaleReadHeader, "true")
}

var _ web.Source = (*webSource)(nil)

// newWebSource returns a dashboard Source over conn.
func newWebSource(conn grpc.ClientConnInterface) *webSource {
	return &webSource{jobs: cohortv1.NewJobServiceClient(conn), cluster: cohortv1.NewClusterServiceClient(conn),
		searches: cohortv1.NewSearchServiceClient(conn)}
}

// ListJobs implements web.Source.
func (s *webSource) ListJobs(ctx context.Context) ([]*cohortv1.Job, error) {
	resp, err := s.jobs.ListJobs(s.callCtx(ctx), &cohortv1.ListJobsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return resp.GetJobs(), nil
}

// GetJob implements web.Source; an unknown job is web.ErrNotFound.
func (s *webSource) GetJob(ctx context.Context, id string) (*cohortv1.Job, error) {
	resp, err := s.jobs.GetJob(s.callCtx(ctx), &cohortv1.GetJobRequest{Id: id})
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound:
			return nil, web.ErrNotFound // the caller names the job
		case codes.InvalidArgument: // not a job ID
			return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return resp.GetJob(), nil
}

// ListNodes implements web.Source.
func (s *webSource) ListNodes(ctx context.Context) ([]*cohortv1.Node, error) {
	resp, err := s.jobs.ListNodes(s.callCtx(ctx), &cohortv1.ListNodesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return resp.GetNodes(), nil
}

// Peers implements web.Source.
func (s *webSource) Peers(ctx context.Context) ([]*cohortv1.Peer, error) {
	resp, err := s.cluster.ListPeers(s.callCtx(ctx), &cohortv1.ListPeersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	return resp.GetPeers(), nil
}

var _ web.ReportSource = (*webSource)(nil)

// JobReport implements web.ReportSource: the job's report.json through GetJobReport; a
// job without a report (or an unknown one) is web.ErrNotFound.
func (s *webSource) JobReport(ctx context.Context, id string) ([]byte, error) {
	resp, err := s.jobs.GetJobReport(s.callCtx(ctx), &cohortv1.GetJobReportRequest{Id: id})
	if err != nil {
		if c := status.Code(err); c == codes.NotFound || c == codes.FailedPrecondition {
			return nil, fmt.Errorf("job %q report: %s: %w", id, status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("job %q report: %w", id, err)
	}
	return resp.GetReportJson(), nil
}

var (
	_ web.LogSource        = (*webSource)(nil)
	_ web.EpochSource      = (*webSource)(nil)
	_ web.CheckpointSource = (*webSource)(nil)
)

// JobLogs implements web.LogSource with the JobLogs call `cohort job logs` makes.
func (s *webSource) JobLogs(ctx context.Context, req web.LogRequest, emit func([]web.LogLine) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.jobs.JobLogs(s.callCtx(ctx), &cohortv1.JobLogsRequest{
		Id: req.ID, Task: req.Task, Tail: int32(min(req.Tail, math.MaxInt32)), Follow: req.Follow})
	if err != nil {
		return logsError(req.ID, err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return logsError(req.ID, err)
		}
		lines := make([]web.LogLine, 0, len(resp.GetLines()))
		for _, l := range resp.GetLines() {
			lines = append(lines, web.LogLine{Task: l.GetTask(), Generation: l.GetGeneration(), Text: l.GetText()})
		}
		if err := emit(lines); err != nil {
			return err
		}
	}
}

// logsError maps a JobLogs error: an unknown job is web.ErrNotFound; otherwise the
// status message is kept, for people ("this coordinator has no storage to read task
// logs from …").
func logsError(id string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound, codes.InvalidArgument:
		return fmt.Errorf("job %s: %s: %w", id, st.Message(), web.ErrNotFound)
	case codes.Canceled:
		return fmt.Errorf("logs of job %s: %w", id, context.Canceled)
	}
	return fmt.Errorf("logs of job %s: %s", id, st.Message())
}

// Bounds of what the dashboard reads from storage for one job page.
const (
	// maxEventFiles bounds the TensorBoard event files read per job (the newest).
	maxEventFiles = 64
	// maxEventFileBytes bounds one event file.
	maxEventFileBytes = 16 << 20
)

// errNoStore is the dashboard's answer on a coordinator without storage.
var errNoStore = fmt.Errorf("this coordinator has no storage (start it with --storage-dir, or --s3-endpoint and --s3-bucket, naming the node agents' storage): %w", web.ErrUnavailable)

// JobEpochs implements web.EpochSource from the chief's TensorBoard event files
// (worker.TensorBoardPrefix): one event per scalar with step = the epoch number. A
// resumed run writes a new file, so the files are merged oldest first (their names
// start with the creation time) and a later file's value of an epoch wins. A file cut
// short yields the events before the cut.
func (s *webSource) JobEpochs(ctx context.Context, id string) ([]web.EpochRecord, error) {
	if s.store == nil {
		return nil, errNoStore
	}
	if err := storage.ValidateKey(id); err != nil || strings.Contains(id, "/") {
		return nil, fmt.Errorf("job id %q: %w", id, web.ErrNotFound)
	}
	prefix := worker.TensorBoardPrefix(id)
	objs, err := s.store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	var files []storage.ObjectInfo
	for _, o := range objs {
		if name := strings.TrimPrefix(o.Key, prefix); strings.HasPrefix(name, "events.out.tfevents.") && !strings.Contains(name, "/") {
			files = append(files, o)
		}
	}
	slices.SortFunc(files, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	if len(files) > maxEventFiles {
		files = files[len(files)-maxEventFiles:]
	}
	byEpoch := map[int64]*web.EpochRecord{}
	for _, f := range files {
		events, err := s.readEvents(ctx, f)
		if err != nil && len(events) == 0 {
			return nil, err
		}
		for _, ev := range events {
			if len(ev.Scalars) == 0 || ev.Step <= 0 || ev.Step > math.MaxInt32 {
				continue
			}
			r := byEpoch[ev.Step]
			if r == nil {
				r = &web.EpochRecord{Epoch: int32(ev.Step), Scalars: map[string]float64{}}
				byEpoch[ev.Step] = r
			}
			for k, v := range ev.Scalars {
				r.Scalars[k] = float32Decimal(v)
			}
			if ev.WallTime > 0 {
				if t := time.Unix(0, int64(ev.WallTime*1e9)).UTC(); t.After(r.Time) {
					r.Time = t
				}
			}
		}
	}
	out := make([]web.EpochRecord, 0, len(byEpoch))
	for _, r := range byEpoch {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b web.EpochRecord) int { return int(a.Epoch) - int(b.Epoch) })
	return out, nil
}

// float32Decimal returns the shortest decimal that a float32 scalar (as event files
// store them) reads back from, as a float64: 0.001 rather than 0.0010000000474974513.
func float32Decimal(v float64) float64 {
	f, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', -1, 32), 64)
	if err != nil {
		return v
	}
	return f
}

// readEvents reads one event file, at most maxEventFileBytes of it.
func (s *webSource) readEvents(ctx context.Context, f storage.ObjectInfo) ([]tfevents.Event, error) {
	if f.Size > maxEventFileBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d the dashboard reads", f.Key, f.Size, maxEventFileBytes)
	}
	rc, err := s.store.Get(ctx, f.Key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Key, err)
	}
	defer rc.Close()
	events, err := tfevents.ReadEvents(io.LimitReader(rc, maxEventFileBytes))
	if err != nil {
		return events, fmt.Errorf("read %s: %w", f.Key, err)
	}
	return events, nil
}

// manifestSummary is what the dashboard reads of a checkpoint manifest. It is decoded
// leniently, unlike storage.DecodeManifest: a manifest written by a newer worker
// (with fields this build does not know, such as a score) is still listed.
type manifestSummary struct {
	JobID           string             `json:"jobId"`
	Step            int64              `json:"step"`
	Epoch           int32              `json:"epoch"`
	StepInEpoch     int64              `json:"stepInEpoch"`
	Generation      uint64             `json:"generation"`
	Metrics         map[string]float64 `json:"metrics"`
	CreatedUnixNano int64              `json:"createdUnixNano"`
	Objects         []struct {
		Size int64 `json:"size"`
	} `json:"objects"`
}

// JobCheckpoints implements web.CheckpointSource: the manifests under the job's
// storage.CheckpointsRoot, oldest first, each with its metrics and, when the manifest
// carries one, its score. The one j.Checkpoint names is Latest.
func (s *webSource) JobCheckpoints(ctx context.Context, j *cohortv1.Job) ([]web.CheckpointRecord, error) {
	if s.store == nil {
		return nil, errNoStore
	}
	id := j.GetId()
	if err := storage.ValidateKey(id); err != nil || strings.Contains(id, "/") {
		return nil, fmt.Errorf("job id %q: %w", id, web.ErrNotFound)
	}
	latestKey := ""
	if p := j.GetCheckpoint(); p != "" {
		if _, key, err := storage.SplitManifestURI(p); err == nil {
			latestKey = key
		}
	}
	root := storage.CheckpointsRoot(id)
	objs, err := s.store.List(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	type dir struct {
		manifest *storage.ObjectInfo
		size     int64 // of the objects listed under it
	}
	dirs := map[string]*dir{}
	var names []string
	for i, o := range objs {
		name, file, ok := strings.Cut(strings.TrimPrefix(o.Key, root), "/")
		if !ok {
			continue
		}
		d := dirs[name]
		if d == nil {
			d = &dir{}
			dirs[name] = d
			names = append(names, name)
		}
		d.size += o.Size
		if file == "manifest.json" {
			d.manifest = &objs[i]
		}
	}
	slices.Sort(names)
	out := []web.CheckpointRecord{}
	for _, name := range names {
		d := dirs[name]
		if d.manifest == nil {
			continue // not committed
		}
		r := web.CheckpointRecord{URI: s.store.URI(d.manifest.Key), Created: d.manifest.ModTime, SizeBytes: d.size,
			Latest: d.manifest.Key == latestKey}
		if step, err := strconv.ParseInt(name, 10, 64); err == nil {
			r.Step = step
		}
		if err := s.readManifest(ctx, d.manifest.Key, &r); err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

// readManifest fills r from the manifest at key.
func (s *webSource) readManifest(ctx context.Context, key string, r *web.CheckpointRecord) error {
	rc, err := s.store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, storage.MaxManifestSize+1))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	if len(data) > storage.MaxManifestSize {
		return fmt.Errorf("manifest larger than %d bytes", storage.MaxManifestSize)
	}
	var m manifestSummary
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("decode manifest: %w", err)
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(data, &fields) // an object: the decode above succeeded
	r.Step, r.Epoch, r.StepInEpoch, r.Generation = m.Step, m.Epoch, m.StepInEpoch, m.Generation
	r.Metrics, r.Objects = m.Metrics, len(m.Objects)
	if m.CreatedUnixNano > 0 {
		r.Created = time.Unix(0, m.CreatedUnixNano).UTC()
	}
	var objects int64
	for _, o := range m.Objects {
		objects += o.Size
	}
	r.SizeBytes = max(r.SizeBytes, objects+int64(len(data)))
	r.Score, r.ScoreMetric, r.ScoreMode = manifestScore(fields)
	return nil
}

// manifestScore reads a checkpoint's score from its manifest's fields, in whichever
// of the forms a worker may write: "score": 0.81 with "scoreMetric"/"scoreMode" (or
// "scoreBy": "val_auc" | {"metric", "mode"}) beside it, or "score": {"value" (or
// "score"), "metric", "mode"}. No score (or one that is not a number) is nil.
func manifestScore(fields map[string]json.RawMessage) (score *float64, metric, mode string) {
	str := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	}
	num := func(raw json.RawMessage) *float64 {
		var f float64
		if raw == nil || json.Unmarshal(raw, &f) != nil {
			return nil
		}
		return &f
	}
	fromObject := func(raw json.RawMessage) (map[string]json.RawMessage, bool) {
		var o map[string]json.RawMessage
		return o, raw != nil && json.Unmarshal(raw, &o) == nil && o != nil
	}
	raw := fields["score"]
	if o, ok := fromObject(raw); ok {
		score = num(o["value"])
		if score == nil {
			score = num(o["score"])
		}
		metric, mode = str(o["metric"]), str(o["mode"])
	} else {
		score = num(raw)
	}
	if metric == "" {
		metric = str(fields["scoreMetric"])
	}
	if mode == "" {
		mode = str(fields["scoreMode"])
	}
	if sb := fields["scoreBy"]; sb != nil {
		if o, ok := fromObject(sb); ok {
			metric, mode = cmp.Or(metric, str(o["metric"])), cmp.Or(mode, str(o["mode"]))
		} else {
			metric = cmp.Or(metric, str(sb))
		}
	}
	if mode != "min" && mode != "max" {
		mode = ""
	}
	return score, metric, mode
}
