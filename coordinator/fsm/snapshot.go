package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Snapshot stream format (version 1):
//
//	header:  "COHORTSS" (8 bytes) | version (1 byte)
//	records: type (1 byte) | payload length (uvarint) | payload
//	trailer: recordEnd (1 byte)
//
// Node, job and allocation payloads are their protobuf encodings; a table-index payload
// is the index (uvarint) followed by the table name. The trailer makes a truncated
// stream an error rather than a silently smaller state.
const (
	snapshotMagic   = "COHORTSS"
	snapshotVersion = 1

	recordNode       byte = 1
	recordJob        byte = 2
	recordAlloc      byte = 3
	recordTableIndex byte = 4
	// recordCoordinator (added in place, version stays 1): readers older than it refuse
	// such a snapshot with "unknown record type", which is the safe failure.
	recordCoordinator byte = 5
	// recordQuota and recordQueue (added in place, like recordCoordinator).
	recordQuota byte = 6
	recordQueue byte = 7
	// recordSearch (added in place, like recordCoordinator).
	recordSearch byte = 8
	// recordToken (added in place, like recordCoordinator): a join-token record.
	recordToken byte = 9
	// recordGossipKeyring (added in place): the sealed gossip keyring.
	recordGossipKeyring byte = 10
	// recordClusterCA (added in place): the cluster CA record of a rotation.
	recordClusterCA byte = 11
	// recordClusterIdentity (added in place): the cluster ID.
	recordClusterIdentity byte = 12
	recordEnd             byte = 0xff

	// maxRecordBytes bounds one record, so a corrupt length cannot allocate unbounded
	// memory.
	maxRecordBytes = 64 << 20
)

// ErrBadSnapshot marks a snapshot stream that cannot be decoded.
var ErrBadSnapshot = errors.New("bad snapshot")

// fsmSnapshot is a point-in-time view of the state waiting to be persisted.
type fsmSnapshot struct {
	snap *state.StateSnapshot
}

// Persist writes the snapshot to sink; it runs while Apply goes on.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.snap); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: close snapshot sink: %w", err)
	}
	return nil
}

// Release is a no-op: the snapshot holds only immutable memdb trees.
func (s *fsmSnapshot) Release() {}

type recordWriter struct {
	w   *bufio.Writer
	buf []byte
}

func (rw *recordWriter) record(typ byte, payload []byte) error {
	rw.buf = append(rw.buf[:0], typ)
	rw.buf = binary.AppendUvarint(rw.buf, uint64(len(payload)))
	if _, err := rw.w.Write(rw.buf); err != nil {
		return err
	}
	_, err := rw.w.Write(payload)
	return err
}

func (rw *recordWriter) message(typ byte, m proto.Message) error {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	return rw.record(typ, payload)
}

// WriteSnapshot writes every node, job, allocation, coordinator, quota, queue, search and table
// index of snap to w in the
// snapshot stream format.
func WriteSnapshot(w io.Writer, snap *state.StateSnapshot) error {
	rw := &recordWriter{w: bufio.NewWriterSize(w, 64<<10)}
	if _, err := rw.w.WriteString(snapshotMagic); err != nil {
		return err
	}
	if err := rw.w.WriteByte(snapshotVersion); err != nil {
		return err
	}
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := rw.message(recordNode, n); err != nil {
			return err
		}
	}
	jobs, err := snap.Jobs(nil)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if err := rw.message(recordJob, j); err != nil {
			return err
		}
	}
	allocs, err := snap.Allocs(nil)
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if err := rw.message(recordAlloc, a); err != nil {
			return err
		}
	}
	coords, err := snap.Coordinators(nil)
	if err != nil {
		return err
	}
	for _, c := range coords {
		if err := rw.message(recordCoordinator, c); err != nil {
			return err
		}
	}
	quotas, err := snap.Quotas(nil)
	if err != nil {
		return err
	}
	for _, q := range quotas {
		if err := rw.message(recordQuota, q); err != nil {
			return err
		}
	}
	queues, err := snap.Queues(nil)
	if err != nil {
		return err
	}
	for _, q := range queues {
		if err := rw.message(recordQueue, q); err != nil {
			return err
		}
	}
	searches, err := snap.Searches(nil)
	if err != nil {
		return err
	}
	for _, s := range searches {
		if err := rw.message(recordSearch, s); err != nil {
			return err
		}
	}
	tokens, err := snap.Tokens(nil)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		if err := rw.message(recordToken, t); err != nil {
			return err
		}
	}
	if k, err := snap.GossipKeyring(nil); err != nil {
		return err
	} else if k != nil {
		if err := rw.message(recordGossipKeyring, k); err != nil {
			return err
		}
	}
	if c, err := snap.ClusterCA(nil); err != nil {
		return err
	} else if c != nil {
		if err := rw.message(recordClusterCA, c); err != nil {
			return err
		}
	}
	if c, err := snap.ClusterIdentity(nil); err != nil {
		return err
	} else if c != nil {
		if err := rw.message(recordClusterIdentity, c); err != nil {
			return err
		}
	}
	indexes, err := snap.TableIndexes()
	if err != nil {
		return err
	}
	for _, table := range []string{state.TableNodes, state.TableJobs, state.TableAllocations, state.TableCoordinators, state.TableQuotas, state.TableQueues, state.TableSearches, state.TableTokens, state.TableGossipKeyring, state.TableClusterCA, state.TableClusterIdentity} {
		idx, ok := indexes[table]
		if !ok {
			continue
		}
		payload := binary.AppendUvarint(nil, idx)
		payload = append(payload, table...)
		if err := rw.record(recordTableIndex, payload); err != nil {
			return err
		}
	}
	if err := rw.w.WriteByte(recordEnd); err != nil {
		return err
	}
	return rw.w.Flush()
}

