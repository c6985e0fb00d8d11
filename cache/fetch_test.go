package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A cold read fetches from the origin; a restarted store serves the same
// bytes from disk without a single origin read, from one sparse file named
// by ID whose bytes and length equal the file's (usable for passthrough).
func TestReadThroughRestartPassthrough(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(5*testChunk+1234, 1)
	o.put("dir/a.bin", data)
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "dir/a.bin")
	mustEqual(t, "cold read", readAll(t, h, int64(len(data))), data)
	waitFor(t, "chunks indexed", func() bool { return s.CachedBytes("dir/a.bin") == int64(len(data)) })
	if st := s.Stats(); st.MissBytes < int64(len(data)) || st.CachedBytes != int64(len(data)) || st.Files != 1 {
		t.Fatalf("stats after cold read: %+v", st)
	}
	h.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var datafiles []string
	_ = filepath.Walk(filepath.Join(cfg.Dir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			datafiles = append(datafiles, p)
		}
		return nil
	})
	if len(datafiles) != 1 || strings.Contains(datafiles[0], "a.bin") {
		t.Fatalf("data files %v: want one, named by ID", datafiles)
	}
	raw, _ := os.ReadFile(datafiles[0])
	mustEqual(t, "data file", raw, data)

	reads := o.totalReads()
	s2 := openStore(t, o, cfg)
	waitFor(t, "totals scan", func() bool { return s2.Stats().CachedBytes == int64(len(data)) })
	h2, res := mustOpen(t, s2, o, "dir/a.bin")
	if res.Changed {
		t.Fatal("unchanged file reported Changed")
	}
	mustEqual(t, "warm read", readAll(t, h2, int64(len(data))), data)
	if got := o.totalReads() - reads; got != 0 {
		t.Fatalf("warm read after restart made %d origin reads, want 0", got)
	}
	if st := s2.Stats(); st.HitBytes != int64(len(data)) || st.MissBytes != 0 {
		t.Fatalf("warm stats: %+v", st)
	}
	pt := h2.PassthroughFile()
	if pt == nil {
		t.Fatal("PassthroughFile nil for a complete file")
	}
	ptData := make([]byte, len(data)+10)
	n, _ := pt.ReadAt(ptData, 0)
	mustEqual(t, "passthrough file", ptData[:n], data)
}

// Eight concurrent readers of one missing chunk cause exactly one origin
// read, and all get the right bytes.
func TestSingleFlightChunk(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk, 2)
	o.put("f", data)
	gate := make(chan struct{})
	o.gate = gate
	cfg := testConfig(t)
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(testChunk + i*1000)
			buf := make([]byte, 4096)
			if _, err := h.ReadAt(context.Background(), buf, off); err != nil {
				errs <- err
				return
			}
			if string(buf) != string(data[off:off+4096]) {
				errs <- errors.New("wrong bytes")
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let all readers queue on the chunk
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := o.readsAt("f", testChunk); n != 1 {
		t.Fatalf("origin reads of chunk 1: %d, want 1", n)
	}
	if n := o.totalReads(); n != 1 {
		t.Fatalf("origin reads: %d, want 1", n)
	}
}

// stalledStore opens a store without read-ahead whose data file syncs (each
// file's and a batch's syncfs) wait until release is called (once; the test's cleanup calls it too).
func stalledStore(t *testing.T, o *fakeOrigin) (*Store, func()) {
	t.Helper()
	cfg := testConfig(t)
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	ch := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(ch) }) }
	s.syncData = func(f *os.File) error { <-ch; return syscall.Fdatasync(int(f.Fd())) }
	syncFS := s.syncFS
	s.syncFS = func() error { <-ch; return syncFS() }
	t.Cleanup(release)
	return s, release
}

// Readers get the fetched bytes while the chunk is still being persisted.
func TestReadersServedBeforePersist(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 3)
	o.put("f", data)
	s, release := stalledStore(t, o)
	h, _ := mustOpen(t, s, o, "f")
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, testChunk)
		_, err := h.ReadAt(context.Background(), buf, 0)
		if err == nil && string(buf) != string(data[:testChunk]) {
			err = errors.New("wrong bytes")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader blocked behind the disk write")
	}
	if s.CachedBytes("f") != 0 {
		t.Fatal("chunk indexed before its bytes were synced")
	}
	// A second reader of the same chunk is served from the in-flight buffer.
	buf := make([]byte, 100)
	if _, err := h.ReadAt(context.Background(), buf, 10); err != nil || string(buf) != string(data[10:110]) {
		t.Fatalf("second read: %v", err)
	}
	if n := o.totalReads(); n != 1 {
		t.Fatalf("origin reads %d, want 1", n)
	}
	release()
	waitFor(t, "chunk indexed after sync", func() bool { return s.CachedBytes("f") == testChunk })
}

// Sequential reading triggers read-ahead by the worker pool: chunks ahead
// of the reader are fetched (once each) before it asks for them.
func TestReadAhead(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(10*testChunk, 4)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ReadAhead = 4
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	buf := make([]byte, 16<<10)
	for off := int64(0); off < testChunk+32<<10; off += int64(len(buf)) {
		if _, err := h.ReadAt(context.Background(), buf, off); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "read-ahead of chunks 2..5", func() bool {
		for i := int64(2); i <= 5; i++ {
			if o.readsAt("f", i*testChunk) == 0 {
				return false
			}
		}
		return true
	})
	mustEqual(t, "full read", readAll(t, h, int64(len(data))), data)
	for i := int64(0); i < 10; i++ {
		if n := o.readsAt("f", i*testChunk); n != 1 {
			t.Fatalf("chunk %d read %d times from the origin", i, n)
		}
	}
}

