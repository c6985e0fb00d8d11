package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
	"golang.org/x/sys/unix"
)

// Benchmarks of the cache against reading the origin directly, on a real
// temp dir. Page caches of the origin file (and, for warm reads, of the
// cache's data files) are dropped per file with fadvise before each
// iteration, so "cold" means cold on disk too.
//
//	go test -run '^$' -bench . -benchtime 3x ./cache/
//
// EDDY_BENCH_SIZE sets the file size in bytes, as for the integration
// benchmarks (default 512 MiB: 536870912). The Link benchmarks put
// the origin behind a simulated network link (bandwidth shared by all
// requests, plus a round trip per request): the realistic case for a
// cluster share, where the local origin's 2-4 GB/s is not.

func benchFile(b *testing.B) (root string, size int64) {
	b.Helper()
	size = benchSize(b)
	root = b.TempDir()
	f, err := os.Create(filepath.Join(root, "big"))
	if err != nil {
		b.Fatal(err)
	}
	buf := pattern(1<<20, 1)
	for off := int64(0); off < size; off += int64(len(buf)) {
		buf[0]++
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	f.Sync()
	f.Close()
	return root, size
}

// benchSize is the benchmark file's size: EDDY_BENCH_SIZE in bytes, or
// 512 MiB. A value that is not a positive byte count fails the benchmark
// rather than measure another size than the one asked for.
func benchSize(b *testing.B) int64 {
	b.Helper()
	v := os.Getenv("EDDY_BENCH_SIZE")
	if v == "" {
		return 512 << 20
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("EDDY_BENCH_SIZE=%q: want a size in bytes, e.g. 268435456 for 256 MiB", v)
	}
	return n
}

func dropPages(b *testing.B, dir string) {
	b.Helper()
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if f, err := os.Open(p); err == nil {
			_ = unix.Fdatasync(int(f.Fd()))
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
		return nil
	})
}

func benchStore(b *testing.B, root, dir string, chunk int64) *Store {
	b.Helper()
	return benchStoreOn(b, newOSOrigin(root), dir, chunk, 0)
}

func benchStoreOn(b *testing.B, org origin.FS, dir string, chunk int64, readAhead int) *Store {
	b.Helper()
	s, err := Open(context.Background(), org, Config{
		Dir: dir, ChunkSize: chunk, MaxBytes: 8 << 30, MinFreePercent: -1, ReadAhead: readAhead,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func seqRead(b *testing.B, r func(p []byte, off int64) (int, error), size int64) {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n, err := r(buf, off)
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOriginSequential(b *testing.B) {
	root, size := benchFile(b)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropPages(b, root)
		f, _ := os.Open(filepath.Join(root, "big"))
		b.StartTimer()
		seqRead(b, f.ReadAt, size)
		f.Close()
	}
}

func BenchmarkColdSequential(b *testing.B) {
	for _, chunk := range []int64{4 << 20, 8 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("chunk=%dMiB", chunk>>20), func(b *testing.B) {
			root, size := benchFile(b)
			o := newOSOrigin(root)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				dropPages(b, root)
				s := benchStore(b, root, b.TempDir(), chunk)
				attr, _ := o.Lstat(context.Background(), "big")
				h, _, err := s.OpenFile(context.Background(), "big", attr)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				seqRead(b, func(p []byte, off int64) (int, error) { return h.ReadAt(context.Background(), p, off) }, size)
				b.StopTimer()
				h.Close()
				s.Close()
				b.StartTimer()
			}
		})
	}
}

func warmStore(b *testing.B) (s *Store, h Handle, root, dir string, size int64) {
	root, size = benchFile(b)
	dir = b.TempDir()
	s = benchStore(b, root, dir, DefaultChunkSize)
	if err := s.Warm(context.Background(), "big", nil); err != nil {
		b.Fatal(err)
	}
	attr, _ := newOSOrigin(root).Lstat(context.Background(), "big")
	h, _, err := s.OpenFile(context.Background(), "big", attr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close(); s.Close() })
	return s, h, root, dir, size
}

func BenchmarkWarmSequential(b *testing.B) {
	_, h, root, dir, size := warmStore(b)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropPages(b, root)
		dropPages(b, filepath.Join(dir, "data"))
		b.StartTimer()
		seqRead(b, func(p []byte, off int64) (int, error) { return h.ReadAt(context.Background(), p, off) }, size)
	}
}

const randomReads = 4096

