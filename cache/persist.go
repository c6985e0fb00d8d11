package cache

// Write-behind persistence with group commit.
//
// A fetched chunk goes through two steps after its origin read:
//
//  1. persist (one goroutine per fetch, bounded by the chunk buffers):
//     pwrite the bytes into the version's data file, with O_DIRECT where the
//     chunk is aligned (no copy into dirty pages, no writeback storm, the
//     page cache keeps the origin's pages), else buffered with its
//     writeback started at once (sync_file_range); mark the chunk
//     chunkWritten (readers now read it from the data file), give the
//     buffer back and take a place in the commit queue (maxSyncPending;
//     at most maxPersistWaiting steps wait for one without their buffer).
//  2. syncLoop (one goroutine per store): every commits.every, or as soon
//     as commits.batch chunks wait, fdatasync each data file once and commit
//     all of the batch's checksums in one index transaction per file. Only then
//     are the chunks indexed (invariant 2) and chunkVerified; any page cache
//     they still have is dropped, so caching does not double the
//     page-cache pressure of a cold read.
//
// When the disk is slower than the origin, the buffers stay busy in step 1
// and readers are served straight from the origin (entry.readDirect): a
// cold read never runs at the disk's pace.
//
// Readers never wait for either step: they copy from the fetch buffer, or
// read the written bytes back from the data file.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Group-commit defaults.
const (
	defaultSyncEvery = 100 * time.Millisecond
	defaultSyncBatch = 16  // chunks: 128 MiB at the default chunk size
	maxSyncPending   = 128 // chunks written and awaiting their commit
	// maxPersistWaiting bounds the persist steps waiting for a place in
	// the commit queue without holding a buffer.
	maxPersistWaiting = 512
)

// groupCommit is the queue of written chunks awaiting their commit, and the
// channels that drive syncLoop.
type groupCommit struct {
	mu    sync.Mutex
	queue []*fetch  // GUARDED_BY(mu): written chunks awaiting their commit, oldest first
	since time.Time // GUARDED_BY(mu): when the oldest of queue was queued
	// INVARIANT: each fetch in queue, or in the batch syncLoop is
	// committing, holds one token of sem and one reference on its entry;
	// both are released after its persisted channel is closed. So at most
	// maxSyncPending chunks are written and not yet committed.
	sem     chan struct{} // bounds queue plus the batch being committed
	waitSem chan struct{} // bounds the persist steps waiting for sem without a buffer
	wake    chan struct{} // something was queued
	now     chan struct{} // commit without waiting for a fuller batch
	stop    chan struct{} // closed by Close after the last persist step
	done    chan struct{} // closed when syncLoop has committed everything and returned
	every   time.Duration // commit at least this often while chunks wait
	batch   int           // commit at once when this many chunks wait
}

func (e *entry) newFetch(v *version, idx int, buf *[]byte) *fetch {
	return &fetch{v: v, idx: idx, done: make(chan struct{}), s: e.s, buf: buf, e: e, persisted: make(chan struct{})}
}

// beginPersist registers one persist step; false once the store is
// closing (Close waits for the registered ones, so it never races an Add).
func (s *Store) beginPersist() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.persists.Add(1)
	return true
}

// startPersist runs f's persist step, in the background when async. The
// step owns one buffer reference and one entry reference.
func (e *entry) startPersist(f *fetch, async bool) {
	s := e.s
	if !s.beginPersist() {
		e.endFetch(f)
		return
	}
	if async {
		go func() { defer s.persists.Done(); e.persist(f) }()
		return
	}
	defer s.persists.Done()
	e.persist(f)
}

// endFetch ends a fetch that will not be committed.
func (e *entry) endFetch(f *fetch) {
	e.mu.Lock()
	if f.v.inflight[f.idx] == f {
		delete(f.v.inflight, f.idx)
	}
	e.mu.Unlock()
	f.release()
	close(f.persisted)
	e.unref()
}