// Random reads at odd offsets and lengths across chunk boundaries return
// the origin's bytes, and the end of file is io.EOF.
func TestRandomReads(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(4*testChunk+77, 5)
	o.put("f", data)
	s := openStore(t, o, testConfig(t))
	h, _ := mustOpen(t, s, o, "f")
	cases := []struct{ off, n int }{
		{0, 1}, {testChunk - 3, 10}, {2*testChunk + 5, testChunk + 9}, {len(data) - 5, 5}, {len(data) - 5, 100}, {len(data), 10},
	}
	for _, c := range cases {
		buf := make([]byte, c.n)
		n, err := h.ReadAt(context.Background(), buf, int64(c.off))
		want := data[min(c.off, len(data)):min(c.off+c.n, len(data))]
		if n != len(want) || string(buf[:n]) != string(want) {
			t.Fatalf("ReadAt(%d,%d) = %d bytes, want %d", c.off, c.n, n, len(want))
		}
		if n < c.n && err == nil {
			t.Fatalf("short read at %d without error", c.off)
		}
	}
}

// A file that is not cacheable is refused with ErrNotCacheable.
func TestCacheable(t *testing.T) {
	cfg := testConfig(t)
	cfg.Include = []string{"data/*", "*.bin"}
	cfg.Exclude = []string{"*.tmp", "data/secret"}
	s := openStore(t, newFakeOrigin(), cfg)
	for _, c := range []struct {
		name string
		want bool
	}{
		{"data/x", true}, {"a/b/c.bin", true}, {"data/x.tmp", false}, {"data/secret", false},
		{"other/x", false}, {"x.bin", true}, {"deep/y.bin.tmp", false},
	} {
		if got := s.Cacheable(c.name); got != c.want {
			t.Errorf("Cacheable(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	o := newFakeOrigin()
	o.put("other/x", []byte("x"))
	s2 := openStore(t, o, cfg)
	if _, _, err := s2.OpenFile(context.Background(), "other/x", o.attr("other/x")); !errors.Is(err, ErrNotCacheable) {
		t.Fatalf("OpenFile excluded: %v", err)
	}
}

// Group commit: chunks written close together share one fdatasync and one
// index transaction; none is indexed before its sync.
func TestGroupCommit(t *testing.T) {
	o := newFakeOrigin()
	const chunks = 8
	data := pattern(chunks*testChunk, 5)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	s.commits.every = 300 * time.Millisecond
	var syncs atomic.Int32
	s.syncData = func(f *os.File) error {
		syncs.Add(1)
		return syscall.Fdatasync(int(f.Fd()))
	}
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "cold read", readAll(t, h, int64(len(data))), data)
	if c := s.CachedBytes("f"); c != 0 && syncs.Load() == 0 {
		t.Fatalf("%d bytes indexed before any sync", c)
	}
	waitFor(t, "all chunks indexed", func() bool { return s.CachedBytes("f") == int64(len(data)) })
	if n := syncs.Load(); n < 1 || n > 2 {
		t.Fatalf("%d fdatasyncs for %d chunks read together, want 1 or 2", n, chunks)
	}
	// The written chunks are served from the data file, not refetched.
	reads := o.totalReads()
	mustEqual(t, "warm read", readAll(t, h, int64(len(data))), data)
	if o.totalReads() != reads {
		t.Fatal("cached chunks refetched from the origin")
	}
}

// While commits lag (a slow disk sync), a stream of small files read and
// closed must not keep an unbounded number of entries alive behind the
// commit queue: each holds its data file and its origin file open, and a
// cold epoch over thousands of files ran the daemon out of descriptors.
// Reads keep being served (from the origin) meanwhile.
func TestPersistBacklogBounded(t *testing.T) {
	o := newFakeOrigin()
	const files = 1500
	for i := range files {
		o.put(fmt.Sprintf("f%03d", i), pattern(testChunk/2, uint64(i)))
	}
	s, release := stalledStore(t, o)
	bound := maxSyncPending + maxPersistWaiting + cap(s.bufs.sem) + cap(s.raq) + cap(s.bgq) + cap(s.fills.jobs) + 8
	buf := make([]byte, testChunk/2)
	for i := range files {
		name := fmt.Sprintf("f%03d", i)
		h, _, err := s.OpenFile(context.Background(), name, o.attr(name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.ReadAt(context.Background(), buf, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mustEqual(t, name, buf, pattern(testChunk/2, uint64(i)))
		h.Close()
	}
	if live := referenced(s); live > bound {
		t.Fatalf("%d entries alive behind a stalled commit after %d files read and closed, want at most %d", live, files, bound)
	}
	if b := s.Stats().FillBacklog; b == 0 {
		t.Fatal("no fill backlog behind a stalled commit")
	}
	release()
	waitFor(t, "entries released once commits go on", func() bool { return referenced(s) == 0 })
	// Every file read through once ends up cached without being read
	// again, also those served from the origin beyond the completion
	// queue's length (remembered by name).
	waitFor(t, "every file cached", func() bool {
		for i := range files {
			if s.CachedBytes(fmt.Sprintf("f%03d", i)) != testChunk/2 {
				return false
			}
		}
		return s.Stats().FillBacklog == 0
	})
}
