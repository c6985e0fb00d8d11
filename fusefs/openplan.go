package fusefs

import (
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// The open plan: what an open of a file does, decided from facts alone.
//
// node.Open (open.go) gathers the facts in the order they become known,
// asks the plan at each step, and acts on the answer:
//
//  1. planOpen: the open's flags decide writable or read-only.
//  2. trustsCheck, asksOrigin: a read-only open asks the origin for the
//     file's attributes (close-to-open) unless a consistency TTL lets it
//     trust the node's last check, or its own lookup just did.
//  3. planRead: with the attributes, where the handle reads (the cache,
//     the origin, or the cache alone while the origin is offline), whether
//     the kernel keeps its page cache or drops the attributes it holds, and
//     what the node records as its last open's version.
//  4. cacheOpened / cacheFailed: once the cache has opened the version (or
//     failed to), whether the open may use passthrough.
//
// The I/O mode the open then gets (passthrough or cached I/O) is ioMode's
// (iomode.go). This file is plain Go: it imports nothing of FUSE, and its
// tests need no mount (openplan_test.go).

// openFlagMask keeps the open(2) flags that mean something to the origin
// file (the kernel adds others, such as FMODE_EXEC, O_LARGEFILE).
const openFlagMask = syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_TRUNC | syscall.O_EXCL |
	syscall.O_SYNC | syscall.O_DSYNC | syscall.O_NOATIME

// FUSE open reply flags (FOPEN_*), as the kernel's FUSE protocol numbers
// them; open.go checks at compile time that they are go-fuse's.
const (
	fopenKeepCache uint32 = 1 << 1
	fopenNoFlush   uint32 = 1 << 5
)

// readOnlyOpenFlags: a read-only open has nothing to write back at close,
// so the kernel skips FLUSH (one request less per open of a small file). A
// POSIX lock taken through such an open is released when its last
// descriptor closes (RELEASE closes the origin file holding the lock), not
// at the close of any other descriptor of the file.
const readOnlyOpenFlags = fopenNoFlush

// openPlan is what an open's flags decide.
type openPlan struct {
	oflags   int  // open(2) flags for the origin file
	writable bool // writes or truncates: the handle is the origin file's
	// truncate: O_TRUNC empties the cached content and a passthrough
	// backing file too.
	truncate  bool
	fuseFlags uint32 // the reply's flags for a writable open
}

// planOpen plans an open with the kernel's open flags.
func planOpen(kernelFlags uint32) openPlan {
	oflags := int(kernelFlags) & openFlagMask
	return openPlan{
		oflags:   oflags,
		writable: oflags&syscall.O_ACCMODE != syscall.O_RDONLY || oflags&syscall.O_TRUNC != 0,
		truncate: oflags&syscall.O_TRUNC != 0,
	}
}

// writeRequest is the admission a writable open asks for (iomode.go).
func (p openPlan) writeRequest() openRequest { return openRequest{} }

// asksOrigin reports whether a read-only open asks the origin for the
// file's attributes (close-to-open) rather than taking those its own lookup
// just got (vouched, vouch.go): it does unless vouched, and always while a
// writable handle here is moving the file's size and times.
func asksOrigin(vouched, writing bool) bool {
	return !vouched || writing
}

// validation is a node's last check of its file against the origin: the
// attributes the origin gave and when it was asked.
type validation struct {
	attr origin.Attr
	at   time.Time
	set  bool
}

// ttlFacts are what decides whether a read-only open under the dataset
// consistency mode may skip the origin (consistency.go).
type ttlFacts struct {
	ttl     time.Duration // the first matching rule's TTL; 0: strict
	checked validation    // the node's last check against the origin (node.checked)
	writing bool          // a writable handle is open on the node here
	now     time.Time
}

// trustsCheck reports whether a read-only open takes the attributes of the
// node's last check against the origin instead of asking the origin (and
// instead of a lookup's vouch): only under a TTL, for a regular file
// checked less than the TTL ago, while no writable handle here is moving
// it. A change made through this mount forgets the check
// (node.forgetChecked), so it is seen at once.
func trustsCheck(f ttlFacts) bool {
	return f.checked.attr.IsRegular() && checkStands(f)
}

// checkStands reports whether the node's last check against the origin
// stands under the TTL, for a node of any type (a GETATTR answered from
// it): checked less than the TTL ago, with no writable handle open here.
func checkStands(f ttlFacts) bool {
	if f.ttl <= 0 || !f.checked.set || f.writing {
		return false
	}
	age := f.now.Sub(f.checked.at)
	return age >= 0 && age < f.ttl
}

// readSource is where a read-only handle reads.
type readSource int

const (
	fromOrigin       readSource = iota // the origin file
	fromCache                          // a cache.Handle of the version just validated
	fromOfflineCache                   // the cache alone, the origin being in trouble
)

// seenVersion is a content version a node recorded, if any (set).
type seenVersion struct {
	fp  origin.Fingerprint
	set bool
}

// readFacts are what a read-only open knows once it has the attributes.
type readFacts struct {
	// attr: the file's attributes, from the origin (or the lookup that
	// vouched for this open), or, offline, the last ones known.
	attr    origin.Attr
	offline bool // the origin is in trouble: attr is the last known
	// offlineCache: the cache can serve disconnected reads (OfflineCache).
	offlineCache bool
	// lastOpen: the version the node's last read-only open saw (node.openSeen).
	lastOpen seenVersion
	// kernel: the version of the attributes the kernel holds from a LOOKUP
	// or GETATTR reply (node.kernSeen); unset when it may hold others.
	kernel seenVersion
	// cacheTakes: a cache is configured and takes this name (Cacheable).
	cacheTakes bool
}

// readPlan is what a read-only open does.
type readPlan struct {
	source readSource
	refuse syscall.Errno // nonzero: the open fails with it
	// invalidateAttrs: the kernel may hold attributes (size) of another
	// version; drop them. (Its page cache is dropped at this open unless
	// keepCache.)
	invalidateAttrs bool
	keepCache       bool        // FOPEN_KEEP_CACHE: the kernel's pages are of this version
	lastOpen        seenVersion // what the node records as its last open's version
	fuseFlags       uint32      // the reply's flags
	admit           openRequest // the I/O mode admission to ask for (iomode.go)
}

// planRead plans a read-only open. The caller holds the node's lock from
// reading f.lastOpen to recording plan.lastOpen, so concurrent opens see
// each other's versions.
func planRead(f readFacts) readPlan {
	if f.offline {
		// Served from the cache as it was last validated; the versions the
		// kernel and the last open saw stay as they are.
		p := readPlan{source: fromOfflineCache, lastOpen: f.lastOpen, fuseFlags: readOnlyOpenFlags}
		if !f.offlineCache {
			p.refuse = syscall.EIO
		}
		return p
	}
	fp := f.attr.Fingerprint()
	// Close-to-open: an unchanged version keeps the kernel's page cache.
	keep := f.lastOpen.set && f.lastOpen.fp == fp
	// The first open of an inode whose attributes the kernel got moments
	// ago from the same version (a lookup) has nothing to invalidate.
	fresh := !f.lastOpen.set && f.kernel.set && f.kernel.fp == fp
	p := readPlan{
		source:          fromOrigin,
		invalidateAttrs: !keep && !fresh,
		lastOpen:        seenVersion{fp: fp, set: true},
		admit:           openRequest{readOnly: true, fp: fp},
	}
	if f.cacheTakes && f.attr.IsRegular() {
		p.source = fromCache
	}
	return p.keeping(keep)
}

// keeping sets whether the kernel keeps its page cache.
func (p readPlan) keeping(keep bool) readPlan {
	p.keepCache = keep
	p.fuseFlags = readOnlyOpenFlags
	if keep {
		p.fuseFlags |= fopenKeepCache
	}
	return p
}

// pageCacheMax is the size up to which a file is read through the kernel's
// page cache of the mount rather than by passthrough. The kernel keeps
// those pages from one open of a version to the next (FOPEN_KEEP_CACHE), so
// a warm small file is read with no request at all either way, while a
// passthrough open costs the daemon, per open, the check of the version's
// chunks and its data file (fstat), the registration of a backing file
// with the kernel and its removal after release (two ioctls), and a
// duplicate of the data file kept in step (backing.go): most of what the
// open of a warm small file costs it. When the kernel has dropped the
// pages, the whole file comes back in one READ (the mount reads ahead
// 1 MiB), answered from the cache. Larger files use passthrough, which
// reads at local-disk speed without the daemon.
const pageCacheMax = 512 << 10

// cacheFacts are what the cache's open of the version tells.
type cacheFacts struct {
	// changed: the cache held another version, now replaced
	// (cache.OpenResult.Changed): the kernel's pages may be of it.
	changed bool
	// offersPassthrough: the cache has the version as one complete,
	// verified local file (cache.Handle.PassthroughFile). Asked only when
	// the other facts let the open use passthrough (mayPassthrough).
	offersPassthrough bool
	passthroughOK     bool // kernel passthrough is in effect on this mount
	settled           bool // the file has been unchanged long enough (settled)
	// small: the file is at most pageCacheMax bytes.
	small bool
}

// mayPassthrough reports whether an open with these facts could use
// passthrough if the cache offers a complete local file; if not, the
// cache is not asked (its check reads every chunk's state).
func (c cacheFacts) mayPassthrough() bool {
	return c.passthroughOK && c.settled && !c.small
}

// cacheOpened is the plan once the cache opened the file for reading.
func (p readPlan) cacheOpened(c cacheFacts) readPlan {
	if c.changed {
		p = p.keeping(false)
	}
	p.admit.complete = c.offersPassthrough && c.mayPassthrough()
	return p
}

// offlineOpened is the plan once the cache opened its copy without the
// origin; a is the attributes that copy was last validated with.
func (p readPlan) offlineOpened(a origin.Attr) readPlan {
	p.admit = openRequest{readOnly: true, fp: a.Fingerprint()}
	return p
}

// cacheFailed is the plan once the cache failed to open the file: read the
// origin (never fail a read because of the cache).
func (p readPlan) cacheFailed() readPlan {
	p.source = fromOrigin
	p.admit.complete = false
	return p
}

// settled reports whether a file with attributes a has been unchanged
// (mtime and ctime) for settle at now (Options.PassthroughSettle: 0 for
// the default, negative for no wait), long enough to be served by
// passthrough: a file still changing (a log being written) is read through
// the daemon, which follows its changes read by read.
func settled(a origin.Attr, settle time.Duration, now time.Time) bool {
	if settle == 0 {
		settle = DefaultPassthroughSettle
	}
	if settle < 0 {
		return true
	}
	changed := a.Mtime
	if a.Ctime.After(changed) {
		changed = a.Ctime
	}
	return now.Sub(changed) >= settle
}
