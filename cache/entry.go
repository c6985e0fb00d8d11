package cache

// The entry: the in-memory state of one file that has open handles,
// background work or a place on the idle list (idle.go), and the references
// that keep it in Store.open.

import (
	"container/list"
	"os"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// entry is the in-memory state of a file with open handles (or background
// work) on it, or kept idle for a quick reopen (idle.go): memory follows
// open and recently used files, not cached files.
type entry struct {
	s       *Store
	name    string
	refs    int           // GUARDED_BY(Store.mu)
	idleEl  *list.Element // GUARDED_BY(Store.mu): its place on Store.idle.lru (no references)
	parking chan struct{} // GUARDED_BY(Store.mu): closed when the entry has gone idle (or closed)

	revalMu sync.Mutex // serializes version changes (lock order: see Store)

	mu        sync.Mutex
	ver       *version  // GUARDED_BY(mu); nil: must revalidate before reading
	checkedAt time.Time // GUARDED_BY(mu): last revalidation attempt
	accessAt  time.Time // GUARDED_BY(mu): last access persisted
	// INVARIANT: retired files stay open while the entry has references
	// (readers of a superseded version may still read them); they are
	// closed when it goes idle (park) or leaves Store.open (closeFiles).
	retired []*os.File // GUARDED_BY(mu): data files of superseded versions

	orgMu sync.Mutex
	org   origin.File        // GUARDED_BY(orgMu): lazily opened origin file
	orgFP origin.Fingerprint // GUARDED_BY(orgMu): org's fingerprint when last checked
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
	if s.open[e.name] != e || s.closed || s.idle.max == 0 {
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
