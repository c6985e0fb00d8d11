package cache

// Keeping an entry's version matched to the origin: the close-to-open check
// at open, periodic revalidation of open files, and installing a new version
// when the origin's fingerprint differs from the cached one.

import (
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/eddy-cluster/eddy/origin"
)

// validate makes the entry's version match attr (close-to-open check).
func (e *entry) validate(ctx context.Context, attr origin.Attr) (changed bool, err error) {
	return e.validateAt(ctx, attr, time.Time{})
}

// validateAt makes the entry's version match attr, which the origin gave
// at checkedAt (zero: just now). The entry's last check is set to
// checkedAt, never later, so the periodic revalidation of open files counts
// from the origin's answer, not from an open that trusted an earlier check
// (OpenFileChecked).
func (e *entry) validateAt(ctx context.Context, attr origin.Attr, checkedAt time.Time) (changed bool, err error) {
	e.revalMu.Lock()
	defer e.revalMu.Unlock()
	now := time.Now()
	fresh := checkedAt.IsZero() || !checkedAt.Before(now)
	if fresh {
		checkedAt = now
	}
	e.mu.Lock()
	v := e.ver
	if v != nil && v.fp == attr.Fingerprint() && !v.detached.Load() {
		if fresh || checkedAt.After(e.checkedAt) {
			e.checkedAt = checkedAt
		}
		e.mu.Unlock()
		e.s.touch(e, now, fresh)
		return false, nil
	}
	e.mu.Unlock()
	changed, err = e.install(ctx, attr, now, fresh)
	if err == nil && !fresh {
		e.mu.Lock()
		if e.checkedAt.After(checkedAt) {
			e.checkedAt = checkedAt
		}
		e.mu.Unlock()
	}
	return changed, err
}

// install replaces the entry's version by the one for attr: the recorded
// one when its fingerprint matches, else a new empty one (dropping the old
// content). Called with revalMu held.
func (e *entry) install(ctx context.Context, attr origin.Attr, now time.Time, validated bool) (changed bool, err error) {
	s := e.s
	fp := attr.Fingerprint()
	e.mu.Lock()
	old := e.ver
	e.mu.Unlock()
	if old != nil && old.fp != fp {
		changed = true
	}
	nv := &version{attr: attr, fp: fp, size: attr.Size, csize: s.csize}
	if s.db != nil && !s.isClosed() {
		var (
			rec    *fileRec
			chunks []indexedChunk
		)
		if err := s.db.View(func(txn *badger.Txn) error {
			var gerr error
			rec, gerr = getRec(txn, e.name)
			if gerr != nil || rec == nil || rec.Attr.Fingerprint() != fp {
				return gerr
			}
			// The chunk records in the same transaction: one index read per open.
			return chunkSums(txn, rec.ID, func(idx int, c chunkRec) {
				chunks = append(chunks, indexedChunk{idx, c})
			})
		}); err != nil {
			s.noteError("index-read", fmt.Errorf("read record of %s: %w", e.name, err))
			rec, chunks = nil, nil
		}
		fresh := false
		if rec != nil && rec.Attr.Fingerprint() == fp {
			nv.id, nv.csize = rec.ID, rec.ChunkSize
			s.putRecTouch(e.name, rec, now, validated)
		} else {
			fresh = true
			if rec != nil {
				changed = true
			}
			if err := s.replaceRec(e.name, rec, nv, now); err != nil {
				s.noteError("index-write", fmt.Errorf("record %s: %w", e.name, err))
				nv.id = 0
			}
		}
		if changed {
			s.c.invalidations.Add(1)
			s.inv.note(e.name, false)
		}
		if nv.id != 0 {
			s.loadVersion(e.name, nv, chunks, fresh)
		}
	} else if changed {
		s.c.invalidations.Add(1)
	}
	nv.nchunks = nchunks(nv.size, nv.csize)
	if nv.state == nil {
		nv.state = make([]uint8, nv.nchunks)
		nv.sums = make([]uint64, nv.nchunks)
	}
	nv.inflight = map[int]*fetch{}
	nv.syncing = map[int]*fetch{}
	e.mu.Lock()
	old = e.ver
	e.ver = nv
	e.checkedAt = now
	e.accessAt = now
	if old != nil {
		e.retired = append(e.retired, old.files()...)
	}
	e.mu.Unlock()
	if old != nil {
		old.detach()
		if !old.attr.SameObject(attr) || old.attr.Dev != attr.Dev {
			e.resetOrigin()
		}
	}
	return changed, nil
}

// dropVersion forgets v (the origin no longer has it): nothing more is
// indexed under it and the next read revalidates.
func (e *entry) dropVersion(v *version) {
	e.mu.Lock()
	if e.ver == v {
		e.ver = nil
		e.retired = append(e.retired, v.files()...)
	}
	e.checkedAt = time.Time{}
	e.mu.Unlock()
	v.detach()
}

// forceRevalidate makes the next read check the origin.
func (e *entry) forceRevalidate() {
	e.mu.Lock()
	e.checkedAt = time.Time{}
	e.mu.Unlock()
}

// maybeRevalidate re-checks the origin when the entry's last check is older
// than cfg.Revalidate (or forced). Trouble keeps serving the cached version
// (invariant 5); ENOENT drops it.
func (e *entry) maybeRevalidate(ctx context.Context) error {
	s := e.s
	e.mu.Lock()
	need := e.ver == nil || time.Since(e.checkedAt) >= s.cfg.Revalidate
	mustHave := e.ver == nil
	e.mu.Unlock()
	if !need {
		return nil
	}
	if mustHave {
		e.revalMu.Lock()
	} else if !e.revalMu.TryLock() {
		return nil // another reader is checking; serve what is current
	}
	defer e.revalMu.Unlock()
	e.mu.Lock()
	need = e.ver == nil || time.Since(e.checkedAt) >= s.cfg.Revalidate
	e.mu.Unlock()
	if !need {
		return nil
	}
	attr, err := s.org.Lstat(ctx, e.name)
	now := time.Now()
	if err != nil {
		e.mu.Lock()
		e.checkedAt = now
		have := e.ver != nil
		e.mu.Unlock()
		if origin.IsNotExist(err) {
			s.dropName(e.name, dropGone, e)
			return fmt.Errorf("cache: revalidate %s: %w", e.name, err)
		}
		if have {
			s.log.Debug("revalidation failed; serving the cached version", "path", e.name, "err", err)
			return nil
		}
		return fmt.Errorf("cache: revalidate %s: %w", e.name, err)
	}
	s.c.revalidations.Add(1)
	e.mu.Lock()
	v := e.ver
	e.mu.Unlock()
	if v != nil && v.fp == attr.Fingerprint() {
		e.mu.Lock()
		e.checkedAt = now
		e.mu.Unlock()
		s.touch(e, now, true)
		return nil
	}
	if !attr.IsRegular() {
		s.dropName(e.name, dropGone, e)
		return fmt.Errorf("cache: revalidate %s: no longer a regular file: %w", e.name, ErrNotCacheable)
	}
	_, err = e.install(ctx, attr, now, true)
	return err
}
