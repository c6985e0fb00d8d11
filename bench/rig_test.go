package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// needRig skips a test of the real harness unless it can run here: not -short, root, /dev/fuse
// and the programs bins. It returns an eddy binary built from this module into dir.
func needRig(t *testing.T, dir, deps string, bins ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the smoke run builds eddy and mounts file systems")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, FUSE mounts, drop_caches")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh %s): %v", bin, deps, err)
		}
	}
	eddy := filepath.Join(dir, "eddy")
	if out, err := exec.Command("go", "build", "-o", eddy, "../cmd/eddy").CombinedOutput(); err != nil {
		t.Fatalf("build eddy: %v\n%s", err, out)
	}
	return eddy
}
