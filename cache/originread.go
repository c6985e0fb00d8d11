package cache

// Reads from the origin: the entry's origin file, checked to hold the version
// being read, a reopen on ESTALE, and the paced reads of background fetches.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/eddy-cluster/eddy/origin"
)

// originFile returns the entry's origin file for reading version v,
// opening it on first use. Every (re)opened file is checked with Stat: a
// file whose fingerprint is not v's holds another version's bytes (the path
// was replaced, e.g. after ESTALE), so v is dropped (the next read
// revalidates) and errOriginChanged returned; those bytes are never read
// into v.
func (e *entry) originFile(ctx context.Context, v *version) (origin.File, error) {
	e.orgMu.Lock()
	defer e.orgMu.Unlock()
	if e.org != nil && e.orgFP == v.fp {
		return e.org, nil
	}
	for attempt := 0; ; attempt++ {
		if e.org == nil {
			f, err := e.s.org.Open(ctx, e.name, os.O_RDONLY)
			for err != nil && outOfFiles(err) && e.s.shedIdle() {
				f, err = e.s.org.Open(ctx, e.name, os.O_RDONLY)
			}
			if err != nil {
				return nil, fmt.Errorf("open %s on origin: %w", e.name, err)
			}
			e.org, e.orgFP = f, origin.Fingerprint{}
		}
		a, ok := witnessed(e.org)
		if !ok {
			var err error
			if a, err = e.org.Stat(ctx); err != nil {
				_ = e.org.Close()
				e.org = nil
				return nil, fmt.Errorf("stat %s on origin: %w", e.name, err)
			}
		}
		e.orgFP = a.Fingerprint()
		if e.orgFP == v.fp {
			return e.org, nil
		}
		if attempt > 0 {
			// The path names another version now: v is out of date.
			e.dropVersion(v)
			return nil, fmt.Errorf("read %s on origin: opened %s, want %s: %w", e.name, e.orgFP, v.fp, errOriginChanged)
		}
		// A file kept open from before (another version, or an older file
		// at the path): reopen by path once.
		_ = e.org.Close()
		e.org = nil
	}
}

// resetOrigin closes the origin file (stale handle, or the path now names
// another file); the next read reopens it.
func (e *entry) resetOrigin() {
	e.orgMu.Lock()
	defer e.orgMu.Unlock()
	if e.org != nil {
		_ = e.org.Close()
		e.org = nil
	}
}

// witnessed returns the attributes an origin file vouches for
// (origin.AttrWitness), ok false if it cannot.
func witnessed(f origin.File) (origin.Attr, bool) {
	if w, ok := f.(origin.AttrWitness); ok {
		return w.Witnessed()
	}
	return origin.Attr{}, false
}

// readOrigin reads p at off of version v from the origin, reopening once on
// ESTALE (the reopened file must still be version v).
func (e *entry) readOrigin(ctx context.Context, v *version, p []byte, off int64) (int, error) {
	n, _, err := e.readOriginW(ctx, v, p, off)
	return n, err
}

// readOriginW is readOrigin that also reports whether the origin vouches
// that the bytes read are version v's (origin.AttrWitness): then they can
// be indexed without another origin round trip.
func (e *entry) readOriginW(ctx context.Context, v *version, p []byte, off int64) (int, bool, error) {
	for attempt := 0; ; attempt++ {
		f, err := e.originFile(ctx, v)
		if err != nil {
			return 0, false, err
		}
		n, err := readFull(ctx, f, p, off)
		if err != nil && !errors.Is(err, io.EOF) && attempt == 0 &&
			(errors.Is(err, syscall.ESTALE) || errors.Is(err, syscall.EBADF)) {
			e.resetOrigin()
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return n, false, fmt.Errorf("read %s on origin: %w", e.name, err)
		}
		a, ok := witnessed(f)
		return n, ok && a.Fingerprint() == v.fp, err
	}
}

// readOriginPaced is readOrigin in pacedPiece pieces, one after another,
// so that a reader's direct read waits behind one piece, not a chunk; and
// each piece yields to readers (Store.yieldToReaders).
func (e *entry) readOriginPaced(ctx context.Context, v *version, p []byte, off int64, hurry *atomic.Bool) (int, bool, error) {
	total, vouched := 0, true
	for total < len(p) {
		if hurry.Load() {
			n, ok, err := e.readOriginW(ctx, v, p[total:], off+int64(total))
			return total + n, vouched && ok, err
		}
		if err := e.s.yieldToReaders(ctx, hurry); err != nil {
			return total, false, err
		}
		end := min(total+pacedPiece, len(p))
		n, ok, err := e.readOriginW(ctx, v, p[total:end], off+int64(total))
		total += n
		vouched = vouched && ok
		if err != nil {
			return total, false, err
		}
	}
	return total, vouched, nil
}

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
