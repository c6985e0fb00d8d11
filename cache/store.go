package cache

// Lock order (outer first). A goroutine holding a lock never takes one listed
// above it:
//
//	entry.revalMu   serializes version changes of one open file (revalidate, drop)
//	Store.mu        the open-entry map and the busy set
//	entry.mu        one open file's current version and chunk states
//	version.commitMu  index commits of one version vs its detachment
//	Store.totMu     index commits that change totals vs the start-up totals snapshot
//	Store.pinMu, Store.verMu, Store.errMu, Store.invMu  leaf locks
//
// No lock is held across origin I/O; badger transactions run under commitMu
// and totMu only (both are short).

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/eddy-cluster/eddy/origin"
)

// Store is the node's chunk cache. Safe for concurrent use.
type Store struct {
	cfg     Config
	org     origin.FS
	log     *slog.Logger
	csize   int64
	dataDir string
	db      *badger.DB // nil: no usable index; every read goes to the origin
	seq     *badger.Sequence

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// persists counts persist steps; Add only under mu while !closed
	// (beginPersist), so Close's Wait never races an Add.
	persists sync.WaitGroup

	// Group commit of written chunks (persist.go).
	syncMu    sync.Mutex
	syncQ     []*fetch      // guarded by syncMu: written chunks awaiting their commit
	syncSince time.Time     // guarded by syncMu: when the oldest of syncQ was queued
	syncSem   chan struct{} // bounds syncQ plus the batch being committed
	waitSem   chan struct{} // bounds the persist steps waiting for syncSem without a buffer
	syncWake  chan struct{} // something was queued
	syncNow   chan struct{} // commit without waiting for a fuller batch
	syncStop  chan struct{} // closed by Close after the last persist step
	syncDone  chan struct{} // closed when syncLoop has committed everything and returned
	syncEvery time.Duration
	syncBatch int

	mu      sync.Mutex
	open    map[string]*entry // guarded by mu: files with open handles (or work in flight), and idle ones
	idle    *list.List        // guarded by mu: idle entries (no references), most recently used first
	idleMax int
	busy    map[string]chan struct{} // guarded by mu: names whose record is being dropped
	closed  bool                     // guarded by mu

	totMu     sync.RWMutex // commits that change cachedBytes/files hold it shared; the totals snapshot exclusive
	scanDone  atomic.Bool
	fsSize    atomic.Int64
	quota     atomic.Int64
	freeAt    atomic.Int64 // unix ns of the last statfs
	backoff   atomic.Int64 // unix ns until which persisting is paused after a disk error
	degraded  atomic.Bool
	pinChange chan struct{}

	pinMu sync.RWMutex
	pins  map[string]struct{} // guarded by pinMu: pinned files and directory prefixes

	verMu    sync.Mutex
	verified map[verKey]struct{} // guarded by verMu: chunks checked against their checksum in this process

	errMu     sync.Mutex
	lastErr   string          // guarded by errMu
	lastErrAt time.Time       // guarded by errMu
	errConds  map[string]bool // guarded by errMu: conditions logged and not yet recovered

	bufSem  chan struct{} // bounds chunk buffers in use
	bufPool sync.Pool
	raq     chan raJob
	bgq     chan raJob // chunks missed by random reads, fetched in the background (dropped when full)
	fillq   chan raJob // files a sequential reader left incomplete, completed in the background (idx unused)
	// Files left incomplete beyond fillq's length, by name (fillLater).
	fillMu    sync.Mutex
	fillNames []string            // guarded by fillMu: oldest first
	fillSet   map[string]struct{} // guarded by fillMu
	fillWake  chan struct{}
	// lastDirect and lastPiece (unix ns): when a reader was last served
	// straight from the origin, and when a background piece last went
	// (yieldToReaders).
	lastDirect, lastPiece atomic.Int64
	evictCh               chan struct{}

	inv inventoryLog

	// Queued access and validation times (access.go).
	accMu      sync.Mutex
	accPending map[string]accessReq // guarded by accMu
	accFlushMu sync.Mutex           // one flush at a time
	accWake    chan struct{}

	c    counters
	mets *metrics

	// test hooks and tunables
	writeData   func(f *os.File, p []byte, off int64) (int, error)
	syncData    func(f *os.File) error
	accessEvery time.Duration // persist last access at most this often per file
	verifyMax   int
}

