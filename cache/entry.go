package cache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
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
	dfd      *os.File // guarded by dfdMu: the data file opened O_DIRECT for chunk writes, at the first one
	dfdTried bool     // guarded by dfdMu
	dfdGone  bool     // guarded by dfdMu: files() handed the files out for closing

	commitMu sync.RWMutex // index commits hold it shared; detach exclusive
	detached atomic.Bool  // evicted, invalidated or superseded: never index again

	state    []uint8        // guarded by entry.mu
	sums     []uint64       // guarded by entry.mu
	inflight map[int]*fetch // guarded by entry.mu: chunks being fetched (their buffers hold the bytes)
	syncing  map[int]*fetch // guarded by entry.mu: chunks written, awaiting their group commit
	present  int            // guarded by entry.mu: chunks not absent
	// missed marks chunks a random reader was served straight from the
	// origin (guarded by entry.mu; nil until the first): fetched in the
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
}

func (f *fetch) release() {
	if f.refs.Add(-1) == 0 && f.buf != nil {
		f.s.putBuf(f.buf)
		f.buf = nil
	}
}

// entry is the in-memory state of a file with open handles (or background
// work) on it, or kept idle for a quick reopen (idle.go): memory follows
// open and recently used files, not cached files.
type entry struct {
	s       *Store
	name    string
	refs    int           // guarded by Store.mu
	idleEl  *list.Element // guarded by Store.mu: in Store.idle (no references)
	parking chan struct{} // guarded by Store.mu: closed when the entry has gone idle (or closed)

	revalMu sync.Mutex // serializes version changes (lock order: before Store.mu)

	mu        sync.Mutex
	ver       *version   // guarded by mu; nil: must revalidate before reading
	checkedAt time.Time  // guarded by mu: last revalidation attempt
	accessAt  time.Time  // guarded by mu: last access persisted
	retired   []*os.File // guarded by mu: data files of superseded versions, closed with the entry

	orgMu sync.Mutex
	org   origin.File        // guarded by orgMu: lazily opened origin file
	orgFP origin.Fingerprint // guarded by orgMu: org's fingerprint when last checked
}

// acquire returns the entry of name with a reference taken, waiting while
// the name's record is being dropped or its entry is going idle.
func (s *Store) acquire(name string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.waitFreeLocked(name)
	if s.closed {
		return nil, ErrClosed
	}
	e := s.open[name]
	if e == nil {
		e = &entry{s: s, name: name}
		s.open[name] = e
	}
	s.refLocked(e)
	return e, nil
}

func (e *entry) ref() {
	e.s.mu.Lock()
	e.s.refLocked(e)
	e.s.mu.Unlock()
}

// unref drops a reference; after the last one the entry goes idle (idle.go)
// or is closed.
func (e *entry) unref() {
	s := e.s
	s.mu.Lock()
	e.refs--
	if e.refs > 0 {
		s.mu.Unlock()
		return
	}
	if s.open[e.name] != e || s.closed || s.idleMax == 0 {
		if s.open[e.name] == e {
			delete(s.open, e.name)
		}
		s.mu.Unlock()
		e.closeFiles()
		return
	}
	ch := make(chan struct{})
	e.parking = ch
	s.mu.Unlock()
	e.goIdle(ch)
}

func (e *entry) current() *version {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ver
}

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

// validate makes the entry's version match attr (close-to-open check).
func (e *entry) validate(ctx context.Context, attr origin.Attr) (changed bool, err error) {
	e.revalMu.Lock()
	defer e.revalMu.Unlock()
	now := time.Now()
	e.mu.Lock()
	v := e.ver
	if v != nil && v.fp == attr.Fingerprint() && !v.detached.Load() {
		e.checkedAt = now
		e.mu.Unlock()
		e.s.touch(e, now, true)
		return false, nil
	}
	e.mu.Unlock()
	return e.install(ctx, attr, now, true)
}

