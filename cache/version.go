package cache

// A version: one fingerprinted content of a file, with its data files and
// the states of its chunks, from loading its chunk records out of the index
// to its detachment.

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/eddy-cluster/eddy/origin"
	"golang.org/x/sys/unix"
)

// Chunk states within a version.
const (
	chunkAbsent   uint8 = iota
	chunkPresent        // indexed, not yet checked against its checksum in this process
	chunkVerified       // indexed and checked (or written by this process)
	chunkWritten        // written to the data file by this process, awaiting its group commit (not indexed yet)
)

var errVersionChanged = errors.New("file version changed")

// errOriginChanged: the origin file opened for a version is another version
// (the path was replaced); the version was dropped and must be revalidated.
var errOriginChanged = fmt.Errorf("origin file is another version: %w", errVersionChanged)

// version is one fingerprinted content of a file: its index ID, its data
// file and the state of its chunks. A version never changes content; a
// change on the origin makes a new version with a new ID and data file.
type version struct {
	id      uint64 // 0: not indexed (degraded store)
	attr    origin.Attr
	fp      origin.Fingerprint
	size    int64
	csize   int64
	nchunks int
	fd      *os.File // data file (read-write); nil when nothing can be stored
	path    string

	dfdMu    sync.Mutex
	dfd      *os.File // GUARDED_BY(dfdMu): the data file opened O_DIRECT for chunk writes, at the first one
	dfdTried bool     // GUARDED_BY(dfdMu)
	dfdGone  bool     // GUARDED_BY(dfdMu): files() handed the files out for closing

	// INVARIANT: once detached, nothing more is indexed under id: commits
	// check detached with commitMu held shared, detach sets it with
	// commitMu held exclusive. Open readers may go on reading a detached
	// version's fd (an eviction leaves it current for them).
	commitMu sync.RWMutex // index commits hold it shared; detach exclusive
	detached atomic.Bool  // evicted, invalidated or superseded: never index again

	// INVARIANT: present counts the chunks whose state is not chunkAbsent.
	// A chunk in inflight is chunkAbsent: a fetch starts only on an absent
	// chunk and leaves inflight when its chunk is marked chunkWritten. A
	// chunkWritten chunk is in syncing under the fetch that wrote it.
	// INVARIANT: a chunk record is indexed only after its bytes are durable
	// in fd (commitGroup syncs before commitChunks). Bytes can still vanish
	// under a record (a punched chunk, a crash), so a chunkPresent chunk is
	// checked against its checksum before it is served (verifyChunk).
	// INVARIANT: a chunk's space is punched out of fd only once it is
	// chunkAbsent, and with entry.mu held from marking it so (by
	// punchChunkLocked, or when the last stored range is released): a reader
	// of the data file then sees the chunk gone, and a refetch is not
	// punched behind.
	state    []uint8        // GUARDED_BY(entry.mu)
	sums     []uint64       // GUARDED_BY(entry.mu)
	inflight map[int]*fetch // GUARDED_BY(entry.mu): chunks being fetched (their buffers hold the bytes)
	syncing  map[int]*fetch // GUARDED_BY(entry.mu): chunks written, awaiting their group commit
	present  int            // GUARDED_BY(entry.mu): chunks not absent
	// holds counts the stored ranges of this version the kernel may be
	// reading (ReadStored, until Release); punchLater, the chunks dropped
	// while holds > 0, punched when it drops to 0 (GUARDED_BY(entry.mu)).
	// INVARIANT: no chunk is punched while holds > 0.
	holds      int
	punchLater []int
	// missed marks chunks a random reader was served straight from the
	// origin (GUARDED_BY(entry.mu); nil until the first): fetched in the
	// background once the handle closes (handle.fillHoles), so what was
	// read once is local the next time.
	missed []bool
}

// directFile is the data file opened O_DIRECT, opened at the first chunk
// write (a complete file never needs it); nil: write through fd. Chunk
// writes bypass the page cache where the file system allows it: no copy
// into dirty pages (CPU on a busy node), no writeback storm behind a cold
// read, and the origin's pages are not evicted by ours.
func (v *version) directFile() *os.File {
	v.dfdMu.Lock()
	defer v.dfdMu.Unlock()
	if !v.dfdTried && !v.dfdGone && v.path != "" {
		v.dfdTried = true
		if f, err := openLocal(v.path, os.O_WRONLY|syscall.O_DIRECT, 0); err == nil {
			v.dfd = f
		}
	}
	return v.dfd
}

// files returns the version's open data files (to be closed: no direct
// file is opened after this).
func (v *version) files() []*os.File {
	v.dfdMu.Lock()
	dfd := v.dfd
	v.dfdGone = true
	v.dfdMu.Unlock()
	var fs []*os.File
	for _, f := range []*os.File{v.fd, dfd} {
		if f != nil {
			fs = append(fs, f)
		}
	}
	return fs
}

func (v *version) detach() {
	v.commitMu.Lock()
	v.detached.Store(true)
	v.commitMu.Unlock()
}

// indexedChunk is one chunk record read from the index.
type indexedChunk struct {
	idx int
	c   chunkRec
}

// loadVersion opens nv's data file and sets its chunk states from chunks,
// the version's chunk records (read in the caller's index transaction; none
// for a fresh record). fresh: the record was just made (a new ID), so its
// data file is created, not looked for first (a cold open's cost).
func (s *Store) loadVersion(name string, nv *version, chunks []indexedChunk, fresh bool) {
	nv.nchunks = nchunks(nv.size, nv.csize)
	nv.state = make([]uint8, nv.nchunks)
	nv.sums = make([]uint64, nv.nchunks)
	p := dataPath(s.dataDir, nv.id)
	var (
		fd      *os.File
		err     error
		created bool
	)
	if fresh {
		fd, err = s.createDataIn(p)
		created = err == nil
	}
	if !created {
		// An existing record's data file, or one a fresh ID somehow found
		// (its bytes are never trusted: a fresh record has no chunks).
		fd, err = s.openData(p, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			fd, err = s.createDataIn(p)
			created = true
		}
	}
	if err == nil {
		size := int64(0)
		if !created {
			var st unix.Stat_t
			if serr := unix.Fstat(int(fd.Fd()), &st); serr == nil {
				size = st.Size
			} else {
				size = -1
			}
		}
		if size != nv.size {
			// A complete data file must have the file's exact length (passthrough).
			err = fd.Truncate(nv.size)
		}
		if err != nil {
			fd.Close()
			fd = nil
		}
	}
	if err != nil {
		s.diskError("open data file", err)
		nv.id = 0
		return
	}
	nv.fd, nv.path = fd, p
	rec := &fileRec{ID: nv.id, Attr: nv.attr, ChunkSize: nv.csize}
	var stale []int
	for _, ic := range chunks {
		idx, c := ic.idx, ic.c
		if idx >= nv.nchunks || int64(c.Len) != chunkLen(nv.size, nv.csize, idx) || created {
			stale = append(stale, idx)
			continue
		}
		nv.state[idx] = chunkPresent
		if s.isVerified(nv.id, idx) {
			nv.state[idx] = chunkVerified
		}
		nv.sums[idx] = c.Sum
		nv.present++
	}
	if len(stale) > 0 {
		// The data file vanished (crash during eviction) or records are
		// malformed: those chunks are absent.
		for _, idx := range stale {
			s.dropChunkRec(name, nv, rec, idx)
		}
	}
}

// canStore reports whether new chunks of v may be written.
func (e *entry) canStore(v *version) bool {
	return v.fd != nil && v.id != 0 && !v.detached.Load()
}
