package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

const testChunk = 64 << 10

func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{
		Dir:            t.TempDir(),
		ChunkSize:      testChunk,
		MaxBytes:       1 << 30,
		MinFreePercent: -1,
		Revalidate:     time.Hour,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func openStore(t *testing.T, o origin.FS, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), o, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.access.every = 0
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads a handle in 16 KiB pieces.
func readAll(t *testing.T, h Handle, size int64) []byte {
	t.Helper()
	out := make([]byte, 0, size)
	buf := make([]byte, 16<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(context.Background(), buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ReadAt %d: %v", off, err)
		}
	}
	return out
}

func mustOpen(t *testing.T, s *Store, o *fakeOrigin, name string) (Handle, OpenResult) {
	t.Helper()
	h, r, err := s.OpenFile(context.Background(), name, o.attr(name))
	if err != nil {
		t.Fatalf("OpenFile %s: %v", name, err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h, r
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: bytes differ at %d (got %d bytes, want %d)", what, i, len(got), len(want))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// countHandler counts log records at Warn and above.
type countHandler struct {
	warns atomic.Int64
}

func (c *countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (c *countHandler) Handle(context.Context, slog.Record) error {
	c.warns.Add(1)
	return nil
}
func (c *countHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *countHandler) WithGroup(string) slog.Handler      { return c }

var errEIO = syscall.EIO

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// referenced counts the entries in use (not idle).
func referenced(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.open {
		if e.refs > 0 || e.parking != nil {
			n++
		}
	}
	return n
}

// storedHandle opens name (data on o) in s, reads it whole and waits until
// every chunk is stored.
func storedHandle(t *testing.T, s *Store, o *fakeOrigin, name string, data []byte) Handle {
	t.Helper()
	h, _ := mustOpen(t, s, o, name)
	mustEqual(t, "first read of "+name, readAll(t, h, int64(len(data))), data)
	waitFor(t, name+" stored", func() bool { return s.CachedBytes(name) == int64(len(data)) })
	return h
}