// install replaces the entry's version by the one for attr: the recorded
// one when its fingerprint matches, else a new empty one (dropping the old
// content). Called with revalMu held.
func (e *entry) install(ctx context.Context, attr origin.Attr, now time.Time, validated bool) (changed bool, err error) {
	s := e.s
	fp := attr.Fingerprint()
	e.mu.Lock()
	old := e.ver
	e.mu.Unlock()
	if old != nil && old.fp != fp {
		changed = true
	}
	nv := &version{attr: attr, fp: fp, size: attr.Size, csize: s.csize}
	if s.db != nil && !s.isClosed() {
		var (
			rec    *fileRec
			chunks []indexedChunk
		)
		if err := s.db.View(func(txn *badger.Txn) error {
			var gerr error
			rec, gerr = getRec(txn, e.name)
			if gerr != nil || rec == nil || rec.Attr.Fingerprint() != fp {
				return gerr
			}
			// The chunk records in the same transaction: one index read per open.
			return chunkSums(txn, rec.ID, func(idx int, c chunkRec) {
				chunks = append(chunks, indexedChunk{idx, c})
			})
		}); err != nil {
			s.noteError("index-read", fmt.Errorf("read record of %s: %w", e.name, err))
			rec, chunks = nil, nil
		}
		if rec != nil && rec.Attr.Fingerprint() == fp {
			nv.id, nv.csize = rec.ID, rec.ChunkSize
			s.putRecTouch(e.name, rec, now, validated)
		} else {
			if rec != nil {
				changed = true
			}
			if err := s.replaceRec(e.name, rec, nv, now); err != nil {
				s.noteError("index-write", fmt.Errorf("record %s: %w", e.name, err))
				nv.id = 0
			}
		}
		if changed {
			s.c.invalidations.Add(1)
			s.inv.note(e.name, false)
		}
		if nv.id != 0 {
			s.loadVersion(e.name, nv, chunks)
		}
	} else if changed {
		s.c.invalidations.Add(1)
	}
	nv.nchunks = nchunks(nv.size, nv.csize)
	if nv.state == nil {
		nv.state = make([]uint8, nv.nchunks)
		nv.sums = make([]uint64, nv.nchunks)
	}
	nv.inflight = map[int]*fetch{}
	nv.syncing = map[int]*fetch{}
	e.mu.Lock()
	old = e.ver
	e.ver = nv
	e.checkedAt = now
	e.accessAt = now
	if old != nil {
		e.retired = append(e.retired, old.files()...)
	}
	e.mu.Unlock()
	if old != nil {
		old.detach()
		if old.attr.Ino != attr.Ino || old.attr.Dev != attr.Dev {
			e.resetOrigin()
		}
	}
	return changed, nil
}

// replaceRec writes a fresh record (new ID) for name, dropping the content
// of the previous record prev (nil if none). nv receives the new ID.
func (s *Store) replaceRec(name string, prev *fileRec, nv *version, now time.Time) error {
	id, err := s.nextID()
	if err != nil {
		return err
	}
	rec := &fileRec{ID: id, Attr: nv.attr, ChunkSize: s.csize, LastAccess: now.UnixNano(), ValidatedAt: now.UnixNano()}
	var dropped int64
	if prev != nil {
		if err := os.Remove(dataPath(s.dataDir, prev.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.diskError("remove data file", err)
		}
		dropped, err = s.deleteChunks(prev)
		if err != nil {
			return err
		}
	}
	s.totMu.RLock()
	defer s.totMu.RUnlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		if prev != nil {
			if err := txn.Delete(accessKey(prev.LastAccess, prev.ID)); err != nil {
				return err
			}
		}
		if err := txn.Set(accessKey(rec.LastAccess, id), []byte(name)); err != nil {
			return err
		}
		return txn.Set(fileKey(name), encodeRec(rec))
	})
	if err != nil {
		return err
	}
	_ = dropped
	if prev == nil {
		s.c.files.Add(1)
		if s.isPinned(name) {
			s.c.pinnedFiles.Add(1)
		}
	}
	nv.id, nv.csize = id, s.csize
	return nil
}

