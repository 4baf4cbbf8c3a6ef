package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Table names of the state store.
const (
	TableJobs        = "jobs"
	TableAllocations = "allocations"
	TableNodes       = "nodes"
	// TableCoordinators holds the coordinator voters' addresses (Raft and gRPC).
	TableCoordinators = "coordinators"
	// TableIndex records, per table, the Raft index of its latest write.
	TableIndex = "index"
)

// indexEntry is a row of TableIndex.
type indexEntry struct {
	Table string
	Index uint64
}

// stringIndexer indexes an object by one string it derives from it. An empty string
// means "not indexed" (the object is skipped by an AllowMissing index).
type stringIndexer struct {
	name string
	of   func(obj any) (string, bool)
}

// FromObject implements memdb.SingleIndexer.
func (ix stringIndexer) FromObject(obj any) (bool, []byte, error) {
	v, ok := ix.of(obj)
	if !ok {
		return false, nil, fmt.Errorf("index %s: unexpected object type %T", ix.name, obj)
	}
	if v == "" {
		return false, nil, nil
	}
	return true, append([]byte(v), 0), nil
}

// FromArgs implements memdb.Indexer.
func (ix stringIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("index %s: want one argument, got %d", ix.name, len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("index %s: argument must be a string, got %T", ix.name, args[0])
	}
	return append([]byte(s), 0), nil
}

func jobField(f func(*cohortv1.Job) string) func(any) (string, bool) {
	return func(obj any) (string, bool) {
		j, ok := obj.(*cohortv1.Job)
		if !ok {
			return "", false
		}
		return f(j), true
	}
}

func allocField(f func(*cohortv1.Allocation) string) func(any) (string, bool) {
	return func(obj any) (string, bool) {
		a, ok := obj.(*cohortv1.Allocation)
		if !ok {
			return "", false
		}
		return f(a), true
	}
}

func nodeField(f func(*cohortv1.Node) string) func(any) (string, bool) {
	return func(obj any) (string, bool) {
		n, ok := obj.(*cohortv1.Node)
		if !ok {
			return "", false
		}
		return f(n), true
	}
}

func index(name string, unique, allowMissing bool, of func(any) (string, bool)) *memdb.IndexSchema {
	return &memdb.IndexSchema{
		Name:         name,
		Unique:       unique,
		AllowMissing: allowMissing,
		Indexer:      stringIndexer{name: name, of: of},
	}
}

// schema returns the memdb schema of the state store.
func schema() *memdb.DBSchema {
	s := baseSchema()
	for name, t := range policyTables() {
		s.Tables[name] = t
	}
	for name, t := range searchTables() {
		s.Tables[name] = t
	}
	for name, t := range tokenTables() {
		s.Tables[name] = t
	}
	return s
}

func baseSchema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		TableJobs: {
			Name: TableJobs,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, jobField(func(j *cohortv1.Job) string { return j.GetId() })),
				// An empty idempotency key is not indexed, so many jobs may have none.
				"idempotency_key": index("idempotency_key", true, true,
					jobField(func(j *cohortv1.Job) string { return j.GetIdempotencyKey() })),
				"state": index("state", false, false,
					jobField(func(j *cohortv1.Job) string { return j.GetState().String() })),
			},
		},
		TableAllocations: {
			Name: TableAllocations,
			Indexes: map[string]*memdb.IndexSchema{
				"id":      index("id", true, false, allocField(func(a *cohortv1.Allocation) string { return a.GetId() })),
				"job_id":  index("job_id", false, false, allocField(func(a *cohortv1.Allocation) string { return a.GetJobId() })),
				"node_id": index("node_id", false, true, allocField(func(a *cohortv1.Allocation) string { return a.GetNodeId() })),
			},
		},
		TableNodes: {
			Name: TableNodes,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, nodeField(func(n *cohortv1.Node) string { return n.GetId() })),
			},
		},
		TableCoordinators: {
			Name: TableCoordinators,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, func(obj any) (string, bool) {
					c, ok := obj.(*cohortv1.Coordinator)
					if !ok {
						return "", false
					}
					return c.GetId(), true
				}),
			},
		},
		TableIndex: {
			Name: TableIndex,
			Indexes: map[string]*memdb.IndexSchema{
				"id": index("id", true, false, func(obj any) (string, bool) {
					e, ok := obj.(*indexEntry)
					if !ok {
						return "", false
					}
					return e.Table, true
				}),
			},
		},
	}}
}
