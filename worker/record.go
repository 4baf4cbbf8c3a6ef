package worker

import "sync"

// CheckpointRecord holds the checkpoint the job's record (Raft) was last seen pointing
// at, as the node's assignments deliver it. Retention on the chief keeps that
// checkpoint and every one committed after it until the record is seen at a newer one:
// a report the coordinator has not applied yet (a slow link, a paused process) may be
// the one the job is requeued from. It is safe for concurrent use.
type CheckpointRecord struct {
	mu  sync.Mutex
	uri string
}

// NewCheckpointRecord returns a record holding uri ("" : no checkpoint yet).
func NewCheckpointRecord(uri string) *CheckpointRecord { return &CheckpointRecord{uri: uri} }

// Set installs the URI the job record was seen pointing at. An older one (from a
// coordinator that lags behind the last one heard) is harmless: retention only
// releases checkpoints older than a recorded one it committed itself, so a record it
// has already moved past protects one more checkpoint at most.
func (r *CheckpointRecord) Set(uri string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uri = uri
}

// Get returns the URI last set.
func (r *CheckpointRecord) Get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uri
}
