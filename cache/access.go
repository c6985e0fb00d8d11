package cache

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Access and validation times are written off the read path: an open
// queues them and accessLoop writes the queue every accessFlushEvery (or
// once accessBatch names wait) in a few index transactions, instead of
// each open waiting for an index write of its own. What is queued is
// written before eviction picks its victims and when the store closes;
// LastKnown and List see it at once. A crash loses at most the last
// interval's times, which only order eviction and bound disconnected reads.
const (
	accessFlushEvery = 200 * time.Millisecond
	accessBatch      = 1024 // names per transaction, and the queue length that wakes the loop
)

// accessQueue is the access and validation times not yet written to the
// index.
type accessQueue struct {
	mu sync.Mutex
	// INVARIANT: pending[name].id is the record ID its times belong to;
	// they are written only to a record that still has that ID
	// (applyAccess), never to a newer version's.
	pending map[string]accessReq // GUARDED_BY(mu)
	// flushMu makes flushes one at a time: when flushAccess returns, every
	// time queued before the call has been written (or its write failed and
	// was logged). Eviction flushes before it reads the LRU order.
	flushMu sync.Mutex
	wake    chan struct{} // pending reached accessBatch names
	every   time.Duration // queue a file's access at most this often (a tunable for tests)
}

// accessReq is one file's queued times (unix ns; 0: none).
type accessReq struct {
	id          uint64
	at, validAt int64
}

// updateAccess queues name's LRU key move to now (and its validation time).
func (s *Store) updateAccess(name string, id uint64, now time.Time, validated bool) {
	if s.db == nil || s.isClosed() {
		return
	}
	s.access.mu.Lock()
	r := s.access.pending[name]
	if r.id != id {
		r = accessReq{id: id}
	}
	r.at = max(r.at, now.UnixNano())
	if validated {
		r.validAt = max(r.validAt, now.UnixNano())
	}
	s.access.pending[name] = r
	n := len(s.access.pending)
	s.access.mu.Unlock()
	if n >= accessBatch {
		select {
		case s.access.wake <- struct{}{}:
		default:
		}
	}
}

// pendingAccess returns the times queued for name's record id.
func (s *Store) pendingAccess(name string, id uint64) (at, validAt int64) {
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	if r, ok := s.access.pending[name]; ok && r.id == id {
		return r.at, r.validAt
	}
	return 0, 0
}

// flushAccess writes the queued times to the index.
func (s *Store) flushAccess() {
	s.access.flushMu.Lock()
	defer s.access.flushMu.Unlock()
	s.access.mu.Lock()
	pending := s.access.pending
	if len(pending) == 0 {
		s.access.mu.Unlock()
		return
	}
	s.access.pending = make(map[string]accessReq, len(pending))
	s.access.mu.Unlock()
	names := make([]string, 0, len(pending))
	for n := range pending {
		names = append(names, n)
	}
	for len(names) > 0 {
		batch := names[:min(len(names), accessBatch)]
		names = names[len(batch):]
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, name := range batch {
				if err := applyAccess(txn, name, pending[name]); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, badger.ErrConflict) {
			// A record changed meanwhile: write the others one by one.
			for _, name := range batch {
				err = s.db.Update(func(txn *badger.Txn) error { return applyAccess(txn, name, pending[name]) })
				if err != nil && !errors.Is(err, badger.ErrConflict) {
					break
				}
			}
		}
		if err != nil && !errors.Is(err, badger.ErrConflict) {
			s.noteError("index-write", fmt.Errorf("update access times: %w", err))
			return
		}
	}
}

// applyAccess moves name's LRU key to r's time, if its record is still r's.
func applyAccess(txn *badger.Txn, name string, r accessReq) error {
	rec, err := getRec(txn, name)
	if err != nil || rec == nil || rec.ID != r.id {
		return err
	}
	if r.at > rec.LastAccess {
		if err := txn.Delete(accessKey(rec.LastAccess, rec.ID)); err != nil {
			return err
		}
		rec.LastAccess = r.at
		if err := txn.Set(accessKey(rec.LastAccess, rec.ID), []byte(name)); err != nil {
			return err
		}
	}
	rec.ValidatedAt = max(rec.ValidatedAt, r.validAt)
	return txn.Set(fileKey(name), encodeRec(rec))
}

// accessLoop writes queued access times until the store closes, then once more.
func (s *Store) accessLoop() {
	defer s.wg.Done()
	t := time.NewTicker(accessFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.flushAccess()
			return
		case <-t.C:
		case <-s.access.wake:
		}
		s.flushAccess()
	}
}

// putRecTouch records an access to a matching record (and a validation if
// validated), at most once per accessEvery.
func (s *Store) putRecTouch(name string, rec *fileRec, now time.Time, validated bool) {
	if now.UnixNano()-rec.LastAccess < int64(s.access.every) && (!validated || now.UnixNano()-rec.ValidatedAt < int64(s.access.every)) {
		return
	}
	s.updateAccess(name, rec.ID, now, validated)
}

// touch records an access to e's file (and a successful validation if
// validated), at most once per accessEvery.
func (s *Store) touch(e *entry, now time.Time, validated bool) {
	e.mu.Lock()
	v := e.ver
	if v == nil || v.id == 0 || now.Sub(e.accessAt) < s.access.every {
		e.mu.Unlock()
		return
	}
	e.accessAt = now
	e.mu.Unlock()
	s.updateAccess(e.name, v.id, now, validated)
}
