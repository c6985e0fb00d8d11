package cache

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A file new to the cache gets a spare data file linked to its name: the
// file has one name and the file's bytes, survives a restart, and the
// spares not taken are closed with the store.
func TestSpareDataFiles(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk+17, 5)
	o.put("f", data)
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	waitFor(t, "spares ready", func() bool { return len(s.spare) == spareFiles })
	cacheFile(t, s, o, "f")
	p := onlyDataFile(t, cfg.Dir)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Nlink != 1 || st.Size != int64(len(data)) {
		t.Fatalf("data file %s: %v, links %d, size %d", p, err, st.Nlink, st.Size)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data file content: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dataFDs(t, cfg.Dir); got != 0 {
		t.Fatalf("%d data file descriptors open after Close", got)
	}
	if got := inodeFDs(t, st); got != 0 {
		t.Fatalf("%d descriptors open on the data file after Close", got)
	}
	s2 := openStore(t, o, cfg)
	if c := s2.CachedBytes("f"); c != int64(len(data)) {
		t.Fatalf("after a restart %d bytes cached, want %d", c, len(data))
	}
	h, _ := mustOpen(t, s2, o, "f")
	mustEqual(t, "read after restart", readAll(t, h, int64(len(data))), data)
	h.Close()
}
