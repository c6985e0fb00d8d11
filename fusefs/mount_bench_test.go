package fusefs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lstat of 10,000 files natively and through the mount.
//
//   - native: the origin directory directly (dentry cache warm).
//
//   - mount-warm: through the mount with the kernel's entry/attr cache warm:
//     each timed pass follows an untimed pass, so every entry is within its
//     1 s timeout; this is what a job walking its dataset sees.
//
//   - mount-revalidate: timeouts 0, so every lstat is a LOOKUP to the daemon
//     and an lstat of the origin: the cost of one metadata round trip.
//
//     go test -run '^$' -bench 'Stat10k' -benchtime 5x ./fusefs/
func BenchmarkStat10k(b *testing.B) {
	dir := b.TempDir()
	const n = 10000
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d", i))
		if i < 100 {
			os.Mkdir(filepath.Dir(p), 0o755)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	_, mp := mountT(b, dir, nil, Options{})
	_, mpZero := mountT(b, dir, nil, Options{EntryTimeout: -1, AttrTimeout: -1})
	for _, c := range []struct{ name, root string }{{"native", dir}, {"mount-warm", mp}, {"mount-revalidate", mpZero}} {
		b.Run(c.name, func(b *testing.B) {
			statAll := func() {
				var st unix.Stat_t
				for i := range n {
					p := filepath.Join(c.root, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d", i))
					if err := unix.Lstat(p, &st); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				statAll() // warm pass
				b.StartTimer()
				statAll()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k")
		})
	}
}

// Sequential read of a 256 MiB file with 1 MiB reads, through the mount
// (no cache) and from the origin, page cache dropped before each read.
//
//	go test -run '^$' -bench 'SeqRead' -benchtime 3x ./fusefs/
func BenchmarkSeqRead(b *testing.B) {
	dir := b.TempDir()
	const size = 256 << 20
	p := filepath.Join(dir, "big")
	buf := writeBig(b, p, size)
	_, mp := mountT(b, dir, nil, Options{})
	for _, c := range []struct{ name, path string }{
		{"origin_cold", p}, {"mount_cold", filepath.Join(mp, "big")},
		{"origin_warm", p}, {"mount_warm", filepath.Join(mp, "big")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				if c.name[len(c.name)-4:] == "cold" {
					b.StopTimer()
					unix.Sync()
					os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
					b.StartTimer()
				}
				readBig(b, c.path, size, buf)
			}
		})
	}
}

// A training epoch over cached small files: 2,000 files of 128 KiB read
// whole by 4 readers, through the mount over the real chunk store (every
// file complete in the cache, so opens use passthrough) and natively.
//
//	go test -run '^$' -bench 'SmallFileEpoch' -benchtime 3x ./fusefs/
func BenchmarkSmallFileEpoch(b *testing.B) {
	dir, st, _, mp := realStoreMount(b)
	const n, size, readers = 2000, 128 << 10, 4
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 13)
	}
	name := func(i int) string { return filepath.Join(fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%05d", i)) }
	for i := range n {
		p := filepath.Join(dir, name(i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	epoch := func(root string) {
		work := make(chan int)
		errs := make(chan error, readers)
		for range readers {
			go func() {
				buf := make([]byte, size+1)
				for i := range work {
					f, err := os.Open(filepath.Join(root, name(i)))
					if err != nil {
						errs <- err
						return
					}
					nr, err := io.ReadFull(f, buf)
					f.Close()
					if nr != size {
						errs <- fmt.Errorf("%s: %d bytes, %v", name(i), nr, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for i := range n {
			work <- (i * 7919) % n
		}
		close(work)
		for range readers {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	// Fetch everything into the cache: files whose fetch was skipped (every
	// buffer waiting on the disk) and not yet filled in are read again, with
	// the page cache dropped (an open of an unchanged file keeps the
	// kernel's pages, and a read served by them never reaches the daemon).
	cached := func() bool {
		for i := range n {
			if st.CachedBytes(name(i)) < size {
				return false
			}
		}
		return true
	}
	for try := 0; !cached(); try++ {
		if try == 10 {
			b.Fatalf("files still incomplete in the cache after %d epochs (stats %+v)", try, st.Stats())
		}
		epoch(mp)
		time.Sleep(time.Second)
		unix.Sync()
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	}
	_, mpNoPT := mountT(b, dir, st, Options{NoPassthrough: true})
	for _, c := range []struct{ name, root string }{{"native", dir}, {"mount", mp}, {"mount-nopt", mpNoPT}} {
		for _, drop := range []bool{false, true} {
			label := c.name + "-warm"
			if drop {
				label += "-dropped"
			}
			b.Run(label, func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					if drop {
						unix.Sync()
						os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
					}
					b.StartTimer()
					epoch(c.root)
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "files/s")
			})
		}
	}
}

// Sequential read of a 1 GiB file complete in the real chunk store (kernel
// passthrough) against the same bytes read from the origin directly, page
// cache dropped before each read: the passthrough path's fraction of the
// local disk.
//
//	go test -run '^$' -bench 'CachedSeqRead' -benchtime 5x ./fusefs/
func BenchmarkCachedSeqRead(b *testing.B) {
	dir, st, _, mp := realStoreMount(b)
	const size = 1 << 30
	p := filepath.Join(dir, "big")
	buf := writeBig(b, p, size)
	read := func(b *testing.B, path string) { readBig(b, path, size, buf) }
	read(b, filepath.Join(mp, "big")) // fetch into the cache
	for deadline := time.Now().Add(time.Minute); st.CachedBytes("big") < size; {
		if time.Now().After(deadline) {
			b.Fatalf("after a sequential read, %d of %d bytes cached (stats %+v)", st.CachedBytes("big"), size, st.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []struct{ name, path string }{{"origin", p}, {"passthrough", filepath.Join(mp, "big")}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			pt0 := st.Stats().PassthroughOpens
			for range b.N {
				b.StopTimer()
				unix.Sync()
				os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
				b.StartTimer()
				t0 := time.Now()
				read(b, c.path)
				b.Logf("%s: %v", c.name, time.Since(t0))
			}
			if c.name == "passthrough" && st.Stats().PassthroughOpens-pt0 != int64(b.N) {
				b.Errorf("%d of %d opens used passthrough", st.Stats().PassthroughOpens-pt0, b.N)
			}
		})
	}
}

// writeBig writes size bytes of a pattern to p in 1 MiB writes and returns
// the 1 MiB buffer, for the reads.
func writeBig(b *testing.B, p string, size int) []byte {
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for range size / len(buf) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return buf
}

// readBig reads the whole of path (size bytes) with buf.
func readBig(b *testing.B, path string, size int64, buf []byte) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	nr, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
	f.Close()
	if err != nil || nr != size {
		b.Fatalf("read %d %v", nr, err)
	}
}
