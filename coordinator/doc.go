// Package coordinator is the control plane of Cohort: a Raft-replicated state store
// (subpackages state and fsm), a pure scheduler (scheduler), the raft wiring and
// leader-only machinery (server) and the gRPC handlers (api).
package coordinator
