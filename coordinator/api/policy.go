package api

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// policyName is the form of a namespace or queue name (a DNS label).
var policyName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// MaxQueueWeight bounds a queue's weight.
const MaxQueueWeight = 1000

// SetQuota sets or deletes a namespace's quota.
func (s *jobService) SetQuota(ctx context.Context, req *cohortv1.SetQuotaRequest) (*cohortv1.SetQuotaResponse, error) {
	q := req.GetQuota()
	if !policyName.MatchString(q.GetNamespace()) {
		return nil, toStatus(fmt.Errorf("%w: quota.namespace %q must be a DNS label (a-z, 0-9, '-', 1-63 characters)", ErrInvalidArgument, q.GetNamespace()))
	}
	l := q.GetLimit()
	if !req.Delete && (l.GetCpuMillis() < 0 || l.GetMemoryBytes() < 0 || l.GetGpus() < 0) {
		return nil, toStatus(fmt.Errorf("%w: quota.limit must not be negative", ErrInvalidArgument))
	}
	cmd := &cohortv1.SetQuotaCommand{Quota: &cohortv1.Quota{Namespace: q.GetNamespace(), Limit: proto.Clone(resourcesOrEmpty(l)).(*cohortv1.Resources)}, Delete: req.Delete}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.SetQuotaResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetQuota{SetQuota: cmd}})
		if err != nil {
			return nil, err
		}
		stored, _ := out.(*cohortv1.Quota)
		s.logger.Info("quota set", "namespace", cmd.Quota.Namespace, "delete", req.Delete)
		return &cohortv1.SetQuotaResponse{Quota: stored}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.SetQuotaResponse, error) {
		return cohortv1.NewJobServiceClient(c).SetQuota(ctx, req)
	})
}

// ListQuotas returns every namespace quota, ordered by namespace.
func (s *jobService) ListQuotas(ctx context.Context, req *cohortv1.ListQuotasRequest) (*cohortv1.ListQuotasResponse, error) {
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.ListQuotasResponse, error) {
		qs, err := s.b.State().Quotas(nil)
		if err != nil {
			return nil, err
		}
		return &cohortv1.ListQuotasResponse{Quotas: qs}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListQuotasResponse, error) {
		return cohortv1.NewJobServiceClient(c).ListQuotas(ctx, req)
	})
}

// SetQueue sets or deletes a queue's fair-share weight.
func (s *jobService) SetQueue(ctx context.Context, req *cohortv1.SetQueueRequest) (*cohortv1.SetQueueResponse, error) {
	q := req.GetQueue()
	if !policyName.MatchString(q.GetName()) {
		return nil, toStatus(fmt.Errorf("%w: queue.name %q must be a DNS label (a-z, 0-9, '-', 1-63 characters)", ErrInvalidArgument, q.GetName()))
	}
	if !req.Delete && (q.GetWeight() < 1 || q.GetWeight() > MaxQueueWeight) {
		return nil, toStatus(fmt.Errorf("%w: queue.weight must be 1..%d, got %d", ErrInvalidArgument, MaxQueueWeight, q.GetWeight()))
	}
	cmd := &cohortv1.SetQueueCommand{Queue: &cohortv1.Queue{Name: q.GetName(), Weight: q.GetWeight()}, Delete: req.Delete}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.SetQueueResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetQueue{SetQueue: cmd}})
		if err != nil {
			return nil, err
		}
		stored, _ := out.(*cohortv1.Queue)
		s.logger.Info("queue set", "queue", cmd.Queue.Name, "weight", cmd.Queue.Weight, "delete", req.Delete)
		return &cohortv1.SetQueueResponse{Queue: stored}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.SetQueueResponse, error) {
		return cohortv1.NewJobServiceClient(c).SetQueue(ctx, req)
	})
}

// ListQueues returns every queue record, ordered by name.
func (s *jobService) ListQueues(ctx context.Context, req *cohortv1.ListQueuesRequest) (*cohortv1.ListQueuesResponse, error) {
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.ListQueuesResponse, error) {
		qs, err := s.b.State().Queues(nil)
		if err != nil {
			return nil, err
		}
		return &cohortv1.ListQueuesResponse{Queues: qs}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListQueuesResponse, error) {
		return cohortv1.NewJobServiceClient(c).ListQueues(ctx, req)
	})
}

func resourcesOrEmpty(r *cohortv1.Resources) *cohortv1.Resources {
	if r == nil {
		return &cohortv1.Resources{}
	}
	return r
}

// MaxDrainDeadline bounds DrainNodeRequest.deadline_seconds.
const MaxDrainDeadline = 7 * 24 * 3600

// DrainNode starts or cancels a node's drain.
func (s *jobService) DrainNode(ctx context.Context, req *cohortv1.DrainNodeRequest) (*cohortv1.DrainNodeResponse, error) {
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, toStatus(err)
	}
	if req.DeadlineSeconds < 0 || req.DeadlineSeconds > MaxDrainDeadline {
		return nil, toStatus(fmt.Errorf("%w: deadline_seconds must be 0..%d, got %d", ErrInvalidArgument, MaxDrainDeadline, req.DeadlineSeconds))
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.DrainNodeResponse, error) {
		cmd := &cohortv1.DrainNodeCommand{NodeId: req.NodeId, Cancel: req.Cancel}
		if req.DeadlineSeconds > 0 {
			cmd.DeadlineUnixNano = s.cfg.Now().Add(time.Duration(req.DeadlineSeconds) * time.Second).UnixNano()
		}
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_DrainNode{DrainNode: cmd}})
		if err != nil {
			return nil, err
		}
		node, _ := out.(*cohortv1.Node)
		s.logger.Info("node drain", "node", req.NodeId, "cancel", req.Cancel, "deadline_seconds", req.DeadlineSeconds)
		return &cohortv1.DrainNodeResponse{Node: node}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.DrainNodeResponse, error) {
		return cohortv1.NewJobServiceClient(c).DrainNode(ctx, req)
	})
}

// SetNodeEligibility marks a node eligible or ineligible for new tasks.
func (s *jobService) SetNodeEligibility(ctx context.Context, req *cohortv1.SetNodeEligibilityRequest) (*cohortv1.SetNodeEligibilityResponse, error) {
	if err := checkID("node_id", req.NodeId); err != nil {
		return nil, toStatus(err)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.SetNodeEligibilityResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetNodeEligibility{SetNodeEligibility: &cohortv1.SetNodeEligibilityCommand{
			NodeId: req.NodeId, Eligible: req.Eligible}}})
		if err != nil {
			return nil, err
		}
		node, _ := out.(*cohortv1.Node)
		s.logger.Info("node eligibility", "node", req.NodeId, "eligible", req.Eligible)
		return &cohortv1.SetNodeEligibilityResponse{Node: node}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.SetNodeEligibilityResponse, error) {
		return cohortv1.NewJobServiceClient(c).SetNodeEligibility(ctx, req)
	})
}
