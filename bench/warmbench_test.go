package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWarmBenchSmoke runs `eddy bench warm` for real in a tiny configuration: ganesha in a
// server namespace, this module's eddy binary in a client namespace, cp -r and cache warm of 300
// files, one run each. It proves both passes copy or cache every file and that nothing (mounts,
// namespaces, work directory) is left behind.
func TestWarmBenchSmoke(t *testing.T) {
	dir := t.TempDir()
	eddy := needRig(t, dir, "nfs", "ip", "tc", "nsenter", "ganesha.nfsd", "rpcbind")
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	rep, err := RunWarm(ctx, WarmConfig{Eddy: eddy, EddyVersion: "smoke", Files: 300, FileSize: 8 << 10, PerDir: 100,
		Runs: 1, Link: LinkUnshaped, WorkDir: work, Progress: &syncWriter{b: &progress}})
	if err != nil {
		t.Fatalf("RunWarm: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2: %+v", len(rep.Results), rep.Results)
	}
	for _, r := range rep.Results {
		if len(r.Runs) != 1 || r.FilesPerSec <= 0 || r.Runs[0].OriginBytes < 300*8<<10 {
			t.Fatalf("%s: %+v (every file must cross the link once)", r.Method, r)
		}
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Fatalf("work dir not cleaned: %d entries", len(ents))
	}
	if ents, _ := os.ReadDir("/run/netns"); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "ewb") {
				t.Fatalf("namespace %s left behind", e.Name())
			}
		}
	}
	t.Logf("cp -r %.0f files/s, cache warm %.0f files/s (%.2fx)", rep.Results[0].FilesPerSec, rep.Results[1].FilesPerSec, rep.Speedup)
}
