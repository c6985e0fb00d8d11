package cache

// The cache disk's health and room: statfs figures, the quota derived from
// them, and the back-off after a disk error that keeps reads on the origin.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
)

// diskState is what the store knows of the cache disk, refreshed by statfs
// (refreshDisk) and by the outcome of its writes. Atomics: read on every
// chunk write, without a lock.
type diskState struct {
	fsSize   atomic.Int64 // bytes of the cache file system
	quota    atomic.Int64 // byte quota: Config.MaxBytes, or Config.MaxPercent of fsSize
	freeAt   atomic.Int64 // unix ns of the last statfs
	backoff  atomic.Int64 // unix ns until which persisting is paused after a disk error
	degraded atomic.Bool  // a disk error was seen (or the cache dir is unusable) and no chunk sync has succeeded since
}

func (s *Store) isDegraded() bool {
	return s.db == nil || s.disk.degraded.Load() || time.Now().UnixNano() < s.disk.backoff.Load()
}

// diskError classifies a data-disk error and pauses persisting briefly, so
// a full or failing disk costs one failed write per second, not per read.
func (s *Store) diskError(op string, err error) {
	cond := "disk-io"
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		cond = "disk-full"
		s.kickEvict()
	}
	s.disk.degraded.Store(true)
	s.disk.backoff.Store(time.Now().Add(time.Second).UnixNano())
	s.noteError(cond, fmt.Errorf("%s: %w", op, err))
}

func (s *Store) diskOK() {
	if s.disk.degraded.Load() {
		s.disk.degraded.Store(false)
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
	if !force && now-s.disk.freeAt.Load() < int64(time.Second) {
		return
	}
	s.disk.freeAt.Store(now)
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dataDir, &st); err != nil {
		return
	}
	size := int64(st.Blocks) * st.Bsize
	s.disk.fsSize.Store(size)
	s.c.diskFree.Store(int64(st.Bavail) * st.Bsize)
	q := s.cfg.MaxBytes
	if q <= 0 {
		q = int64(float64(size) * s.cfg.MaxPercent / 100)
	}
	s.disk.quota.Store(q)
}

// reserveBytes is the free space kept for the index itself (badger's
// memory-mapped files fault on a full disk): chunk writes stop below it.
func (s *Store) reserveBytes() int64 {
	return min(16<<20, s.disk.fsSize.Load()/20)
}

// persistAllowed reports whether a chunk may be written now.
func (s *Store) persistAllowed(n int64) bool {
	if s.db == nil || time.Now().UnixNano() < s.disk.backoff.Load() {
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
