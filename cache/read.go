package cache

// The read path of one chunk: from the data file, from a shared fetch, or
// straight from the origin (nothing stored) when the chunk cannot or need not
// be fetched whole.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// rangeAlign is the alignment a random read of a missing chunk is
// rounded out to when served straight from the origin (the bytes are not
// stored, so more would only cost link time).
const rangeAlign = 4 << 10

// peerBufWait bounds how long a read waits for a free chunk buffer, with
// peer fetch on, before it reads the origin directly.
const peerBufWait = time.Second

// readRange serves dst (at off, inside chunk idx of v) straight from the
// origin, reading the range rounded out to rangeAlign and clipped to the
// chunk. Nothing is stored: the bytes are not indexed as a chunk.
func (e *entry) readRange(ctx context.Context, v *version, idx int, dst []byte, off int64) error {
	cstart := int64(idx) * v.csize
	cend := cstart + chunkLen(v.size, v.csize, idx)
	lo, hi := rangeOf(cstart, cend, off, len(dst))
	buf := make([]byte, hi-lo)
	e.s.lastDirect.Store(time.Now().UnixNano())
	n, err := e.readOrigin(ctx, v, buf, lo)
	e.s.lastDirect.Store(time.Now().UnixNano())
	e.s.c.missBytes.Add(int64(n))
	e.s.c.directBytes.Add(int64(n))
	e.s.c.misses.Add(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if int64(n) < off-lo+int64(len(dst)) {
		// The file shrank behind our back: revalidate before using it.
		e.forceRevalidate()
		return fmt.Errorf("read %s: short read at %d: %w", e.name, lo, io.ErrUnexpectedEOF)
	}
	copy(dst, buf[off-lo:])
	return nil
}

// rangeOf rounds [off, off+n) out to rangeAlign, clipped to [cstart, cend).
func rangeOf(cstart, cend, off int64, n int) (lo, hi int64) {
	lo = max(cstart, off&^(rangeAlign-1))
	hi = min(cend, (off+int64(n)+rangeAlign-1)&^(rangeAlign-1))
	return lo, hi
}

// rangeIsChunk reports whether the direct read of [off, off+n) would read
// half of chunk idx or more: the chunk is then fetched (once, shared by
// every reader) instead.
func (e *entry) rangeIsChunk(v *version, idx int, off int64, n int) bool {
	cstart := int64(idx) * v.csize
	clen := chunkLen(v.size, v.csize, idx)
	lo, hi := rangeOf(cstart, cstart+clen, off, n)
	return 2*(hi-lo) > clen
}

// readDirect serves p straight from the origin (nothing is stored).
func (e *entry) readDirect(ctx context.Context, v *version, p []byte, off int64) error {
	n, err := e.readOrigin(ctx, v, p, off)
	e.s.c.missBytes.Add(int64(n))
	e.s.c.directBytes.Add(int64(n))
	e.s.c.misses.Add(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if n < len(p) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// readChunk fills dst from chunk idx of v at offset coff within the chunk.
// random: the read is not part of a sequential run; a missing chunk is then
// not waited for: the range is served from the origin and the chunk fetched
// in the background if there is room.
func (e *entry) readChunk(ctx context.Context, v *version, idx int, dst []byte, coff int64, random bool) error {
	s := e.s
	off := int64(idx)*v.csize + coff
	for {
		e.mu.Lock()
		if e.ver != v {
			e.mu.Unlock()
			return errVersionChanged
		}
		st := v.state[idx]
		if f := v.inflight[idx]; f != nil {
			if f.paced && random {
				// A background fetch of this chunk may take a while: a random
				// read does not wait for it.
				e.mu.Unlock()
				return e.readRange(ctx, v, idx, dst, off)
			}
			f.hurry.Store(true)
			f.refs.Add(1)
			e.mu.Unlock()
			err := e.waitFetch(ctx, f, dst, coff)
			if err == nil || errors.Is(err, errVersionChanged) || ctx.Err() != nil {
				return err
			}
			// The shared fetch failed: try the origin for this range.
			return e.readDirect(ctx, v, dst, off)
		}
		switch st {
		case chunkVerified, chunkWritten:
			fd := v.fd
			e.mu.Unlock()
			n, err := fd.ReadAt(dst, off)
			if n == len(dst) {
				// A chunk dropped meanwhile may have had its space punched
				// out under the read: drop marks it absent before punching.
				e.mu.Lock()
				gone := v.state[idx] == chunkAbsent
				e.mu.Unlock()
				if gone {
					continue
				}
				s.c.hitBytes.Add(int64(n))
				s.c.hits.Add(1)
				return nil
			}
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			s.diskError("read cached chunk", err)
			e.dropChunk(v, idx)
			return e.readDirect(ctx, v, dst, off)
		case chunkPresent:
			e.mu.Unlock()
			e.verifyChunk(ctx, v, idx)
			continue
		}
		// Absent.
		if random && !e.rangeIsChunk(v, idx, off, len(dst)) {
			if v.missed == nil {
				v.missed = make([]bool, v.nchunks)
			}
			v.missed[idx] = true
			e.mu.Unlock()
			if err := e.readRange(ctx, v, idx, dst, off); err != nil {
				return err
			}
			if e.canStore(v) && s.persistAllowed(0) {
				e.fetchBehind(v, idx)
			}
			return nil
		}
		clen := chunkLen(v.size, v.csize, idx)
		if !e.canStore(v) || !s.persistAllowed(0) {
			e.mu.Unlock()
			return e.readDirect(ctx, v, dst, off)
		}
		buf := s.tryGetBuf(clen)
		if buf == nil && s.peerSource() != nil {
			// Every buffer is taken (by read-ahead, or fetches waiting on the
			// disk), and a direct read would go to the origin, which peer
			// fetch is there to spare: wait a little for a buffer, then
			// fetch the chunk as usual (from a peer if one holds it).
			e.mu.Unlock()
			buf = s.getBufWithin(ctx, clen, peerBufWait)
			e.mu.Lock()
			if buf != nil && (e.ver != v || v.state[idx] != chunkAbsent || v.inflight[idx] != nil) {
				// Changed while waiting: look again.
				e.mu.Unlock()
				s.putBuf(buf)
				continue
			}
		}
		if buf == nil {
			// Every buffer waits on the disk: serve this read from the
			// origin rather than slow the reader down to the disk's pace.
			e.mu.Unlock()
			return e.readDirect(ctx, v, dst, off)
		}
		f := e.newFetch(v, idx, buf)
		f.refs.Store(2) // the leader's copy, and the persist step
		v.inflight[idx] = f
		e.mu.Unlock()
		e.ref() // held by the persist step
		e.runFetch(ctx, f, clen)
		var err error
		if f.err == nil {
			copy(dst, (*f.buf)[coff:])
		} else {
			err = f.err
		}
		f.release()
		e.startPersist(f, true)
		if err != nil {
			if errors.Is(err, errVersionChanged) || ctx.Err() != nil {
				return err
			}
			return e.readDirect(ctx, v, dst, off)
		}
		return nil
	}
}
