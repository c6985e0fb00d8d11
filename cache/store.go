package cache

// The Store: its parts and their locks, opening and closing it, Stats, and
// the start-up scan of the totals.

import (
	"container/list"
	"context"
	"errors"
	"fmt"
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
//
// Lock order (outer first). A goroutine holding a lock never takes one listed
// above it:
//
//	entry.revalMu     serializes version changes of one open file (revalidate, drop)
//	entry.orgMu       one open file's origin file
//	handle.mu         one handle's read-ahead and passthrough state
//	Store.mu          the open-entry table, the idle list and the busy set
//	entry.mu          one open file's current version and chunk states
//	version.commitMu  index commits of one version vs its detachment
//	Store.totMu       index commits that change totals vs the start-up totals snapshot
//	access.flushMu    one flush of queued access times at a time
//	version.dfdMu, pins.mu, verified.mu, errs.mu, inv.mu, commits.mu,
//	fills.mu, access.mu  leaf locks
//
// Holding an entry's orgMu, opening the origin file may close idle entries
// (shedIdle), taking their orgMu: an idle entry has no reader, so nobody
// holds its orgMu and waits for another's.
//
// Store.mu, entry.mu and the leaf locks are never held across origin I/O or
// an index transaction. revalMu and orgMu are held across the origin calls
// of their own file (one check, one open at a time); badger transactions
// run under revalMu, handle.mu (a failed checksum drops its chunk record),
// commitMu, totMu and access.flushMu, all short.
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
	// persists counts persist steps.
	// INVARIANT: Add only under mu while !closed (beginPersist), so Close's
	// Wait never races an Add.
	persists sync.WaitGroup

	// The open-entry table (entry.go, idle.go).
	mu sync.Mutex
	// open holds the files with open handles (or work in flight), and the
	// idle ones.
	// INVARIANT: an entry in open has references, or is going idle
	// (parking set), or is on the idle list. One with none of these has
	// been taken out of open, and whoever took it out closes its files.
	open map[string]*entry // GUARDED_BY(mu)
	// busy holds the names whose record is being dropped (dropName).
	// INVARIANT: while a name is in busy, acquiring it waits, so no new
	// handle or background job gets its entry, and no other drop of it
	// starts (waitFreeLocked).
	busy   map[string]chan struct{} // GUARDED_BY(mu)
	closed bool                     // GUARDED_BY(mu)
	idle   idleFiles                // GUARDED_BY(mu)

	// Totals. cachedBytes and files (counters) change together with the
	// index commit that changes them, under totMu held shared; scanTotals
	// takes its snapshot of the index under totMu held exclusive.
	// INVARIANT: every commit is counted once: in the snapshot, or by the
	// atomics after it, never both.
	totMu    sync.RWMutex
	scanDone atomic.Bool // scanTotals finished: the totals are complete

	disk     diskState      // the cache disk's figures and health (disk.go)
	commits  groupCommit    // written chunks awaiting their group commit (persist.go)
	bufs     chunkBuffers   // chunk buffers (buffers.go)
	verified verifiedChunks // chunks checked against their checksum (verify.go)
	pins     pinSet         // pins (evict.go)
	errs     errorLog       // the last error and the conditions logged (errlog.go)
	access   accessQueue    // access and validation times not yet written (access.go)
	fills    fillQueue      // files to complete in the background (fill.go)

	// Fetch worker queues (workers.go); each job holds a reference on its
	// entry, dropped when it is done or drained at close.
	raq chan raJob // chunks ahead of sequential readers (dropped when full)
	bgq chan raJob // chunks missed by random reads, fetched in the background (dropped when full)
	// lastDirect and lastPiece (unix ns): when a reader was last served
	// straight from the origin, and when a background piece last went
	// (yieldToReaders).
	lastDirect, lastPiece atomic.Int64

	evictCh chan struct{} // wakes evictLoop
	// spare holds unnamed data files ready to be linked to a new file's
	// name (spare.go); spareLoop fills it, createData takes from it.
	spare chan int
	// dataDirs are the data dir's subdirectories known to exist (path ->
	// true), so a new data file's create needs no MkdirAll first.
	dataDirs sync.Map

	inv inventoryLog

	c     counters
	mets  *metrics
	peers atomic.Pointer[peerBox] // the peer chunk source (peer.go); nil: none

	// test hooks
	writeData func(f *os.File, p []byte, off int64) (int, error)
	syncData  func(f *os.File) error
	syncFS    func() error // syncfs of the data directory's file system
	fsSync    fsSyncer
}

