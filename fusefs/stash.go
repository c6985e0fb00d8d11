package fusefs

import (
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// stashMax bounds the stash (about 250 bytes an entry).
const stashMax = 1 << 16

// attrStash holds attributes read from the origin (by a lookup, a stat, the
// revalidation at open, or a READDIRPLUS listing) for as long as the kernel
// could have kept them itself (the entry's timeout, fixed when they were
// read). Lookup answers from it, so a name the kernel forgot (memory
// pressure, a dropped page cache) or has not met yet but that was just
// listed costs no origin round trip. It never extends a timeout: what it
// serves is no older than what the kernel's own cache may serve. Every
// change made through the mount drops the names it touches (and their
// parents); a name with a writable open on this mount is never served from
// it. Changes made elsewhere are seen when the timeout ends, as with the
// kernel's cache, and at every open (close-to-open revalidates regardless).
type attrStash struct {
	mu  sync.Mutex
	m   map[string]stashed // guarded by mu
	gen uint64             // guarded by mu: counts drops
}

type stashed struct {
	a      origin.Attr
	readAt time.Time // when the origin gave a
	until  time.Time
}

func newAttrStash() *attrStash { return &attrStash{m: map[string]stashed{}} }

// get returns name's attributes if they are still within their timeout.
func (s *attrStash) get(name string) (origin.Attr, bool) {
	a, _, ok := s.getAt(name)
	return a, ok
}

// getAt is get, also returning when the origin gave the attributes.
func (s *attrStash) getAt(name string) (origin.Attr, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[name]
	if !ok {
		return origin.Attr{}, time.Time{}, false
	}
	if time.Now().After(e.until) {
		delete(s.m, name)
		return origin.Attr{}, time.Time{}, false
	}
	return e.a, e.readAt, true
}

// generation is taken before asking the origin; put ignores the answer if
// anything was dropped since (a change through the mount may have raced
// with the read).
func (s *attrStash) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// put records a as name's attributes, read from the origin at readAt (taken
// with gen before the call) and valid for ttl from then.
func (s *attrStash) put(name string, a origin.Attr, readAt time.Time, ttl time.Duration, gen uint64) {
	if ttl <= 0 {
		return
	}
	until := readAt.Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	if len(s.m) >= stashMax {
		now := time.Now()
		for k, e := range s.m {
			if now.After(e.until) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= stashMax {
			clear(s.m) // forgetting costs only round trips
		}
	}
	s.m[name] = stashed{a: a, readAt: readAt, until: until}
}

// drop forgets names and their parent directories (whose mtime, ctime and
// link count a change alters).
func (s *attrStash) drop(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for _, n := range names {
		delete(s.m, n)
		delete(s.m, parentName(n))
	}
}

// dropTree forgets name, everything below it and its parent (a directory
// renamed or removed).
func (s *attrStash) dropTree(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	delete(s.m, name)
	delete(s.m, parentName(name))
	if name == "." {
		clear(s.m)
		return
	}
	prefix := name + "/"
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			delete(s.m, k)
		}
	}
}

// parentName is the origin name of name's directory ("." for the root's
// children).
func parentName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return "."
}

// stashTTL is how long the kernel may keep the entry name with attributes
// a (what Lookup tells it: the consistency TTL under one), 0 when the stash
// is off.
func (st *state) stashTTL(name string, a origin.Attr) time.Duration {
	if st.stash == nil {
		return 0
	}
	if ttl := st.ttlFor(name); ttl > 0 {
		return ttl
	}
	if d := st.attrTimeout(a); d > 0 {
		return d
	}
	return min(timeoutOrDefault(st.opts.EntryTimeout), timeoutOrDefault(st.opts.AttrTimeout))
}

// stashGen is the stash generation before an origin call (0 when off).
func (st *state) stashGen() uint64 {
	if st.stash == nil {
		return 0
	}
	return st.stash.generation()
}

// remember stashes attributes read from the origin at readAt.
func (st *state) remember(name string, a origin.Attr, readAt time.Time, gen uint64) {
	if st.stash != nil {
		st.stash.put(name, a, readAt, st.stashTTL(name, a), gen)
	}
}

// changed forgets the stashed attributes of names (and their parents):
// they were changed through the mount.
func (st *state) changed(names ...string) {
	if st.stash != nil {
		st.stash.drop(names...)
	}
}

// changedTree forgets name and everything below it (a directory renamed or
// removed).
func (st *state) changedTree(name string) {
	if st.stash != nil {
		st.stash.dropTree(name)
	}
}