type verKey struct {
	id  uint64
	idx int
}

type counters struct {
	hitBytes, missBytes, directBytes, hits, misses atomic.Int64
	cachedBytes, files, pinnedFiles                atomic.Int64
	evictions, evictedBytes, passthroughOpen       atomic.Int64
	passthroughBytes                               atomic.Int64
	revalidations, invalidations                   atomic.Int64
	checksumFailures, errors, diskFree             atomic.Int64
}

// Open opens (or creates) the cache in cfg.Dir. A broken index is moved
// aside and rebuilt; an unusable cache directory leaves a degraded store
// that serves every read from the origin. Only a missing Dir or origin is
// an error.
func Open(ctx context.Context, org origin.FS, cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: open: Config.Dir is required")
	}
	if org == nil {
		return nil, errors.New("cache: open: no origin")
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxBytes == 0 && cfg.MaxPercent == 0 {
		cfg.MaxPercent = DefaultMaxPercent
	}
	if cfg.MinFreePercent == 0 {
		cfg.MinFreePercent = DefaultMinFreePercent
	}
	if cfg.MinFreePercent < 0 {
		cfg.MinFreePercent = 0
	}
	if cfg.Revalidate <= 0 {
		cfg.Revalidate = DefaultRevalidate
	}
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = DefaultReadAhead
	}
	if cfg.ReadAhead < 0 {
		cfg.ReadAhead = 0
	}
	if cfg.FetchWorkers <= 0 {
		cfg.FetchWorkers = DefaultFetchWorkers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:         cfg,
		org:         org,
		log:         cfg.Logger.With("component", "cache"),
		csize:       cfg.ChunkSize,
		dataDir:     filepath.Join(cfg.Dir, "data"),
		ctx:         sctx,
		cancel:      cancel,
		open:        map[string]*entry{},
		idle:        list.New(),
		idleMax:     idleLimit(cfg.IdleFiles),
		busy:        map[string]chan struct{}{},
		pins:        map[string]struct{}{},
		accPending:  map[string]accessReq{},
		accWake:     make(chan struct{}, 1),
		verified:    map[verKey]struct{}{},
		errConds:    map[string]bool{},
		bufSem:      make(chan struct{}, cfg.FetchWorkers+4),
		raq:         make(chan raJob, cfg.FetchWorkers*4),
		bgq:         make(chan raJob, bgQueueLen),
		fillq:       make(chan raJob, fillQueueLen),
		fillSet:     map[string]struct{}{},
		fillWake:    make(chan struct{}, 1),
		evictCh:     make(chan struct{}, 1),
		pinChange:   make(chan struct{}, 1),
		writeData:   func(f *os.File, p []byte, off int64) (int, error) { return f.WriteAt(p, off) },
		syncData:    func(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) },
		accessEvery: 10 * time.Second,
		syncSem:     make(chan struct{}, maxSyncPending),
		waitSem:     make(chan struct{}, maxPersistWaiting),
		syncWake:    make(chan struct{}, 1),
		syncNow:     make(chan struct{}, 1),
		syncStop:    make(chan struct{}),
		syncDone:    make(chan struct{}),
		syncEvery:   defaultSyncEvery,
		syncBatch:   defaultSyncBatch,
		verifyMax:   1 << 18,
	}
	s.inv.init(4096)
	s.bufPool.New = func() any { b := make([]byte, s.csize); return &b }

	if err := s.openDisk(); err != nil {
		s.noteError("cache-dir", fmt.Errorf("cache dir %s unusable, serving from the origin: %w", cfg.Dir, err))
		s.degraded.Store(true)
		s.scanDone.Store(true)
	}
	mets, err := newMetrics(cfg.Meter, s)
	if err != nil {
		s.log.Warn("cache metrics not registered", "err", err)
	}
	s.mets = mets
	go s.syncLoop()
	for range cfg.FetchWorkers {
		s.wg.Add(1)
		go s.fetchWorker(s.raq)
	}
	for range bgWorkers {
		s.wg.Add(1)
		go s.fetchWorker(s.bgq)
	}
	s.wg.Add(1)
	go s.fillWorker()
	if s.db != nil {
		s.wg.Add(3)
		go s.scanTotals()
		go s.evictLoop()
		go s.accessLoop()
	}
	return s, nil
}

