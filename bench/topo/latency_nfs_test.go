package topo_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/origin"
	"github.com/eddy-cluster/eddy/origin/nfs"
)

// TestLatencyProxyNFS reaches ganesha from the client namespace through
// two latency proxies in the server namespace, one for NFS and one for
// MOUNT, with both ports in the nfs:// URL: the export mounts, lists and
// reads through them, and a round trip takes at least twice the delay.
func TestLatencyProxyNFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ganesha.nfsd"); err != nil {
		t.Skip("ganesha.nfsd not installed (scripts/deps.sh nfs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := topo.NewPair(ctx, topo.PairOptions{Prefix: "elp", Rate: "1gbit"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	export := t.TempDir()
	want := bytes.Repeat([]byte("eddy-latency\n"), 100000)
	if err := os.WriteFile(filepath.Join(export, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: p.Server, ReadyFrom: p.Client, Addr: p.ServerAddr, Export: export})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })

	const delay = 5 * time.Millisecond
	proxy := func(port int) *topo.LatencyProxy {
		lp, err := topo.StartLatencyProxy(ctx, topo.LatencyProxyOptions{Netns: p.Server, Listen: net.JoinHostPort(p.ServerAddr, "0"),
			Target: net.JoinHostPort(p.ServerAddr, strconv.Itoa(port)), Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := lp.Close(); err != nil {
				t.Error(err)
			}
		})
		return lp
	}
	pn, pm := proxy(topo.GaneshaNFSPort), proxy(topo.GaneshaMountPort)
	url := g.URLVia(p.ServerAddr, pn.Port(), pm.Port())
	cfg, err := nfs.ParseURL(url)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	fs, err := nfs.New(ctx, cfg, origin.OpenOptions{Dial: p.DialClient, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("mount %s: %v\n%s", url, err, g.Logs())
	}
	defer fs.Close()
	ents, err := fs.ReadDir(ctx, ".")
	if err != nil || len(ents) != 1 {
		t.Fatalf("readdir through the proxies: %v %v", ents, err)
	}
	start := time.Now()
	a, err := fs.Lstat(ctx, "f")
	if err != nil || a.Size != int64(len(want)) {
		t.Fatalf("lstat f: %+v %v", a, err)
	}
	if rtt := time.Since(start); rtt < 2*delay {
		t.Fatalf("an NFS round trip through the proxy took %s, under 2 x %s", rtt, delay)
	}
	f, err := fs.Open(ctx, "f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	for off := 0; off < len(got); {
		n, err := f.ReadAt(ctx, got[off:], int64(off))
		off += n
		if err != nil && off < len(got) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes read through the proxies differ from the file")
	}
	if pn.Accepted() == 0 || pm.Accepted() == 0 {
		t.Fatalf("connections through the NFS proxy %d, the MOUNT proxy %d: want both used", pn.Accepted(), pm.Accepted())
	}
}
