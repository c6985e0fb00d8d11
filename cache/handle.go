package cache

// The read handle: the view OpenFile returns, its detection of sequential
// reading and the read-ahead it queues, and the passthrough file it hands out.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// OpenFile opens name for reading through the cache. attr is the origin's
// current attributes (fusefs has just looked them up): a fingerprint other
// than the recorded one drops the cached content (OpenResult.Changed).
func (s *Store) OpenFile(ctx context.Context, name string, attr origin.Attr) (Handle, OpenResult, error) {
	name, err := cleanName(name)
	if err != nil {
		return nil, OpenResult{}, err
	}
	if !attr.IsRegular() || !s.Cacheable(name) {
		return nil, OpenResult{}, fmt.Errorf("cache: open %s: %w", name, ErrNotCacheable)
	}
	e, err := s.acquire(name)
	if err != nil {
		return nil, OpenResult{}, err
	}
	changed, err := e.validate(ctx, attr)
	if err != nil {
		e.unref()
		return nil, OpenResult{}, err
	}
	return newHandle(e), OpenResult{Changed: changed}, nil
}

// handle is one open read-only view.
type handle struct {
	e      *entry
	closed atomic.Bool

	mu      sync.Mutex
	lastEnd int64 // GUARDED_BY(mu): end of the previous read
	// GUARDED_BY(mu): end of the read started last (reads still under way
	// included): -1 before the first.
	startedEnd int64
	seq        int      // GUARDED_BY(mu): consecutive sequential reads
	raNext     int      // GUARDED_BY(mu): first chunk not yet queued for read-ahead
	pt         *os.File // GUARDED_BY(mu): passthrough file (the version's data file), once handed out
	seqRead    int64    // GUARDED_BY(mu): bytes read as part of sequential runs
	ptDone     bool     // GUARDED_BY(mu)

	// The origin file this handle opened (inode and device; unset when the
	// origin's inode numbers are not stable): a version of another file
	// under the name (replaced by a rename) is never read through it.
	ino, dev, gen uint64
	pinned        bool
}

func newHandle(e *entry) *handle {
	h := &handle{e: e, lastEnd: -1, startedEnd: -1}
	if v := e.current(); v != nil && !v.attr.InoVolatile {
		h.ino, h.dev, h.gen, h.pinned = v.attr.Ino, v.attr.Dev, v.attr.Gen, true
	}
	return h
}

// replaced reports whether v is the content of another file than the one
// this handle opened: the name was replaced on the origin since. Reading
// on would splice two files into one read stream, so such reads fail with
// ESTALE, as an NFS client's reads of a file deleted on the server do (a
// file rewritten in place keeps its inode and is followed, as there).
func (h *handle) replaced(v *version) bool {
	return h.pinned && !v.attr.InoVolatile && (v.attr.Ino != h.ino || v.attr.Dev != h.dev || v.attr.Gen != h.gen)
}

var _ Handle = (*handle)(nil)

// ReadAt reads from the cache, fetching missing chunks from the origin.
func (h *handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if h.closed.Load() {
		return 0, os.ErrClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("cache: read at %d: %w", off, syscall.EINVAL)
	}
	e := h.e
	if err := e.maybeRevalidate(ctx); err != nil {
		return 0, err
	}
	random := h.isRandom(off, len(p))
	total := 0
	var v *version
	for retries := 0; total < len(p); {
		v = e.current()
		if v == nil {
			if err := e.maybeRevalidate(ctx); err != nil {
				return total, err
			}
			if retries++; retries > 5 {
				return total, fmt.Errorf("cache: read %s: %w", e.name, syscall.EIO)
			}
			continue
		}
		if h.replaced(v) {
			return 0, fmt.Errorf("cache: read %s: replaced on the origin since this open: %w", e.name, syscall.ESTALE)
		}
		pos := off + int64(total)
		if pos >= v.size {
			break
		}
		idx := int(pos / v.csize)
		coff := pos - int64(idx)*v.csize
		n := int(min(int64(len(p)-total), chunkLen(v.size, v.csize, idx)-coff))
		err := e.readChunk(ctx, v, idx, p[total:total+n], coff, random)
		if errors.Is(err, errVersionChanged) {
			if retries++; retries > 5 {
				return 0, fmt.Errorf("cache: read %s: %w", e.name, syscall.EIO)
			}
			// Bytes read so far belong to the old version: start over so
			// one read never mixes two versions.
			total = 0
			continue
		}
		if err != nil {
			return total, fmt.Errorf("cache: read %s: %w", e.name, err)
		}
		total += n
	}
	if v != nil {
		h.readAhead(v, off, total)
		e.s.touch(e, time.Now(), false)
	}
	if total < len(p) {
		return total, io.EOF
	}
	return total, nil
}

