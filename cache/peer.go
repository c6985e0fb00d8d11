package cache

// Peer chunk source: a chunk missing here may come from another node of the
// cluster instead of the origin. The source (set by the daemon in cluster
// mode) finds a holder through the scheduler's tracker and fetches the chunk
// with the checksum the holder sends; the bytes are used only when they
// match it, else the chunk is read from the origin as before. A chunk is
// named by (path, fingerprint, chunk size, index): a peer never supplies
// bytes of another version. Chunks fetched from a peer are indexed like
// origin reads that the origin did not vouch for: the group commit checks
// the origin's fingerprint once per batch (commitGroup).
//
// The serving side (ServePeerChunk) hands out only chunks of the entry's
// current version, validated against the origin within the revalidation
// window, checked against their checksum.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

// PeerKey names one chunk of one file version, cluster-wide.
type PeerKey struct {
	Path        string
	Fingerprint origin.Fingerprint
	ChunkSize   int64
	Index       int
	Len         int64 // the chunk's length (the last chunk of a file is shorter)
}

// PeerSource fetches chunks from other nodes.
type PeerSource interface {
	// Fetch fills p (len(p) == key.Len) with the chunk as another node
	// holds it and returns the checksum (xxhash64) that node sent. An
	// error: no node could supply it; the chunk is then read from the
	// origin and Done called. Fetch must return within a bounded time.
	Fetch(ctx context.Context, key PeerKey, p []byte) (sum uint64, err error)
	// Done reports that this node's fetch of key (from a peer, or from
	// the origin after Fetch failed) ended: ok, the chunk is held here now
	// (other nodes may fetch it); else a lease the source took for it is
	// to be given up.
	Done(key PeerKey, ok bool)
}

// ErrPeerNoChunk: this node does not hold the chunk of that version (or
// has not validated the version recently enough to vouch for it).
var ErrPeerNoChunk = errors.New("chunk of that version not held here")

// peerBox holds the store's peer source (atomic.Pointer needs a type).
type peerBox struct{ src PeerSource }

// SetPeerSource makes misses try src before the origin; nil stops it.
func (s *Store) SetPeerSource(src PeerSource) {
	if src == nil {
		s.peers.Store(nil)
		return
	}
	s.peers.Store(&peerBox{src: src})
}

func (s *Store) peerSource() PeerSource {
	if b := s.peers.Load(); b != nil {
		return b.src
	}
	return nil
}

// fetchFromPeer tries to fill f's buffer from another node. true: the bytes
// are there and matched the sender's checksum; false: read the origin (and
// report the outcome with peerDone).
func (e *entry) fetchFromPeer(ctx context.Context, f *fetch, clen int64) bool {
	src := e.s.peerSource()
	if src == nil || int64(len(*f.buf)) != clen {
		return false
	}
	key := e.peerKey(f, clen)
	t0 := time.Now()
	sum, err := src.Fetch(ctx, key, *f.buf)
	if err != nil {
		return false
	}
	if xxhash.Sum64(*f.buf) != sum {
		// Corrupt or short in transit: never used. The origin read
		// overwrites the buffer.
		e.s.c.checksumFailures.Add(1)
		e.s.noteError("peer-checksum", fmt.Errorf("chunk %d of %s from a peer failed its checksum; reading the origin", f.idx, e.name))
		return false
	}
	f.fromPeer, f.peerSum = true, sum
	e.s.mets.fetched(ctx, time.Since(t0))
	e.s.c.peerBytes.Add(clen)
	e.s.c.misses.Add(1)
	src.Done(key, true) // this node holds it now too
	return true
}

// peerDone reports the end of an origin read of f's chunk to the source.
func (e *entry) peerDone(f *fetch, clen int64, ok bool) {
	if src := e.s.peerSource(); src != nil {
		src.Done(e.peerKey(f, clen), ok)
	}
}

