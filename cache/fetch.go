package cache

// Single-flight chunk fetches: one origin read per chunk however many
// readers want it. Readers wait on the fetch and copy from its buffer; its
// persist step (persist.go) stores the chunk.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// fetch is one origin read of one chunk, shared by every reader of it.
type fetch struct {
	v    *version
	idx  int
	done chan struct{}
	buf  *[]byte
	err  error // set before done is closed
	refs atomic.Int32
	s    *Store

	e         *entry        // the entry the persist step holds a reference on
	persisted chan struct{} // closed when persisting ended (committed or given up)
	urgent    bool          // someone waits for the commit (Warm): do not wait for a fuller batch
	paced     bool          // read from the origin in pacedPiece pieces (background fetch)
	hurry     atomic.Bool   // a reader waits for this paced fetch: stop yielding
	sum       uint64        // checksum of the written bytes (set by the persist step)
	n         int           // bytes written
	stored    bool          // set before persisted is closed: the chunk is durable and indexed (or kept for an evicted open version)
	vouched   bool          // set before done is closed: the origin vouched the bytes are v's (origin.AttrWitness)
	// Set before done is closed for a chunk from a peer: its bytes matched
	// peerSum, which the persist step then need not compute again.
	fromPeer bool
	peerSum  uint64
}

func (f *fetch) release() {
	if f.refs.Add(-1) == 0 && f.buf != nil {
		f.s.putBuf(f.buf)
		f.buf = nil
	}
}

// waitFetch waits for a shared fetch and copies from its buffer.
func (e *entry) waitFetch(ctx context.Context, f *fetch, dst []byte, coff int64) error {
	defer f.release()
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	if e.current() != f.v {
		return errVersionChanged
	}
	copy(dst, (*f.buf)[coff:])
	e.s.c.hitBytes.Add(int64(len(dst)))
	e.s.c.hits.Add(1)
	return nil
}

// runFetch reads f's chunk from the origin into a pooled buffer and wakes
// the waiters; storing it is persist's job.
func (e *entry) runFetch(ctx context.Context, f *fetch, clen int64) {
	s := e.s
	defer close(f.done)
	buf := f.buf
	if e.fetchFromPeer(ctx, f, clen) {
		return
	}
	t0 := time.Now()
	var n int
	var err error
	defer func() { e.peerDone(f, clen, f.err == nil) }()
	if f.paced {
		n, f.vouched, err = e.readOriginPaced(ctx, f.v, *buf, int64(f.idx)*f.v.csize, &f.hurry)
	} else {
		n, f.vouched, err = e.readOriginW(ctx, f.v, *buf, int64(f.idx)*f.v.csize)
	}
	s.mets.fetched(ctx, time.Since(t0))
	s.c.missBytes.Add(int64(n))
	s.c.misses.Add(1)
	if err != nil && !errors.Is(err, io.EOF) {
		f.err = err
		return
	}
	if int64(n) < clen {
		// The file shrank behind our back: revalidate before using it.
		e.forceRevalidate()
		f.err = fmt.Errorf("read %s: short chunk %d (%d of %d bytes): %w", e.name, f.idx, n, clen, io.ErrUnexpectedEOF)
		return
	}
}

// fetchAhead fetches and stores chunk idx of v unless it is present or in
// flight. It returns when the chunk is stored (or failed); done reports
// whether it is now cached.
//
// wait: wait for a buffer and for the chunk to be stored (Warm); otherwise
// give up when no buffer is free and store in the background (read-ahead).
func (e *entry) fetchAhead(ctx context.Context, v *version, idx int, wait bool) (done bool, err error) {
	return e.fetchChunk(ctx, v, idx, wait, false)
}

// fetchChunk is fetchAhead; paced reads the chunk from the origin in pieces.
func (e *entry) fetchChunk(ctx context.Context, v *version, idx int, wait, paced bool) (done bool, err error) {
	s := e.s
	e.mu.Lock()
	if e.ver != v {
		e.mu.Unlock()
		return false, errVersionChanged
	}
	if f := v.inflight[idx]; f != nil {
		f.refs.Add(1)
		e.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			f.release()
			return false, ctx.Err()
		}
		ferr := f.err
		f.release()
		if ferr != nil {
			return false, ferr
		}
		if !wait {
			return false, nil
		}
		return e.waitPersisted(ctx, f)
	}
	if v.state[idx] != chunkAbsent {
		sf := v.syncing[idx]
		e.mu.Unlock()
		if sf != nil && wait {
			return e.waitPersisted(ctx, sf)
		}
		return true, nil
	}
	if !e.canStore(v) {
		e.mu.Unlock()
		return false, nil
	}
	clen := chunkLen(v.size, v.csize, idx)
	buf := s.tryGetBuf(clen)
	if buf == nil && !wait {
		e.mu.Unlock()
		return false, nil
	}
	if buf == nil {
		e.mu.Unlock()
		b, err := s.getBuf(ctx, clen)
		if err != nil {
			return false, err
		}
		e.mu.Lock()
		if e.ver != v || v.state[idx] != chunkAbsent || v.inflight[idx] != nil {
			e.mu.Unlock()
			s.putBuf(b)
			return e.fetchChunk(ctx, v, idx, wait, paced)
		}
		buf = b
	}
	f := e.newFetch(v, idx, buf)
	f.refs.Store(1)
	f.urgent = wait
	f.paced = paced
	v.inflight[idx] = f
	e.mu.Unlock()
	e.ref()
	e.runFetch(ctx, f, clen)
	ferr := f.err
	e.startPersist(f, !wait)
	if ferr != nil || !wait {
		return false, ferr
	}
	return e.waitPersisted(ctx, f)
}

// waitPersisted waits until f's chunk is committed (or given up) and
// reports whether it is cached.
func (e *entry) waitPersisted(ctx context.Context, f *fetch) (bool, error) {
	e.s.syncSoon()
	select {
	case <-f.persisted:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	e.mu.Lock()
	st := f.v.state[f.idx]
	e.mu.Unlock()
	return st == chunkVerified || st == chunkPresent, nil
}
