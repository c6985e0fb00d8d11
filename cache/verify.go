package cache

// Chunk integrity: checking a chunk read from the index against its checksum
// (once per process), and dropping a bad one.

import (
	"context"
	"fmt"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// verifyChunk checks a present chunk against its checksum; a mismatch drops
// it (it is then refetched), never serves it.
func (e *entry) verifyChunk(ctx context.Context, v *version, idx int) {
	s := e.s
	clen := chunkLen(v.size, v.csize, idx)
	buf, err := s.getBuf(ctx, clen)
	if err != nil {
		return
	}
	defer s.putBuf(buf)
	e.mu.Lock()
	want := v.sums[idx]
	e.mu.Unlock()
	n, rerr := v.fd.ReadAt(*buf, int64(idx)*v.csize)
	ok := int64(n) == clen && xxhash.Sum64(*buf) == want
	if ok {
		e.mu.Lock()
		if v.state[idx] == chunkPresent {
			v.state[idx] = chunkVerified
		}
		e.mu.Unlock()
		s.markVerified(v.id, idx)
		return
	}
	s.c.checksumFailures.Add(1)
	err = fmt.Errorf("chunk %d of %s failed its checksum (read %d of %d bytes, %v)", idx, e.name, n, clen, rerr)
	s.noteError("checksum", err)
	e.dropChunk(v, idx)
}

// dropChunk forgets a bad chunk: absent in memory and in the index, and
// its space punched out.
func (e *entry) dropChunk(v *version, idx int) {
	s := e.s
	e.mu.Lock()
	if v.state[idx] != chunkAbsent {
		v.state[idx] = chunkAbsent
		v.present--
	}
	// Punched before e.mu is released: a refetch of the chunk must not
	// have its bytes punched out behind it.
	v.punchChunkLocked(idx)
	e.mu.Unlock()
	v.commitMu.RLock()
	if !v.detached.Load() && s.db != nil {
		s.dropChunkRec(e.name, v, nil, idx)
	}
	v.commitMu.RUnlock()
}

// verifiedChunks is the set of chunks checked against their checksum in
// this process: a chunk read from the index is checked once, not at every
// open.
type verifiedChunks struct {
	mu sync.Mutex
	// INVARIANT: a key is added only after the chunk's bytes in its data
	// file matched its checksum (verifyChunk) or were written and committed
	// by this process (settle). File IDs are never reused, so a key never
	// vouches for other content; forgetting keys costs only a re-check.
	chunks map[verKey]struct{} // GUARDED_BY(mu)
	max    int                 // bound on chunks: reaching it clears the set
}

type verKey struct {
	id  uint64
	idx int
}

func (s *Store) isVerified(id uint64, idx int) bool {
	s.verified.mu.Lock()
	defer s.verified.mu.Unlock()
	_, ok := s.verified.chunks[verKey{id, idx}]
	return ok
}

func (s *Store) markVerified(id uint64, idx int) {
	s.verified.mu.Lock()
	defer s.verified.mu.Unlock()
	if len(s.verified.chunks) >= s.verified.max {
		clear(s.verified.chunks) // bounded: forgetting only costs a re-check
	}
	s.verified.chunks[verKey{id, idx}] = struct{}{}
}
