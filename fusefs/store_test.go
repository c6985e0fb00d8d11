package fusefs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

var (
	_ Cache        = (*cache.Store)(nil)
	_ OfflineCache = (*cache.Store)(nil)
)

// The mount over the real chunk store: read-your-writes, a foreign
// same-size rewrite with the mtime restored is seen, and a fully cached
// file is served by kernel passthrough.
func TestRealStore(t *testing.T) {
	dir, st, v, mp := realStoreMount(t)

	content := bytes.Repeat([]byte("eddy-chunk-data!"), 3<<16) // 3 MiB
	if err := os.WriteFile(filepath.Join(mp, "f"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := os.ReadFile(filepath.Join(mp, "f"))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read %d: %v (len %d)", i, err, len(got))
		}
		if i == 0 {
			// Chunks are persisted behind the reader: wait until the file is
			// complete in the cache, so the next opens may use passthrough.
			deadline := time.Now().Add(10 * time.Second)
			for st.CachedBytes("f") < int64(len(content)) {
				if time.Now().After(deadline) {
					t.Fatalf("file not complete in the cache: %d of %d bytes", st.CachedBytes("f"), len(content))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	s := st.Stats()
	if s.MissBytes == 0 {
		t.Fatalf("nothing fetched through the cache: %+v", s)
	}
	if v.Passthrough() && s.PassthroughOpens == 0 {
		t.Fatalf("fully cached file not opened with passthrough: %+v", s)
	}
	t.Logf("stats: hit=%d miss=%d passthrough_opens=%d", s.HitBytes, s.MissBytes, s.PassthroughOpens)

	// Foreign rewrite on the origin: same size, mtime restored.
	op := filepath.Join(dir, "f")
	fi, _ := os.Stat(op)
	mt := fi.ModTime()
	changed := bytes.ToUpper(content)
	f, _ := os.OpenFile(op, os.O_WRONLY, 0)
	f.WriteAt(changed, 0)
	f.Close()
	os.Chtimes(op, mt, mt)
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || !bytes.Equal(got, changed) {
		t.Fatalf("stale bytes after a foreign rewrite: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
}

// Opens of one inode in both kernel I/O modes: a reader that opened the file
// cold (cached I/O) is still open when the file completes in the cache, so
// later readers must not be given passthrough (the kernel would fail their
// open with EIO); once it closes, readers use passthrough; a writer that
// opens while passthrough readers are open waits for them instead of failing.
func TestMixedIOModes(t *testing.T) {
	dir, st, v, mp := realStoreMount(t)
	content := bytes.Repeat([]byte("mixed-io-modes!!"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(dir, "f"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mp, "f")
	cold, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(cold); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("cold read: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.CachedBytes("f") < int64(len(content)) {
		if time.Now().After(deadline) {
			t.Fatal("file not complete in the cache")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The cold handle is still open: these opens must succeed (cached I/O).
	for i := range 5 {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read %d beside a cached-I/O handle: %v", i, err)
		}
	}
	cold.Close()
	before := st.Stats().PassthroughOpens
	ptReader, err := os.Open(p)
	if err != nil {
		t.Fatalf("open after the cold handle closed: %v", err)
	}
	if v.Passthrough() && st.Stats().PassthroughOpens == before {
		t.Error("complete file not opened with passthrough once no cached-I/O handle was open")
	}
	// More readers join the passthrough backing file.
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read beside a passthrough handle: %v", err)
	}
	// A writer waits for the passthrough reader to close, then writes through.
	done := make(chan error, 1)
	go func() {
		done <- os.WriteFile(p, bytes.ToUpper(content), 0o644)
	}()
	time.Sleep(100 * time.Millisecond)
	ptReader.Close()
	if err := <-done; err != nil {
		t.Fatalf("writer beside a passthrough reader: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || !bytes.Equal(got, bytes.ToUpper(content)) {
		t.Fatalf("write did not reach the origin: %v", err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, bytes.ToUpper(content)) {
		t.Fatalf("stale bytes after the write: %v", err)
	}
}

// realStoreMount mounts a temp origin dir through a real chunk store with
// 1 MiB chunks, and returns the origin dir, the store, the view and the
// mountpoint; all are cleaned up with the test.
func realStoreMount(t testing.TB) (string, *cache.Store, *View, string) {
	t.Helper()
	return realStoreMountOpts(t, Options{})
}

// realStoreMountOpts is realStoreMount with mount options.
func realStoreMountOpts(t testing.TB, opts Options) (string, *cache.Store, *View, string) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	org, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { org.Close() })
	st, err := cache.Open(context.Background(), org, cache.Config{Dir: t.TempDir(), ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, mp := mountT(t, dir, st, opts)
	return dir, st, v, mp
}
