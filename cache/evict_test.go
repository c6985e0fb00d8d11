package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Over quota, least recently used files are evicted first; pinned files
// never are; the quota holds afterwards.
func TestEvictLRUAndPins(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	cfg.MaxBytes = 4 * testChunk
	s := openStore(t, o, cfg)
	waitFor(t, "scan", s.scanDone.Load)
	if err := s.Pin(context.Background(), "keep"); err != nil {
		t.Fatal(err)
	}
	o.put("keep/p", pattern(testChunk, 30))
	cacheFile(t, s, o, "keep/p")
	for i := range 5 {
		n := fmt.Sprintf("f%d", i)
		o.put(n, pattern(testChunk, uint64(31+i)))
		cacheFile(t, s, o, n)
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, "eviction under quota", func() bool { return s.Stats().CachedBytes <= cfg.MaxBytes })
	if s.CachedBytes("keep/p") != testChunk {
		t.Fatal("pinned file evicted")
	}
	if s.CachedBytes("f0") != 0 {
		t.Fatal("least recently used file survived")
	}
	if s.CachedBytes("f4") != testChunk {
		t.Fatal("most recently used file evicted")
	}
	st := s.Stats()
	if st.Evictions == 0 || st.EvictedBytes == 0 || st.PinnedFiles != 1 {
		t.Fatalf("stats %+v", st)
	}
	list, _ := s.List(context.Background(), ".")
	for _, fi := range list {
		if fi.Path == "keep/p" && !fi.Pinned {
			t.Fatal("List: pin not shown")
		}
	}
}

// Pins persist across restarts; Unpin makes files evictable again.
func TestPinsPersist(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	s.Pin(context.Background(), "a/b")
	s.Pin(context.Background(), "c")
	s.Close()
	s2 := openStore(t, o, cfg)
	for _, c := range []struct {
		name string
		want bool
	}{{"a/b", true}, {"a/b/x/y", true}, {"a", false}, {"a/bc", false}, {"c", true}, {"d", false}} {
		if got := s2.isPinned(c.name); got != c.want {
			t.Errorf("isPinned(%q)=%v", c.name, got)
		}
	}
	s2.Unpin(context.Background(), "a")
	if s2.isPinned("a/b/x") {
		t.Fatal("Unpin of a parent left the pin below it")
	}
}

// Evicting a file with an open handle does not break the handle: it keeps
// reading its present chunks (from its data file) without the origin.
func TestEvictWithOpenHandle(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk, 40)
	o.put("f", data)
	s := openStore(t, o, testConfig(t))
	h := storedHandle(t, s, o, "f", data)
	if err := s.Evict(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
	if s.CachedBytes("f") != 0 || s.Stats().Evictions != 1 {
		t.Fatal("not evicted")
	}
	reads := o.totalReads()
	mustEqual(t, "read after eviction", readAll(t, h, int64(len(data))), data)
	if o.totalReads() != reads {
		t.Fatal("evicted handle went to the origin for chunks it had")
	}
	// A new open caches the file again.
	h2, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "reopen", readAll(t, h2, int64(len(data))), data)
	waitFor(t, "cached again", func() bool { return s.CachedBytes("f") == int64(len(data)) })
}

// The free-space floor evicts too (MinFreePercent 100 can never be met, so
// everything unpinned goes).
func TestEvictForFreeSpace(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	cfg.MinFreePercent = 100
	s := openStore(t, o, cfg)
	data := pattern(2*testChunk, 41)
	o.put("f", data)
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "read", readAll(t, h, int64(len(data))), data)
	waitFor(t, "evicted for free space", func() bool { return s.Stats().Evictions > 0 && s.CachedBytes("f") == 0 })
}

// Evicting a pinned file by name fails with ErrPinned; a directory eviction
// skips pinned files and evicts the rest; after Unpin it can be evicted.
func TestEvictPinned(t *testing.T) {
	o := newFakeOrigin()
	s := openStore(t, o, testConfig(t))
	ctx := context.Background()
	for i, n := range []string{"d/pinned", "d/sub/other", "d/free"} {
		o.put(n, pattern(testChunk, uint64(60+i)))
		cacheFile(t, s, o, n)
	}
	if err := s.Pin(ctx, "d/pinned"); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, "d/sub"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		wantErr   error
		gone      []string
		remaining []string
	}{
		{name: "d/pinned", wantErr: ErrPinned, remaining: []string{"d/pinned"}},
		{name: "d/sub/other", wantErr: ErrPinned, remaining: []string{"d/sub/other"}},
		{name: "d", gone: []string{"d/free"}, remaining: []string{"d/pinned", "d/sub/other"}},
	}
	for _, c := range cases {
		err := s.Evict(ctx, c.name)
		if !errors.Is(err, c.wantErr) {
			t.Fatalf("Evict(%q) = %v, want %v", c.name, err, c.wantErr)
		}
		if c.wantErr != nil && !strings.Contains(err.Error(), "unpin it first") {
			t.Fatalf("Evict(%q) error %q does not say what to do", c.name, err)
		}
		for _, n := range c.remaining {
			if s.CachedBytes(n) != testChunk {
				t.Fatalf("after Evict(%q): pinned %s was evicted", c.name, n)
			}
		}
		for _, n := range c.gone {
			if s.CachedBytes(n) != 0 {
				t.Fatalf("after Evict(%q): %s still cached", c.name, n)
			}
		}
	}
	if err := s.Unpin(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if err := s.Evict(ctx, "d/pinned"); err != nil {
		t.Fatalf("evict after unpin: %v", err)
	}
	if s.CachedBytes("d/pinned") != 0 {
		t.Fatal("not evicted after unpin")
	}
}
