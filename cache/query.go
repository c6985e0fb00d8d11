package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/eddy-cluster/eddy/origin"
)

// List describes the cached files equal to or below prefix ("." or "" for
// all), in name order.
func (s *Store) List(ctx context.Context, prefix string) ([]FileInfo, error) {
	name, err := cleanName(prefix)
	if err != nil {
		return nil, err
	}
	if s.db == nil {
		return nil, nil
	}
	if s.isClosed() {
		return nil, ErrClosed
	}
	var out []FileInfo
	err = s.db.View(func(txn *badger.Txn) error {
		return s.eachRec(txn, name, func(n string, r *fileRec) bool {
			b, _ := cachedOf(txn, r)
			queuedAt, _ := s.pendingAccess(n, r.ID)
			fi := FileInfo{
				Path:        n,
				Size:        r.size(),
				CachedBytes: b,
				Pinned:      s.isPinned(n),
				LastAccess:  time.Unix(0, max(r.LastAccess, queuedAt)),
				Fingerprint: r.Attr.Fingerprint(),
			}
			if r.size() > 0 {
				fi.Percent = float64(b) * 100 / float64(r.size())
			} else {
				fi.Percent = 100
			}
			out = append(out, fi)
			return ctx.Err() == nil
		})
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return out, fmt.Errorf("cache: list %s: %w", name, err)
	}
	return out, nil
}

// CachedBytes returns the valid cached bytes of a file, or of everything
// below a directory, as last validated.
func (s *Store) CachedBytes(name string) int64 {
	name, err := cleanName(name)
	if err != nil || s.db == nil || s.isClosed() {
		return 0
	}
	var total int64
	_ = s.db.View(func(txn *badger.Txn) error {
		return s.eachRec(txn, name, func(_ string, r *fileRec) bool {
			b, _ := cachedOf(txn, r)
			total += b
			return true
		})
	})
	return total
}

// LastKnown returns the recorded attributes of name, when they were last
// validated against the origin, and whether the file is fully cached.
func (s *Store) LastKnown(name string) (attr origin.Attr, validatedAt time.Time, complete bool, ok bool) {
	name, err := cleanName(name)
	if err != nil || s.db == nil || s.isClosed() {
		return origin.Attr{}, time.Time{}, false, false
	}
	_ = s.db.View(func(txn *badger.Txn) error {
		r, err := getRec(txn, name)
		if err != nil || r == nil {
			return err
		}
		_, n := cachedOf(txn, r)
		_, pv := s.pendingAccess(name, r.ID)
		attr, validatedAt, complete, ok = r.Attr, time.Unix(0, max(r.ValidatedAt, pv)), n == r.nchunks(), true
		return nil
	})
	return attr, validatedAt, complete, ok
}

// OpenOffline opens a fully cached file without asking the origin, for
// disconnected reads: allowed when its last validation is within grace.
// Otherwise ErrNotCached.
func (s *Store) OpenOffline(ctx context.Context, name string, grace time.Duration) (Handle, origin.Attr, error) {
	name, err := cleanName(name)
	if err != nil {
		return nil, origin.Attr{}, err
	}
	attr, at, complete, ok := s.LastKnown(name)
	if !ok || !complete || time.Since(at) > grace {
		return nil, origin.Attr{}, fmt.Errorf("cache: open %s offline: %w", name, ErrNotCached)
	}
	e, err := s.acquire(name)
	if err != nil {
		return nil, origin.Attr{}, err
	}
	e.revalMu.Lock()
	e.mu.Lock()
	v := e.ver
	e.mu.Unlock()
	if v == nil || v.fp != attr.Fingerprint() || v.detached.Load() {
		// install finds the matching record and reuses its chunks.
		if _, err := e.install(ctx, attr, time.Now(), false); err != nil {
			e.revalMu.Unlock()
			e.unref()
			return nil, origin.Attr{}, err
		}
	}
	e.mu.Lock()
	v = e.ver
	full := v != nil && v.present == v.nchunks
	e.checkedAt = time.Now()
	e.mu.Unlock()
	e.revalMu.Unlock()
	if !full {
		e.unref()
		return nil, origin.Attr{}, fmt.Errorf("cache: open %s offline: %w", name, ErrNotCached)
	}
	return newHandle(e), attr, nil
}

// Warm fetches a file, or every cacheable regular file below a directory,
// chunks in parallel, reporting progress (at most every 100 ms, and once at
// the end). Cancel ctx to stop.
func (s *Store) Warm(ctx context.Context, name string, progress func(Progress)) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	type file struct {
		name string
		attr origin.Attr
	}
	var files []file
	attr, err := s.org.Lstat(ctx, name)
	if err != nil {
		return fmt.Errorf("cache: warm %s: %w", name, err)
	}
	switch {
	case attr.IsRegular():
		if !s.Cacheable(name) {
			return fmt.Errorf("cache: warm %s: %w", name, ErrNotCacheable)
		}
		files = append(files, file{name, attr})
	case attr.IsDir():
		dirs := []string{name}
		for len(dirs) > 0 {
			d := dirs[len(dirs)-1]
			dirs = dirs[:len(dirs)-1]
			ents, err := s.org.ReadDir(ctx, d)
			if err != nil {
				if origin.IsNotExist(err) {
					continue
				}
				return fmt.Errorf("cache: warm %s: %w", d, err)
			}
			for _, de := range ents {
				child := origin.Join(d, de.Name)
				switch de.Mode & 0o170000 {
				case 0o040000:
					dirs = append(dirs, child)
				case 0o100000:
					if !s.Cacheable(child) {
						continue
					}
					// A listing with attributes (NFS READDIRPLUS) saves a round trip per file.
					var a origin.Attr
					if de.Attr != nil {
						a = *de.Attr
					} else if a, err = s.org.Lstat(ctx, child); err != nil {
						if origin.IsNotExist(err) {
							continue
						}
						return fmt.Errorf("cache: warm %s: %w", child, err)
					}
					if a.IsRegular() {
						files = append(files, file{child, a})
					}
				}
			}
		}
	default:
		return fmt.Errorf("cache: warm %s: %w", name, ErrNotCacheable)
	}

	var (
		pmu      sync.Mutex
		p        = Progress{Files: len(files)}
		lastSent time.Time
		firstErr error
		uncached int64
	)
	for _, f := range files {
		p.Bytes += f.attr.Size
	}
	report := func(final bool) {
		if progress == nil {
			return
		}
		if !final && time.Since(lastSent) < 100*time.Millisecond {
			return
		}
		lastSent = time.Now()
		progress(p)
	}
	type job struct {
		e    *entry
		v    *version
		idx  int
		left *int
		h    Handle
		name string
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range max(s.cfg.FetchWorkers, warmWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				clen := chunkLen(j.v.size, j.v.csize, j.idx)
				ok, err := j.e.fetchAhead(ctx, j.v, j.idx, true)
				pmu.Lock()
				switch {
				case ok:
					p.BytesDone += clen
					p.BytesFetch += clen
				case err != nil && firstErr == nil && ctx.Err() == nil:
					firstErr = fmt.Errorf("cache: warm %s: %w", j.name, err)
				case err == nil:
					uncached += clen
				}
				*j.left--
				if *j.left == 0 {
					p.FilesDone++
					_ = j.h.Close()
				}
				p.Path = j.name
				report(false)
				pmu.Unlock()
			}
		}()
	}
	// Openers: opening a file (its index record and data file) and the chunk fetches are each
	// waits on a disk or the origin, so a directory of small files is opened by several at once
	// and is not as slow as its files times one open.
	var openErr error // guarded by pmu
	names := make(chan file)
	var owg sync.WaitGroup
	for range warmOpeners {
		owg.Add(1)
		go func() {
			defer owg.Done()
			for f := range names {
				s.warmFeed(ctx, f.name, f.attr, &pmu, &p, &openErr, report, func(hd *handle, v *version, idx int, left *int) bool {
					select {
					case jobs <- job{e: hd.e, v: v, idx: idx, left: left, h: hd, name: f.name}:
						return true
					case <-ctx.Done():
						return false
					}
				})
			}
		}()
	}
	for _, f := range files {
		if ctx.Err() != nil {
			break
		}
		names <- f
	}
	close(names)
	owg.Wait()
	close(jobs)
	wg.Wait()
	report(true)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cache: warm %s: %w", name, err)
	}
	if firstErr != nil {
		return firstErr
	}
	if openErr != nil {
		return openErr
	}
	if uncached > 0 {
		return fmt.Errorf("cache: warm %s: %d bytes could not be stored (cache degraded): %w", name, uncached, ErrNotCached)
	}
	return nil
}

