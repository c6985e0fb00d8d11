package fusefs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

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
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for range size / len(buf) {
		f.Write(buf)
	}
	f.Close()
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
				f, err := os.Open(c.path)
				if err != nil {
					b.Fatal(err)
				}
				nr, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
				f.Close()
				if err != nil || nr != size {
					b.Fatalf("read %d %v", nr, err)
				}
			}
		})
	}
}
