package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Benchmarks of the mount against the origin directly. Run with
//
//	go test -run XXX -bench . -benchtime 3x ./integration
//
// EDDY_BENCH_SIZE sets the large file's size in bytes (default 1 GiB);
// EDDY_BENCH_DAEMON_ARGS adds daemon flags (e.g. "--attr-timeout 10s").
// The page cache is dropped before every timed read of a "cold" or "warm"
// case: "warm" means fully in eddy's cache, read from local disk.

var benchEnv struct {
	once sync.Once
	n    *node
	size int64
	err  error
}

// benchNode returns one daemon shared by the benchmarks, with a large file
// and 10,000 small ones on its origin. It stays up until the process exits
// (TestMain's binary dir cleanup does not unmount it, so stop it here).
func benchNode(b *testing.B) (*node, int64) {
	b.Helper()
	needFUSE(b)
	benchEnv.once.Do(func() {
		size := int64(1 << 30)
		if v, err := strconv.ParseInt(os.Getenv("EDDY_BENCH_SIZE"), 10, 64); err == nil && v > 0 {
			size = v
		}
		dir, err := os.MkdirTemp("", "edm-bench-")
		if err != nil {
			benchEnv.err = err
			return
		}
		bt := &benchTB{TB: b, dir: dir}
		n := newNodeIn(bt, dir)
		writeRandom(bt, n.org("large.bin"), size, 42)
		if err := os.MkdirAll(n.org("many"), 0o755); err != nil {
			benchEnv.err = err
			return
		}
		for i := 0; i < 10000; i++ {
			if err := os.WriteFile(n.org(fmt.Sprintf("many/f%05d", i)), []byte("x"), 0o644); err != nil {
				benchEnv.err = err
				return
			}
		}
		if err := n.tryStart(strings.Fields(os.Getenv("EDDY_BENCH_DAEMON_ARGS"))...); err != nil {
			benchEnv.err = fmt.Errorf("%v\n%s", err, n.log())
			return
		}
		benchEnv.n, benchEnv.size = n, size
		benchCleanup = func() { n.cleanup(); os.RemoveAll(dir) }
	})
	if benchEnv.err != nil {
		b.Fatal(benchEnv.err)
	}
	return benchEnv.n, benchEnv.size
}

// benchCleanup stops the shared benchmark daemon (called by TestMain).
var benchCleanup = func() {}

// benchTB lets the shared node outlive the benchmark that created it.
type benchTB struct {
	testing.TB
	dir string
}

func (b *benchTB) Cleanup(func())            {}
func (b *benchTB) Failed() bool              { return false }
func (b *benchTB) TempDir() string           { return b.dir }
func (b *benchTB) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (b *benchTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func seqRead(b *testing.B, path string, size int64, before func()) {
	b.Helper()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if before != nil {
			before()
		}
		dropCaches(b)
		b.StartTimer()
		got, err := readAll(path)
		if err != nil || got != size {
			b.Fatalf("read %s: %d bytes, %v", path, got, err)
		}
	}
}

// BenchmarkSeqRead: sequential 1 MiB reads of the large file.
func BenchmarkSeqRead(b *testing.B) {
	n, size := benchNode(b)
	b.Run("origin-direct", func(b *testing.B) {
		seqRead(b, n.org("large.bin"), size, nil)
	})
	b.Run("mount-cold", func(b *testing.B) {
		seqRead(b, n.mnt("large.bin"), size, func() {
			if _, err := n.eddy("cache", "evict", "large.bin"); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("mount-warm", func(b *testing.B) {
		if _, err := n.eddy("cache", "warm", "large.bin"); err != nil {
			b.Fatal(err)
		}
		seqRead(b, n.mnt("large.bin"), size, nil)
	})
	b.Run("local-disk-copy", func(b *testing.B) {
		// The same bytes as one local file next to the cache, for the
		// warm target (warm through the mount vs local disk directly).
		local := filepath.Join(n.CacheDir, "..", "edm-local-copy.bin")
		if _, err := os.Stat(local); err != nil {
			writeRandom(b, local, size, 42)
		}
		seqRead(b, local, size, nil)
	})
}

// BenchmarkRandRead4K: random 4 KiB reads (cold page cache, eddy cache warm).
func BenchmarkRandRead4K(b *testing.B) {
	n, size := benchNode(b)
	run := func(b *testing.B, path string) {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		dropCaches(b)
		r := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 4096)
		b.SetBytes(4096)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			off := r.Int64N(size/4096) * 4096
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("origin-direct", func(b *testing.B) { run(b, n.org("large.bin")) })
	b.Run("mount-warm", func(b *testing.B) {
		if _, err := n.eddy("cache", "warm", "large.bin"); err != nil {
			b.Fatal(err)
		}
		run(b, n.mnt("large.bin"))
	})
}

// BenchmarkStat10k: lstat of 10,000 files (warm: second pass onwards).
func BenchmarkStat10k(b *testing.B) {
	n, _ := benchNode(b)
	run := func(b *testing.B, dir string) {
		names := make([]string, 10000)
		for i := range names {
			names[i] = filepath.Join(dir, fmt.Sprintf("f%05d", i))
		}
		for _, p := range names { // warm up
			if _, err := os.Lstat(p); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, p := range names {
				if _, err := os.Lstat(p); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("origin-direct", func(b *testing.B) { run(b, n.org("many")) })
	b.Run("mount", func(b *testing.B) { run(b, n.mnt("many")) })
}
