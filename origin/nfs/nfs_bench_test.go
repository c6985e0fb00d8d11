package nfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkNFSOriginRead reads one file (EDDY_BENCH_SIZE bytes, default 256
// MiB) sequentially through the NFS origin from
// a real ganesha over an unshaped veth, in 8 MiB ReadAt calls (each split
// into parallel 1 MiB READs), with 1, 2 and 4 connections.
//
//	EDDY_BENCH_SIZE=1073741824 go test -run '^$' -bench NFSOriginRead -benchtime 3x ./origin/nfs
func BenchmarkNFSOriginRead(b *testing.B) {
	size := benchSize()
	s := startServerB(b)
	f, err := os.Create(filepath.Join(s.export, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for w := int64(0); w < size; w += int64(len(buf)) {
		f.Write(buf)
	}
	f.Close()
	for _, conns := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			org := s.openB(b, fmt.Sprintf("?conns=%d", conns))
			ctx := context.Background()
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				fl, err := org.Open(ctx, "bench", syscall.O_RDONLY)
				if err != nil {
					b.Fatal(err)
				}
				var off int64
				start := time.Now()
				for off < size {
					n, err := fl.ReadAt(ctx, buf, off)
					off += int64(n)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if off != size {
					b.Fatalf("read %d of %d bytes", off, size)
				}
				b.ReportMetric(float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
			}
		})
	}
}

// BenchmarkNFSOriginLstat measures the origin round trip an open of a file
// costs (close-to-open): Lstat (one LOOKUP) of 1,000 files in a directory of
// a real ganesha over an unshaped veth, by 1 and 4 callers at once over 1, 2
// (the default) and 4 connections. ns/op is
// the time per Lstat across all callers; the latency each caller sees is
// reported as us/call.
//
//	go test -run '^$' -bench NFSOriginLstat ./origin/nfs
func BenchmarkNFSOriginLstat(b *testing.B) {
	s := startServerB(b)
	const files = 1000
	if err := os.Mkdir(filepath.Join(s.export, "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range files {
		if err := os.WriteFile(filepath.Join(s.export, "d", strconv.Itoa(i)), []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, c := range []struct{ conns, callers int }{{2, 1}, {2, 4}, {4, 4}, {1, 4}} {
		callers := c.callers
		b.Run(fmt.Sprintf("conns=%d/callers=%d", c.conns, callers), func(b *testing.B) {
			org := s.openB(b, fmt.Sprintf("?conns=%d", c.conns))
			var next atomic.Int64
			errs := make(chan error, callers)
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < callers; c++ {
				go func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							errs <- nil
							return
						}
						if _, err := org.Lstat(ctx, "d/"+strconv.Itoa(int(i%files))); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			for c := 0; c < callers; c++ {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.ReportMetric(float64(el.Microseconds())*float64(callers)/float64(b.N), "us/call")
		})
	}
}

// benchSize is the benchmark file's size: EDDY_BENCH_SIZE in bytes (as for
// the cache and integration benchmarks), 256 MiB by default.
func benchSize() int64 {
	if v, err := strconv.ParseInt(os.Getenv("EDDY_BENCH_SIZE"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 256 << 20
}