// persist writes a fetched chunk into the data file and queues it for the
// group commit. It never syncs: that is syncLoop's job.
func (e *entry) persist(f *fetch) {
	s, v := e.s, f.v
	if f.err != nil || !e.canStore(v) || !s.persistAllowed(int64(len(*f.buf))) {
		e.endFetch(f)
		return
	}
	buf := *f.buf
	off := int64(f.idx) * v.csize
	sum := f.peerSum
	if !f.fromPeer {
		sum = xxhash.Sum64(buf)
	}
	dfd := v.directFile()
	direct := dfd != nil && directOK(buf, off)
	var err error
	if direct {
		_, err = s.writeData(dfd, buf, off)
		if errors.Is(err, syscall.EINVAL) {
			direct = false // the file system refuses this O_DIRECT write
		}
	}
	if !direct {
		_, err = s.writeData(v.fd, buf, off)
	}
	if err != nil {
		s.diskError("write chunk", err)
		punchHole(v.fd, off, int64(len(buf)))
		e.endFetch(f)
		return
	}
	if !direct {
		// Start writeback now, so the batch's fdatasync has little left to
		// do and dirty pages do not pile up.
		_ = unix.SyncFileRange(int(v.fd.Fd()), off, int64(len(buf)), unix.SYNC_FILE_RANGE_WRITE)
	}
	f.sum, f.n = sum, len(buf)
	queued := false
	e.mu.Lock()
	if v.inflight[f.idx] == f {
		delete(v.inflight, f.idx)
	}
	if v.state[f.idx] == chunkAbsent {
		v.state[f.idx] = chunkWritten
		v.present++
		v.sums[f.idx] = sum
		v.syncing[f.idx] = f
		queued = true
	}
	e.mu.Unlock()
	if !queued {
		f.release()
		close(f.persisted)
		e.unref()
		return
	}
	// Bounded waiting for the commit queue: a persist step holds its entry
	// and the entry's open files, and while commits lag an unbounded
	// number of them ran the daemon out of file descriptors during a cold
	// epoch over many small files. Up to maxPersistWaiting steps wait
	// without their buffer; beyond that they keep it, so fetches run out
	// of buffers and readers are served from the origin until commits
	// catch up.
	s.commits.waitSem <- struct{}{}
	f.release()
	s.commits.sem <- struct{}{} // bounded: released by syncLoop after the commit
	<-s.commits.waitSem
	s.commits.mu.Lock()
	if len(s.commits.queue) == 0 {
		s.commits.since = time.Now()
	}
	s.commits.queue = append(s.commits.queue, f)
	full := len(s.commits.queue) >= s.commits.batch || f.urgent
	s.commits.mu.Unlock()
	signal(s.commits.wake)
	if full {
		signal(s.commits.now)
	}
}

// directAlign is the alignment O_DIRECT needs of buffer, offset and length
// (the logical block size is at most this on every disk we run on).
const directAlign = 4096

// directOK reports whether buf can be written at off with O_DIRECT (the
// tail chunk of a file usually cannot: it goes through the page cache).
func directOK(buf []byte, off int64) bool {
	return len(buf) > 0 && len(buf)%directAlign == 0 && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(&buf[0]))%directAlign == 0
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// syncSoon asks syncLoop to commit what is waiting without waiting for a
// fuller batch.
func (s *Store) syncSoon() { signal(s.commits.now) }

// syncLoop group-commits written chunks until Close has stopped every
// persist step and the queue is empty.
func (s *Store) syncLoop() {
	defer close(s.commits.done)
	for {
		select {
		case <-s.commits.wake:
		case <-s.commits.now:
		case <-s.commits.stop:
		}
		s.commits.mu.Lock()
		n, since := len(s.commits.queue), s.commits.since
		s.commits.mu.Unlock()
		stopping := false
		select {
		case <-s.commits.stop:
			stopping = true
		default:
		}
		if n == 0 {
			if stopping {
				return
			}
			continue
		}
		if n < s.commits.batch && !stopping {
			if d := time.Until(since.Add(s.commits.every)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-s.commits.now:
				case <-s.commits.stop:
				}
				t.Stop()
			}
		}
		s.commits.mu.Lock()
		batch := s.commits.queue
		s.commits.queue = nil
		s.commits.mu.Unlock()
		s.commitBatch(batch)
		signal(s.commits.wake) // more may have arrived meanwhile
	}
}