// openDisk creates the layout and opens the index.
func (s *Store) openDisk() error {
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return err
	}
	db, broken, err := openIndex(filepath.Join(s.cfg.Dir, "index"), s.log)
	if err != nil {
		return err
	}
	if broken != nil {
		// Chunks without their checksums cannot be trusted: start empty.
		s.noteError("index-rebuilt", fmt.Errorf("cache index was unreadable and was rebuilt empty: %w", broken))
		aside := fmt.Sprintf("%s.old-%d", s.dataDir, time.Now().UnixNano())
		if err := os.Rename(s.dataDir, aside); err == nil {
			go func() { _ = os.RemoveAll(aside) }()
		}
	}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		db.Close()
		return err
	}
	seq, err := db.GetSequence([]byte(keyIDSeq), 256)
	if err != nil {
		db.Close()
		return fmt.Errorf("id sequence: %w", err)
	}
	s.db, s.seq = db, seq
	// Pins are few (one per user request); load them all.
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixPin)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			s.pins[string(it.Item().Key()[len(prefixPin):])] = struct{}{}
		}
		return nil
	})
	if err != nil {
		s.noteError("index-read", fmt.Errorf("load pins: %w", err))
	}
	s.refreshDisk(true)
	return nil
}

// Close stops background work and closes the index. Open handles keep
// reading from the origin and their data files.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	// No persist step starts once closed is set; the running ones queue
	// their chunks, which syncLoop commits before it returns.
	s.persists.Wait()
	close(s.syncStop)
	<-s.syncDone
	s.closeIdle()
	if s.mets != nil {
		s.mets.unregister()
	}
	if s.db == nil {
		return nil
	}
	if s.seq != nil {
		_ = s.seq.Release()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("cache: close index: %w", err)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Cacheable reports whether name passes the include/exclude globs.
func (s *Store) Cacheable(name string) bool {
	base := path.Base(name)
	match := func(globs []string) bool {
		for _, g := range globs {
			if ok, _ := path.Match(g, name); ok {
				return true
			}
			if ok, _ := path.Match(g, base); ok {
				return true
			}
		}
		return false
	}
	if len(s.cfg.Include) > 0 && !match(s.cfg.Include) {
		return false
	}
	return !match(s.cfg.Exclude)
}

// NotePassthroughOpen counts a kernel passthrough open made by fusefs of a
// cached file of size bytes: the kernel reads it from the cache without the
// daemon seeing the reads, so its size stands for the bytes served.
func (s *Store) NotePassthroughOpen(size int64) {
	s.c.passthroughOpen.Add(1)
	s.c.passthroughBytes.Add(size)
}

// Stats returns the counters; cheap (atomics and one short lock).
func (s *Store) Stats() Stats {
	s.refreshDisk(false)
	st := Stats{
		HitBytes:         s.c.hitBytes.Load(),
		MissBytes:        s.c.missBytes.Load(),
		DirectBytes:      s.c.directBytes.Load(),
		Hits:             s.c.hits.Load(),
		Misses:           s.c.misses.Load(),
		CachedBytes:      max(0, s.c.cachedBytes.Load()),
		Files:            max(0, s.c.files.Load()),
		PinnedFiles:      s.c.pinnedFiles.Load(),
		Evictions:        s.c.evictions.Load(),
		EvictedBytes:     s.c.evictedBytes.Load(),
		PassthroughOpens: s.c.passthroughOpen.Load(),
		PassthroughBytes: s.c.passthroughBytes.Load(),
		Revalidations:    s.c.revalidations.Load(),
		Invalidations:    s.c.invalidations.Load(),
		ChecksumFailures: s.c.checksumFailures.Load(),
		Errors:           s.c.errors.Load(),
		QuotaBytes:       s.quota.Load(),
		DiskFreeBytes:    s.c.diskFree.Load(),
		ChunkSize:        s.csize,
		Degraded:         s.isDegraded(),
	}
	s.errMu.Lock()
	st.LastError, st.LastErrorAt = s.lastErr, s.lastErrAt
	s.errMu.Unlock()
	st.IdleFiles = int64(s.IdleFiles())
	s.fillMu.Lock()
	st.FillBacklog = int64(len(s.fillq) + len(s.fillNames))
	s.fillMu.Unlock()
	return st
}

func (s *Store) isDegraded() bool {
	return s.db == nil || s.degraded.Load() || time.Now().UnixNano() < s.backoff.Load()
}

// noteError records a cache-side error. Each condition is logged once until
// it recovers (noteRecovered), however many reads hit it.
func (s *Store) noteError(cond string, err error) {
	s.c.errors.Add(1)
	s.errMu.Lock()
	s.lastErr = err.Error()
	s.lastErrAt = time.Now()
	first := !s.errConds[cond]
	s.errConds[cond] = true
	s.errMu.Unlock()
	if first {
		s.log.Warn("cache degraded; reads are served from the origin", "condition", cond, "err", err)
	}
}

func (s *Store) noteRecovered(cond string) {
	s.errMu.Lock()
	was := s.errConds[cond]
	delete(s.errConds, cond)
	s.errMu.Unlock()
	if was {
		s.log.Info("cache recovered", "condition", cond)
	}
}

// diskError classifies a data-disk error and pauses persisting briefly, so
// a full or failing disk costs one failed write per second, not per read.
func (s *Store) diskError(op string, err error) {
	cond := "disk-io"
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		cond = "disk-full"
		s.kickEvict()
	}
	s.degraded.Store(true)
	s.backoff.Store(time.Now().Add(time.Second).UnixNano())
	s.noteError(cond, fmt.Errorf("%s: %w", op, err))
}

