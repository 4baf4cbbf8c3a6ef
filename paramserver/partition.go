package paramserver

// Range is a contiguous slice [Offset, Offset+Length) of a job's flat parameter space.
type Range struct {
	Offset, Length uint64
}

// End returns Offset+Length, the first index after the range.
func (r Range) End() uint64 { return r.Offset + r.Length }

// Partition splits [0,total) into shards contiguous ranges in shard order whose lengths
// differ by at most one (the first total%shards ranges are one longer). Ranges may be
// empty when total < shards. It returns nil when shards <= 0.
func Partition(total uint64, shards int) []Range {
	if shards <= 0 {
		return nil
	}
	n := uint64(shards)
	base, rem := total/n, total%n
	out := make([]Range, shards)
	var off uint64
	for i := range out {
		l := base
		if uint64(i) < rem {
			l++
		}
		out[i] = Range{Offset: off, Length: l}
		off += l
	}
	return out
}