// ReadSnapshot decodes a snapshot stream into a new state store. Any malformed input
// is an error wrapping ErrBadSnapshot; it never returns a partially restored store.
func ReadSnapshot(r io.Reader) (*state.Store, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	header := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, header); err != nil {
		return nil, fmt.Errorf("%w: read header: %w", ErrBadSnapshot, err)
	}
	if string(header[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a cohort state snapshot", ErrBadSnapshot)
	}
	if v := header[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrBadSnapshot, v)
	}
	store, err := state.NewStore()
	if err != nil {
		return nil, err
	}
	txn := store.WriteTxn(0)
	defer txn.Abort()
	var payload []byte
	for n := 0; ; n++ {
		typ, err := br.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrBadSnapshot, n, noEOF(err))
		}
		if typ == recordEnd {
			break
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, fmt.Errorf("%w: record %d length: %w", ErrBadSnapshot, n, noEOF(err))
		}
		if size > maxRecordBytes {
			return nil, fmt.Errorf("%w: record %d is %d bytes (limit %d)", ErrBadSnapshot, n, size, maxRecordBytes)
		}
		if uint64(cap(payload)) < size {
			payload = make([]byte, size)
		}
		payload = payload[:size]
		if _, err := io.ReadFull(br, payload); err != nil {
			return nil, fmt.Errorf("%w: record %d payload: %w", ErrBadSnapshot, n, noEOF(err))
		}
		if err := restoreRecord(txn, typ, payload); err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrBadSnapshot, n, err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the end record", ErrBadSnapshot)
	}
	if err := txn.Commit(); err != nil {
		return nil, err
	}
	return store, nil
}

func restoreRecord(txn *state.Txn, typ byte, payload []byte) error {
	switch typ {
	case recordNode:
		n := &cohortv1.Node{}
		if err := proto.Unmarshal(payload, n); err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		return txn.RestoreNode(n)
	case recordJob:
		j := &cohortv1.Job{}
		if err := proto.Unmarshal(payload, j); err != nil {
			return fmt.Errorf("decode job: %w", err)
		}
		return txn.RestoreJob(j)
	case recordAlloc:
		a := &cohortv1.Allocation{}
		if err := proto.Unmarshal(payload, a); err != nil {
			return fmt.Errorf("decode allocation: %w", err)
		}
		return txn.RestoreAlloc(a)
	case recordCoordinator:
		c := &cohortv1.Coordinator{}
		if err := proto.Unmarshal(payload, c); err != nil {
			return fmt.Errorf("decode coordinator: %w", err)
		}
		return txn.RestoreCoordinator(c)
	case recordQuota:
		q := &cohortv1.Quota{}
		if err := proto.Unmarshal(payload, q); err != nil {
			return fmt.Errorf("decode quota: %w", err)
		}
		return txn.RestoreQuota(q)
	case recordQueue:
		q := &cohortv1.Queue{}
		if err := proto.Unmarshal(payload, q); err != nil {
			return fmt.Errorf("decode queue: %w", err)
		}
		return txn.RestoreQueue(q)
	case recordSearch:
		s := &cohortv1.Search{}
		if err := proto.Unmarshal(payload, s); err != nil {
			return fmt.Errorf("decode search: %w", err)
		}
		return txn.RestoreSearch(s)
	case recordToken:
		t := &cohortv1.JoinToken{}
		if err := proto.Unmarshal(payload, t); err != nil {
			return fmt.Errorf("decode token: %w", err)
		}
		return txn.RestoreToken(t)
	case recordGossipKeyring:
		k := &cohortv1.GossipKeyring{}
		if err := proto.Unmarshal(payload, k); err != nil {
			return fmt.Errorf("decode gossip keyring: %w", err)
		}
		return txn.RestoreGossipKeyring(k)
	case recordClusterCA:
		c := &cohortv1.ClusterCA{}
		if err := proto.Unmarshal(payload, c); err != nil {
			return fmt.Errorf("decode cluster CA: %w", err)
		}
		return txn.RestoreClusterCA(c)
	case recordClusterIdentity:
		c := &cohortv1.ClusterIdentity{}
		if err := proto.Unmarshal(payload, c); err != nil {
			return fmt.Errorf("decode cluster identity: %w", err)
		}
		return txn.RestoreClusterIdentity(c)
	case recordTableIndex:
		idx, n := binary.Uvarint(payload)
		if n <= 0 {
			return errors.New("decode table index")
		}
		return txn.RestoreTableIndex(string(payload[n:]), idx)
	default:
		return fmt.Errorf("unknown record type %d", typ)
	}
}

// noEOF turns a clean EOF in the middle of a stream into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
