package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// maxReportBytes bounds the report.json GetJobReport reads from storage.
const maxReportBytes = 16 << 20

// errNoReportStore is GetJobReport's error on a coordinator started without storage.
var errNoReportStore = errors.New("this coordinator has no storage to read job reports from (start it with --storage-dir, or --s3-endpoint and --s3-bucket, naming the node agents' storage)")

// GetJobReport returns the report.json of a job from storage, with the job record's
// latest gate override merged into audit.gate.override. A job without a report (still
// running, failed, or trained before reports existed) is FailedPrecondition.
func (s *jobService) GetJobReport(ctx context.Context, req *cohortv1.GetJobReportRequest) (*cohortv1.GetJobReportResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	if s.cfg.Logs == nil {
		return nil, toStatus(errNoReportStore)
	}
	job, err := s.awaitJob(ctx, req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if job.GetReport() == "" {
		return nil, toStatus(fmt.Errorf("%w: job %s is %s and has no report yet: its chief writes one when training ends",
			ErrFailedPrecondition, job.Id, strings.ToLower(strings.TrimPrefix(job.State.String(), "JOB_STATE_"))))
	}
	key := storage.ReportKey(job.Id)
	rc, err := s.cfg.Logs.Get(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, toStatus(fmt.Errorf("%w: job %s's report %s is missing from this coordinator's storage (is it started with the node agents' --storage-dir or S3 bucket?)",
				ErrFailedPrecondition, job.Id, key))
		}
		return nil, toStatus(fmt.Errorf("read %s: %w", key, err))
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxReportBytes+1))
	if err != nil {
		return nil, toStatus(fmt.Errorf("read %s: %w", key, err))
	}
	if len(data) > maxReportBytes {
		return nil, toStatus(fmt.Errorf("%w: %s is larger than %d bytes", ErrFailedPrecondition, key, maxReportBytes))
	}
	merged, err := mergeOverride(data, job.GetGate())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %s: %v", ErrFailedPrecondition, key, err))
	}
	return &cohortv1.GetJobReportResponse{ReportJson: merged, Uri: job.GetReport()}, nil
}

// mergeOverride sets audit.gate.override (the latest) and audit.gate.overrides (all)
// of a report from the job record; other fields are kept as they are.
func mergeOverride(data []byte, gate *cohortv1.GateResult) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var report map[string]any
	if err := dec.Decode(&report); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if len(gate.GetOverrides()) == 0 {
		return data, nil
	}
	section, _ := report["audit"].(map[string]any)
	if section == nil {
		return nil, errors.New("the report has no audit section to record the override in")
	}
	g, _ := section["gate"].(map[string]any)
	if g == nil {
		g = map[string]any{"passed": gate.Passed, "reasons": gate.Reasons}
		section["gate"] = g
	}
	var all []map[string]any
	for _, o := range gate.GetOverrides() {
		all = append(all, map[string]any{"by": o.By, "reason": o.Reason,
			"time": time.Unix(0, o.TimeUnixNano).UTC().Format(time.RFC3339)})
	}
	g["override"] = all[len(all)-1]
	g["overrides"] = all
	return json.MarshalIndent(report, "", "  ")
}

// OverrideGate records an export of a succeeded job whose gate failed. The caller is
// the ACL token's name, or the name in the caller's client certificate; on a plaintext
// cluster without ACLs it is the request's requested_by, recorded as "unverified:<name>".
func (s *jobService) OverrideGate(ctx context.Context, req *cohortv1.OverrideGateRequest) (*cohortv1.OverrideGateResponse, error) {
	switch {
	case checkID("id", req.Id) != nil:
		return nil, toStatus(checkID("id", req.Id))
	case strings.TrimSpace(req.Reason) == "":
		return nil, toStatus(fmt.Errorf("%w: reason is required: say why the model is exported although its gate failed", ErrInvalidArgument))
	case len(req.Reason) > maxReasonLen:
		return nil, toStatus(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	case len(req.RequestedBy) > maxReasonLen:
		return nil, toStatus(fmt.Errorf("%w: requested_by is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	}
	by := Caller(ctx)
	if by == "" {
		name := strings.TrimSpace(req.RequestedBy)
		if name == "" {
			name = "unknown"
		}
		by = "unverified:" + name
	}
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return nil, toStatus(fmt.Errorf("%w: idempotency_key is longer than %d bytes", ErrInvalidArgument, maxIdempotencyKeyLen))
	}
	// The key (the caller's, or minted here before the call is forwarded) lets a retry
	// whose first try committed find its override instead of recording a second one.
	key := req.IdempotencyKey
	if key == "" {
		key = "auto-" + randomHex(16)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.OverrideGateResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_OverrideGate{
			OverrideGate: &cohortv1.OverrideGateCommand{JobId: req.Id,
				Override: &cohortv1.GateOverride{By: by, Reason: strings.TrimSpace(req.Reason), RequestKey: key}},
		}})
		if err != nil {
			return nil, err
		}
		job, ok := out.(*cohortv1.Job)
		if !ok {
			return nil, fmt.Errorf("api: override gate: unexpected response %T", out)
		}
		s.logger.Warn("export gate overridden", "job", job.Id, "by", by, "reason", req.Reason,
			"gate_reasons", job.GetGate().GetReasons())
		return &cohortv1.OverrideGateResponse{Job: job}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.OverrideGateResponse, error) {
		fwd := proto.Clone(req).(*cohortv1.OverrideGateRequest)
		fwd.IdempotencyKey = key
		return cohortv1.NewJobServiceClient(c).OverrideGate(ctx, fwd)
	})
}