func (s *Store) diskOK() {
	if s.degraded.Load() {
		s.degraded.Store(false)
		s.noteRecovered("disk-io")
		s.noteRecovered("disk-full")
	}
}

// refreshDisk re-reads the cache file system's size and free space (at most
// once a second unless forced) and recomputes the quota.
func (s *Store) refreshDisk(force bool) {
	if s.db == nil {
		return
	}
	now := time.Now().UnixNano()
	if !force && now-s.freeAt.Load() < int64(time.Second) {
		return
	}
	s.freeAt.Store(now)
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dataDir, &st); err != nil {
		return
	}
	size := int64(st.Blocks) * st.Bsize
	s.fsSize.Store(size)
	s.c.diskFree.Store(int64(st.Bavail) * st.Bsize)
	q := s.cfg.MaxBytes
	if q <= 0 {
		q = int64(float64(size) * s.cfg.MaxPercent / 100)
	}
	s.quota.Store(q)
}

// reserveBytes is the free space kept for the index itself (badger's
// memory-mapped files fault on a full disk): chunk writes stop below it.
func (s *Store) reserveBytes() int64 {
	return min(16<<20, s.fsSize.Load()/20)
}

// persistAllowed reports whether a chunk may be written now.
func (s *Store) persistAllowed(n int64) bool {
	if s.db == nil || time.Now().UnixNano() < s.backoff.Load() {
		return false
	}
	if n == 0 {
		return true
	}
	// statfs is cheap next to an n-byte write; a stale figure could let the
	// disk fill under badger's memory-mapped files.
	s.refreshDisk(true)
	if s.c.diskFree.Load()-n < s.reserveBytes() {
		s.diskError("write chunk", fmt.Errorf("cache disk nearly full (%d bytes free): %w", s.c.diskFree.Load(), syscall.ENOSPC))
		return false
	}
	return true
}

