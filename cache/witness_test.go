package cache

import (
	"context"
	"testing"
	"time"
)

// An origin whose files vouch for the version their reads returned (NFS
// post-operation attributes) costs no Stat round trip, neither when the
// file is opened for a fetch nor when its chunks are indexed; a file that
// changed under a fetch is not indexed under the old version.
func TestVouchedFetchesNeedNoStat(t *testing.T) {
	o := newFakeOrigin()
	wo := witnessOrigin{o}
	data := pattern(3*testChunk+100, 7)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ReadAhead = -1
	s := openStore(t, wo, cfg)

	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "read", readAll(t, h, int64(len(data))), data)
	waitFor(t, "whole file cached", func() bool { return s.CachedBytes("f") == int64(len(data)) })
	o.mu.Lock()
	stats := o.fstats
	o.mu.Unlock()
	if stats != 0 {
		t.Fatalf("%d Stat calls on the origin file, want 0 (its reads vouched for the version)", stats)
	}

	// Changed between two fetches: the second one's bytes are the new
	// version's (served, as the origin would), and are not indexed as the
	// old one's; the first one's are.
	o.put("g", pattern(2*testChunk, 8))
	hg, _ := mustOpen(t, s, o, "g")
	buf := make([]byte, testChunk)
	if _, err := hg.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first chunk cached", func() bool { return s.CachedBytes("g") == testChunk })
	newer := pattern(2*testChunk, 9)
	o.put("g", newer)
	if _, err := hg.ReadAt(context.Background(), buf, testChunk); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read of the changed file", buf, newer[testChunk:])
	waitFor(t, "the commit's Stat", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.fstats > 0
	})
	s.syncSoon()
	time.Sleep(300 * time.Millisecond)
	if n := s.CachedBytes("g"); n != testChunk {
		t.Fatalf("%d bytes of g indexed, want %d (the first chunk only)", n, testChunk)
	}
}