// seqSlack is how far from the previous read's end a read may start
// and still count as sequential (concurrent kernel reads arrive a
// little out of order).
const seqSlack = 1 << 20

// isRandom reports whether a read of n bytes at off is not part of a
// sequential run: it jumps more than seqSlack away from both the previous
// read's end and the end of the read started before it. The second matters
// when reads wait (on a peer, the origin, a busy disk): the kernel's
// read-ahead keeps issuing the next offsets while the previous read's end
// still lags behind, and those reads must not count as random (a random
// read of a missing chunk goes to the origin). A handle's first read
// counts as sequential (readers starting in the middle of a file, several
// kernel reads in flight).
func (h *handle) isRandom(off int64, n int) bool {
	const slack = seqSlack
	h.mu.Lock()
	defer h.mu.Unlock()
	near := func(end int64) bool { return end >= 0 && off >= end-slack && off <= end+slack }
	random := off != 0 && h.lastEnd >= 0 && !near(h.lastEnd) && !near(h.startedEnd)
	h.startedEnd = off + int64(n)
	return random
}

// readAhead detects sequential reading and queues the next chunks.
func (h *handle) readAhead(v *version, off int64, n int) {
	s := h.e.s
	h.mu.Lock()
	if off == 0 || (h.lastEnd >= 0 && off >= h.lastEnd-seqSlack && off <= h.lastEnd+seqSlack) {
		h.seq++
	} else {
		h.seq = 0
		h.raNext = 0
	}
	h.lastEnd = off + int64(n)
	if h.seq > 0 {
		h.seqRead += int64(n)
	}
	if h.seq < 2 || s.cfg.ReadAhead == 0 || !h.e.canStore(v) {
		h.mu.Unlock()
		return
	}
	cur := int(h.lastEnd / v.csize)
	from := max(h.raNext, cur+1)
	to := min(cur+s.cfg.ReadAhead, v.nchunks-1)
	if from > to {
		h.mu.Unlock()
		return
	}
	h.raNext = to + 1
	h.mu.Unlock()
	for idx := from; idx <= to; idx++ {
		h.e.mu.Lock()
		skip := h.e.ver != v || v.state[idx] != chunkAbsent || v.inflight[idx] != nil
		h.e.mu.Unlock()
		if skip {
			continue
		}
		h.e.ref()
		select {
		case s.raq <- raJob{e: h.e, v: v, idx: idx}:
		default:
			h.e.unref() // queue full: the reader will fetch it itself
		}
	}
}

// PassthroughFile hands out a read-only file with the complete content
// valid at open, after checking every chunk against its checksum.
func (h *handle) PassthroughFile() *os.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ptDone || h.closed.Load() {
		return h.pt
	}
	h.ptDone = true
	e := h.e
	v := e.current()
	if v == nil || v.fd == nil || v.detached.Load() {
		return nil
	}
	for idx := 0; idx < v.nchunks; idx++ {
		e.mu.Lock()
		st := v.state[idx]
		e.mu.Unlock()
		if st == chunkPresent {
			e.verifyChunk(context.Background(), v, idx)
			e.mu.Lock()
			st = v.state[idx]
			e.mu.Unlock()
		}
		if st != chunkVerified {
			return nil
		}
	}
	// The version's own data file: it stays open while any handle of the
	// entry is (a retired version's files are closed at the last unref).
	f := v.fd
	if fi, err := f.Stat(); err != nil || fi.Size() != v.size || e.current() != v || v.detached.Load() {
		return nil
	}
	h.pt = f
	return f
}

// Close releases the handle (and its passthrough file).
func (h *handle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	h.mu.Lock()
	h.pt = nil // the version's file: closed with the version
	streamed := h.seqRead
	h.mu.Unlock()
	h.fillHoles(streamed)
	h.e.unref()
	return nil
}
