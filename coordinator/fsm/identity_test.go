package fsm

import (
	"bytes"
	"errors"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func clusterIDCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 42, Kind: &cohortv1.Command_SetClusterId{SetClusterId: &cohortv1.SetClusterIDCommand{ClusterId: id}}}
}

// TestSetClusterID: the cluster ID is recorded once; the same ID again changes
// nothing, another or a malformed one is refused; it survives a snapshot.
func TestSetClusterID(t *testing.T) {
	h := newHarness(t)
	if id := h.f.State().ClusterID(); id != "" {
		t.Fatalf("new state has cluster ID %q", id)
	}
	if _, ok := h.apply(clusterIDCmd("")).(error); !ok {
		t.Fatal("an empty cluster ID applied")
	}
	if _, ok := h.apply(clusterIDCmd("a/b")).(error); !ok {
		t.Fatal("a cluster ID with '/' applied")
	}
	h.mustApply(clusterIDCmd("c0ffee"))
	h.mustApply(clusterIDCmd("c0ffee")) // a second leader's proposal of the same ID
	if err, ok := h.apply(clusterIDCmd("beef")).(error); !ok || !errors.Is(err, ErrClusterIDSet) {
		t.Fatalf("another cluster ID applied: %v", err)
	}
	if id := h.f.State().ClusterID(); id != "c0ffee" {
		t.Fatalf("cluster ID %q, want c0ffee", id)
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := restored.ClusterIdentity(nil)
	if c.GetId() != "c0ffee" || c.GetCreatedUnixNano() != 42 {
		t.Fatalf("restored cluster identity %v", c)
	}
}
