package fusefs

import (
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// The policy files stay plain Go: no go-fuse, so their tests need no mount.
func TestPolicyFilesImportNoFUSE(t *testing.T) {
	for _, name := range []string{"openplan.go", "iomode.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if strings.Contains(p, "go-fuse") {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
}

func TestPlanOpen(t *testing.T) {
	const (
		fmodeExec = 0x20 // the kernel's FMODE_EXEC in open flags
		largeFile = 0x8000
	)
	for _, c := range []struct {
		name     string
		flags    uint32
		oflags   int
		writable bool
		truncate bool
	}{
		{"read-only", syscall.O_RDONLY, syscall.O_RDONLY, false, false},
		{"kernel flags dropped", syscall.O_RDONLY | fmodeExec | largeFile, syscall.O_RDONLY, false, false},
		{"write-only", syscall.O_WRONLY, syscall.O_WRONLY, true, false},
		{"read-write append", syscall.O_RDWR | syscall.O_APPEND, syscall.O_RDWR | syscall.O_APPEND, true, false},
		{"truncate", syscall.O_WRONLY | syscall.O_TRUNC, syscall.O_WRONLY | syscall.O_TRUNC, true, true},
		{"read-only truncate writes", syscall.O_RDONLY | syscall.O_TRUNC, syscall.O_TRUNC, true, true},
		{"noatime kept", syscall.O_RDONLY | syscall.O_NOATIME, syscall.O_NOATIME, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := planOpen(c.flags)
			if p.oflags != c.oflags || p.writable != c.writable || p.truncate != c.truncate {
				t.Fatalf("planOpen(%#x) = %+v, want oflags %#x writable %v truncate %v", c.flags, p, c.oflags, c.writable, c.truncate)
			}
			if p.writable && (p.fuseFlags != 0 || p.writeRequest() != openRequest{}) {
				t.Fatalf("writable open: flags %#x, request %+v; want 0, a writer's", p.fuseFlags, p.writeRequest())
			}
		})
	}
}

func TestAsksOrigin(t *testing.T) {
	for _, c := range []struct {
		vouched, writing, want bool
	}{
		{false, false, true}, // no lookup of its own: close-to-open asks
		{true, false, false}, // the open's own lookup just asked
		{true, true, true},   // a writer here moves size and times
		{false, true, true},
	} {
		if got := asksOrigin(c.vouched, c.writing); got != c.want {
			t.Errorf("asksOrigin(vouched %v, writing %v) = %v, want %v", c.vouched, c.writing, got, c.want)
		}
	}
}

func TestPlanRead(t *testing.T) {
	v1 := origin.Attr{Ino: 7, Size: 10, Mode: syscall.S_IFREG | 0o644, Mtime: time.Unix(100, 0), Nlink: 1}
	v2 := v1
	v2.Size = 20
	dir := origin.Attr{Ino: 8, Mode: syscall.S_IFDIR | 0o755}
	seen := func(a origin.Attr) seenVersion { return seenVersion{fp: a.Fingerprint(), set: true} }
	for _, c := range []struct {
		name       string
		f          readFacts
		source     readSource
		refuse     syscall.Errno
		invalidate bool
		flags      uint32
		lastOpen   seenVersion
		admit      openRequest
	}{
		{
			name:     "first open after a lookup of this version",
			f:        readFacts{attr: v1, kernel: seen(v1), cacheTakes: true},
			source:   fromCache,
			flags:    fopenNoFlush,
			lastOpen: seen(v1),
			admit:    openRequest{readOnly: true, fp: v1.Fingerprint()},
		},
		{
			name:       "first open, the kernel holds another version",
			f:          readFacts{attr: v2, kernel: seen(v1), cacheTakes: true},
			source:     fromCache,
			invalidate: true,
			flags:      fopenNoFlush,
			lastOpen:   seen(v2),
			admit:      openRequest{readOnly: true, fp: v2.Fingerprint()},
		},
		{
			name:       "first open, the kernel's attributes unknown (a writer)",
			f:          readFacts{attr: v1, kernel: seenVersion{fp: v1.Fingerprint()}, cacheTakes: true},
			source:     fromCache,
			invalidate: true,
			flags:      fopenNoFlush,
			lastOpen:   seen(v1),
			admit:      openRequest{readOnly: true, fp: v1.Fingerprint()},
		},
		{
			name:     "reopen of an unchanged file keeps the page cache",
			f:        readFacts{attr: v1, lastOpen: seen(v1), kernel: seen(v2), cacheTakes: true},
			source:   fromCache,
			flags:    fopenNoFlush | fopenKeepCache,
			lastOpen: seen(v1),
			admit:    openRequest{readOnly: true, fp: v1.Fingerprint()},
		},
		{
			name:       "reopen after a change invalidates",
			f:          readFacts{attr: v2, lastOpen: seen(v1), kernel: seen(v2), cacheTakes: true},
			source:     fromCache,
			invalidate: true,
			flags:      fopenNoFlush,
			lastOpen:   seen(v2),
			admit:      openRequest{readOnly: true, fp: v2.Fingerprint()},
		},
		{
			name:     "not cacheable: the origin, page cache still kept",
			f:        readFacts{attr: v1, lastOpen: seen(v1)},
			source:   fromOrigin,
			flags:    fopenNoFlush | fopenKeepCache,
			lastOpen: seen(v1),
			admit:    openRequest{readOnly: true, fp: v1.Fingerprint()},
		},
		{
			name:       "not a regular file: the origin",
			f:          readFacts{attr: dir, cacheTakes: true},
			source:     fromOrigin,
			invalidate: true,
			flags:      fopenNoFlush,
			lastOpen:   seen(dir),
			admit:      openRequest{readOnly: true, fp: dir.Fingerprint()},
		},
		{
			name:     "offline: the cache alone, versions left as they are",
			f:        readFacts{attr: v2, offline: true, offlineCache: true, lastOpen: seen(v1), kernel: seen(v1), cacheTakes: true},
			source:   fromOfflineCache,
			flags:    fopenNoFlush,
			lastOpen: seen(v1),
		},
		{
			name:     "offline without an offline cache fails",
			f:        readFacts{attr: v1, offline: true, cacheTakes: true},
			source:   fromOfflineCache,
			refuse:   syscall.EIO,
			flags:    fopenNoFlush,
			lastOpen: seenVersion{},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := planRead(c.f)
			if p.source != c.source || p.refuse != c.refuse || p.invalidateAttrs != c.invalidate ||
				p.fuseFlags != c.flags || p.lastOpen != c.lastOpen || p.admit != c.admit {
				t.Fatalf("planRead = %+v\nwant source %v refuse %v invalidate %v flags %#x lastOpen %+v admit %+v",
					p, c.source, c.refuse, c.invalidate, c.flags, c.lastOpen, c.admit)
			}
			if p.keepCache != (p.fuseFlags&fopenKeepCache != 0) {
				t.Fatalf("keepCache %v disagrees with flags %#x", p.keepCache, p.fuseFlags)
			}
		})
	}
}

