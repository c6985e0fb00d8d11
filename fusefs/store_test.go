package fusefs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/cache/origin"
)

var (
	_ Cache        = (*cache.Store)(nil)
	_ OfflineCache = (*cache.Store)(nil)
)

// The mount over the real chunk store: read-your-writes, a foreign
// same-size rewrite with the mtime restored is seen, and a fully cached
// file is served by kernel passthrough.
func TestRealStore(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	org, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer org.Close()
	st, err := cache.Open(context.Background(), org, cache.Config{Dir: t.TempDir(), ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, mp := mountT(t, dir, st, Options{})

	content := bytes.Repeat([]byte("eddy-chunk-data!"), 3<<16) // 3 MiB
	if err := os.WriteFile(filepath.Join(mp, "f"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := os.ReadFile(filepath.Join(mp, "f"))
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read %d: %v (len %d)", i, err, len(got))
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
