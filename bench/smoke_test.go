package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
	dir := t.TempDir()
	eddy := needRig(t, dir, "fuse ssh", "ip", "tc", "nsenter", "sshfs", "ssh-keygen")
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
		// eddy's warm runs are paired with local runs; nothing else is.
		wantPaired := r.Backend == BEddySSHFS && r.State != StateCold
		if got := len(r.PairedLocal) == 1 && r.LocalFractionPaired > 0; got != wantPaired {
			t.Errorf("%s %s %s: paired local runs %+v, fraction %v; want paired: %v", r.Backend, r.Workload, r.State,
				r.PairedLocal, r.LocalFractionPaired, wantPaired)
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
	t.Run("latency", func(t *testing.T) { smokeLatency(t, eddy, work, netnsBefore) })
}

// smokeLatency runs the suite with a delay: the metadata workload over
// sshfs and eddy-sshfs, undelayed and through the TCP latency proxy
// (+2 ms each way), and local once.
func smokeLatency(t *testing.T, eddy, work string, netnsBefore []string) {
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress strings.Builder
	rep, err := Run(ctx, Config{
		Out: out, Links: []string{LinkUnshaped}, Backends: []string{BLocal, BSSHFS, BEddySSHFS},
		Latencies: []time.Duration{0, 2 * time.Millisecond}, Workloads: []string{WMeta},
		Runs: 1, Size: 4 << 20, SharedSize: 1 << 20, SmallCount: 200, SmallSize: 4 << 10,
		Eddy: eddy, EddyVersion: "smoke", DaemonLogLevel: "debug", WorkDir: work, Progress: &syncWriter{b: &progress},
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	// local once (undelayed); sshfs and eddy-sshfs at 0 and 2 ms; cold and warm.
	if len(rep.Results) != 10 {
		t.Fatalf("%d results, want 10:\n%s", len(rep.Results), progress.String())
	}
	found := map[string]bool{}
	for _, r := range rep.Results {
		if r.Status != StatusOK || r.OpsPerSec <= 0 {
			t.Errorf("%s %s %s +%vms: %s %+v", r.Backend, r.Workload, r.State, r.LatencyMs, r.Error, r)
			continue
		}
		if r.Backend == BLocal && r.LatencyMs != 0 {
			t.Errorf("local measured with latency %v ms", r.LatencyMs)
		}
		found[fmt.Sprintf("%s/%s/%v", r.Backend, r.State, r.LatencyMs)] = true
	}
	for _, k := range []string{"sshfs/cold/2", "sshfs/warm/2", "eddy-sshfs/cold/2", "sshfs/cold/0"} {
		if !found[k] {
			t.Errorf("no result for %s", k)
		}
	}
	// The delayed sshfs went through the proxy: its recorded command line
	// names another port than sshd's.
	cmd := strings.Join(rep.Commands[BSSHFS+"@+2ms"], " ")
	if cmd == "" || strings.Contains(cmd, fmt.Sprintf("port=%d,", sshPort)) || !strings.Contains(cmd, "port=") {
		t.Errorf("delayed sshfs command %q does not go through the proxy (sshd port %d)", cmd, sshPort)
	}
	if direct := strings.Join(rep.Commands[BSSHFS], " "); !strings.Contains(direct, fmt.Sprintf("port=%d,", sshPort)) {
		t.Errorf("undelayed sshfs command %q does not reach sshd directly", direct)
	}
	var back struct {
		Results []map[string]any `json:"results"`
	}
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	delayed := 0
	for _, r := range back.Results {
		v, ok := r["latency_ms"].(float64)
		if !ok {
			t.Fatalf("result without latency_ms: %v", r)
		}
		if v == 2 && r["backend"] == BSSHFS && r["workload"] == WMeta {
			delayed++
		}
	}
	if delayed != 2 {
		t.Errorf("results.json holds %d delayed sshfs metadata figures, want 2 (cold, warm)", delayed)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Link: unshaped\n", "## Link: unshaped, latency +2ms one-way", "## Latency: unshaped"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	for _, f := range []string{"ops-unshaped.svg", "ops-unshaped-2ms.svg", "latency-unshaped.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
	if len(rep.LatencyProxies) != 1 || rep.LatencyProxies[0].LatencyMs != 2 || rep.LatencyProxies[0].Chunks == 0 {
		t.Errorf("latency proxy stats %+v, want the 2 ms proxies' traffic", rep.LatencyProxies)
	}
	if !strings.Contains(progress.String(), "[unshaped +2ms] sshfs") {
		t.Errorf("progress does not name the latency:\n%s", progress.String())
	}
	if m := mountsUnder(work); len(m) > 0 {
		t.Errorf("still mounted: %v", m)
	}
	if after := ebnNetns(t); len(after) > len(netnsBefore) {
		t.Errorf("namespaces left: before %v after %v", netnsBefore, after)
	}
	if testing.Verbose() {
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
