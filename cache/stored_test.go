package cache

import (
	"bytes"
	"context"
	"testing"
)

// A read whose chunks are stored and checked is handed out as a range of the
// data file holding the right bytes, clipped at the end of the file; a read
// touching a missing chunk is not.
func TestReadStoredRanges(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk-100, 21)
	o.put("f", data)
	o.put("g", pattern(2*testChunk, 22))
	s := openStore(t, o, testConfig(t))
	h := storedHandle(t, s, o, "f", data)
	ctx := context.Background()
	sr := h.(StoredReader)
	for _, tc := range []struct {
		off     int64
		n, want int
	}{
		{0, 4096, 4096},
		{testChunk - 10, 20, 20},                        // across two chunks
		{int64(len(data)) - 50, 4096, 50},               // clipped at the end
		{testChunk/2 + 3, 2 * testChunk, 2 * testChunk}, // across three chunks
	} {
		r, ok, err := sr.ReadStored(ctx, tc.off, tc.n)
		if err != nil || !ok || r.Len != tc.want || r.Off != tc.off {
			t.Fatalf("ReadStored(%d, %d): %+v, %v, %v; want %d bytes", tc.off, tc.n, r, ok, err, tc.want)
		}
		got := make([]byte, r.Len)
		if _, err := r.File.ReadAt(got, r.Off); err != nil {
			t.Fatal(err)
		}
		r.Release()
		mustEqual(t, "stored range", got, data[tc.off:tc.off+int64(tc.want)])
	}
	if _, ok, _ := sr.ReadStored(ctx, int64(len(data)), 10); ok {
		t.Fatal("a range at the end of the file was handed out")
	}
	hg, _ := mustOpen(t, s, o, "g")
	if _, ok, _ := hg.(StoredReader).ReadStored(ctx, 0, 10); ok {
		t.Fatal("a range of a chunk not fetched yet was handed out")
	}
}

// A chunk dropped while the kernel may be reading a stored range keeps its
// bytes until the range is released, and is punched out then, unless it was
// fetched again meanwhile.
func TestStoredRangeDefersPunch(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 23)
	o.put("f", data)
	s := openStore(t, o, testConfig(t))
	h := storedHandle(t, s, o, "f", data)
	ctx := context.Background()
	r, ok, err := h.(StoredReader).ReadStored(ctx, testChunk, testChunk)
	if err != nil || !ok {
		t.Fatalf("ReadStored: %v, %v", ok, err)
	}
	e := h.(*handle).e
	v := e.current()
	e.dropChunk(v, 1)
	got := make([]byte, r.Len)
	if _, err := r.File.ReadAt(got, r.Off); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "held range after the drop", got, data[testChunk:])
	r.Release()
	if _, err := r.File.ReadAt(got, r.Off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("the dropped chunk was not punched out when its last range was released")
	}
	// Fetched again while a range is held: not punched at the release.
	mustEqual(t, "read after the drop", readAll(t, h, int64(len(data))), data)
	waitFor(t, "chunk 1 stored again", func() bool { return s.CachedBytes("f") == int64(len(data)) })
	r, ok, _ = h.(StoredReader).ReadStored(ctx, testChunk, testChunk)
	if !ok {
		t.Fatal("no stored range of chunk 1 after its refetch")
	}
	e.dropChunk(v, 1)
	mustEqual(t, "read during the held range", readAll(t, h, int64(len(data))), data)
	waitFor(t, "chunk 1 stored a third time", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return v.state[1] != chunkAbsent && v.inflight[1] == nil
	})
	r.Release()
	if _, err := r.File.ReadAt(got, r.Off); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "refetched chunk after the release", got, data[testChunk:])
}
