package fusefs

import (
	"context"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/eddy-cluster/eddy/origin"
)

// Close-to-open asks the origin for a file's attributes at every read-only
// open. When the kernel had no valid entry for the name, the open's own path
// walk has just sent a LOOKUP, which asked the origin moments earlier, within
// the same open(2): asking again costs a second round trip for nothing (NFS
// clients make the same check during the open's lookup). An open cannot see
// whether its path walk sent a LOOKUP, so a lookup answered by the origin
// vouches for the next open of the inode only under conditions that make it
// part of the same call:
//
//   - Its reply gives the name an entry timeout of 0, so the kernel sends a
//     LOOKUP at every later path walk through it: an open after a stat of
//     the name is preceded by a lookup of its own, which replaces the vouch
//     (and one answered from the attribute stash withdraws it).
//   - The file has one link (another name, with an entry the kernel still
//     holds, would reach the inode without a lookup).
//   - The open comes from the thread that sent the lookup (the kernel gives
//     each request the caller's thread id), within vouchWindow, with no
//     change made through the mount since (stash generation), and takes the
//     vouch: one lookup vouches for one open.
//
// An open reached without any path walk (a /proc/self/fd link, a handle)
// within vouchWindow of a lookup by the same thread may use it; NFS clients
// do not revalidate such opens at all.
//
// The next path walk through the name sends one more LOOKUP, which the stash
// answers and whose reply carries the usual timeout.
const vouchWindow = 250 * time.Millisecond

// vouchMax bounds the table; entries not taken expire after vouchWindow.
const vouchMax = 4096

type vouch struct {
	tid  uint32
	at   time.Time
	attr origin.Attr
	gen  uint64
}

// vouches holds, per inode number, the lookup that may stand for its next
// open's origin check.
type vouches struct {
	mu sync.Mutex
	m  map[uint64]vouch // guarded by mu
}

func callerTid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// put records a lookup of inode ino answered by the origin with a (asked
// with stash generation gen).
func (v *vouches) put(ctx context.Context, ino uint64, a origin.Attr, gen uint64) {
	tid := callerTid(ctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	if tid == 0 {
		delete(v.m, ino)
		return
	}
	now := time.Now()
	if len(v.m) >= vouchMax {
		for k, e := range v.m {
			if now.Sub(e.at) >= vouchWindow {
				delete(v.m, k)
			}
		}
		if len(v.m) >= vouchMax {
			clear(v.m) // forgetting costs only round trips
		}
	}
	v.m[ino] = vouch{tid: tid, at: now, attr: a, gen: gen}
}

// withdraw forgets any vouch for ino (a lookup that cannot vouch replaced it).
func (v *vouches) withdraw(ino uint64) {
	v.mu.Lock()
	delete(v.m, ino)
	v.mu.Unlock()
}

// take removes the vouch for ino and returns its attributes if it stands
// for this open (same thread, recent, nothing changed through the mount).
func (v *vouches) take(ctx context.Context, ino uint64, gen uint64) (origin.Attr, bool) {
	tid := callerTid(ctx)
	v.mu.Lock()
	e, ok := v.m[ino]
	if ok {
		delete(v.m, ino)
	}
	v.mu.Unlock()
	if !ok || tid == 0 || e.tid != tid || e.gen != gen || time.Since(e.at) >= vouchWindow {
		return origin.Attr{}, false
	}
	return e.attr, true
}
