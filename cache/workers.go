package cache

// The fetch worker pools: read-ahead workers (Store.raq) and the background
// worker for chunks random readers were served directly (Store.bgq), whose
// origin reads yield to readers.

import (
	"context"
	"sync/atomic"
	"time"
)

// fetchBehind queues chunk idx of v for a background fetch if the queue has
// room (a random reader was served directly; later reads of the chunk
// become local).
func (e *entry) fetchBehind(v *version, idx int) {
	s := e.s
	e.ref()
	select {
	case s.bgq <- raJob{e: e, v: v, idx: idx, paced: true}:
	default:
		e.unref()
	}
}

// raJob asks a worker to fetch one chunk: ahead of a sequential reader
// (Store.raq), or behind a random reader's direct read (Store.bgq).
type raJob struct {
	e      *entry
	v      *version
	idx    int
	paced  bool // read the chunk in pieces, leaving room on the link for direct reads
	missed bool // fill queue: only the chunks random readers missed (version.missed)
}

// Background fetches for random reads: one worker whose origin reads yield
// to readers (yieldToReaders), so they never take the link from them, and a
// bounded queue (a full queue drops the request: a later miss asks again).
const (
	bgWorkers  = 1
	bgQueueLen = 64
	// bgIdleGap: a background piece goes when no reader was served straight
	// from the origin for this long ...
	bgIdleGap = 10 * time.Millisecond
	// bgTrickle: ... or when the last piece went this long ago, so that a
	// file read at random without pause still becomes cached, slowly
	// (pacedPiece per bgTrickle: 2.6 MB/s).
	bgTrickle = 100 * time.Millisecond
	// pacedPiece is the size of the origin reads of a background fetch.
	pacedPiece = 256 << 10
)

// yieldToReaders waits before a background piece until no reader has been
// served straight from the origin for bgIdleGap, or bgTrickle has passed
// since the previous piece: random readers see the link as if nothing else
// used it, and the background work still progresses.
func (s *Store) yieldToReaders(ctx context.Context, hurry *atomic.Bool) error {
	for {
		now := time.Now().UnixNano()
		idle := time.Duration(now - s.lastDirect.Load())
		since := time.Duration(now - s.lastPiece.Load())
		if idle >= bgIdleGap || since >= bgTrickle || hurry.Load() {
			s.lastPiece.Store(now)
			return nil
		}
		wait := min(bgIdleGap-idle, bgTrickle-since)
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

func (s *Store) fetchWorker(q chan raJob) {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			drainJobs(q)
			return
		case j := <-q:
			j.e.fetchChunk(s.ctx, j.v, j.idx, false, j.paced)
			j.e.unref()
		}
	}
}

// drainJobs drops the jobs left in q at close.
func drainJobs(q chan raJob) {
	for {
		select {
		case j := <-q:
			j.e.unref()
		default:
			return
		}
	}
}
