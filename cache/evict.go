package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

type dropMode int

const (
	dropEvict      dropMode = iota // quota or explicit eviction: open readers keep their version
	dropInvalidate                 // content changed through the mount: open readers revalidate
	dropGone                       // the origin says the file is gone
)

// dropName removes name's record and content. held is an entry whose
// revalMu the caller already holds (or nil). It returns the bytes dropped.
func (s *Store) dropName(name string, mode dropMode, held ...*entry) (int64, bool) {
	if s.db == nil && mode == dropEvict {
		return 0, false
	}
	s.mu.Lock()
	s.waitFreeLocked(name)
	ch := make(chan struct{})
	s.busy[name] = ch
	e := s.open[name]
	if e != nil {
		s.refLocked(e)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.busy, name)
		s.mu.Unlock()
		close(ch)
		if e != nil {
			e.unref()
		}
	}()
	if e != nil {
		if len(held) == 0 || held[0] != e {
			e.revalMu.Lock()
			defer e.revalMu.Unlock()
		}
		e.mu.Lock()
		v := e.ver
		if mode != dropEvict && v != nil {
			// Never serve the old content again: the next read revalidates.
			e.ver = nil
			e.retired = append(e.retired, v.files()...)
		}
		e.mu.Unlock()
		if v != nil {
			v.detach()
		}
	}
	if s.db == nil || s.isClosed() {
		return 0, false
	}
	var rec *fileRec
	if err := s.db.View(func(txn *badger.Txn) error {
		var err error
		rec, err = getRec(txn, name)
		return err
	}); err != nil || rec == nil {
		return 0, false
	}
	if err := os.Remove(dataPath(s.dataDir, rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.diskError("remove data file", err)
	}
	bytes, err := s.deleteChunks(rec)
	if err != nil {
		s.noteError("index-write", fmt.Errorf("drop %s: %w", name, err))
		return bytes, true
	}
	s.totMu.RLock()
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(accessKey(rec.LastAccess, rec.ID)); err != nil {
			return err
		}
		return txn.Delete(fileKey(name))
	})
	if err == nil {
		s.c.files.Add(-1)
	}
	s.totMu.RUnlock()
	if err != nil {
		s.noteError("index-write", fmt.Errorf("drop %s: %w", name, err))
	}
	s.inv.note(name, true)
	if err == nil && s.isPinned(name) {
		s.c.pinnedFiles.Add(-1)
	}
	return bytes, true
}

// namesUnder lists the recorded names equal to or below name.
func (s *Store) namesUnder(name string) []string {
	if s.db == nil {
		return nil
	}
	var names []string
	_ = s.db.View(func(txn *badger.Txn) error {
		return s.eachRec(txn, name, func(n string, _ *fileRec) bool {
			names = append(names, n)
			return true
		})
	})
	return names
}

// eachRec calls fn for the record of name and every record below it (in
// name order) until fn returns false.
func (s *Store) eachRec(txn *badger.Txn, name string, fn func(string, *fileRec) bool) error {
	if name != "." {
		rec, err := getRec(txn, name)
		if err != nil {
			return err
		}
		if rec != nil && !fn(name, rec) {
			return nil
		}
	}
	opts := badger.DefaultIteratorOptions
	opts.Prefix = dirPrefix(prefixFile, name)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var rec *fileRec
		if err := item.Value(func(v []byte) error {
			var err error
			rec, err = decodeRec(v)
			return err
		}); err != nil {
			continue
		}
		if !fn(string(item.Key()[len(prefixFile):]), rec) {
			return nil
		}
	}
	return nil
}

// dropTree drops name and everything below it, including open entries
// that have no record yet.
func (s *Store) dropTree(name string, mode dropMode) {
	seen := map[string]bool{}
	for _, n := range s.namesUnder(name) {
		seen[n] = true
		if _, ok := s.dropName(n, mode); ok && mode == dropInvalidate {
			s.c.invalidations.Add(1)
		}
	}
	s.mu.Lock()
	var open []string
	for n := range s.open {
		if !seen[n] && under(n, name) {
			open = append(open, n)
		}
	}
	s.mu.Unlock()
	for _, n := range open {
		s.dropName(n, mode)
	}
}

// Invalidate drops name's cached content (written through the mount); open
// handles revalidate before their next read. A directory name drops
// everything below it.
func (s *Store) Invalidate(name string) {
	name, err := cleanName(name)
	if err != nil {
		return
	}
	s.dropTree(name, dropInvalidate)
}

// Rename drops the cached content of both names (files or directories).
func (s *Store) Rename(oldname, newname string) {
	s.Invalidate(oldname)
	s.Invalidate(newname)
}

// Evict drops the cached content of a file or of everything below a
// directory. A pinned file is never evicted: evicting it by name fails with
// ErrPinned, a directory eviction skips it. Open handles keep reading.
func (s *Store) Evict(ctx context.Context, name string) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	for _, n := range s.namesUnder(name) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.isPinned(n) {
			if n == name {
				return fmt.Errorf("cache: evict %s: %w", name, ErrPinned)
			}
			continue
		}
		if b, ok := s.dropName(n, dropEvict); ok {
			s.c.evictions.Add(1)
			s.c.evictedBytes.Add(b)
		}
	}
	return nil
}

// pinSet is the pins, loaded from the index at open.
type pinSet struct {
	mu sync.RWMutex
	// INVARIANT: names holds the index's pins (p/ keys): Pin adds a name
	// after its key is committed, Unpin removes names after their keys are
	// deleted.
	names map[string]struct{} // GUARDED_BY(mu): pinned files and directory prefixes
}

