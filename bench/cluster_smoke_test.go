package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestClusterSmoke runs the real cluster benchmark small: the switch with two node
// namespaces, nfs-ganesha, two real eddy daemons (this module's binary) per backend, a
// 64 MiB file, one run. It proves the harness end to end, that peer fetch reads the origin
// about once where plain NFS reads it once per node, and that nothing is left behind.
//
// It takes about two minutes on 2 cores (most of it building eddy), too long for `make test`:
// it runs when EDDY_BENCH_CLUSTER_SMOKE=1, as `make bench` sets it, with the eddy binary
// EDDY_BENCH_EDDY names (else one built from this module).
func TestClusterSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the smoke run builds eddy and mounts file systems")
	}
	if os.Getenv("EDDY_BENCH_CLUSTER_SMOKE") != "1" {
		t.Skip("takes ~2 min: runs with EDDY_BENCH_CLUSTER_SMOKE=1 (make bench)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, FUSE mounts, drop_caches")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	for _, bin := range []string{"ip", "tc", "nsenter", "ganesha.nfsd", "rpcbind"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh nfs): %v", bin, err)
		}
	}
	dir := t.TempDir()
	eddy := os.Getenv("EDDY_BENCH_EDDY")
	if eddy == "" {
		eddy = filepath.Join(dir, "eddy")
		if out, err := exec.Command("go", "build", "-o", eddy, "../cmd/eddy").CombinedOutput(); err != nil {
			t.Fatalf("build eddy: %v\n%s", err, out)
		}
	}
	before := eclNetns()
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress strings.Builder
	const size = 64 << 20
	rep, err := RunCluster(ctx, ClusterConfig{Out: out, Workloads: []string{WorkloadFile}, Nodes: []int{2}, Size: size, Runs: 1,
		Eddy: eddy, EddyVersion: "smoke", WorkDir: work, Progress: &syncWriter{b: &progress}})
	if err != nil {
		t.Fatalf("RunCluster: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Results) != 3 {
		t.Fatalf("%d rows, want 3 (nfs, eddy, eddy-peers at N=2)", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Status != StatusOK || r.WallS <= 0 || r.MBps <= 0 || len(r.Runs) != 1 || len(r.Runs[0].NodeMBps) != 2 {
			t.Errorf("%s N=%d: %s %+v", r.Backend, r.Nodes, r.Error, r)
			continue
		}
		switch r.Backend {
		case ClusterNFS, ClusterEddy:
			// Each node reads the server itself.
			if r.OriginRatio < 1.9 {
				t.Errorf("%s: origin bytes %.3fx the file, want about 2x (one read per node)", r.Backend, r.OriginRatio)
			}
		case ClusterEddyPeers:
			if r.OriginRatio > targetOriginRatio || r.PeerBytes < size*9/10 {
				t.Errorf("eddy-peers: origin %.3fx the file, peer bytes %d; want <= %.1fx and about %d from the peer",
					r.OriginRatio, r.PeerBytes, targetOriginRatio, size)
			}
		}
	}
	for _, f := range []string{"results.json", "results.md", "wall-time.svg", "origin-bytes.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
	if len(rep.Targets) != 3 {
		t.Errorf("targets %+v", rep.Targets)
	}
	// Nothing leaked: no mounts below the work dir, no new ecl namespaces, the ecl-* work
	// directory removed.
	if m := mountsUnder(work); len(m) > 0 {
		t.Errorf("still mounted: %v", m)
	}
	for _, ns := range eclNetns() {
		if !slices.Contains(before, ns) {
			t.Errorf("namespace left: %s", ns)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(work, "ecl-*")); len(left) > 0 {
		t.Errorf("work dirs left: %v", left)
	}
	if testing.Verbose() {
		md, _ := os.ReadFile(filepath.Join(out, "results.md"))
		t.Logf("progress:\n%s\nresults.md:\n%s", progress.String(), md)
	}
}

func eclNetns() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ecl") {
			out = append(out, e.Name())
		}
	}
	return out
}
