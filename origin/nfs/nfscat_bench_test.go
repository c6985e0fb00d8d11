package nfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
)

// BenchmarkNFSCatRead is the reference for BenchmarkNFSOriginRead: libnfs's
// nfs-cat reading the same size of file from the same server setup, run in
// the client namespace.
func BenchmarkNFSCatRead(b *testing.B) {
	if _, err := exec.LookPath("nfs-cat"); err != nil {
		b.Skip("nfs-cat (libnfs-utils) not installed")
	}
	size := benchSize()
	s := startServerB(b)
	f, err := os.Create(filepath.Join(s.export, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 8<<20)
	for w := int64(0); w < size; w += int64(len(buf)) {
		f.Write(buf)
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		cmd := topo.CommandIn(context.Background(), s.pair.Client, "sh", "-c", "nfs-cat "+s.g.URL()+"/bench > /dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("nfs-cat: %v: %s", err, out)
		}
		b.ReportMetric(float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
	}
}