func randomOffsets(size int64) []int64 {
	r := rand.New(rand.NewPCG(7, 7))
	offs := make([]int64, randomReads)
	for i := range offs {
		offs[i] = r.Int64N(size/4096) * 4096
	}
	return offs
}

func BenchmarkOriginRandom4K(b *testing.B) {
	root, size := benchFile(b)
	offs := randomOffsets(size)
	f, _ := os.Open(filepath.Join(root, "big"))
	defer f.Close()
	buf := make([]byte, 4096)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropPages(b, root)
		b.StartTimer()
		for _, off := range offs {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*randomReads)/b.Elapsed().Seconds(), "IOPS")
}

func BenchmarkWarmRandom4K(b *testing.B) {
	_, h, root, dir, size := warmStore(b)
	offs := randomOffsets(size)
	buf := make([]byte, 4096)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropPages(b, root)
		dropPages(b, filepath.Join(dir, "data"))
		b.StartTimer()
		for _, off := range offs {
			if _, err := h.ReadAt(context.Background(), buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*randomReads)/b.Elapsed().Seconds(), "IOPS")
}

// linkOrigin is an osOrigin behind a simulated network link: every read
// occupies the link for n/rate (transfers queue behind each other, as on a
// saturated link) and costs one round trip on top.
type linkOrigin struct {
	*osOrigin
	rate float64 // bytes per second
	rtt  time.Duration

	mu   sync.Mutex
	free time.Time // guarded by mu: when the link is next idle
}

func newLinkOrigin(root string, mbps float64, rtt time.Duration) *linkOrigin {
	return &linkOrigin{osOrigin: newOSOrigin(root), rate: mbps * 1e6, rtt: rtt}
}

func (l *linkOrigin) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	f, err := l.osOrigin.Open(ctx, name, flag)
	if err != nil {
		return nil, err
	}
	return linkFile{f, l}, nil
}

func (l *linkOrigin) transfer(n int) {
	l.mu.Lock()
	start := time.Now()
	if l.free.After(start) {
		start = l.free
	}
	l.free = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	done := l.free
	l.mu.Unlock()
	time.Sleep(time.Until(done) + l.rtt)
}

type linkFile struct {
	origin.File
	l *linkOrigin
}

func (f linkFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(ctx, p, off)
	f.l.transfer(n)
	return n, err
}

var links = []struct {
	name string
	mbps float64
	rtt  time.Duration
}{
	{"300MBps", 300, 200 * time.Microsecond},
	{"110MBps", 110, 200 * time.Microsecond},
}

// BenchmarkLinkOriginSequential reads the origin directly over the link
// with 1 MiB sequential reads (one at a time, like a plain client).
func BenchmarkLinkOriginSequential(b *testing.B) {
	for _, l := range links {
		b.Run("link="+l.name, func(b *testing.B) {
			root, size := benchFile(b)
			o := newLinkOrigin(root, l.mbps, l.rtt)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				dropPages(b, root)
				f, err := o.Open(context.Background(), "big", os.O_RDONLY)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				seqRead(b, func(p []byte, off int64) (int, error) { return f.ReadAt(context.Background(), p, off) }, size)
				f.Close()
			}
		})
	}
}

// BenchmarkLinkColdSequential is the cold read through the cache over the
// same link, by read-ahead depth.
func BenchmarkLinkColdSequential(b *testing.B) {
	for _, l := range links {
		for _, ra := range []int{4, 8, 16} {
			b.Run(fmt.Sprintf("link=%s/ra=%d", l.name, ra), func(b *testing.B) {
				root, size := benchFile(b)
				o := newLinkOrigin(root, l.mbps, l.rtt)
				coldRuns(b, o, root, size, DefaultChunkSize, ra)
			})
		}
	}
}

// BenchmarkColdReadAhead is the cold read from the local origin by
// read-ahead depth.
func BenchmarkColdReadAhead(b *testing.B) {
	for _, ra := range []int{4, 8, 16} {
		b.Run(fmt.Sprintf("ra=%d", ra), func(b *testing.B) {
			root, size := benchFile(b)
			coldRuns(b, newOSOrigin(root), root, size, DefaultChunkSize, ra)
		})
	}
}

