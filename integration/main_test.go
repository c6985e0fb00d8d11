package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// eddyBin is the eddy binary built once for the whole package by TestMain.
var eddyBin string

// skipReason is set when the machine cannot run FUSE tests at all.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipReason = "integration tests mount FUSE with the mount syscall and need root"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			skipReason = "no /dev/fuse on this machine"
		}
	}
	dir, err := os.MkdirTemp("", "edm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	eddyBin = filepath.Join(dir, "eddy")
	cmd := exec.Command("go", "build", "-o", eddyBin, "./cmd/eddy")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: go build ./cmd/eddy:", err)
		return 1
	}
	code := m.Run()
	benchCleanup()
	return code
}

// needFUSE skips t when the machine cannot mount FUSE (not root, no /dev/fuse).
func needFUSE(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
