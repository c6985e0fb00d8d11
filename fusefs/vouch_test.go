package fusefs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/eddy-cluster/eddy/origin"
)

func tidCtx(tid uint32) context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Pid: tid})
}

func TestVouchRules(t *testing.T) {
	v := vouches{m: map[uint64]vouch{}}
	a := origin.Attr{Ino: 7, Size: 3}
	v.put(tidCtx(10), 7, a, 1)
	if _, ok := v.take(tidCtx(11), 7, 1); ok {
		t.Fatal("another thread's lookup vouched for an open")
	}
	if _, ok := v.take(tidCtx(10), 7, 1); ok {
		t.Fatal("a vouch survived being taken (by another thread)")
	}
	v.put(tidCtx(10), 7, a, 1)
	if _, ok := v.take(tidCtx(10), 7, 2); ok {
		t.Fatal("a lookup vouched across a change through the mount")
	}
	v.put(tidCtx(10), 7, a, 1)
	v.withdraw(7) // a stash-answered lookup withdraws it
	if _, ok := v.take(tidCtx(10), 7, 1); ok {
		t.Fatal("a withdrawn vouch stood")
	}
	v.put(context.Background(), 7, a, 1) // no caller: no vouch
	if _, ok := v.take(context.Background(), 7, 1); ok {
		t.Fatal("a lookup without a caller vouched")
	}
	v.put(tidCtx(10), 7, a, 1)
	v.mu.Lock()
	e := v.m[7]
	e.at = e.at.Add(-vouchWindow)
	v.m[7] = e
	v.mu.Unlock()
	if _, ok := v.take(tidCtx(10), 7, 1); ok {
		t.Fatal("an old lookup vouched")
	}
	v.put(tidCtx(10), 7, a, 1)
	got, ok := v.take(tidCtx(10), 7, 1)
	if !ok || got != a {
		t.Fatalf("the open's own lookup did not vouch: %+v %v", got, ok)
	}
	if _, ok := v.take(tidCtx(10), 7, 1); ok {
		t.Fatal("one lookup vouched for two opens")
	}
	for i := range vouchMax + 10 {
		v.put(tidCtx(10), uint64(100+i), a, 1)
	}
	if len(v.m) > vouchMax {
		t.Fatalf("table grew to %d", len(v.m))
	}
}

// TestStatThenOpenSeesChange: a stat asks the origin, the file changes
// behind the mount, and the same thread opens it at once: the open must see
// the change (the stat's lookup cannot stand for it). It fails if a lookup
// that vouches leaves the kernel an entry it may reuse without a lookup.
func TestStatThenOpenSeesChange(t *testing.T) {
	for _, withCache := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocache", true: "cache"}[withCache], func(t *testing.T) {
			dir := t.TempDir()
			requireFUSE(t)
			org, err := origin.NewPath(dir)
			if err != nil {
				t.Fatal(err)
			}
			var c Cache
			if withCache {
				c = newFakeCache(t, org)
			}
			_, mp := mountOrigin(t, org, org, c, Options{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second})
			// One thread: the stat's lookup and the open come from it.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			old, now := []byte("old-version"), []byte("new version, longer")
			for i := range 20 {
				name := fmt.Sprintf("f%d", i) // never looked up yet
				writeFile(t, filepath.Join(dir, name), old)
				p := filepath.Join(mp, name)
				if st, err := os.Stat(p); err != nil || st.Size() != int64(len(old)) {
					t.Fatalf("stat: %v %v", st, err)
				}
				writeFile(t, filepath.Join(dir, name), now)
				if b, err := readAll(p); err != nil || string(b) != string(now) {
					t.Fatalf("round %d: an open right after a stat and a change behind the mount read %q (%v), want %q", i, b, err, now)
				}
			}
		})
	}
}

// TestHardLinkedFilesNotVouched: a file with two names is checked at open
// even right after a lookup (the kernel could reach it through the other
// name without one).
func TestHardLinkedFilesNotVouched(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), []byte("linked"))
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	org, mp := mountPlus(t, dir, Options{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second})
	before := org.attrCalls()
	if b, err := readAll(filepath.Join(mp, "a")); err != nil || string(b) != "linked" {
		t.Fatalf("read: %q %v", b, err)
	}
	if got := org.attrCalls() - before; got != 2 {
		t.Fatalf("%d origin attribute calls for a lookup and an open of a hard-linked file, want 2", got)
	}
}