func coldRuns(b *testing.B, o origin.FS, root string, size, chunk int64, ra int) {
	b.Helper()
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dropPages(b, root)
		s := benchStoreOn(b, o, b.TempDir(), chunk, ra)
		attr, _ := o.Lstat(context.Background(), "big")
		h, _, err := s.OpenFile(context.Background(), "big", attr)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		seqRead(b, func(p []byte, off int64) (int, error) { return h.ReadAt(context.Background(), p, off) }, size)
		b.StopTimer()
		h.Close()
		s.Close()
		if c := s.Stats().CachedBytes; c < size {
			b.ReportMetric(float64(c)/float64(size)*100, "%cached")
		}
		b.StartTimer()
	}
}

// coldRandomReads is the number of 4 KiB reads per cold random iteration.
const coldRandomReads = 256

// BenchmarkLinkColdRandom4K is cold random 4 KiB reads of one file through
// the cache over the link (a fresh cache per iteration), next to the same
// reads straight from the origin over the link. One reader, one read at a
// time, like a plain client; ops/s is the figure.
func BenchmarkLinkColdRandom4K(b *testing.B) {
	for _, l := range links {
		for _, via := range []string{"origin", "cache"} {
			b.Run(fmt.Sprintf("link=%s/via=%s", l.name, via), func(b *testing.B) {
				root, size := benchFile(b)
				o := newLinkOrigin(root, l.mbps, l.rtt)
				r := rand.New(rand.NewPCG(9, 9))
				offs := make([]int64, coldRandomReads)
				for i := range offs {
					offs[i] = r.Int64N(size/4096) * 4096
				}
				want := make([]byte, 4096)
				ref, err := os.Open(filepath.Join(root, "big"))
				if err != nil {
					b.Fatal(err)
				}
				defer ref.Close()
				buf := make([]byte, 4096)
				var elapsed time.Duration
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					dropPages(b, root)
					var read func(p []byte, off int64) (int, error)
					var s *Store
					var h Handle
					if via == "cache" {
						s = benchStoreOn(b, o, b.TempDir(), DefaultChunkSize, 0)
						attr, _ := o.Lstat(context.Background(), "big")
						if h, _, err = s.OpenFile(context.Background(), "big", attr); err != nil {
							b.Fatal(err)
						}
						read = func(p []byte, off int64) (int, error) { return h.ReadAt(context.Background(), p, off) }
					} else {
						f, err := o.Open(context.Background(), "big", os.O_RDONLY)
						if err != nil {
							b.Fatal(err)
						}
						defer f.Close()
						read = func(p []byte, off int64) (int, error) { return f.ReadAt(context.Background(), p, off) }
					}
					b.StartTimer()
					t0 := time.Now()
					for _, off := range offs {
						if _, err := read(buf, off); err != nil {
							b.Fatal(err)
						}
					}
					elapsed += time.Since(t0)
					b.StopTimer()
					for _, off := range offs[:8] {
						_, _ = read(buf, off)
						_, _ = ref.ReadAt(want, off)
						if string(buf) != string(want) {
							b.Fatalf("wrong bytes at %d", off)
						}
					}
					if h != nil {
						h.Close()
						s.Close()
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(b.N*coldRandomReads)/elapsed.Seconds(), "ops/s")
			})
		}
	}
}

// BenchmarkOpenCached is the cache's share of opening a small file that is
// fully cached (what every open of a training epoch's files costs once the
// origin has vouched for them): the index read, the data file, and the
// close. Files are opened in random order over a set larger than any
// in-memory state.
//
//	go test -run '^$' -bench OpenCached ./cache/
func BenchmarkOpenCached(b *testing.B) {
	const n = 2000
	root := b.TempDir()
	for i := range n {
		d := filepath.Join(root, fmt.Sprintf("d%02d", i/100))
		_ = os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), pattern(64<<10, uint64(i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	org := newOSOrigin(root)
	s := benchStoreOn(b, org, b.TempDir(), 8<<20, 0)
	defer s.Close()
	ctx := context.Background()
	names := make([]string, n)
	attrs := make([]origin.Attr, n)
	for i := range n {
		names[i] = fmt.Sprintf("d%02d/f%04d", i/100, i)
		if err := s.Warm(ctx, names[i], nil); err != nil {
			b.Fatal(err)
		}
		a, err := org.Lstat(ctx, names[i])
		if err != nil {
			b.Fatal(err)
		}
		attrs[i] = a
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := order[i%n]
		i++
		h, _, err := s.OpenFile(ctx, names[k], attrs[k])
		if err != nil {
			b.Fatal(err)
		}
		if h.PassthroughFile() == nil {
			b.Fatalf("%s: not complete after Warm", names[k])
		}
		h.Close()
	}
}
