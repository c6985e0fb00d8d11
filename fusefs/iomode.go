package fusefs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// The kernel keeps one I/O mode per inode:
// while an open of the inode uses passthrough, every open must use
// passthrough with the same backing file; while an open uses cached I/O,
// none may use passthrough. An open that breaks this fails in the kernel
// with EIO, so ioMode decides each open's mode before the reply goes out.
//
// This file is plain Go: it imports nothing of FUSE, and its tests need no
// mount (iomode_test.go).

const (
	// ptSwitchQuiet: the backing file of an inode changes version only after
	// the inode has had no passthrough handle for this long, because go-fuse
	// drops its backing-file reference just after our Release returns and
	// would hand a new open the old backing file in between.
	ptSwitchQuiet = 200 * time.Millisecond
	// ptWait bounds how long an open that cannot share the inode's
	// passthrough mode waits for those handles to close before ETXTBSY.
	ptWait = 2 * time.Second
	// ptDrain: the kernel ends a cached-I/O open at close, and RELEASE
	// reaches us just after; an open that could use passthrough waits this
	// long for such releases before settling for cached I/O.
	ptDrain = 20 * time.Millisecond
	// ptRetry is how often a waiting open tries again.
	ptRetry = 2 * time.Millisecond
)

// openRequest describes an open for admission.
type openRequest struct {
	readOnly bool
	fp       origin.Fingerprint // content version, for read-only opens
	complete bool               // a complete, verified local copy can back passthrough
}

// ioAdmission is the I/O mode an open was admitted with.
type ioAdmission int

const (
	// cachedIO: the handle's reads and writes reach the daemon.
	cachedIO ioAdmission = iota
	// joinPassthrough: the handle shares the inode's registered backing
	// file (a reader of its version, or a writer while it is kept).
	joinPassthrough
	// registerPassthrough: the handle's file becomes the inode's backing file.
	registerPassthrough
)

// passthrough reports whether the handle uses the kernel's passthrough.
func (a ioAdmission) passthrough() bool { return a != cachedIO }

// admitStep is the outcome of one admission attempt.
type admitStep int

const (
	admitWait admitStep = iota // the open cannot be admitted yet
	admitCached
	admitJoin
	admitRegister
)

// backingGuard is the lock under which the inode's backing file is adopted
// and dropped (node.backMu), held across an admission so that a writer
// joins passthrough only while the backing file its writes go to is kept.
type backingGuard interface {
	sync.Locker
	// kept reports whether a backing file is kept; requires the lock.
	kept() bool
}

// ioMode counts one inode's open handles by I/O mode and admits new ones.
//
// INVARIANT: ptOpens and otherOpens are not both > 0 (the kernel's rule
// above): try counts a cached-I/O open only while ptOpens == 0 and
// registers a backing file only while otherOpens == 0. countCreated alone
// counts without asking, for the handle of a file just created.
// INVARIANT: ptWriters <= ptOpens.
// INVARIANT: while ptOpens > 0 and ptSet, ptFP is the version whose bytes
// the inode's backing file holds (backing.go keeps it so).
//
// Lock order: node.mu, then ioMode.mu; node.backMu, then ioMode.mu.
// ioMode.mu is a leaf: nothing is called while holding it.
type ioMode struct {
	mu         sync.Mutex
	ptOpens    int                // open passthrough handles; GUARDED_BY(mu)
	ptWriters  int                // writable handles among ptOpens; GUARDED_BY(mu)
	otherOpens int                // open handles using cached I/O; GUARDED_BY(mu)
	ptFP       origin.Fingerprint // content version of the backing file; GUARDED_BY(mu)
	ptSet      bool               // ptFP is meaningful; GUARDED_BY(mu)
	ptIdleAt   time.Time          // when ptOpens last fell to 0; GUARDED_BY(mu)
}

