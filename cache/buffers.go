package cache

// Chunk buffers: pooled, and bounded so that fetches waiting on a slow disk
// make readers fall back to the origin instead of queueing.

import (
	"context"
	"sync"
	"time"
)

// chunkBuffers pools the chunk buffers and bounds how many are in use.
type chunkBuffers struct {
	// INVARIANT: every buffer handed out (getBuf, tryGetBuf) holds one
	// token of sem until putBuf; a fetch's buffer goes back when its last
	// reference is released.
	sem  chan struct{}
	pool sync.Pool // buffers of one chunk size
}

// getBuf returns a chunk buffer; buffers in use are bounded by bufs.sem.
func (s *Store) getBuf(ctx context.Context, n int64) (*[]byte, error) {
	select {
	case s.bufs.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n > s.csize {
		b := make([]byte, n)
		return &b, nil
	}
	b := s.bufs.pool.Get().(*[]byte)
	*b = (*b)[:n]
	return b, nil
}

// tryGetBuf is getBuf without waiting: nil when all buffers are in use
// (the caller then reads the origin directly instead of queueing behind
// disk writes).
func (s *Store) tryGetBuf(n int64) *[]byte {
	select {
	case s.bufs.sem <- struct{}{}:
	default:
		return nil
	}
	if n > s.csize {
		b := make([]byte, n)
		return &b
	}
	b := s.bufs.pool.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

// getBufWithin is getBuf waiting at most d: nil when no buffer freed up in
// time (or ctx ended).
func (s *Store) getBufWithin(ctx context.Context, n int64, d time.Duration) *[]byte {
	if b := s.tryGetBuf(n); b != nil {
		return b
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	b, err := s.getBuf(ctx, n)
	if err != nil {
		return nil
	}
	return b
}

func (s *Store) putBuf(b *[]byte) {
	if int64(cap(*b)) == s.csize {
		s.bufs.pool.Put(b)
	}
	<-s.bufs.sem
}
