package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// applySetQuota sets or deletes a namespace's quota. Response: the stored *Quota (nil
// after a delete).
func applySetQuota(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSetQuota()
	q := c.GetQuota()
	if q.GetNamespace() == "" {
		return nil, fmt.Errorf("set quota: %w: namespace is required", ErrInvalidCommand)
	}
	if c.GetDelete() {
		if _, err := txn.DeleteQuota(q.Namespace); err != nil {
			return nil, err
		}
		return (*cohortv1.Quota)(nil), nil
	}
	l := q.GetLimit()
	if l.GetCpuMillis() < 0 || l.GetMemoryBytes() < 0 || l.GetGpus() < 0 {
		return nil, fmt.Errorf("set quota: %w: negative limit", ErrInvalidCommand)
	}
	stored := proto.Clone(q).(*cohortv1.Quota)
	if err := txn.UpsertQuota(stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// applySetQueue sets or deletes a queue's weight. Response: the stored *Queue (nil
// after a delete).
func applySetQueue(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSetQueue()
	q := c.GetQueue()
	if q.GetName() == "" {
		return nil, fmt.Errorf("set queue: %w: name is required", ErrInvalidCommand)
	}
	if c.GetDelete() {
		if _, err := txn.DeleteQueue(q.Name); err != nil {
			return nil, err
		}
		return (*cohortv1.Queue)(nil), nil
	}
	if q.GetWeight() < 1 {
		return nil, fmt.Errorf("set queue: %w: weight must be at least 1, got %d", ErrInvalidCommand, q.GetWeight())
	}
	stored := proto.Clone(q).(*cohortv1.Queue)
	if err := txn.UpsertQueue(stored); err != nil {
		return nil, err
	}
	return stored, nil
}
