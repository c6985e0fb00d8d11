package cache

// Stored ranges: a read whose bytes are all in checked chunks of the data
// file is handed to the kernel to copy (fusefs splices it from the data file
// into the FUSE reply) instead of being read into the daemon and written out
// again. Until the range is released, a chunk of the version dropped
// meanwhile keeps its bytes: its space is punched when the last range of the
// version is released (version.punchLater), so the kernel never copies a
// punched-out hole (zeros) into a reply.

import (
	"context"
	"os"
	"time"
)

// StoredRange is a range of a cached file in the cache's data file, for the
// kernel to read. File is the store's own (read it, never close it); the
// range is valid until Release, which must be called exactly once.
type StoredRange struct {
	File    *os.File
	Off     int64
	Len     int
	release func()
}

// Release ends the range: the store may punch dropped chunks again.
func (r StoredRange) Release() {
	if r.release != nil {
		r.release()
	}
}

// StoredReader is a Handle that can hand out stored ranges.
type StoredReader interface {
	// ReadStored returns the range [off, off+n), clipped at the end of the
	// file, when every byte of it is in stored, checked chunks of the
	// version this handle reads; ok false: read it with ReadAt (a missing
	// chunk, one being fetched or checked, the end of the file). It counts
	// as a read for read-ahead, the access order and the statistics.
	ReadStored(ctx context.Context, off int64, n int) (r StoredRange, ok bool, err error)
}

var _ StoredReader = (*handle)(nil)

// ReadStored implements StoredReader.
func (h *handle) ReadStored(ctx context.Context, off int64, n int) (StoredRange, bool, error) {
	if h.closed.Load() || off < 0 || n <= 0 {
		return StoredRange{}, false, nil
	}
	e := h.e
	if err := e.maybeRevalidate(ctx); err != nil {
		return StoredRange{}, false, err
	}
	e.ref() // keeps the version's files open until Release, whenever the handle closes
	e.mu.Lock()
	v := e.ver
	ok := v != nil && v.fd != nil && off < v.size && !h.replaced(v)
	var end int64
	if ok {
		end = min(off+int64(n), v.size)
		for idx := int(off / v.csize); ok && idx <= int((end-1)/v.csize); idx++ {
			st := v.state[idx]
			ok = (st == chunkVerified || st == chunkWritten) && v.inflight[idx] == nil
		}
	}
	if !ok {
		e.mu.Unlock()
		e.unref()
		return StoredRange{}, false, nil
	}
	v.holds++
	fd := v.fd
	e.mu.Unlock()
	s := e.s
	length := int(end - off)
	h.isRandom(off, length) // the run's bookkeeping, as ReadAt keeps it
	s.c.hitBytes.Add(int64(length))
	s.c.hits.Add(1)
	h.readAhead(v, off, length)
	s.touch(e, time.Now(), false)
	return StoredRange{File: fd, Off: off, Len: length, release: func() { e.releaseHold(v); e.unref() }}, true, nil
}

// releaseHold ends one stored range of v; the last one punches the chunks
// dropped meanwhile that are still absent (not fetched again since).
func (e *entry) releaseHold(v *version) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v.holds--; v.holds > 0 {
		return
	}
	for _, idx := range v.punchLater {
		if v.state[idx] == chunkAbsent && v.inflight[idx] == nil {
			punchHole(v.fd, int64(idx)*v.csize, chunkLen(v.size, v.csize, idx))
		}
	}
	v.punchLater = nil
}

// punchChunkLocked punches chunk idx's space out of v's data file, or, while
// the kernel may be reading stored ranges of v, when the last of them is
// released. Called with e.mu held and the chunk marked absent: a reader of
// the data file then sees it gone, and a refetch is not punched behind.
func (v *version) punchChunkLocked(idx int) {
	if v.holds > 0 {
		v.punchLater = append(v.punchLater, idx)
		return
	}
	punchHole(v.fd, int64(idx)*v.csize, chunkLen(v.size, v.csize, idx))
}
