package cache

import (
	"container/list"
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Idle entries. Opening a cached file costs one index read (its record and
// chunk checksums) and one open(2) of its data file; on a training epoch
// over many small files that is a large share of each open. An entry whose
// last handle closes is therefore kept, up to Config.IdleFiles of them in
// LRU order, with its version (checksums, chunk states) and data file
// open: a reopen that finds the same fingerprint skips both. The origin
// file and the O_DIRECT writer are closed when the entry goes idle, so an
// idle entry holds one descriptor and no origin state.
//
// An idle entry is exactly a referenced entry without references: it stays
// in Store.open, every validation still compares the origin's fingerprint,
// and eviction or invalidation (dropName) reaches it like any open entry.
// A detached version is never kept idle, so an idle file that is evicted
// is closed when dropName lets go of it: its space is freed then, not when
// the entry leaves the LRU.

// idleFiles is the LRU list of idle entries.
type idleFiles struct {
	// INVARIANT: an entry is on lru exactly when its idleEl is set; it then
	// has no references, is in Store.open, and holds a current version with
	// its data file (retainable). Outside Store.mu, lru holds at most max.
	lru *list.List // GUARDED_BY(Store.mu): most recently used first
	max int        // Config.IdleFiles resolved (idleLimit); 0: none kept
}

// defaultIdleFiles caps the default number of idle entries.
const defaultIdleFiles = 32768

// idleLimit is Config.IdleFiles resolved: half the descriptor limit (the
// daemon runs with the hard limit), at most defaultIdleFiles; 0 when off.
func idleLimit(cfg int) int {
	if cfg < 0 {
		return 0
	}
	if cfg > 0 {
		return cfg
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int(min(rl.Cur/2, defaultIdleFiles))
}

// refLocked takes a reference on e (Store.mu held), taking it off the idle
// list if it was idle.
func (s *Store) refLocked(e *entry) {
	if e.idleEl != nil {
		s.idle.lru.Remove(e.idleEl)
		e.idleEl = nil
	}
	e.refs++
}

// waitFreeLocked waits (Store.mu held, released while waiting) until name
// is neither being dropped nor its entry going idle.
func (s *Store) waitFreeLocked(name string) {
	for {
		var ch chan struct{}
		if b, ok := s.busy[name]; ok {
			ch = b
		} else if e := s.open[name]; e != nil && e.parking != nil {
			ch = e.parking
		} else {
			return
		}
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
}

// retainable reports whether e, without references, is worth keeping idle:
// it holds a current version with its data file.
func (e *entry) retainable() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ver != nil && e.ver.fd != nil && !e.ver.detached.Load()
}

// park releases what an idle entry does not keep: retired data files, the
// O_DIRECT writer and the origin file. Nobody can take a reference while
// it runs (e.parking is set).
func (e *entry) park() {
	e.mu.Lock()
	files := e.retired
	e.retired = nil
	v := e.ver
	e.mu.Unlock()
	if v != nil {
		v.dfdMu.Lock()
		if v.dfd != nil {
			files = append(files, v.dfd)
			v.dfd = nil
		}
		v.dfdTried = false
		v.dfdMu.Unlock()
	}
	for _, f := range files {
		_ = f.Close()
	}
	e.resetOrigin()
}

// closeFiles closes every file of an entry that is gone from Store.open.
func (e *entry) closeFiles() {
	e.mu.Lock()
	files := e.retired
	if e.ver != nil {
		files = append(files, e.ver.files()...)
	}
	e.retired, e.ver = nil, nil
	e.mu.Unlock()
	for _, f := range files {
		_ = f.Close()
	}
	e.resetOrigin()
}

// goIdle keeps e (its last reference dropped, still in Store.open, parking
// set to ch by unref) as an idle entry, or drops it when it is not worth
// keeping or the store closed.
func (e *entry) goIdle(ch chan struct{}) {
	s := e.s
	e.park()
	keep := e.retainable()
	s.mu.Lock()
	e.parking = nil
	close(ch)
	var drop []*entry
	if keep && !s.closed && e.refs == 0 && s.open[e.name] == e {
		e.idleEl = s.idle.lru.PushFront(e)
		drop = s.trimIdleLocked(s.idle.max)
	} else if e.refs == 0 {
		if s.open[e.name] == e {
			delete(s.open, e.name)
		}
		drop = append(drop, e)
	}
	s.mu.Unlock()
	for _, d := range drop {
		d.closeFiles()
	}
}

// trimIdleLocked takes the least recently used idle entries beyond max out
// of the store (Store.mu held); the caller closes their files.
func (s *Store) trimIdleLocked(max int) []*entry {
	var drop []*entry
	for s.idle.lru.Len() > max {
		e := s.idle.lru.Remove(s.idle.lru.Back()).(*entry)
		e.idleEl = nil
		delete(s.open, e.name)
		drop = append(drop, e)
	}
	return drop
}

// closeIdleBeyond closes the least recently used idle entries beyond
// keep(number idle) and reports how many it closed.
func (s *Store) closeIdleBeyond(keep func(idle int) int) int {
	s.mu.Lock()
	drop := s.trimIdleLocked(keep(s.idle.lru.Len()))
	s.mu.Unlock()
	for _, e := range drop {
		e.closeFiles()
	}
	return len(drop)
}

// shedIdle closes half of the idle entries (at least one): the daemon ran
// out of file descriptors. It reports whether any was closed.
func (s *Store) shedIdle() bool {
	return s.closeIdleBeyond(func(n int) int { return n / 2 }) > 0
}

// closeIdle closes every idle entry (Close).
func (s *Store) closeIdle() { s.closeIdleBeyond(func(int) int { return 0 }) }

// IdleFiles reports how many closed files the store keeps open for a quick
// reopen.
func (s *Store) IdleFiles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idle.lru.Len()
}

// outOfFiles reports whether err is the process running out of file
// descriptors.
func outOfFiles(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// openData opens one of the cache's data files; out of descriptors, it
// sheds idle entries and tries again.
func (s *Store) openData(p string, flag int, perm uint32) (*os.File, error) {
	for {
		f, err := openLocal(p, flag, perm)
		if err == nil || !outOfFiles(err) || !s.shedIdle() {
			return f, err
		}
	}
}
