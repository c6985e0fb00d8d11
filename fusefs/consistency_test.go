package fusefs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/consistency"
	"github.com/eddy-cluster/eddy/origin"
)

// The plan decision of the dataset consistency mode: an open trusts the
// node's last check against the origin only under a TTL, for a regular
// file checked less than the TTL ago, with no writable handle open here.
func TestTrustsCheck(t *testing.T) {
	now := time.Now()
	reg := origin.Attr{Mode: syscall.S_IFREG | 0o644, Size: 10, Ino: 3}
	dir := origin.Attr{Mode: syscall.S_IFDIR | 0o755, Ino: 4}
	checked := func(a origin.Attr, ago time.Duration) validation {
		return validation{attr: a, at: now.Add(-ago), set: true}
	}
	for _, c := range []struct {
		name string
		f    ttlFacts
		want bool
	}{
		{"strict", ttlFacts{ttl: 0, checked: checked(reg, 0), now: now}, false},
		{"within the TTL", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, time.Second), now: now}, true},
		{"just checked", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, 0), now: now}, true},
		{"the TTL is over", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, 2*time.Second), now: now}, false},
		{"long ago", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, time.Hour), now: now}, false},
		{"never checked", ttlFacts{ttl: 2 * time.Second, now: now}, false},
		{"forgotten (written here)", ttlFacts{ttl: 2 * time.Second, checked: validation{}, now: now}, false},
		{"a writer is open here", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, 0), writing: true, now: now}, false},
		{"not a regular file", ttlFacts{ttl: 2 * time.Second, checked: checked(dir, 0), now: now}, false},
		{"checked in the future (clock)", ttlFacts{ttl: 2 * time.Second, checked: checked(reg, -time.Second), now: now}, false},
	} {
		if got := trustsCheck(c.f); got != c.want {
			t.Errorf("%s: trustsCheck = %v, want %v", c.name, got, c.want)
		}
	}
}

// A trusted open plans like any open of an unchanged version: the kernel
// keeps its page cache (FOPEN_KEEP_CACHE) and nothing is invalidated.
func TestTrustedOpenKeepsCache(t *testing.T) {
	a := origin.Attr{Mode: syscall.S_IFREG | 0o644, Size: 10, Ino: 3, Mtime: time.Unix(1700000000, 0)}
	seen := seenVersion{fp: a.Fingerprint(), set: true}
	p := planRead(readFacts{attr: a, lastOpen: seen, kernel: seen, cacheTakes: true})
	if !p.keepCache || p.fuseFlags&fopenKeepCache == 0 || p.invalidateAttrs || p.source != fromCache {
		t.Fatalf("trusted open of an unchanged version: %+v", p)
	}
	// The first open after a lookup of the version: nothing to invalidate.
	p = planRead(readFacts{attr: a, kernel: seen, cacheTakes: true})
	if p.invalidateAttrs {
		t.Fatalf("first open after the lookup invalidates: %+v", p)
	}
}

// The kernel keeps a TTL entry for what is left of the TTL.
func TestTTLLeft(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		readAgo, want time.Duration
	}{
		{0, 30 * time.Second},
		{10 * time.Second, 20 * time.Second},
		{30 * time.Second, minTTLTimeout},
		{time.Hour, minTTLTimeout},
		{-time.Second, 30 * time.Second},
	} {
		if got := ttlLeft(30*time.Second, now.Add(-c.readAgo), now); got != c.want {
			t.Errorf("read %s ago: %s, want %s", c.readAgo, got, c.want)
		}
	}
}

func ttlRules(t testing.TB, rules ...string) consistency.Rules {
	t.Helper()
	rs, err := consistency.ParseAll(rules)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// mustRead reads p and fails unless it holds want.
func mustRead(t *testing.T, p, want, when string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if string(got) != want {
		t.Fatalf("%s: read %q, want %q", when, got, want)
	}
}

// rewriteOrigin rewrites the origin file in place (same inode), as another
// node would.
func rewriteOrigin(t *testing.T, p, data string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mt := time.Now().Add(time.Second)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// Under ttl:2s, an origin change is not seen by a new open within the TTL
// but is after it; outside the glob it is seen at once; a write through the
// mount is seen at once under the TTL.
func TestConsistencyTTL(t *testing.T) {
	const ttl = 2 * time.Second
	for _, store := range []string{"fake", "chunk store"} {
		t.Run(store, func(t *testing.T) {
			opts := Options{Consistency: ttlRules(t, "ds/scratch/**=strict", "ds/**=ttl:2s")}
			var dir, mp string
			if store == "fake" {
				dir = t.TempDir()
				org, _ := origin.NewPath(dir)
				defer org.Close()
				_, mp = mountT(t, dir, newFakeCache(t, org), opts)
			} else {
				dir, _, _, mp = realStoreMountOpts(t, opts)
			}
			under := filepath.Join("ds", "train", "0001.bin")
			outside := filepath.Join("home", "notes.txt")
			excepted := filepath.Join("ds", "scratch", "tmp.bin")
			for _, n := range []string{under, outside, excepted} {
				writeFile(t, filepath.Join(dir, n), []byte("old-"+n))
			}
			start := time.Now()
			for _, n := range []string{under, outside, excepted} {
				mustRead(t, filepath.Join(mp, n), "old-"+n, "first read of "+n)
			}
			for _, n := range []string{under, outside, excepted} {
				rewriteOrigin(t, filepath.Join(dir, n), "new-"+n)
			}
			mustRead(t, filepath.Join(mp, outside), "new-"+outside, "outside the glob, at once")
			mustRead(t, filepath.Join(mp, excepted), "new-"+excepted, "under a strict rule matched first, at once")
			got, err := os.ReadFile(filepath.Join(mp, under))
			if err != nil {
				t.Fatal(err)
			}
			if time.Since(start) >= ttl {
				t.Skip("the machine is too slow to read within the TTL")
			}
			if string(got) != "old-"+under {
				t.Fatalf("under the TTL, within it: read %q, want the old version", got)
			}
			// After the TTL the change is seen.
			time.Sleep(time.Until(start.Add(ttl + 200*time.Millisecond)))
			mustRead(t, filepath.Join(mp, under), "new-"+under, "under the TTL, after it")

			// A write through the mount is seen at once under the TTL.
			if err := os.WriteFile(filepath.Join(mp, under), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
			mustRead(t, filepath.Join(mp, under), "mine", "a write through the mount")
			if got, _ := os.ReadFile(filepath.Join(dir, under)); string(got) != "mine" {
				t.Fatalf("origin holds %q after the write through the mount", got)
			}
			// And the TTL counts again from the check that followed it.
			rewriteOrigin(t, filepath.Join(dir, under), "theirs")
			again := time.Now()
			got, err = os.ReadFile(filepath.Join(mp, under))
			if err != nil {
				t.Fatal(err)
			}
			if time.Since(again) < ttl/2 && string(got) != "mine" && string(got) != "theirs" {
				t.Fatalf("read %q after a foreign change: neither version", got)
			}
			time.Sleep(ttl + 200*time.Millisecond)
			mustRead(t, filepath.Join(mp, under), "theirs", "a foreign change after the TTL")
		})
	}
}