// admit decides whether an open uses passthrough or cached I/O, so the
// kernel's per-inode I/O mode rules hold, and counts the handle; release
// undoes it. While passthrough handles are open, every open joins them: a
// reader of the backing file's version (syncBacking brought it up to the
// origin's), and a writer, whose writes then go through the backing file
// (backing.go). Only an open that can do neither (another version the
// backing file could not be brought to, or a writer while the backing file
// is not kept) waits up to ptWait for those handles and then fails with
// ETXTBSY rather than the kernel's EIO; EINTR if ctx ends first.
func (m *ioMode) admit(ctx context.Context, r openRequest, g backingGuard) (ioAdmission, syscall.Errno) {
	return m.admitWithin(ctx, r, g, ptWait)
}

// admitWithin is admit, waiting at most bound.
func (m *ioMode) admitWithin(ctx context.Context, r openRequest, g backingGuard, bound time.Duration) (ioAdmission, syscall.Errno) {
	start := time.Now()
	deadline := start.Add(bound)
	for {
		g.Lock()
		step := m.try(r, g.kept(), start, time.Now())
		g.Unlock()
		switch step {
		case admitCached:
			return cachedIO, 0
		case admitJoin:
			return joinPassthrough, 0
		case admitRegister:
			return registerPassthrough, 0
		}
		if time.Now().After(deadline) {
			return cachedIO, syscall.ETXTBSY
		}
		select {
		case <-ctx.Done():
			return cachedIO, syscall.EINTR
		case <-time.After(ptRetry):
		}
	}
}

// try makes one admission attempt at now for an open that started trying
// at start, kept being whether the inode's backing file is kept, and counts
// the handle unless the step is admitWait.
func (m *ioMode) try(r openRequest, kept bool, start, now time.Time) admitStep {
	m.mu.Lock()
	defer m.mu.Unlock()
	sameVersion := r.readOnly && m.ptSet && m.ptFP == r.fp
	switch {
	case m.ptOpens > 0 && sameVersion:
		// Served by the registered backing file, whose bytes are this version.
		m.ptOpens++
		return admitJoin
	case m.ptOpens > 0 && !r.readOnly && kept:
		m.ptOpens++
		m.ptWriters++
		return admitJoin
	case m.ptOpens > 0:
		// Cannot join passthrough and cannot use cached I/O: wait.
		return admitWait
	case r.complete && m.otherOpens == 0 &&
		(!m.ptSet || sameVersion || now.Sub(m.ptIdleAt) >= ptSwitchQuiet):
		m.ptOpens++
		m.ptFP, m.ptSet = r.fp, true
		return admitRegister
	case r.complete && m.otherOpens > 0 && now.Sub(start) < ptDrain:
		// Cached-I/O handles may be closing: wait for their release.
		return admitWait
	default:
		m.otherOpens++
		return admitCached
	}
}

// release uncounts a handle admitted with passthrough pt; idle reports that
// it was the inode's last passthrough handle (the backing file may go).
func (m *ioMode) release(pt, writable bool) (idle bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pt {
		if writable {
			m.ptWriters--
		}
		if m.ptOpens--; m.ptOpens <= 0 {
			m.ptOpens = 0
			m.ptIdleAt = time.Now()
			return true
		}
		return false
	}
	if m.otherOpens--; m.otherOpens < 0 {
		m.otherOpens = 0
	}
	return false
}

// countCreated counts the handle of a file just created, which uses cached
// I/O (nothing else has a new inode open).
func (m *ioMode) countCreated() {
	m.mu.Lock()
	m.otherOpens++
	m.mu.Unlock()
}

// open reports whether any handle of the inode is open.
func (m *ioMode) open() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ptOpens+m.otherOpens > 0
}

// passthroughOpen reports whether a handle of the inode uses passthrough.
func (m *ioMode) passthroughOpen() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ptOpens > 0
}

// passthroughWriters reports whether writable handles use passthrough.
func (m *ioMode) passthroughWriters() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ptWriters != 0
}

// setBackingVersion records that the backing file now holds version fp.
func (m *ioMode) setBackingVersion(fp origin.Fingerprint) {
	m.mu.Lock()
	m.ptFP, m.ptSet = fp, true
	m.mu.Unlock()
}