// warmOpeners is how many files Warm opens at once.
const warmOpeners = 4

// warmWorkers is the least number of chunks Warm fetches at once. Each waits until its chunk is
// committed; with many waiting, the commits of small files go in batches, in parallel.
const warmWorkers = 32

// warmFeed opens one file for Warm and queues its absent chunks with queue (which reports false
// when Warm is cancelled). The workers close the handle when its queued chunks are done; chunks
// never queued are accounted for here. p and *openErr are guarded by pmu.
func (s *Store) warmFeed(ctx context.Context, name string, attr origin.Attr, pmu *sync.Mutex, p *Progress, openErr *error,
	report func(bool), queue func(hd *handle, v *version, idx int, left *int) bool) {
	h, _, err := s.OpenFile(ctx, name, attr)
	if err != nil {
		pmu.Lock()
		if *openErr == nil {
			*openErr = fmt.Errorf("cache: warm %s: %w", name, err)
		}
		pmu.Unlock()
		return
	}
	hd := h.(*handle)
	v := hd.e.current()
	var todo []int
	if v != nil {
		hd.e.mu.Lock()
		for idx := 0; idx < v.nchunks; idx++ {
			if v.state[idx] == chunkAbsent {
				todo = append(todo, idx)
			}
		}
		hd.e.mu.Unlock()
	}
	pmu.Lock()
	p.Path = name
	if v != nil {
		p.BytesDone += v.size
		for _, idx := range todo {
			p.BytesDone -= chunkLen(v.size, v.csize, idx)
		}
	}
	if len(todo) == 0 {
		p.FilesDone++
		report(false)
		pmu.Unlock()
		_ = h.Close()
		return
	}
	left := len(todo)
	pmu.Unlock()
	for _, idx := range todo {
		if !queue(hd, v, idx, &left) {
			pmu.Lock()
			left -= len(todo) - idxPos(todo, idx)
			if left == 0 {
				_ = h.Close()
			}
			pmu.Unlock()
			return
		}
	}
}