// commitParallel bounds the files of one batch committed at once: their index transactions
// (and fdatasyncs, when the batch is not synced as a whole) overlap instead of each waiting for
// the one before, which made a batch of small files (a dataset being warmed, a cold epoch) as
// slow as its files times one round trip to the cache disk.
const commitParallel = 16

// syncfsFiles: a batch of at least this many files is synced with one syncfs.
const syncfsFiles = 4

// commitBatch makes a batch of written chunks durable (one syncfs for a batch
// of many files, else one fdatasync per data file) and indexes them (one
// transaction per file). Files commit in parallel; the versions of one file in
// turn, in the order they came.
func (s *Store) commitBatch(batch []*fetch) {
	type group struct {
		e  *entry
		v  *version
		fs []*fetch
	}
	var perEntry [][]*group
	byVer := map[*version]*group{}
	entryAt := map[*entry]int{}
	for _, f := range batch {
		g := byVer[f.v]
		if g == nil {
			g = &group{e: f.e, v: f.v}
			byVer[f.v] = g
			i, ok := entryAt[f.e]
			if !ok {
				i = len(perEntry)
				entryAt[f.e] = i
				perEntry = append(perEntry, nil)
			}
			perEntry[i] = append(perEntry[i], g)
		}
		g.fs = append(g.fs, f)
	}
	// Many files: one syncfs of the cache's file system makes them all durable for about the
	// cost of one fdatasync (measured here: ~5 ms each on a loaded VM disk, the limit of warming
	// a directory of small files). When it fails, each file's fdatasync reports its own error.
	synced := false
	if len(perEntry) >= syncfsFiles {
		if err := s.syncFS(); err == nil {
			synced = true
		}
	}
	commit := func(gs []*group) {
		for _, g := range gs {
			stored := g.e.commitGroup(g.v, g.fs, synced)
			g.e.settle(g.v, g.fs, stored)
			for _, f := range g.fs {
				close(f.persisted)
				<-s.commits.sem
				g.e.unref()
			}
		}
	}
	if len(perEntry) == 1 {
		commit(perEntry[0])
		return
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, commitParallel)
	for _, gs := range perEntry {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			commit(gs)
		}()
	}
	wg.Wait()
}

// commitGroup syncs v's data file (unless synced: the batch's syncfs did) and
// indexes fs; it reports whether they are stored (indexed, or kept in memory
// for an evicted open version).
func (e *entry) commitGroup(v *version, fs []*fetch, synced bool) bool {
	s := e.s
	if v.detached.Load() {
		return e.current() == v // evicted while open: valid for its readers
	}
	// The bytes are indexed only under the fingerprint they were read for:
	// check the origin once per batch, after every fetch of it ended,
	// unless the origin vouched for each fetch's bytes as it returned them.
	if !allVouched(fs) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		of, err := e.originFile(ctx, v)
		if errors.Is(err, errVersionChanged) {
			return false
		}
		if err == nil {
			if a, err := of.Stat(ctx); err != nil || a.Fingerprint() != v.fp {
				if err == nil {
					e.forceRevalidate()
				}
				return false
			}
		}
	}
	if !synced {
		if err := s.syncData(v.fd); err != nil {
			s.diskError("sync chunks", err)
			return false
		}
	}
	s.diskOK()
	if s.commitChunks(e.name, v, fs) {
		return true
	}
	return v.detached.Load() && e.current() == v
}

// allVouched reports whether the origin vouched for every fetch's bytes.
func allVouched(fs []*fetch) bool {
	for _, f := range fs {
		if !f.vouched {
			return false
		}
	}
	return true
}

