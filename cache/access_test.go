package cache

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func lastAccess(t *testing.T, s *Store, name string) time.Time {
	t.Helper()
	list, err := s.List(context.Background(), name)
	if err != nil || len(list) != 1 {
		t.Fatalf("List %s: %v %v", name, list, err)
	}
	return list[0].LastAccess
}

// An open's access time is queued, not written by the open; List shows it
// at once, and it reaches the index by the time the store closes.
func TestAccessTimesQueuedAndKept(t *testing.T) {
	o := newFakeOrigin()
	o.put("f", pattern(testChunk, 40))
	cfg := testConfig(t)
	s := openStore(t, o, cfg)
	cacheFile(t, s, o, "f")
	before := lastAccess(t, s, "f")
	time.Sleep(5 * time.Millisecond)
	h, _ := mustOpen(t, s, o, "f")
	h.Close()
	queued := lastAccess(t, s, "f")
	if !queued.After(before) {
		t.Fatalf("last access %v not after %v", queued, before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, o, cfg)
	if got := lastAccess(t, s2, "f"); !got.Equal(queued) {
		t.Fatalf("after reopening the store: last access %v, want %v", got, queued)
	}
}

// Eviction orders by the latest accesses, queued ones included.
func TestEvictSeesQueuedAccess(t *testing.T) {
	o := newFakeOrigin()
	cfg := testConfig(t)
	cfg.MaxBytes = 4 * testChunk
	s := openStore(t, o, cfg)
	waitFor(t, "scan", s.scanDone.Load)
	for i := range 4 {
		n := fmt.Sprintf("f%d", i)
		o.put(n, pattern(testChunk, uint64(41+i)))
		cacheFile(t, s, o, n)
		time.Sleep(2 * time.Millisecond)
	}
	// f0, the oldest, is read again: f1 is now the least recently used.
	h, _ := mustOpen(t, s, o, "f0")
	h.Close()
	o.put("f4", pattern(testChunk, 45))
	cacheFile(t, s, o, "f4")
	waitFor(t, "eviction under quota", func() bool { return s.Stats().CachedBytes <= cfg.MaxBytes })
	if s.CachedBytes("f0") != testChunk {
		t.Fatal("the file read last but one was evicted")
	}
	if s.CachedBytes("f1") != 0 {
		t.Fatal("the least recently used file survived")
	}
}

// An open served from the cache alone while the origin is away is not a
// validation: it does not extend the disconnected-read window.
func TestOfflineOpenDoesNotValidate(t *testing.T) {
	o := newFakeOrigin()
	o.put("f", pattern(testChunk, 46))
	s := openStore(t, o, testConfig(t))
	cacheFile(t, s, o, "f")
	s.flushAccess()
	_, validated, _, ok := s.LastKnown("f")
	if !ok {
		t.Fatal("not known")
	}
	// Both ways an offline open finds the file: the entry kept idle after
	// its last close, and the recorded version loaded from the index.
	for _, loaded := range []bool{false, true} {
		waitFor(t, "entry released", func() bool { return referenced(s) == 0 })
		if loaded {
			s.closeIdle()
		} else if s.IdleFiles() != 1 {
			t.Fatalf("%d idle entries, want 1", s.IdleFiles())
		}
		time.Sleep(5 * time.Millisecond)
		h, _, err := s.OpenOffline(context.Background(), "f", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		s.flushAccess()
		if _, at, _, _ := s.LastKnown("f"); !at.Equal(validated) {
			t.Fatalf("an offline open (loaded from the index: %v) moved the validation time from %v to %v", loaded, validated, at)
		}
	}
}