type counters struct {
	hitBytes, missBytes, directBytes, hits, misses atomic.Int64
	cachedBytes, files, pinnedFiles                atomic.Int64
	evictions, evictedBytes, passthroughOpen       atomic.Int64
	passthroughBytes                               atomic.Int64
	revalidations, invalidations                   atomic.Int64
	checksumFailures, errors, diskFree             atomic.Int64
	peerBytes, servedBytes                         atomic.Int64 // chunks fetched from / served to other nodes (peer.go)
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
		cfg:     cfg,
		org:     org,
		log:     cfg.Logger.With("component", "cache"),
		csize:   cfg.ChunkSize,
		dataDir: filepath.Join(cfg.Dir, "data"),
		ctx:     sctx,
		cancel:  cancel,
		open:    map[string]*entry{},
		idle:    idleFiles{lru: list.New(), max: idleLimit(cfg.IdleFiles)},
		busy:    map[string]chan struct{}{},
		commits: groupCommit{
			sem:     make(chan struct{}, maxSyncPending),
			waitSem: make(chan struct{}, maxPersistWaiting),
			wake:    make(chan struct{}, 1),
			now:     make(chan struct{}, 1),
			stop:    make(chan struct{}),
			done:    make(chan struct{}),
			every:   defaultSyncEvery,
			batch:   defaultSyncBatch,
		},
		bufs:     chunkBuffers{sem: make(chan struct{}, cfg.FetchWorkers+4)},
		verified: verifiedChunks{chunks: map[verKey]struct{}{}, max: 1 << 18},
		pins:     pinSet{names: map[string]struct{}{}},
		errs:     errorLog{conds: map[string]bool{}},
		access: accessQueue{
			pending: map[string]accessReq{},
			wake:    make(chan struct{}, 1),
			every:   10 * time.Second,
		},
		fills: fillQueue{
			jobs: make(chan raJob, fillQueueLen),
			set:  map[string]struct{}{},
			wake: make(chan struct{}, 1),
		},
		raq:       make(chan raJob, cfg.FetchWorkers*4),
		bgq:       make(chan raJob, bgQueueLen),
		evictCh:   make(chan struct{}, 1),
		spare:     make(chan int, spareFiles),
		writeData: func(f *os.File, p []byte, off int64) (int, error) { return f.WriteAt(p, off) },
		syncData:  func(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) },
	}
	s.syncFS = s.fsSync.sync(s.dataDir)
	s.inv.init(4096)
	s.bufs.pool.New = func() any { b := make([]byte, s.csize); return &b }

	if err := s.openDisk(); err != nil {
		s.noteError("cache-dir", fmt.Errorf("cache dir %s unusable, serving from the origin: %w", cfg.Dir, err))
		s.disk.degraded.Store(true)
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
		s.wg.Add(4)
		go s.scanTotals()
		go s.evictLoop()
		go s.accessLoop()
		go s.spareLoop()
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
			s.pins.names[string(it.Item().Key()[len(prefixPin):])] = struct{}{}
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
	s.closeSpares()
	// No persist step starts once closed is set; the running ones queue
	// their chunks, which syncLoop commits before it returns.
	s.persists.Wait()
	close(s.commits.stop)
	<-s.commits.done
	s.fsSync.close()
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
		PeerBytes:        s.c.peerBytes.Load(),
		ServedBytes:      s.c.servedBytes.Load(),
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
		QuotaBytes:       s.disk.quota.Load(),
		DiskFreeBytes:    s.c.diskFree.Load(),
		ChunkSize:        s.csize,
		Degraded:         s.isDegraded(),
	}
	s.errs.mu.Lock()
	st.LastError, st.LastErrorAt = s.errs.last, s.errs.lastAt
	s.errs.mu.Unlock()
	st.IdleFiles = int64(s.IdleFiles())
	s.fills.mu.Lock()
	st.FillBacklog = int64(len(s.fills.jobs) + len(s.fills.names))
	s.fills.mu.Unlock()
	return st
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
