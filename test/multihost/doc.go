// Package multihost runs cohort on test hosts (network namespaces, internal/netns):
// real coordinator, parameter-server and worker processes on their own addresses, a
// client host, and a seeded fault campaign checked for linearizability. Its tests need
// root; COHORT_SKIP_NETNS=1 skips them.
package multihost