func idxPos(todo []int, idx int) int {
	for i, x := range todo {
		if x == idx {
			return i
		}
	}
	return len(todo)
}

// inventoryLog is a bounded log of inventory changes. Generations start at
// the store's opening time in ns, so a generation from an earlier process
// is always older than the log and gets a full listing.
type inventoryLog struct {
	mu      sync.Mutex
	gen     uint64               // GUARDED_BY(mu): latest generation
	floor   uint64               // GUARDED_BY(mu): the log holds every change after floor
	ring    []invEntry           // GUARDED_BY(mu)
	start   int                  // GUARDED_BY(mu)
	n       int                  // GUARDED_BY(mu)
	cursors map[uint64]invCursor // GUARDED_BY(mu): paged full listings in progress, by token
	curSeq  uint64               // GUARDED_BY(mu): last cursor token issued
}

type invEntry struct {
	gen     uint64
	name    string
	removed bool
}

type invCursor struct {
	snap  uint64 // generation the listing started at
	after string // last name listed
	used  time.Time
}

const cursorBit = 1 << 63

func (l *inventoryLog) init(size int) {
	l.gen = uint64(time.Now().UnixNano()) &^ cursorBit
	l.floor = l.gen
	l.ring = make([]invEntry, size)
	l.cursors = map[uint64]invCursor{}
}

// note logs a change of name; consecutive changes of one file coalesce.
func (l *inventoryLog) note(name string, removed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	if l.n > 0 {
		last := &l.ring[(l.start+l.n-1)%len(l.ring)]
		if last.name == name && last.removed == removed {
			last.gen = l.gen
			return
		}
	}
	if l.n == len(l.ring) {
		l.floor = l.ring[l.start].gen
		l.start = (l.start + 1) % len(l.ring)
		l.n--
	}
	l.ring[(l.start+l.n)%len(l.ring)] = invEntry{gen: l.gen, name: name, removed: removed}
	l.n++
}

