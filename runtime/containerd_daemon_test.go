package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dirOfLength returns a directory path under base whose length is exactly n.
func dirOfLength(t *testing.T, base string, n int) string {
	t.Helper()
	pad := n - len(base) - 1
	if pad < 1 {
		t.Fatalf("base %q is already %d bytes", base, len(base))
	}
	return filepath.Join(base, strings.Repeat("d", pad))
}

// Both sockets containerd listens on must fit its limit; the ttrpc one is the longer.
func TestPrivateContainerdSocketFitsTtrpc(t *testing.T) {
	base := "/tmp"
	for n := 60; n <= 140; n++ {
		dir := dirOfLength(t, base, n)
		sock := PrivateContainerdSocket(dir)
		if l := len(sock + ttrpcSuffix); l > containerdSocketLimit {
			t.Fatalf("dir of %d bytes: ttrpc socket %q is %d bytes, over %d", n, sock+ttrpcSuffix, l, containerdSocketLimit)
		}
		inDir := sock == filepath.Join(dir, "containerd.sock")
		fits := len(filepath.Join(dir, "containerd.sock"+ttrpcSuffix)) <= containerdSocketLimit
		if inDir != fits {
			t.Fatalf("dir of %d bytes: socket %q in dir=%v, but a socket there fits=%v", n, sock, inDir, fits)
		}
		if !inDir && PrivateContainerdSocket(dir) != sock {
			t.Fatalf("fallback socket for %q is not stable", dir)
		}
	}
	if PrivateContainerdSocket("/tmp/a") == PrivateContainerdSocket(dirOfLength(t, base, 120)) {
		t.Fatal("distinct dirs share a socket")
	}
}

// A private containerd starts under a directory whose containerd.sock fits 104 bytes but
// whose containerd.sock.ttrpc does not: the length at which it once refused to start.
func TestStartContainerdLongDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a private containerd needs root")
	}
	for _, b := range containerdBinaries {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed", b)
		}
	}
	base := t.TempDir()
	// dir/containerd.sock is 99 bytes, dir/containerd.sock.ttrpc 105.
	dir := dirOfLength(t, base, 99-len("/containerd.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := startContainerd(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	inDir := p.sock == filepath.Join(dir, "containerd.sock")
	_, ttrpcErr := os.Stat(p.sock + ttrpcSuffix)
	p.stop()
	if inDir {
		t.Errorf("socket %q kept beside a ttrpc socket containerd refuses", p.sock)
	}
	if ttrpcErr != nil {
		t.Errorf("ttrpc socket: %v", ttrpcErr)
	}
	for _, s := range []string{p.sock, p.sock + ttrpcSuffix} {
		if _, err := os.Lstat(s); err == nil {
			t.Errorf("socket %s left behind after stop", s)
		}
	}
}