// Pin protects a file or everything below a directory from eviction. Pins
// persist in the index.
func (s *Store) Pin(ctx context.Context, name string) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	if s.db == nil {
		return fmt.Errorf("cache: pin %s: %w", name, ErrNotCached)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(pinKey(name), nil) }); err != nil {
		return fmt.Errorf("cache: pin %s: %w", name, err)
	}
	s.pins.mu.Lock()
	s.pins.names[name] = struct{}{}
	s.pins.mu.Unlock()
	s.notePinChange()
	return nil
}

// Unpin removes the pin on name and every pin below it.
func (s *Store) Unpin(ctx context.Context, name string) error {
	name, err := cleanName(name)
	if err != nil {
		return err
	}
	if s.db == nil {
		return nil
	}
	s.pins.mu.Lock()
	var gone []string
	for p := range s.pins.names {
		if under(p, name) {
			gone = append(gone, p)
		}
	}
	s.pins.mu.Unlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, p := range gone {
			if err := txn.Delete(pinKey(p)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: unpin %s: %w", name, err)
	}
	s.pins.mu.Lock()
	for _, p := range gone {
		delete(s.pins.names, p)
	}
	s.pins.mu.Unlock()
	s.notePinChange()
	s.kickEvict()
	return nil
}

// isPinned reports whether name or one of its parent directories is pinned.
func (s *Store) isPinned(name string) bool {
	s.pins.mu.RLock()
	defer s.pins.mu.RUnlock()
	if len(s.pins.names) == 0 {
		return false
	}
	for n := name; ; n = path.Dir(n) {
		if _, ok := s.pins.names[n]; ok {
			return true
		}
		if n == "." || n == "/" || n == "" {
			return false
		}
	}
}

func (s *Store) notePinChange() {
	if s.db == nil || !s.scanDone.Load() {
		return
	}
	s.recountPinned()
}

// recountPinned counts recorded files covered by a pin (ranges bounded by
// the pinned subtrees).
func (s *Store) recountPinned() {
	s.pins.mu.RLock()
	var tops []string
	for p := range s.pins.names {
		top := true
		for d := path.Dir(p); p != "." && top; d = path.Dir(d) {
			if _, ok := s.pins.names[d]; ok {
				top = false
			}
			if d == "." {
				break
			}
		}
		if top {
			tops = append(tops, p)
		}
	}
	s.pins.mu.RUnlock()
	var n int64
	_ = s.db.View(func(txn *badger.Txn) error {
		for _, p := range tops {
			_ = s.eachRec(txn, p, func(string, *fileRec) bool { n++; return true })
		}
		return nil
	})
	s.c.pinnedFiles.Store(n)
}

// evictLoop evicts least recently used files while the cache is over its
// quota or the disk under its free-space floor.
func (s *Store) evictLoop() {
	defer s.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.evictCh:
		}
		s.evictOnce()
	}
}

// overLimit reports whether eviction must run (low: whether it must go on,
// with a little hysteresis so it does not run for every chunk).
func (s *Store) overLimit(low bool) bool {
	s.refreshDisk(true)
	q := s.disk.quota.Load()
	cached := s.c.cachedBytes.Load()
	minFree := s.cfg.MinFreePercent
	if low {
		q -= q / 20
		minFree = min(100, minFree+1)
	}
	if cached > q {
		return true
	}
	size := s.disk.fsSize.Load()
	return cached > 0 && size > 0 && float64(s.c.diskFree.Load())*100/float64(size) < minFree
}

func (s *Store) evictOnce() {
	if !s.scanDone.Load() || !s.overLimit(false) {
		return
	}
	s.flushAccess() // the LRU order includes the latest accesses
	for s.ctx.Err() == nil {
		cands := s.lruCandidates(64)
		if len(cands) == 0 {
			s.noteError("evict", errors.New("over quota but nothing evictable (all pinned)"))
			return
		}
		for _, n := range cands {
			if b, ok := s.dropName(n, dropEvict); ok {
				s.c.evictions.Add(1)
				s.c.evictedBytes.Add(b)
				s.log.Debug("evicted", "path", n, "bytes", b)
			}
			if !s.overLimit(true) {
				s.noteRecovered("evict")
				return
			}
		}
	}
}

// lruCandidates returns up to n unpinned names, least recently used first,
// and deletes LRU keys that no longer match their record.
func (s *Store) lruCandidates(n int) []string {
	var names []string
	var stale [][]byte
	_ = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixAccess)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(names) < n; it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if len(k) != 18 {
				stale = append(stale, k)
				continue
			}
			ts := int64(binary.BigEndian.Uint64(k[2:]))
			id := binary.BigEndian.Uint64(k[10:])
			v, err := item.ValueCopy(nil)
			if err != nil {
				continue
			}
			name := string(v)
			rec, err := getRec(txn, name)
			if err != nil {
				continue
			}
			if rec == nil || rec.ID != id || rec.LastAccess != ts {
				stale = append(stale, k)
				continue
			}
			if s.isPinned(name) {
				continue
			}
			names = append(names, name)
		}
		return nil
	})
	if len(stale) > 0 {
		_ = s.db.Update(func(txn *badger.Txn) error {
			for _, k := range stale {
				_ = txn.Delete(k)
			}
			return nil
		})
	}
	return names
}