// InventoryDelta returns the inventory changes since generation since, at
// most max items (default 1000). since 0, or older than the change log,
// gets a full listing, paged: a Full first page, then More pages continued
// from the returned Gen (Full false), the last one returning the
// generation the listing started at.
func (s *Store) InventoryDelta(ctx context.Context, since uint64, max int) (InventoryDelta, error) {
	if max <= 0 {
		max = 1000
	}
	l := &s.inv
	l.mu.Lock()
	if since&cursorBit != 0 {
		c, ok := l.cursors[since]
		delete(l.cursors, since)
		l.mu.Unlock()
		if ok {
			return s.fullPage(ctx, c.snap, c.after, max, false)
		}
		l.mu.Lock()
		since = 0
	}
	if since == 0 || since < l.floor || since > l.gen {
		snap := l.gen
		l.mu.Unlock()
		return s.fullPage(ctx, snap, "", max, true)
	}
	var names []string
	var removed []bool
	gen := l.gen
	idxOf := map[string]int{}
	for i := 0; i < l.n; i++ {
		en := l.ring[(l.start+i)%len(l.ring)]
		if en.gen <= since {
			continue
		}
		if j, ok := idxOf[en.name]; ok {
			removed[j] = en.removed
			continue
		}
		if len(names) == max {
			gen = en.gen - 1
			break
		}
		idxOf[en.name] = len(names)
		names = append(names, en.name)
		removed = append(removed, en.removed)
	}
	l.mu.Unlock()
	d := InventoryDelta{Gen: gen, More: gen != s.inv.latest()}
	if s.db == nil {
		return d, nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, n := range names {
			r, err := getRec(txn, n)
			if err != nil {
				return err
			}
			if r == nil {
				d.Removed = append(d.Removed, n)
				continue
			}
			b, _ := cachedOf(txn, r)
			d.Items = append(d.Items, InventoryItem{Path: n, Fingerprint: r.Attr.Fingerprint(), CachedBytes: b, Size: r.size()})
		}
		return nil
	})
	if err != nil {
		return InventoryDelta{}, fmt.Errorf("cache: inventory: %w", err)
	}
	return d, nil
}

func (l *inventoryLog) latest() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// fullPage lists up to max records after name after.
func (s *Store) fullPage(ctx context.Context, snap uint64, after string, max int, first bool) (InventoryDelta, error) {
	d := InventoryDelta{Gen: snap, Full: first}
	if s.db == nil {
		return d, nil
	}
	var last string
	more := false
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixFile)
		it := txn.NewIterator(opts)
		defer it.Close()
		start := []byte(prefixFile)
		if after != "" {
			start = append(fileKey(after), 0)
		}
		for it.Seek(start); it.Valid(); it.Next() {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			item := it.Item()
			n := string(item.Key()[len(prefixFile):])
			if len(d.Items) == max {
				more = true
				return nil
			}
			var r *fileRec
			if err := item.Value(func(v []byte) error {
				var err error
				r, err = decodeRec(v)
				return err
			}); err != nil {
				continue
			}
			b, _ := cachedOf(txn, r)
			d.Items = append(d.Items, InventoryItem{Path: n, Fingerprint: r.Attr.Fingerprint(), CachedBytes: b, Size: r.size()})
			last = n
		}
		return nil
	})
	if err != nil {
		return InventoryDelta{}, fmt.Errorf("cache: inventory: %w", err)
	}
	if more {
		l := &s.inv
		l.mu.Lock()
		l.curSeq++
		tok := cursorBit | l.curSeq
		if len(l.cursors) >= 64 {
			var oldest uint64
			var ot time.Time
			for k, c := range l.cursors {
				if oldest == 0 || c.used.Before(ot) {
					oldest, ot = k, c.used
				}
			}
			delete(l.cursors, oldest)
		}
		l.cursors[tok] = invCursor{snap: snap, after: last, used: time.Now()}
		l.mu.Unlock()
		d.Gen, d.More = tok, true
	}
	return d, nil
}

var _ = errors.New