func (e *entry) peerKey(f *fetch, clen int64) PeerKey {
	return PeerKey{Path: e.name, Fingerprint: f.v.fp, ChunkSize: f.v.csize, Index: f.idx, Len: clen}
}

// ServePeerChunk copies the chunk key names into dst (len(dst) >= key.Len)
// for another node and returns its length and checksum. It serves only
// the chunk of the file's current version when that version's fingerprint
// is key's and was checked against the origin within the revalidation
// window (a check is made now if the last one is older). A chunk being
// fetched here is waited for up to wait. ErrPeerNoChunk: not held. With
// dst nil it only waits for a fetch under way (nothing is copied).
func (s *Store) ServePeerChunk(ctx context.Context, key PeerKey, dst []byte, wait time.Duration) (int, uint64, error) {
	e, err := s.peerEntry(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	defer e.unref()
	for attempt := 0; attempt < 4; attempt++ {
		e.mu.Lock()
		v, clen, ok := e.peerVersionLocked(key)
		if !ok || (dst != nil && int64(len(dst)) < clen) {
			e.mu.Unlock()
			return 0, 0, ErrPeerNoChunk
		}
		if f := v.inflight[key.Index]; f != nil && dst == nil {
			e.mu.Unlock()
			return 0, 0, e.waitPeerInflight(ctx, f, wait)
		}
		if f := v.inflight[key.Index]; f != nil {
			f.refs.Add(1)
			e.mu.Unlock()
			n, sum, err := e.servePeerInflight(ctx, f, dst[:clen], wait)
			if err == nil {
				s.c.servedBytes.Add(int64(n))
			}
			return n, sum, err
		}
		st, want, fd := v.state[key.Index], v.sums[key.Index], v.fd
		e.mu.Unlock()
		if dst == nil {
			return 0, 0, nil // nothing under way to wait for
		}
		switch st {
		case chunkPresent:
			e.verifyChunk(ctx, v, key.Index)
			continue
		case chunkVerified, chunkWritten:
			n, rerr := fd.ReadAt(dst[:clen], int64(key.Index)*v.csize)
			e.mu.Lock()
			gone := v.state[key.Index] == chunkAbsent
			e.mu.Unlock()
			if gone {
				continue // dropped under the read
			}
			if int64(n) != clen || xxhash.Sum64(dst[:clen]) != want {
				s.c.checksumFailures.Add(1)
				s.noteError("checksum", fmt.Errorf("chunk %d of %s failed its checksum when served to a peer (read %d of %d bytes, %v)", key.Index, e.name, n, clen, rerr))
				e.dropChunk(v, key.Index)
				return 0, 0, ErrPeerNoChunk
			}
			s.c.servedBytes.Add(clen)
			return int(clen), want, nil
		default:
			return 0, 0, ErrPeerNoChunk
		}
	}
	return 0, 0, ErrPeerNoChunk
}

// ErrPeerChunkBusy: the chunk is being fetched or checked here; ServePeerChunk
// serves it (waiting for the fetch, checking it) where ServePeerChunkFile
// does not.
var ErrPeerChunkBusy = errors.New("chunk being fetched or checked here")

// ServePeerChunkFile is ServePeerChunk for a chunk stored and checked here,
// handed over for the kernel to send (sendfile) instead of copied: f is an
// open file of its own on the version's data file, positioned at the chunk
// (the caller closes it), n the chunk's length and sum its checksum from the
// index. The bytes are not read here: the receiver checks them against sum,
// so a chunk dropped or damaged while it is sent is refused there and
// fetched elsewhere, never used. ErrPeerChunkBusy: the chunk is in flight
// or not checked yet (use ServePeerChunk); ErrPeerNoChunk: not held.
func (s *Store) ServePeerChunkFile(ctx context.Context, key PeerKey) (f *os.File, n int64, sum uint64, err error) {
	e, err := s.peerEntry(ctx, key)
	if err != nil {
		return nil, 0, 0, err
	}
	defer e.unref()
	e.mu.Lock()
	v, clen, ok := e.peerVersionLocked(key)
	if !ok {
		e.mu.Unlock()
		return nil, 0, 0, ErrPeerNoChunk
	}
	st, want, fd := v.state[key.Index], v.sums[key.Index], v.fd
	busy := v.inflight[key.Index] != nil || st == chunkPresent
	if busy || fd == nil || (st != chunkVerified && st != chunkWritten) {
		e.mu.Unlock()
		if busy {
			return nil, 0, 0, ErrPeerChunkBusy
		}
		return nil, 0, 0, ErrPeerNoChunk
	}
	// The entry's reference keeps fd open until unref (a replaced version's
	// files are retired, closed only with the entry): a description of our
	// own through /proc outlives it and has an offset of its own.
	f, err = os.Open(fmt.Sprintf("/proc/self/fd/%d", fd.Fd()))
	e.mu.Unlock()
	if err != nil {
		return nil, 0, 0, ErrPeerChunkBusy
	}
	off := int64(key.Index) * v.csize
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, 0, ErrPeerChunkBusy
	}
	// Read the chunk, and nothing past it: chunks are written O_DIRECT, so
	// this read goes to the disk, and the kernel's read-ahead would run on
	// into chunks not written yet, zeroing pages for holes (a twentieth of
	// the CPU time of a node serving several peers).
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	_ = unix.Fadvise(int(f.Fd()), off, clen, unix.FADV_WILLNEED)
	s.c.servedBytes.Add(clen)
	return f, clen, want, nil
}

