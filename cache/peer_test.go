package cache

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// storePeer is a PeerSource that fetches from another store in-process;
// corrupt flips a byte of what it hands over.
type storePeer struct {
	from    *Store
	corrupt bool
	mu      sync.Mutex
	done    map[int]bool
}

func (p *storePeer) Fetch(ctx context.Context, key PeerKey, dst []byte) (uint64, error) {
	n, sum, err := p.from.ServePeerChunk(ctx, key, dst, time.Second)
	if err != nil {
		return 0, err
	}
	if int64(n) != key.Len {
		return 0, errors.New("short")
	}
	if p.corrupt {
		dst[len(dst)/2] ^= 0xff
	}
	return sum, nil
}

func (p *storePeer) Done(key PeerKey, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		p.done = map[int]bool{}
	}
	p.done[key.Index] = ok
}

// A chunk another store holds is fetched from it, not the origin; the
// holder counts it served, the fetcher counts peer bytes, and every chunk
// is reported done (held).
func TestPeerFetchFromAnotherStore(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(4*testChunk+777, 3)
	o.put("f.bin", data)
	a := openStore(t, o, testConfig(t))
	ha, _ := mustOpen(t, a, o, "f.bin")
	mustEqual(t, "first read", readAll(t, ha, int64(len(data))), data)
	waitFor(t, "chunks indexed", func() bool { return a.CachedBytes("f.bin") == int64(len(data)) })

	b := openStore(t, o, testConfig(t))
	src := &storePeer{from: a}
	b.SetPeerSource(src)
	before := o.totalReads()
	hb, _ := mustOpen(t, b, o, "f.bin")
	mustEqual(t, "peer read", readAll(t, hb, int64(len(data))), data)
	if got := o.totalReads() - before; got != 0 {
		t.Fatalf("peer read made %d origin reads, want 0", got)
	}
	if st := b.Stats(); st.PeerBytes != int64(len(data)) {
		t.Fatalf("peer bytes %d, want %d", st.PeerBytes, len(data))
	}
	if st := a.Stats(); st.ServedBytes != int64(len(data)) {
		t.Fatalf("served bytes %d, want %d", st.ServedBytes, len(data))
	}
	waitFor(t, "peer chunks indexed", func() bool { return b.CachedBytes("f.bin") == int64(len(data)) })
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.done) != 5 {
		t.Fatalf("done reports %v, want 5 chunks held", src.done)
	}
}

// Bytes that fail the sender's checksum are never used: the chunk is read
// from the origin, and the reader gets the right bytes.
func TestPeerFetchCorruptFallsBack(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(3*testChunk, 4)
	o.put("f.bin", data)
	a := openStore(t, o, testConfig(t))
	storedHandle(t, a, o, "f.bin", data)

	b := openStore(t, o, testConfig(t))
	b.SetPeerSource(&storePeer{from: a, corrupt: true})
	before := o.totalReads()
	hb, _ := mustOpen(t, b, o, "f.bin")
	mustEqual(t, "read", readAll(t, hb, int64(len(data))), data)
	if o.totalReads() == before {
		t.Fatal("corrupt peer chunks were not refetched from the origin")
	}
	if st := b.Stats(); st.PeerBytes != 0 || st.ChecksumFailures == 0 {
		t.Fatalf("stats %+v: want no peer bytes and checksum failures", st)
	}
}

// A holder never serves another version's chunk, nor a chunk it does not
// hold.
func TestServePeerChunkVersionChecked(t *testing.T) {
	o := newFakeOrigin()
	data := pattern(2*testChunk, 5)
	attr := o.put("f.bin", data)
	a := openStore(t, o, testConfig(t))
	ha, _ := mustOpen(t, a, o, "f.bin")
	mustEqual(t, "first read", readAll(t, ha, int64(len(data))), data)
	// Chunks are persisted behind the reader: a peer is served only what is on disk.
	waitFor(t, "f.bin cached", func() bool { return a.CachedBytes("f.bin") == int64(len(data)) })
	ctx := context.Background()
	key := PeerKey{Path: "f.bin", Fingerprint: attr.Fingerprint(), ChunkSize: testChunk, Index: 1, Len: testChunk}
	buf := make([]byte, testChunk)
	if n, _, err := a.ServePeerChunk(ctx, key, buf, 0); err != nil || n != testChunk {
		t.Fatalf("serve: %d, %v", n, err)
	}
	mustEqual(t, "served", buf, data[testChunk:])
	// Handed over as a file for the kernel to send: positioned at the chunk, with the
	// index's checksum.
	f, n, sum, err := a.ServePeerChunkFile(ctx, key)
	if err != nil || n != testChunk || sum != xxhash.Sum64(data[testChunk:]) {
		t.Fatalf("serve as a file: %d, %x, %v", n, sum, err)
	}
	sent, err := io.ReadAll(io.LimitReader(f, n))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "served as a file", sent, data[testChunk:])
	other := key
	other.Fingerprint.MtimeNs++
	if _, _, err := a.ServePeerChunk(ctx, other, buf, 0); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("other version: %v, want ErrPeerNoChunk", err)
	}
	if _, _, _, err := a.ServePeerChunkFile(ctx, other); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("other version as a file: %v, want ErrPeerNoChunk", err)
	}
	missing := key
	missing.Path = "nope.bin"
	if _, _, err := a.ServePeerChunk(ctx, missing, buf, 0); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("missing file: %v, want ErrPeerNoChunk", err)
	}
	if _, _, _, err := a.ServePeerChunkFile(ctx, missing); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("missing file as a file: %v, want ErrPeerNoChunk", err)
	}
	// The file replaced on the origin: once revalidated, the old version is not served.
	o.replace("f.bin", pattern(2*testChunk, 6))
	a.forceRevalidateName(t, "f.bin")
	if _, _, err := a.ServePeerChunk(ctx, key, buf, 0); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("replaced file: %v, want ErrPeerNoChunk", err)
	}
	if _, _, _, err := a.ServePeerChunkFile(ctx, key); !errors.Is(err, ErrPeerNoChunk) {
		t.Fatalf("replaced file as a file: %v, want ErrPeerNoChunk", err)
	}
}

// forceRevalidateName makes the next access of name check the origin.
func (s *Store) forceRevalidateName(t *testing.T, name string) {
	t.Helper()
	s.mu.Lock()
	e := s.open[name]
	s.mu.Unlock()
	if e == nil {
		t.Fatalf("%s not open", name)
	}
	e.forceRevalidate()
}