// settle moves fs out of the written state: verified when stored, absent
// (space punched) otherwise.
func (e *entry) settle(v *version, fs []*fetch, stored bool) {
	s := e.s
	var verified, recDrop []*fetch
	e.mu.Lock()
	for _, f := range fs {
		mine := v.syncing[f.idx] == f
		if mine {
			delete(v.syncing, f.idx)
		}
		switch {
		case !mine || v.state[f.idx] != chunkWritten:
			// Dropped meanwhile (a failed read of the data file, which
			// punched its space): its record must go too.
			if stored && v.state[f.idx] == chunkAbsent {
				recDrop = append(recDrop, f)
			}
		case stored:
			v.state[f.idx] = chunkVerified
			verified = append(verified, f)
		default:
			v.state[f.idx] = chunkAbsent
			v.present--
			// Punched before e.mu is released: a refetch of the chunk
			// must not have its bytes punched out behind it.
			v.punchChunkLocked(f.idx)
		}
	}
	e.mu.Unlock()
	for _, f := range verified {
		s.markVerified(v.id, f.idx)
		// Durable: its pages need not stay cached twice (origin's and ours).
		_ = unix.Fadvise(int(v.fd.Fd()), int64(f.idx)*v.csize, int64(f.n), unix.FADV_DONTNEED)
	}
	if len(recDrop) > 0 {
		v.commitMu.RLock()
		if !v.detached.Load() {
			for _, f := range recDrop {
				s.dropChunkRec(e.name, v, nil, f.idx)
			}
		}
		v.commitMu.RUnlock()
	}
}

// commitChunks indexes durable chunks of v in one transaction, if v is
// still the file's recorded version.
func (s *Store) commitChunks(name string, v *version, fs []*fetch) bool {
	v.commitMu.RLock()
	defer v.commitMu.RUnlock()
	if v.detached.Load() {
		return false
	}
	s.totMu.RLock()
	defer s.totMu.RUnlock()
	var added int64
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		added = 0
		err = s.db.Update(func(txn *badger.Txn) error {
			id, err := getRecID(txn, name)
			if err != nil {
				return err
			}
			if id != v.id {
				return errVersionChanged
			}
			for _, f := range fs {
				k := chunkKey(v.id, f.idx)
				if _, err := txn.Get(k); err == nil {
					continue
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
				if err := txn.Set(k, chunkRec{Sum: f.sum, Len: uint32(f.n)}.encode()); err != nil {
					return err
				}
				added += int64(f.n)
			}
			return nil
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	if err != nil {
		if !errors.Is(err, errVersionChanged) && !errors.Is(err, badger.ErrConflict) {
			s.noteError("index-write", fmt.Errorf("commit %d chunks of %s: %w", len(fs), name, err))
		}
		return false
	}
	if added > 0 {
		s.c.cachedBytes.Add(added)
		s.inv.note(name, false)
		if s.c.cachedBytes.Load() > s.disk.quota.Load() {
			s.kickEvict()
		}
	}
	s.noteRecovered("index-write")
	return true
}

// fsSyncer syncs the file system of the cache's data directory through one descriptor kept for
// the store's life: syncfs reports a writeback error of any file on the file system once per
// descriptor, for errors since the descriptor was opened, so a descriptor opened per call would
// miss an error of a page written back before it.
type fsSyncer struct {
	once sync.Once
	fd   int // -1 when the directory could not be opened
}

// sync returns the store's syncFS.
func (f *fsSyncer) sync(dir string) func() error {
	return func() error {
		f.once.Do(func() {
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				fd = -1
			}
			f.fd = fd
		})
		if f.fd < 0 {
			return fmt.Errorf("cache: open %s for syncfs failed", dir)
		}
		return unix.Syncfs(f.fd)
	}
}

// close releases the descriptor; syncLoop has returned, so no sync runs.
func (f *fsSyncer) close() {
	f.once.Do(func() { f.fd = -1 })
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
}