// peerEntry opens the entry key names for serving a peer, revalidated when
// its last check is older than the revalidation window; the caller unrefs
// it. ErrPeerNoChunk when nothing of it is here.
func (s *Store) peerEntry(ctx context.Context, key PeerKey) (*entry, error) {
	name, err := cleanName(key.Path)
	if err != nil || !s.Cacheable(name) {
		return nil, ErrPeerNoChunk
	}
	s.mu.Lock()
	_, known := s.open[name]
	s.mu.Unlock()
	if !known && s.CachedBytes(name) <= 0 {
		return nil, ErrPeerNoChunk // nothing here: do not open it for nothing
	}
	e, err := s.acquire(name)
	if err != nil {
		return nil, err
	}
	if err := e.maybeRevalidate(ctx); err != nil {
		e.unref()
		return nil, ErrPeerNoChunk
	}
	return e, nil
}

// peerVersionLocked returns e's current version and the chunk's length when
// that version is key's and was checked against the origin within the
// revalidation window. Called with e.mu held.
func (e *entry) peerVersionLocked(key PeerKey) (*version, int64, bool) {
	v := e.ver
	if v == nil || v.fp != key.Fingerprint || v.csize != key.ChunkSize || key.Index < 0 || key.Index >= v.nchunks ||
		time.Since(e.checkedAt) >= e.s.cfg.Revalidate {
		return nil, 0, false
	}
	clen := chunkLen(v.size, v.csize, key.Index)
	if clen != key.Len {
		return nil, 0, false
	}
	return v, clen, true
}

// servePeerInflight waits (up to wait) for a fetch under way here and
// copies its bytes. The caller took a reference on f.
func (e *entry) servePeerInflight(ctx context.Context, f *fetch, dst []byte, wait time.Duration) (int, uint64, error) {
	defer f.release()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return 0, 0, ErrPeerNoChunk
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	if f.err != nil || f.buf == nil || len(*f.buf) != len(dst) || e.current() != f.v {
		return 0, 0, ErrPeerNoChunk
	}
	copy(dst, *f.buf)
	return len(dst), xxhash.Sum64(dst), nil
}

// waitPeerInflight waits (up to wait) for a fetch under way here to end.
func (e *entry) waitPeerInflight(ctx context.Context, f *fetch, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.done:
		return nil
	case <-t.C:
		return ErrPeerNoChunk
	case <-ctx.Done():
		return ctx.Err()
	}
}