// getBuf returns a chunk buffer; buffers in use are bounded by bufSem.
func (s *Store) getBuf(ctx context.Context, n int64) (*[]byte, error) {
	select {
	case s.bufSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n > s.csize {
		b := make([]byte, n)
		return &b, nil
	}
	b := s.bufPool.Get().(*[]byte)
	*b = (*b)[:n]
	return b, nil
}

// tryGetBuf is getBuf without waiting: nil when all buffers are in use
// (the caller then reads the origin directly instead of queueing behind
// disk writes).
func (s *Store) tryGetBuf(n int64) *[]byte {
	select {
	case s.bufSem <- struct{}{}:
	default:
		return nil
	}
	if n > s.csize {
		b := make([]byte, n)
		return &b
	}
	b := s.bufPool.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func (s *Store) putBuf(b *[]byte) {
	if int64(cap(*b)) == s.csize {
		s.bufPool.Put(b)
	}
	<-s.bufSem
}

func (s *Store) isVerified(id uint64, idx int) bool {
	s.verMu.Lock()
	defer s.verMu.Unlock()
	_, ok := s.verified[verKey{id, idx}]
	return ok
}

func (s *Store) markVerified(id uint64, idx int) {
	s.verMu.Lock()
	defer s.verMu.Unlock()
	if len(s.verified) >= s.verifyMax {
		clear(s.verified) // bounded: forgetting only costs a re-check
	}
	s.verified[verKey{id, idx}] = struct{}{}
}

func (s *Store) kickEvict() {
	select {
	case s.evictCh <- struct{}{}:
	default:
	}
}

// scanTotals rebuilds cached bytes and file count from the index in the
// background, so start-up serves at once. Commits made after the snapshot
// are counted by the atomics already.
func (s *Store) scanTotals() {
	defer s.wg.Done()
	defer s.scanDone.Store(true)
	s.totMu.Lock()
	txn := s.db.NewTransaction(false)
	// The snapshot holds every commit so far: the atomics count from here.
	s.c.files.Store(0)
	s.c.cachedBytes.Store(0)
	s.totMu.Unlock()
	defer txn.Discard()
	var files, bytes int64
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixFile)
	it := txn.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		if s.ctx.Err() != nil {
			break
		}
		var r *fileRec
		_ = it.Item().Value(func(v []byte) error {
			var err error
			r, err = decodeRec(v)
			return err
		})
		if r == nil {
			continue
		}
		files++
		b, _ := cachedOf(txn, r)
		bytes += b
	}
	it.Close()
	s.c.files.Add(files)
	s.c.cachedBytes.Add(bytes)
	s.recountPinned()
	s.kickEvict()
}

// nextID allocates a file ID (never 0, never reused).
func (s *Store) nextID() (uint64, error) {
	for {
		id, err := s.seq.Next()
		if err != nil {
			return 0, fmt.Errorf("allocate file id: %w", err)
		}
		if id != 0 {
			return id, nil
		}
	}
}

// cleanName validates a name from a caller.
func cleanName(name string) (string, error) {
	n, err := origin.Clean(name)
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	return n, nil
}

// under reports whether name is dir itself or below it.
func under(name, dir string) bool {
	return dir == "." || name == dir || strings.HasPrefix(name, dir+"/")
}

var errVersionChanged = errors.New("file version changed")

// errOriginChanged: the origin file opened for a version is another version
// (the path was replaced); the version was dropped and must be revalidated.
var errOriginChanged = fmt.Errorf("origin file is another version: %w", errVersionChanged)

// readFull reads len(p) bytes at off, treating io.EOF at the end as success.
func readFull(ctx context.Context, f origin.File, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := f.ReadAt(ctx, p[n:], off+int64(n))
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, io.EOF
			}
			return n, err
		}
		if m == 0 {
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}
