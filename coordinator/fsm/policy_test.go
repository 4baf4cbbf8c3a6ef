package fsm

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func quotaCmd(ns string, gpus int32, del bool) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_SetQuota{SetQuota: &cohortv1.SetQuotaCommand{
		Quota: &cohortv1.Quota{Namespace: ns, Limit: &cohortv1.Resources{Gpus: gpus}}, Delete: del}}}
}

func queueCmd(name string, weight int32, del bool) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_SetQueue{SetQueue: &cohortv1.SetQueueCommand{
		Queue: &cohortv1.Queue{Name: name, Weight: weight}, Delete: del}}}
}

func TestSetQuotaAndQueue(t *testing.T) {
	h := newHarness(t)
	h.mustApply(quotaCmd("team-a", 8, false))
	h.mustApply(quotaCmd("team-a", 16, false))
	h.mustApply(quotaCmd("team-b", 4, false))
	h.mustApply(queueCmd("research", 3, false))
	q, _ := h.f.State().QuotaByNamespace(nil, "team-a")
	if q.GetLimit().GetGpus() != 16 || q.CreateIndex != 1 || q.ModifyIndex != 2 {
		t.Fatalf("quota %v", q)
	}
	h.mustApply(quotaCmd("team-b", 0, true))
	if qs, _ := h.f.State().Quotas(nil); len(qs) != 1 {
		t.Fatalf("quotas after delete: %v", qs)
	}
	for _, bad := range []*cohortv1.Command{quotaCmd("", 1, false), quotaCmd("x", -1, false), queueCmd("q", 0, false), queueCmd("", 1, false)} {
		if err, ok := h.apply(bad).(error); !ok || !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("%v applied: %v", bad, err)
		}
	}

	// Quotas and queues survive a snapshot.
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := h.f.State().Quotas(nil)
	b, _ := restored.Quotas(nil)
	qa, _ := h.f.State().Queues(nil)
	qb, _ := restored.Queues(nil)
	if len(a) != 1 || len(b) != 1 || !proto.Equal(a[0], b[0]) || len(qa) != 1 || len(qb) != 1 || !proto.Equal(qa[0], qb[0]) {
		t.Fatalf("restored quotas %v queues %v, want %v %v", b, qb, a, qa)
	}
	if restored.LatestIndex() != h.f.State().LatestIndex() {
		t.Fatalf("restored index %d, want %d", restored.LatestIndex(), h.f.State().LatestIndex())
	}
}
