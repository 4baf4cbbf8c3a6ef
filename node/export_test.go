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

// HTTPRoutes returns the patterns n registered on its HTTP mux.
func HTTPRoutes(n *Node) []string { return append([]string(nil), n.httpRoutes.patterns...) }

// HTTPRouteRule returns the access rule of an HTTP pattern ("public" or "dashboard");
// ok is false for a pattern without one.
func HTTPRouteRule(pattern string) (rule string, ok bool) {
	r, ok := httpRouteRules[pattern]
	return r.String(), ok
}
