package node

import "time"

// SetGossipKeyringPoll sets how often members refresh the gossip keyring, for tests;
// the returned function restores it.
func SetGossipKeyringPoll(d time.Duration) func() {
	old := gossipKeyringPoll
	gossipKeyringPoll = d
	return func() { gossipKeyringPoll = old }
}

// SetCAWatchPoll sets how often node agents compare the coordinators' CA with theirs,
// for tests; the returned function restores it.
func SetCAWatchPoll(d time.Duration) func() {
	old := caWatchPoll
	caWatchPoll = d
	return func() { caWatchPoll = old }
}