func TestPlanReadCacheOpened(t *testing.T) {
	v1 := origin.Attr{Ino: 7, Size: 10, Mode: syscall.S_IFREG | 0o644, Mtime: time.Unix(100, 0), Nlink: 1}
	seen := seenVersion{fp: v1.Fingerprint(), set: true}
	kept := planRead(readFacts{attr: v1, lastOpen: seen, cacheTakes: true})
	all := cacheFacts{offersPassthrough: true, passthroughOK: true, settled: true}
	for _, c := range []struct {
		name     string
		c        cacheFacts
		flags    uint32
		complete bool
	}{
		{"passthrough candidate", all, fopenNoFlush | fopenKeepCache, true},
		{"the cache's copy changed: pages dropped", cacheFacts{changed: true, offersPassthrough: true, passthroughOK: true, settled: true}, fopenNoFlush, true},
		{"no complete local file", cacheFacts{passthroughOK: true, settled: true}, fopenNoFlush | fopenKeepCache, false},
		{"passthrough not available", cacheFacts{offersPassthrough: true, settled: true}, fopenNoFlush | fopenKeepCache, false},
		{"not settled", cacheFacts{offersPassthrough: true, passthroughOK: true}, fopenNoFlush | fopenKeepCache, false},
		{"small: its pages serve it", cacheFacts{offersPassthrough: true, passthroughOK: true, settled: true, small: true}, fopenNoFlush | fopenKeepCache, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := kept.cacheOpened(c.c)
			if p.fuseFlags != c.flags || p.keepCache != (c.flags&fopenKeepCache != 0) || p.admit.complete != c.complete {
				t.Fatalf("cacheOpened = %+v, want flags %#x complete %v", p, c.flags, c.complete)
			}
			if p.source != fromCache || p.admit.fp != v1.Fingerprint() || !p.admit.readOnly {
				t.Fatalf("cacheOpened changed the source or version: %+v", p)
			}
		})
	}
	// The cache's passthrough check is asked only for a candidate.
	if !all.mayPassthrough() {
		t.Fatal("a settled large file with passthrough available is no candidate")
	}
	for _, c := range []cacheFacts{{passthroughOK: true, settled: true, small: true}, {settled: true}, {passthroughOK: true}} {
		if c.mayPassthrough() {
			t.Fatalf("%+v: a candidate for passthrough", c)
		}
	}
	// The cache failed: read the origin, never by passthrough of a cache
	// file; the page cache verdict stands.
	p := kept.cacheOpened(all).cacheFailed()
	if p.source != fromOrigin || p.admit.complete || p.fuseFlags != fopenNoFlush|fopenKeepCache || p.lastOpen != seen {
		t.Fatalf("cacheFailed = %+v", p)
	}
}

func TestPlanReadOfflineOpened(t *testing.T) {
	last := origin.Attr{Ino: 7, Size: 10, Mode: syscall.S_IFREG | 0o644, Mtime: time.Unix(100, 0)}
	cached := last
	cached.Size = 30
	p := planRead(readFacts{attr: last, offline: true, offlineCache: true}).offlineOpened(cached)
	want := openRequest{readOnly: true, fp: cached.Fingerprint()}
	if p.admit != want || p.fuseFlags != readOnlyOpenFlags || p.source != fromOfflineCache {
		t.Fatalf("offlineOpened = %+v, want admit %+v (the cache's version)", p, want)
	}
}

func TestSettled(t *testing.T) {
	now := time.Unix(1000, 0)
	at := func(mtime, ctime time.Duration) origin.Attr {
		return origin.Attr{Mtime: now.Add(-mtime), Ctime: now.Add(-ctime)}
	}
	for _, c := range []struct {
		name   string
		a      origin.Attr
		settle time.Duration
		want   bool
	}{
		{"no wait", at(0, 0), -1, true},
		{"default, changed a moment ago", at(time.Second, time.Second), 0, false},
		{"default, unchanged long enough", at(DefaultPassthroughSettle, DefaultPassthroughSettle), 0, true},
		{"ctime later than mtime counts", at(time.Hour, time.Second), 2 * time.Second, false},
		{"mtime later than ctime counts", at(time.Second, time.Hour), 2 * time.Second, false},
		{"both old", at(time.Hour, time.Hour), 2 * time.Second, true},
	} {
		if got := settled(c.a, c.settle, now); got != c.want {
			t.Errorf("%s: settled = %v, want %v", c.name, got, c.want)
		}
	}
}
