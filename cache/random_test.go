package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A random read of a missing chunk is served by a small origin read (the
// range rounded out to rangeAlign), not by fetching the whole chunk first;
// the chunk is then fetched in the background and later reads are local.
func TestRandomReadOfColdChunkReadsRange(t *testing.T) {
	const csize = 1 << 20
	o := newFakeOrigin()
	data := pattern(6*csize-1000, 70) // the last chunk is short
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ChunkSize = csize
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	ctx := context.Background()
	// A handle's first read counts as sequential (chunk 0 is fetched).
	if _, err := h.ReadAt(ctx, make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off int64
		n   int
	}{
		{csize + csize/2 + 4096, 4096},          // inside chunk 1
		{3*csize - 100, 4096},                   // across chunks 2 and 3 (random, then near: sequential)
		{int64(len(data)) - 1000, 1000},         // the file's tail
		{4*csize + rangeAlign - 10, rangeAlign}, // across an alignment boundary
	} {
		s0, r0 := s.Stats(), len(o.reads0())
		buf := make([]byte, tc.n)
		n, err := h.ReadAt(ctx, buf, tc.off)
		if err != nil || n != tc.n {
			t.Fatalf("ReadAt %d: %d, %v", tc.off, n, err)
		}
		mustEqual(t, "random read", buf, data[tc.off:tc.off+int64(tc.n)])
		log := o.reads0()[r0:]
		if len(log) == 0 {
			t.Fatalf("read at %d: no origin read", tc.off)
		}
		first := log[0]
		if first.n > 2*rangeAlign || first.off > tc.off || first.off+int64(first.n) <= tc.off || first.off%rangeAlign != 0 {
			t.Fatalf("read at %d: first origin read %+v, want an aligned range of at most %d bytes around it", tc.off, first, 2*rangeAlign)
		}
		if st := s.Stats(); st.Misses == s0.Misses || st.MissBytes-s0.MissBytes < int64(tc.n) {
			t.Fatalf("read at %d: misses %d->%d, miss bytes %d->%d", tc.off, s0.Misses, st.Misses, s0.MissBytes, st.MissBytes)
		}
		// Serve the background fetches before the next case.
		waitFor(t, "chunk cached in the background", func() bool {
			idx := int(tc.off / csize)
			e := h.(*handle).e
			e.mu.Lock()
			defer e.mu.Unlock()
			st := e.ver.state[idx]
			return (st == chunkVerified || st == chunkPresent) && len(e.ver.syncing) == 0 && len(e.ver.inflight) == 0
		})
	}
	// Chunk 1 is local now: the same random read reads nothing from the origin.
	r0 := o.totalReads()
	buf := make([]byte, 4096)
	if _, err := h.ReadAt(ctx, buf, csize+100); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "cached random read", buf, data[csize+100:csize+100+4096])
	if n := o.totalReads() - r0; n != 0 {
		t.Fatalf("%d origin reads for a cached chunk", n)
	}
}