// deleteChunks deletes the chunk records of r and subtracts their bytes
// from the totals; it returns the bytes dropped.
func (s *Store) deleteChunks(r *fileRec) (int64, error) {
	var keys [][]byte
	var lens []int64
	err := s.db.View(func(txn *badger.Txn) error {
		return chunkSums(txn, r.ID, func(idx int, c chunkRec) {
			keys = append(keys, chunkKey(r.ID, idx))
			if idx < r.nchunks() && int64(c.Len) == chunkLen(r.size(), r.ChunkSize, idx) {
				lens = append(lens, int64(c.Len))
			} else {
				lens = append(lens, 0)
			}
		})
	})
	if err != nil {
		return 0, err
	}
	var total int64
	for len(keys) > 0 {
		n := min(len(keys), 4096)
		var sum int64
		for _, l := range lens[:n] {
			sum += l
		}
		s.totMu.RLock()
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, k := range keys[:n] {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			s.c.cachedBytes.Add(-sum)
		}
		s.totMu.RUnlock()
		if err != nil {
			return total, err
		}
		total += sum
		keys, lens = keys[n:], lens[n:]
	}
	return total, nil
}

// putRecTouch records an access to a matching record (and a validation if
// validated), at most once per accessEvery.
func (s *Store) putRecTouch(name string, rec *fileRec, now time.Time, validated bool) {
	if now.UnixNano()-rec.LastAccess < int64(s.accessEvery) && (!validated || now.UnixNano()-rec.ValidatedAt < int64(s.accessEvery)) {
		return
	}
	s.updateAccess(name, rec.ID, now, validated)
}

// touch records an access to e's file (and a successful validation if
// validated), at most once per accessEvery.
func (s *Store) touch(e *entry, now time.Time, validated bool) {
	e.mu.Lock()
	v := e.ver
	if v == nil || v.id == 0 || now.Sub(e.accessAt) < s.accessEvery {
		e.mu.Unlock()
		return
	}
	e.accessAt = now
	e.mu.Unlock()
	s.updateAccess(e.name, v.id, now, validated)
}

