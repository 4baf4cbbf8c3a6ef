package model

// This file plans the recording 2x2 max-pool over ranges of planes in AVX-512
// (pool2planes_amd64.s). A plane's windows, in row-major order, are cut into chunks of
// up to 16 consecutive windows whose top pairs lie within 32 values of the chunk's
// first one: two loads of the top rows' span and two of the bottom rows' (w values
// on) and a permutation give each window its four values, however many of the
// plane's rows the chunk covers. fashion-cnn's second layer (11x11 planes pooled to
// 5x5) takes 3 chunks a plane (two output rows, two rows, one row) where a row at a
// time took 5, and one call covers a worker's range of planes.

// pool2Chunk is one chunk of a plane's windows; the layout is pool2planes_amd64.s's.
type pool2Chunk struct {
	idx  [16]int32 // per lane, its window's top left offset from the span's start s
	idx1 [16]int32 // idx + 1: the top right
	top  [32]int32 // per lane of the top span, the window (lane) whose top pair covers it
	bot  [32]int32 // per lane of the bottom span (s+w on), the window whose bottom pair covers it
	s    int32     // the span's start, an offset in the plane
	k0   int32     // the chunk's first window, an index into the plane's outputs
	tm   uint32    // the lanes of the top span that the windows cover
	bm   uint32    // the lanes of the bottom span that the windows cover
	sm   uint32    // the chunk's windows: the low count bits
	_    [11]int32 // to 448 bytes, a multiple of 64
}

// pool2MaxChunks bounds a plan's length (larger planes keep the row-by-row kernels).
const pool2MaxChunks = 64

// pool2Plan returns the chunks of a plane of width w pooled to oh x ow windows, or nil
// when there are none or more than pool2MaxChunks.
func pool2Plan(w, oh, ow int) []pool2Chunk {
	if oh <= 0 || ow <= 0 || w < 2*ow {
		return nil
	}
	var plan []pool2Chunk
	n := oh * ow
	at := func(k int) int { return 2*(k/ow)*w + 2*(k%ow) } // window k's top left
	for k0 := 0; k0 < n; {
		if len(plan) == pool2MaxChunks {
			return nil
		}
		c := pool2Chunk{s: int32(at(k0)), k0: int32(k0)}
		for l := range c.top {
			c.top[l], c.bot[l] = 0, 0
		}
		cnt := 0
		for k := k0; k < n && cnt < 16 && at(k)+1-at(k0) < 32; k++ {
			o := at(k) - at(k0)
			c.idx[cnt], c.idx1[cnt] = int32(o), int32(o+1)
			c.top[o], c.top[o+1] = int32(cnt), int32(cnt)
			c.bot[o], c.bot[o+1] = int32(cnt), int32(cnt)
			c.tm |= 3 << o
			cnt++
		}
		c.bm = c.tm
		c.sm = 1<<cnt - 1
		plan = append(plan, c)
		k0 += cnt
	}
	return plan
}