// Random and sequential readers of one file, at once, on their own handles
// and on a shared one: every byte is right and the file ends up cached.
func TestRandomAndSequentialReaders(t *testing.T) {
	const csize = 256 << 10
	o := newFakeOrigin()
	data := pattern(16*csize+1234, 71)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ChunkSize = csize
	s := openStore(t, o, cfg)
	shared, _ := mustOpen(t, s, o, "f")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := shared
			if i%2 == 0 {
				var err error
				if h, _, err = s.OpenFile(ctx, "f", o.attr("f")); err != nil {
					errs <- err.Error()
					return
				}
				defer h.Close()
			}
			if i < 2 {
				buf := make([]byte, 16<<10)
				for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
					n, err := h.ReadAt(ctx, buf, off)
					if want := data[off:min(off+int64(len(buf)), int64(len(data)))]; string(buf[:n]) != string(want) {
						errs <- fmt.Sprintf("sequential read at %d: got %d bytes (%v), want %d", off, n, err, len(want))
						return
					}
				}
				return
			}
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range 300 {
				off := r.Int64N(int64(len(data)))
				buf := make([]byte, 1+r.IntN(20<<10))
				n, err := h.ReadAt(ctx, buf, off)
				if want := data[off:min(off+int64(len(buf)), int64(len(data)))]; string(buf[:n]) != string(want) {
					errs <- fmt.Sprintf("random read at %d of %d: got %d bytes (%v), want %d", off, len(buf), n, err, len(want))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	mustEqual(t, "whole file", readAll(t, shared, int64(len(data))), data)
	waitFor(t, "file cached", func() bool { return s.CachedBytes("f") == int64(len(data)) })
}

// A chunk being fetched in the background is not waited for by a random
// reader (served by a range read while the fetch is held up), and the
// background fetch finishes once let go.
func TestRandomReadDoesNotWaitForBackgroundFetch(t *testing.T) {
	const csize = 1 << 20
	o := newFakeOrigin()
	data := pattern(4*csize, 71)
	o.put("f", data)
	held := int64(2*csize + pacedPiece) // the background fetch's second piece
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	o.readErr = func(name string, off int64) error {
		if off == held {
			once.Do(func() { close(entered) })
			<-release
		}
		return nil
	}
	cfg := testConfig(t)
	cfg.ChunkSize = csize
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	ctx := context.Background()
	h1, _ := mustOpen(t, s, o, "f")
	h2, _ := mustOpen(t, s, o, "f")
	for _, h := range []Handle{h1, h2} {
		if _, err := h.ReadAt(ctx, make([]byte, 1), 0); err != nil { // sequential start
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	if _, err := h1.ReadAt(ctx, buf, 2*csize+4096); err != nil { // random: queues chunk 2
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the background fetch of chunk 2 never reached its second piece")
	}
	done := make(chan error, 1)
	off := int64(2*csize + 512<<10 + 8192)
	go func() {
		_, err := h2.ReadAt(ctx, buf, off)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "random read beside a background fetch", buf, data[off:off+4096])
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("a random read waited for the background fetch of its chunk")
	}
	close(release)
	waitFor(t, "chunk 2 cached in the background", func() bool {
		e := h1.(*handle).e
		e.mu.Lock()
		defer e.mu.Unlock()
		st := e.ver.state[2]
		return (st == chunkVerified || st == chunkPresent) && len(e.ver.inflight) == 0
	})
}

// Background pieces yield to readers served from the origin: they wait
// while such reads are recent (up to the trickle interval), go at once when
// the origin has been quiet, and go without waiting once a reader waits
// for the chunk itself.
func TestBackgroundYieldsToReaders(t *testing.T) {
	s := &Store{}
	future := time.Now().Add(time.Hour).UnixNano()
	s.lastDirect.Store(future) // a reader "now" (and for a while)
	s.lastPiece.Store(future)  // a piece just went
	var hurry atomic.Bool
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.yieldToReaders(ctx, &hurry); err == nil {
		t.Fatal("a background piece went while a reader was being served")
	}
	hurry.Store(true)
	if err := s.yieldToReaders(context.Background(), &hurry); err != nil {
		t.Fatalf("hurried piece: %v", err)
	}
	hurry.Store(false)
	s.lastDirect.Store(time.Now().Add(-time.Second).UnixNano())
	if err := s.yieldToReaders(context.Background(), &hurry); err != nil {
		t.Fatalf("quiet origin: %v", err)
	}
}

// A sequential reader that outruns the disk is served straight from the
// origin for the chunks no buffer was free for; once it closes, those holes
// are filled in the background, so a file read through once is complete
// (and its next open can use passthrough).
func TestSequentialReadLeavesNoHoles(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(32*testChunk, 83)
	o.put("f", data)
	s := openStore(t, o, testConfig(t))
	gate := make(chan struct{})
	s.writeData = func(f *os.File, p []byte, off int64) (int, error) {
		<-gate // the disk is stuck: every buffer waits on it
		return f.WriteAt(p, off)
	}
	h, _ := mustOpen(t, s, o, "f")
	mustEqual(t, "sequential read past a stuck disk", readAll(t, h, int64(len(data))), data)
	if st := s.Stats(); st.DirectBytes == 0 {
		t.Fatalf("no read was served from the origin while the disk was stuck: %+v", st)
	}
	h.Close()
	close(gate)
	waitFor(t, "the holes filled after the reader closed", func() bool { return s.CachedBytes("f") == int64(len(data)) })
	h2, _ := mustOpen(t, s, o, "f")
	defer h2.Close()
	if h2.PassthroughFile() == nil {
		t.Fatal("the complete file offers no passthrough file")
	}
}

// Chunks a random reader was served straight from the origin, whose fetch
// behind the read found the background queue full, are fetched once the
// handle closes: what was read once is local the next time, and chunks
// nobody read are not fetched.
func TestRandomMissesFetchedAfterClose(t *testing.T) {
	const csize = 1 << 20
	o := newFakeOrigin()
	data := pattern(16*csize, 71)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.ChunkSize = csize
	cfg.ReadAhead = -1
	s := openStore(t, o, cfg)
	s.bgq = make(chan raJob) // no worker reads it: every fetch behind a read is dropped
	h, _ := mustOpen(t, s, o, "f")
	ctx := context.Background()
	touched := []int{3, 9, 5, 12, 7}
	readTouched := func(h Handle, what string) {
		t.Helper()
		for _, idx := range touched {
			off := int64(idx)*csize + 4096*int64(idx)
			buf := make([]byte, 4096)
			if _, err := h.ReadAt(ctx, buf, off); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, what, buf, data[off:off+4096])
		}
	}
	readTouched(h, "random read")
	want := int64(len(touched)) * csize
	time.Sleep(100 * time.Millisecond)
	if n := s.CachedBytes("f"); n >= want {
		t.Fatalf("%d bytes cached before close: the fetches behind the reads were not dropped", n)
	}
	h.Close()
	waitFor(t, "missed chunks cached after close", func() bool { return s.CachedBytes("f") == want })
	time.Sleep(200 * time.Millisecond)
	if n := s.CachedBytes("f"); n != want {
		t.Fatalf("%d bytes cached, want %d (chunks nobody read fetched)", n, want)
	}
	h2, _ := mustOpen(t, s, o, "f")
	r0 := o.totalReads()
	readTouched(h2, "second random read")
	if n := o.totalReads() - r0; n != 0 {
		t.Fatalf("%d origin reads for chunks read before", n)
	}
}

// The kernel's read-ahead issues the next offsets of a sequential reader
// while earlier reads still wait: those reads are sequential (they follow
// the read started before them), not random, even when they lie far past
// the end of the last read to finish. Jumps away from both stay random.
func TestReadsUnderWayKeepARunSequential(t *testing.T) {
	const n = 128 << 10
	h := &handle{lastEnd: -1, startedEnd: -1}
	if h.isRandom(0, n) {
		t.Fatal("first read at 0 counted as random")
	}
	h.lastEnd = n // the first read finished; the next ones are issued while it waited
	for off := int64(n); off < 4*seqSlack; off += n {
		if h.isRandom(off, n) {
			t.Fatalf("read at %d issued after the one ending there counted as random (last finished read ends at %d)", off, h.lastEnd)
		}
	}
	if !h.isRandom(64*seqSlack, n) {
		t.Fatal("a jump far from both the last finished and the last started read counted as sequential")
	}
	if h.isRandom(64*seqSlack+n, n) {
		t.Fatal("the read following the jump counted as random")
	}
	if !h.isRandom(2*seqSlack+n/2, n) {
		t.Fatal("a jump back counted as sequential")
	}
}
