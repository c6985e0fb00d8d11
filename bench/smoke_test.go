package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSuiteSmoke runs the real suite in a tiny configuration: a netns pair,
// a real sshd and sshfs, a real eddy daemon (this module's binary) over the
// sshfs mount, and local disk; every workload, cold and warm, one run. It
// proves the harness end to end and that it leaves nothing behind.
func TestSuiteSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the smoke run builds eddy and mounts file systems")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, FUSE mounts, drop_caches")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	for _, bin := range []string{"ip", "tc", "nsenter", "sshfs", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh fuse ssh): %v", bin, err)
		}
	}
	dir := t.TempDir()
	eddy := filepath.Join(dir, "eddy")
	if out, err := exec.Command("go", "build", "-o", eddy, "../cmd/eddy").CombinedOutput(); err != nil {
		t.Fatalf("build eddy: %v\n%s", err, out)
	}
	netnsBefore := ebnNetns(t)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress strings.Builder
	rep, err := Run(ctx, Config{
		Out: out, Links: []string{LinkUnshaped}, Backends: []string{BLocal, BSSHFS, BEddySSHFS},
		Runs: 1, Size: 32 << 20, SharedSize: 8 << 20, SmallCount: 200, SmallSize: 16 << 10,
		RandOps: 300, RandMaxTime: 20 * time.Second, Parallel: []int{1, 4},
		Eddy: eddy, EddyVersion: "smoke", DaemonLogLevel: "debug", WorkDir: work, Progress: &syncWriter{b: &progress},
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	// 3 backends x 6 workloads x 2 states.
	if len(rep.Results) != 36 {
		t.Fatalf("%d results, want 36", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Status != StatusOK {
			t.Errorf("%s %s %s: %s", r.Backend, r.Workload, r.State, r.Error)
			continue
		}
		if len(r.Runs) != 1 || (r.Workload != WMeta && r.MBps <= 0) || (r.Workload == WMeta && r.OpsPerSec <= 0) {
			t.Errorf("%s %s %s: implausible %+v", r.Backend, r.Workload, r.State, r)
		}
	}
	for _, f := range []string{"results.json", "results.md", "throughput-unshaped.svg", "speedup-unshaped.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil && f != "speedup-unshaped.svg" {
			t.Errorf("output %s: %v", f, err)
		}
	}
	var back Report
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &back); err != nil || len(back.Results) != 36 {
		t.Fatalf("results.json: %v, %d results", err, len(back.Results))
	}
	// Nothing leaked: no mounts below the work dir, no new ebn namespaces,
	// the work dir's ebn-* directory removed.
	if m := mountsUnder(work); len(m) > 0 {
		t.Errorf("still mounted: %v", m)
	}
	if after := ebnNetns(t); len(after) > len(netnsBefore) {
		t.Errorf("namespaces left: before %v after %v", netnsBefore, after)
	}
	if left, _ := filepath.Glob(filepath.Join(work, "ebn-*")); len(left) > 0 {
		t.Errorf("work dirs left: %v", left)
	}
	if testing.Verbose() {
		md, _ := os.ReadFile(filepath.Join(out, "results.md"))
		t.Logf("results.md:\n%s", md)
	}
}

func ebnNetns(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ebn") {
			out = append(out, e.Name())
		}
	}
	return out
}
