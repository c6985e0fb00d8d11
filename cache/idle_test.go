package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openFDs returns the /proc paths of this process's open descriptors.
func openFDs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = filepath.Join("/proc/self/fd", e.Name())
	}
	return out
}

// dataFDs counts this process's descriptors open on data files below dir.
// A spare file (spare.go) not yet linked to a name is no data file; one
// that was linked still shows its unnamed path, so its link count decides.
func dataFDs(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, fd := range openFDs(t) {
		l, err := os.Readlink(fd)
		rest, ok := strings.CutPrefix(l, filepath.Join(dir, "data")+"/")
		if err != nil || !ok {
			continue
		}
		var st unix.Stat_t
		if strings.HasPrefix(rest, "#") && unix.Stat(fd, &st) == nil && st.Nlink == 0 {
			continue
		}
		n++
	}
	return n
}

// inodeFDs counts this process's descriptors open on the inode of st.
func inodeFDs(t *testing.T, st unix.Stat_t) int {
	t.Helper()
	n := 0
	for _, fd := range openFDs(t) {
		var fst unix.Stat_t
		if unix.Stat(fd, &fst) == nil && fst.Dev == st.Dev && fst.Ino == st.Ino {
			n++
		}
	}
	return n
}

// dataFiles stats the data files below dir.
func dataFiles(t *testing.T, dir string) []unix.Stat_t {
	t.Helper()
	var out []unix.Stat_t
	err := filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A closed file stays in memory: reopening the same version reads neither
// the index nor the origin, and a changed origin file is never served from
// the kept version.
func TestIdleReopen(t *testing.T) {
	o := newFakeOrigin()
	v1 := pattern(3*testChunk, 1)
	o.put("f", v1)
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	cacheFile(t, s, o, "f")
	waitFor(t, "entry released", func() bool { return referenced(s) == 0 })
	if n := s.Stats().IdleFiles; n != 1 {
		t.Fatalf("%d idle entries after one file closed, want 1", n)
	}
	s.mu.Lock()
	kept := s.open["f"].ver
	s.mu.Unlock()
	if dataFDs(t, cfg.Dir) != 1 {
		t.Fatalf("an idle entry holds %d data file descriptors, want 1 (the O_DIRECT writer closed)", dataFDs(t, cfg.Dir))
	}

	reads := o.totalReads()
	h, r, err := s.OpenFile(context.Background(), "f", o.attr("f"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Changed {
		t.Fatal("reopening the same version reported a change")
	}
	s.mu.Lock()
	same := s.open["f"].ver == kept
	s.mu.Unlock()
	if !same {
		t.Fatal("reopening an idle file loaded its version again")
	}
	mustEqual(t, "reopened", readAll(t, h, int64(len(v1))), v1)
	h.Close()
	if o.totalReads() != reads {
		t.Fatal("an idle file's reopen read the origin")
	}

	// Changed on the origin while idle: the reopen drops the kept version.
	v2 := pattern(2*testChunk, 2)
	o.put("f", v2)
	h, r = mustOpen(t, s, o, "f")
	if !r.Changed {
		t.Fatal("a file changed while idle was not reported changed")
	}
	mustEqual(t, "changed", readAll(t, h, int64(len(v2))), v2)
}

// At most Config.IdleFiles closed files are kept, the most recently used.
func TestIdleBounded(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	cfg.IdleFiles = 3
	s := openStore(t, o, cfg)
	for i := range 10 {
		name := fmt.Sprintf("f%d", i)
		o.put(name, pattern(testChunk, uint64(i)))
		cacheFile(t, s, o, name)
	}
	waitFor(t, "entries released", func() bool { return referenced(s) == 0 })
	if n := s.IdleFiles(); n != 3 {
		t.Fatalf("%d idle entries, want 3", n)
	}
	s.mu.Lock()
	var kept []string
	for n := range s.open {
		kept = append(kept, n)
	}
	s.mu.Unlock()
	for _, n := range []string{"f7", "f8", "f9"} {
		if !strings.Contains(strings.Join(kept, " "), n) {
			t.Fatalf("kept %v, want the last three used", kept)
		}
	}
	if got := dataFDs(t, cfg.Dir); got != 3 {
		t.Fatalf("%d data file descriptors open, want 3", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dataFDs(t, cfg.Dir); got != 0 {
		t.Fatalf("%d data file descriptors open after Close", got)
	}

	off := testConfig(t)
	off.IdleFiles = -1
	s2 := openStore(t, o, off)
	cacheFile(t, s2, o, "f0")
	waitFor(t, "entry closed", func() bool {
		s2.mu.Lock()
		defer s2.mu.Unlock()
		return len(s2.open) == 0
	})
}

// Evicting an idle file frees its space at once: the kept data file is
// closed, not held until the entry leaves the LRU.
func TestIdleEvictFreesSpace(t *testing.T) {
	o := newFakeOrigin()
	o.put("f", pattern(2*testChunk, 3))
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	cacheFile(t, s, o, "f")
	waitFor(t, "entry idle", func() bool { return referenced(s) == 0 && s.IdleFiles() == 1 })
	files := dataFiles(t, cfg.Dir)
	if len(files) != 1 {
		t.Fatalf("%d data files, want 1", len(files))
	}
	if err := s.Evict(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
	if n := s.IdleFiles(); n != 0 {
		t.Fatalf("%d idle entries after evicting the only one", n)
	}
	if got := dataFDs(t, cfg.Dir); got != 0 {
		t.Fatalf("%d descriptors still open on data files", got)
	}
	if got := inodeFDs(t, files[0]); got != 0 {
		t.Fatalf("%d descriptors still open on the evicted data file", got)
	}
	if c := s.CachedBytes("f"); c != 0 {
		t.Fatalf("%d bytes cached after eviction", c)
	}
	// And it reads (from the origin) and caches again.
	cacheFile(t, s, o, "f")
}

// Out of file descriptors, the store closes idle files rather than
// failing to open a data file (which would send reads to the origin and
// count a disk error).
func TestIdleShedsAtDescriptorLimit(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	cfg.IdleFiles = 10000
	s := openStore(t, o, cfg)
	const files = 50
	for i := range files {
		o.put(fmt.Sprintf("f%03d", i), pattern(testChunk/4, uint64(i)))
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(len(ents) + 20)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	for i := range files {
		name := fmt.Sprintf("f%03d", i)
		cacheFile(t, s, o, name)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Errors != 0 {
		t.Fatalf("%d cache errors at the descriptor limit (last: %s)", st.Errors, st.LastError)
	}
	if n := s.IdleFiles(); n >= files || n == 0 {
		t.Fatalf("%d idle entries for %d files at a limit of %d descriptors", n, files, lim.Cur)
	}
}
