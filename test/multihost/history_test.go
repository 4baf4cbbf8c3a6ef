package multihost

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The client's history is checked against one model, partitioned by key: a register
// per job name ("job/NAME": the IDs of the jobs of that name, comma-joined, "" for
// none) and one per quota ("quota/NS": the namespace's CPU limit in millicores, ""
// for none). Each job name is submitted once, so a name's register goes from "" to
// the acknowledged ID and never changes again; a read showing two IDs is a duplicated
// submission, a read showing none after an acknowledgement is a lost one.

// opKind is what a history operation did.
type opKind int

const (
	opSubmit   opKind = iota // job submit of a new name
	opQuotaSet               // quota set NS --cpu N
	opRead                   // one key of a job list or quota list answer
)

// opInput is a porcupine operation's input.
type opInput struct {
	kind  opKind
	key   string // "job/NAME" or "quota/NS"
	value string // opQuotaSet: the millicores written
}

// opOutput is a porcupine operation's output.
type opOutput struct {
	// known is false when the client cannot tell whether the write happened (the
	// CLI failed, timed out or was killed): porcupine lets it take effect or not.
	known bool
	value string // opSubmit: the acknowledged job ID; opRead: what was read
}

// unknownID is the state of a job name whose submission's outcome was unknown and
// that a read has not yet shown: the job exists with an ID the client never saw.
const unknownID = "?"

// registersModel is the campaign's porcupine model.
var registersModel = (&porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(opInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		st, in, out := state.(string), input.(opInput), output.(opOutput)
		switch in.kind {
		case opSubmit:
			if st != "" { // one submission per name: the name was taken before it
				return nil
			}
			if !out.known {
				return []any{"", unknownID}
			}
			return []any{out.value}
		case opQuotaSet:
			if !out.known {
				return []any{st, in.value}
			}
			return []any{in.value}
		default: // opRead
			switch {
			case strings.Contains(out.value, ","): // a name listed twice
				return nil
			case out.value == st:
				return []any{st}
			case st == unknownID && out.value != "":
				return []any{out.value}
			}
			return nil
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(opInput), output.(opOutput)
		res := out.value
		if !out.known && in.kind != opRead {
			res = "unknown"
		}
		switch in.kind {
		case opSubmit:
			return fmt.Sprintf("submit(%s) -> %s", in.key, res)
		case opQuotaSet:
			return fmt.Sprintf("set(%s, %s) -> %s", in.key, in.value, map[bool]string{true: "ok", false: "unknown"}[out.known])
		}
		return fmt.Sprintf("read(%s) -> %q", in.key, out.value)
	},
}).ToModel()

// history records the client's operations. Reads are kept whole (one per answer) and
// expanded per key when the history is checked, for the keys whose writes they can
// tell something about.
type history struct {
	mu     sync.Mutex
	writes []porcupine.Operation
	reads  []readOp
}

// readOp is one list answer: every key it saw, with its value.
type readOp struct {
	client       int
	call, ret    int64
	prefix       string            // "job/" or "quota/": the keys this answer covers
	values       map[string]string // key -> value, for the keys that have one
	finalVerdict bool              // the last read after the campaign: checked for every key
}

// pending is the Return time of an operation whose outcome is unknown: it may take
// effect at any time after its call.
const pending = math.MaxInt64

func (h *history) write(client int, in opInput, out opOutput, call, ret time.Time) {
	r := ret.UnixNano()
	if !out.known {
		r = pending
	}
	h.mu.Lock()
	h.writes = append(h.writes, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call.UnixNano(), Return: r})
	h.mu.Unlock()
}

func (h *history) read(r readOp) {
	h.mu.Lock()
	h.reads = append(h.reads, r)
	h.mu.Unlock()
}

// readWindow bounds which reads are checked against a write: those that overlap
// [call - readWindow, return + readWindow], and the final read. Later reads are
// covered by the final one (a write lost later is missing from it); earlier ones
// could only show a write before its call.
const readWindow = 10 * time.Second

// operations expands the history into porcupine operations: the writes, and for each
// written key the reads near its writes.
func (h *history) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	type span struct{ from, to int64 }
	spans := map[string]span{}
	for _, w := range h.writes {
		k := w.Input.(opInput).key
		from, to := w.Call-int64(readWindow), w.Return
		if to != pending {
			to += int64(readWindow)
		}
		if s, ok := spans[k]; ok {
			from, to = min(from, s.from), max(to, s.to)
		}
		spans[k] = span{from, to}
	}
	ops := slices.Clone(h.writes)
	keys := make([]string, 0, len(spans))
	for k := range spans {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, r := range h.reads {
		for _, k := range keys {
			if !strings.HasPrefix(k, r.prefix) {
				continue
			}
			s := spans[k]
			if !r.finalVerdict && (r.ret < s.from || r.call > s.to) {
				continue
			}
			ops = append(ops, porcupine.Operation{ClientId: r.client, Input: opInput{kind: opRead, key: k},
				Output: opOutput{known: true, value: r.values[k]}, Call: r.call, Return: r.ret})
		}
	}
	return ops
}
