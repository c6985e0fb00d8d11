package cache

// The fill backlog: files a reader left incomplete, completed in the
// background at idle priority. Queued as jobs holding their entry and,
// beyond the queue's length, remembered by name only.

import (
	"sync"
)

// fillQueue is the backlog of files to complete in the background.
type fillQueue struct {
	// jobs holds files a reader left incomplete, each job holding a
	// reference on its entry (idx unused).
	jobs chan raJob
	mu   sync.Mutex
	// names holds the files left incomplete beyond jobs' length, by name
	// only (no entry, no descriptor), oldest first.
	// INVARIANT: set holds exactly the names in names, each once, and at
	// most maxFillNames of them.
	names []string            // GUARDED_BY(mu)
	set   map[string]struct{} // GUARDED_BY(mu)
	wake  chan struct{}       // a name was remembered
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
	case s.fills.jobs <- raJob{e: e, v: v, missed: !whole}:
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
			drainJobs(s.fills.jobs)
			return
		case j = <-s.fills.jobs:
		default:
			name, ok := s.nextFill()
			if !ok {
				select {
				case <-s.ctx.Done():
					drainJobs(s.fills.jobs)
					return
				case j = <-s.fills.jobs:
				case <-s.fills.wake:
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

// fillQueueLen bounds the files waiting to have the holes a sequential
// reader left filled in.
const fillQueueLen = 256

// maxFillNames bounds the names remembered for completion in the
// background beyond fillQueueLen (names only: no entry, no descriptor).
const maxFillNames = 1 << 16

// fillLater remembers name for completion in the background.
func (s *Store) fillLater(name string) {
	s.fills.mu.Lock()
	if _, ok := s.fills.set[name]; !ok && len(s.fills.set) < maxFillNames {
		s.fills.set[name] = struct{}{}
		s.fills.names = append(s.fills.names, name)
	}
	s.fills.mu.Unlock()
	signal(s.fills.wake)
}

// nextFill takes the oldest remembered name.
func (s *Store) nextFill() (string, bool) {
	s.fills.mu.Lock()
	defer s.fills.mu.Unlock()
	if len(s.fills.names) == 0 {
		return "", false
	}
	name := s.fills.names[0]
	s.fills.names[0] = ""
	s.fills.names = s.fills.names[1:]
	if len(s.fills.names) == 0 {
		s.fills.names = nil
	}
	delete(s.fills.set, name)
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