// openLocal opens a file of the cache's own (a data file on local disk):
// open(2) and one fcntl, where os.OpenFile also tries to register the file
// with the network poller (three more system calls, refused for a regular
// file), a cost every open of a cached file paid.
func openLocal(p string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(p, flag|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
}

// indexedChunk is one chunk record read from the index.
type indexedChunk struct {
	idx int
	c   chunkRec
}

// loadVersion opens nv's data file and sets its chunk states from chunks,
// the version's chunk records (read in the caller's index transaction; none
// for a fresh record).
func (s *Store) loadVersion(name string, nv *version, chunks []indexedChunk) {
	nv.nchunks = nchunks(nv.size, nv.csize)
	nv.state = make([]uint8, nv.nchunks)
	nv.sums = make([]uint64, nv.nchunks)
	p := dataPath(s.dataDir, nv.id)
	created := false
	fd, err := s.openData(p, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		_ = os.MkdirAll(filepath.Dir(p), 0o700)
		fd, err = s.openData(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = true
	}
	if err == nil {
		var st unix.Stat_t
		if serr := unix.Fstat(int(fd.Fd()), &st); serr == nil && st.Size != nv.size {
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

// dropChunkRec deletes one chunk record of version nv.
func (s *Store) dropChunkRec(name string, nv *version, rec *fileRec, idx int) {
	var l int64
	if idx < nv.nchunks {
		l = chunkLen(nv.size, nv.csize, idx)
	}
	s.totMu.RLock()
	defer s.totMu.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		it, err := txn.Get(chunkKey(nv.id, idx))
		if errors.Is(err, badger.ErrKeyNotFound) {
			l = 0
			return nil
		}
		if err != nil {
			return err
		}
		_ = it.Value(func(b []byte) error {
			if c, err := decodeChunk(b); err != nil || int64(c.Len) != l {
				l = 0
			}
			return nil
		})
		return txn.Delete(chunkKey(nv.id, idx))
	})
	if err != nil {
		s.noteError("index-write", fmt.Errorf("drop chunk %d of %s: %w", idx, name, err))
		return
	}
	s.c.cachedBytes.Add(-l)
	_ = rec
}

// originFile returns the entry's origin file for reading version v,
// opening it on first use. Every (re)opened file is checked with Stat: a
// file whose fingerprint is not v's holds another version's bytes (the path
// was replaced, e.g. after ESTALE), so v is dropped (the next read
// revalidates) and errOriginChanged returned; those bytes are never read
// into v.
func (e *entry) originFile(ctx context.Context, v *version) (origin.File, error) {
	e.orgMu.Lock()
	defer e.orgMu.Unlock()
	if e.org != nil && e.orgFP == v.fp {
		return e.org, nil
	}
	for attempt := 0; ; attempt++ {
		if e.org == nil {
			f, err := e.s.org.Open(ctx, e.name, os.O_RDONLY)
			for err != nil && outOfFiles(err) && e.s.shedIdle() {
				f, err = e.s.org.Open(ctx, e.name, os.O_RDONLY)
			}
			if err != nil {
				return nil, fmt.Errorf("open %s on origin: %w", e.name, err)
			}
			e.org, e.orgFP = f, origin.Fingerprint{}
		}
		a, ok := witnessed(e.org)
		if !ok {
			var err error
			if a, err = e.org.Stat(ctx); err != nil {
				_ = e.org.Close()
				e.org = nil
				return nil, fmt.Errorf("stat %s on origin: %w", e.name, err)
			}
		}
		e.orgFP = a.Fingerprint()
		if e.orgFP == v.fp {
			return e.org, nil
		}
		if attempt > 0 {
			// The path names another version now: v is out of date.
			e.dropVersion(v)
			return nil, fmt.Errorf("read %s on origin: opened %s, want %s: %w", e.name, e.orgFP, v.fp, errOriginChanged)
		}
		// A file kept open from before (another version, or an older file
		// at the path): reopen by path once.
		_ = e.org.Close()
		e.org = nil
	}
}

// dropVersion forgets v (the origin no longer has it): nothing more is
// indexed under it and the next read revalidates.
func (e *entry) dropVersion(v *version) {
	e.mu.Lock()
	if e.ver == v {
		e.ver = nil
		e.retired = append(e.retired, v.files()...)
	}
	e.checkedAt = time.Time{}
	e.mu.Unlock()
	v.detach()
}

// resetOrigin closes the origin file (stale handle, or the path now names
// another file); the next read reopens it.
func (e *entry) resetOrigin() {
	e.orgMu.Lock()
	defer e.orgMu.Unlock()
	if e.org != nil {
		_ = e.org.Close()
		e.org = nil
	}
}

// witnessed returns the attributes an origin file vouches for
// (origin.AttrWitness), ok false if it cannot.
func witnessed(f origin.File) (origin.Attr, bool) {
	if w, ok := f.(origin.AttrWitness); ok {
		return w.Witnessed()
	}
	return origin.Attr{}, false
}

// readOrigin reads p at off of version v from the origin, reopening once on
// ESTALE (the reopened file must still be version v).
func (e *entry) readOrigin(ctx context.Context, v *version, p []byte, off int64) (int, error) {
	n, _, err := e.readOriginW(ctx, v, p, off)
	return n, err
}

// readOriginW is readOrigin that also reports whether the origin vouches
// that the bytes read are version v's (origin.AttrWitness): then they can
// be indexed without another origin round trip.
func (e *entry) readOriginW(ctx context.Context, v *version, p []byte, off int64) (int, bool, error) {
	for attempt := 0; ; attempt++ {
		f, err := e.originFile(ctx, v)
		if err != nil {
			return 0, false, err
		}
		n, err := readFull(ctx, f, p, off)
		if err != nil && !errors.Is(err, io.EOF) && attempt == 0 &&
			(errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.EBADF)) {
			e.resetOrigin()
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return n, false, fmt.Errorf("read %s on origin: %w", e.name, err)
		}
		a, ok := witnessed(f)
		return n, ok && a.Fingerprint() == v.fp, err
	}
}

// readOriginPaced is readOrigin in pacedPiece pieces, one after another,
// so that a reader's direct read waits behind one piece, not a chunk; and
// each piece yields to readers (Store.yieldToReaders).
func (e *entry) readOriginPaced(ctx context.Context, v *version, p []byte, off int64, hurry *atomic.Bool) (int, bool, error) {
	total, vouched := 0, true
	for total < len(p) {
		if hurry.Load() {
			n, ok, err := e.readOriginW(ctx, v, p[total:], off+int64(total))
			return total + n, vouched && ok, err
		}
		if err := e.s.yieldToReaders(ctx, hurry); err != nil {
			return total, false, err
		}
		end := min(total+pacedPiece, len(p))
		n, ok, err := e.readOriginW(ctx, v, p[total:end], off+int64(total))
		total += n
		vouched = vouched && ok
		if err != nil {
			return total, false, err
		}
	}
	return total, vouched, nil
}

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

// canStore reports whether new chunks of v may be written.
func (e *entry) canStore(v *version) bool {
	return v.fd != nil && v.id != 0 && !v.detached.Load()
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
	t0 := time.Now()
	var n int
	var err error
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

// forceRevalidate makes the next read check the origin.
func (e *entry) forceRevalidate() {
	e.mu.Lock()
	e.checkedAt = time.Time{}
	e.mu.Unlock()
}

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
	punchHole(v.fd, int64(idx)*v.csize, chunkLen(v.size, v.csize, idx))
	e.mu.Unlock()
	v.commitMu.RLock()
	if !v.detached.Load() && s.db != nil {
		s.dropChunkRec(e.name, v, nil, idx)
	}
	v.commitMu.RUnlock()
}

func punchHole(f *os.File, off, n int64) {
	if f == nil || n <= 0 {
		return
	}
	_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// maybeRevalidate re-checks the origin when the entry's last check is older
// than cfg.Revalidate (or forced). Trouble keeps serving the cached version
// (invariant 5); ENOENT drops it.
func (e *entry) maybeRevalidate(ctx context.Context) error {
	s := e.s
	e.mu.Lock()
	need := e.ver == nil || time.Since(e.checkedAt) >= s.cfg.Revalidate
	mustHave := e.ver == nil
	e.mu.Unlock()
	if !need {
		return nil
	}
	if mustHave {
		e.revalMu.Lock()
	} else if !e.revalMu.TryLock() {
		return nil // another reader is checking; serve what is current
	}
	defer e.revalMu.Unlock()
	e.mu.Lock()
	need = e.ver == nil || time.Since(e.checkedAt) >= s.cfg.Revalidate
	e.mu.Unlock()
	if !need {
		return nil
	}
	attr, err := s.org.Lstat(ctx, e.name)
	now := time.Now()
	if err != nil {
		e.mu.Lock()
		e.checkedAt = now
		have := e.ver != nil
		e.mu.Unlock()
		if origin.IsNotExist(err) {
			s.dropName(e.name, dropGone, e)
			return fmt.Errorf("cache: revalidate %s: %w", e.name, err)
		}
		if have {
			s.log.Debug("revalidation failed; serving the cached version", "path", e.name, "err", err)
			return nil
		}
		return fmt.Errorf("cache: revalidate %s: %w", e.name, err)
	}
	s.c.revalidations.Add(1)
	e.mu.Lock()
	v := e.ver
	e.mu.Unlock()
	if v != nil && v.fp == attr.Fingerprint() {
		e.mu.Lock()
		e.checkedAt = now
		e.mu.Unlock()
		s.touch(e, now, true)
		return nil
	}
	if !attr.IsRegular() {
		s.dropName(e.name, dropGone, e)
		return fmt.Errorf("cache: revalidate %s: no longer a regular file: %w", e.name, ErrNotCacheable)
	}
	_, err = e.install(ctx, attr, now, true)
	return err
}

// raJob asks a worker to fetch one chunk: ahead of a sequential reader
// (Store.raq), or behind a random reader's direct read (Store.bgq).
type raJob struct {
	e      *entry
	v      *version
	idx    int
	paced  bool // read the chunk in pieces, leaving room on the link for direct reads
	missed bool // fillq: only the chunks random readers missed (version.missed)
}

// Background fetches for random reads: one worker whose origin reads yield
// to readers (yieldToReaders), so they never take the link from them, and a
// bounded queue (a full queue drops the request: a later miss asks again).
const (
	bgWorkers  = 1
	bgQueueLen = 64
	// fillQueueLen bounds the files waiting to have the holes a sequential
	// reader left filled in.
	fillQueueLen = 256
	// bgIdleGap: a background piece goes when no reader was served straight
	// from the origin for this long ...
	bgIdleGap = 10 * time.Millisecond
	// bgTrickle: ... or when the last piece went this long ago, so that a
	// file read at random without pause still becomes cached, slowly
	// (pacedPiece per bgTrickle: 2.6 MB/s).
	bgTrickle = 100 * time.Millisecond
	// rangeAlign is the alignment a random read of a missing chunk is
	// rounded out to when served straight from the origin (the bytes are not
	// stored, so more would only cost link time).
	rangeAlign = 4 << 10
	// pacedPiece is the size of the origin reads of a background fetch.
	pacedPiece = 256 << 10
	// seqSlack is how far from the previous read's end a read may start
	// and still count as sequential (concurrent kernel reads arrive a
	// little out of order).
	seqSlack = 1 << 20
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

// handle is one open read-only view.
type handle struct {
	e      *entry
	closed atomic.Bool

	mu      sync.Mutex
	lastEnd int64    // guarded by mu: end of the previous read
	seq     int      // guarded by mu: consecutive sequential reads
	raNext  int      // guarded by mu: first chunk not yet queued for read-ahead
	pt      *os.File // guarded by mu: passthrough file (the version's data file), once handed out
	seqRead int64    // guarded by mu: bytes read as part of sequential runs
	ptDone  bool     // guarded by mu

	// The origin file this handle opened (inode and device; unset when the
	// origin's inode numbers are not stable): a version of another file
	// under the name (replaced by a rename) is never read through it.
	ino, dev uint64
	pinned   bool
}

func newHandle(e *entry) *handle {
	h := &handle{e: e, lastEnd: -1}
	if v := e.current(); v != nil && !v.attr.InoVolatile {
		h.ino, h.dev, h.pinned = v.attr.Ino, v.attr.Dev, true
	}
	return h
}

// replaced reports whether v is the content of another file than the one
// this handle opened: the name was replaced on the origin since. Reading
// on would splice two files into one read stream, so such reads fail with
// ESTALE, as an NFS client's reads of a file deleted on the server do (a
// file rewritten in place keeps its inode and is followed, as there).
func (h *handle) replaced(v *version) bool {
	return h.pinned && !v.attr.InoVolatile && (v.attr.Ino != h.ino || v.attr.Dev != h.dev)
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
	random := h.isRandom(off)
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

// isRandom reports whether a read at off is not part of a sequential run:
// it jumps more than seqSlack away from the previous read's end. A
// handle's first read counts as sequential (readers starting in the middle
// of a file, several kernel reads in flight).
func (h *handle) isRandom(off int64) bool {
	const slack = seqSlack
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 || h.lastEnd < 0 {
		return false
	}
	return off < h.lastEnd-slack || off > h.lastEnd+slack
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

// fillHoles queues the handle's file for completion in the background when
// the handle streamed most of it and left chunks absent: chunks served
// straight from the origin while every buffer waited on the disk, or
// read-ahead that found its queue full. A file read through once is then
// complete, and its next open uses passthrough. Otherwise the chunks random
// readers were served directly for and that are still absent (their
// fetches behind the reads found the queue full) are queued: what was read
// once is local the next time.
func (h *handle) fillHoles(streamed int64) {
	e := h.e
	s := e.s
	v := e.current()
	if v == nil || !e.canStore(v) {
		return
	}
	whole := 2*streamed >= v.size
	e.mu.Lock()
	want := false
	if whole {
		want = v.present < v.nchunks
	} else {
		for idx, m := range v.missed {
			if m && v.state[idx] == chunkAbsent {
				want = true
				break
			}
		}
	}
	e.mu.Unlock()
	if !want || !s.persistAllowed(0) {
		return
	}
	e.ref()
	select {
	case s.fillq <- raJob{e: e, v: v, missed: !whole}:
	default:
		e.unref()
		if whole {
			// Many files left incomplete at once (a cold epoch over small
			// files outran the disk): remember the name, not the entry.
			s.fillLater(e.name)
		}
	}
}

// fillWorker completes the files queued by fillHoles, one chunk at a time
// at idle priority (paced: readers' fetches go first), then those
// remembered by name when the queue was full.
func (s *Store) fillWorker() {
	defer s.wg.Done()
	for {
		var j raJob
		select {
		case <-s.ctx.Done():
			drainJobs(s.fillq)
			return
		case j = <-s.fillq:
		default:
			name, ok := s.nextFill()
			if !ok {
				select {
				case <-s.ctx.Done():
					drainJobs(s.fillq)
					return
				case j = <-s.fillq:
				case <-s.fillWake:
					continue
				}
			} else if j, ok = s.fillJob(name); !ok {
				continue
			}
		}
		for idx := 0; idx < j.v.nchunks && s.ctx.Err() == nil; idx++ {
			j.e.mu.Lock()
			absent := j.e.ver == j.v && j.v.state[idx] == chunkAbsent && j.v.inflight[idx] == nil &&
				(!j.missed || (idx < len(j.v.missed) && j.v.missed[idx]))
			j.e.mu.Unlock()
			if !absent {
				continue
			}
			if _, err := j.e.fetchChunk(s.ctx, j.v, idx, true, true); err != nil {
				break
			}
		}
		j.e.unref()
	}
}

// maxFillNames bounds the names remembered for completion in the
// background beyond fillQueueLen (names only: no entry, no descriptor).
const maxFillNames = 1 << 16

// fillLater remembers name for completion in the background.
func (s *Store) fillLater(name string) {
	s.fillMu.Lock()
	if _, ok := s.fillSet[name]; !ok && len(s.fillSet) < maxFillNames {
		s.fillSet[name] = struct{}{}
		s.fillNames = append(s.fillNames, name)
	}
	s.fillMu.Unlock()
	signal(s.fillWake)
}

// nextFill takes the oldest remembered name.
func (s *Store) nextFill() (string, bool) {
	s.fillMu.Lock()
	defer s.fillMu.Unlock()
	if len(s.fillNames) == 0 {
		return "", false
	}
	name := s.fillNames[0]
	s.fillNames[0] = ""
	s.fillNames = s.fillNames[1:]
	if len(s.fillNames) == 0 {
		s.fillNames = nil
	}
	delete(s.fillSet, name)
	return name, true
}

// fillJob makes a completion job of a remembered name: its entry's current
// version, validated against the origin first when the entry is no longer
// in memory (as an open would).
func (s *Store) fillJob(name string) (raJob, bool) {
	e, err := s.acquire(name)
	if err != nil {
		return raJob{}, false
	}
	v := e.current()
	if v == nil || v.detached.Load() {
		if attr, err := s.org.Lstat(s.ctx, name); err == nil && attr.IsRegular() {
			_, _ = e.validate(s.ctx, attr)
		}
		v = e.current()
	}
	if v == nil || !e.canStore(v) || !s.persistAllowed(0) {
		e.unref()
		return raJob{}, false
	}
	return raJob{e: e, v: v}, true
}
