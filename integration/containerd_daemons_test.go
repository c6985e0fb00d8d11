package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// containerdDaemon is a containerd build the container tests run against: every container
// test runs once per daemon, as a subtest named after it. The daemon is the runtime's private
// one (root, state and socket under the test's temp dir), found through PATH, which the
// subtest points at the build's directory first.
type containerdDaemon struct {
	name string
	// bins returns the directory of containerd, containerd-shim-runc-v2 and ctr, and fails t
	// (never skips it) when they are missing.
	bins func(t testing.TB) string
	// keepsExitedTasks: a task that exits while containerd is down is still there when it
	// comes back, with its exit status (1.x). containerd 2.x reaps, when it starts, every shim
	// whose task runs no process, and with it the task and its exit status.
	keepsExitedTasks bool
}

var containerdDaemons = []containerdDaemon{
	// What scripts/deps.sh installs: Debian's containerd package.
	{name: "debian", bins: debianContainerd, keepsExitedTasks: true},
	// The current 2.x daemon, built from the module of the client (scripts/containerd2.sh).
	{name: "containerd-2", bins: containerd2},
}

func debianContainerd(t testing.TB) string {
	t.Helper()
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(filepath.Join("/usr/bin", b)); err != nil {
			t.Fatalf("Debian's containerd package is not installed (scripts/deps.sh containers): %v", err)
		}
	}
	return "/usr/bin"
}

var (
	containerd2Once sync.Once
	containerd2Dir  string
	containerd2Err  error
)

// containerd2 builds the 2.x daemon once per process (the script does nothing when the build
// is current) into .tools/containerd-2, or into EDDY_CONTAINERD2 when set.
func containerd2(t testing.TB) string {
	t.Helper()
	containerd2Once.Do(func() {
		script, err := filepath.Abs("../scripts/containerd2.sh")
		if err != nil {
			containerd2Err = err
			return
		}
		var args []string
		if d := os.Getenv("EDDY_CONTAINERD2"); d != "" {
			args = append(args, d)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(script, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			containerd2Err = fmt.Errorf("%s: %v\n%s", script, err, strings.TrimSpace(stderr.String()))
			return
		}
		containerd2Dir = strings.TrimSpace(string(out))
	})
	if containerd2Err != nil {
		t.Fatalf("no containerd 2.x daemon to test against: %v", containerd2Err)
	}
	return containerd2Dir
}

// forEachContainerd runs f as one subtest per daemon, with PATH leading to that daemon.
func forEachContainerd(t *testing.T, f func(t *testing.T, d containerdDaemon)) {
	for _, d := range containerdDaemons {
		t.Run(d.name, func(t *testing.T) {
			useContainerd(t, d)
			f(t, d)
		})
	}
}

// useContainerd puts d's binaries first in PATH for the rest of t (root only, as every
// container test: it skips t otherwise) and returns their directory.
func useContainerd(t testing.TB, d containerdDaemon) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container tests need root")
	}
	dir := d.bins(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is not installed (scripts/deps.sh containers): %v", err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	out, err := exec.Command(filepath.Join(dir, "containerd"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s/containerd --version: %v: %s", dir, err, out)
	}
	t.Logf("containerd daemon %s: %s", d.name, strings.TrimSpace(string(out)))
	return dir
}

// containerdPIDIn is the PID recorded by the private containerd under dir, while that process
// runs (0 otherwise).
func containerdPIDIn(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "containerd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 1 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// assertContainerdBinary fails t unless the private containerd under dir runs the binary of
// the daemon under test (in bins).
func assertContainerdBinary(t testing.TB, dir, bins string) {
	t.Helper()
	pid := containerdPIDIn(dir)
	if pid == 0 {
		t.Fatalf("no private containerd running under %s", dir)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	want, _ := filepath.EvalSymlinks(filepath.Join(bins, "containerd"))
	if err != nil || exe != want {
		t.Fatalf("private containerd (pid %d) runs %q (%v), want %s", pid, exe, err, want)
	}
}

// stopContainerdAtEnd makes sure, when t ends, that the private containerd under dir is no
// longer running: the runtime stops it at Close; one left behind (a failed test) is an error,
// and is stopped by its PID: SIGTERM, then SIGKILL after 10 s.
func stopContainerdAtEnd(t testing.TB, dir string) {
	t.Cleanup(func() {
		pid := containerdPIDIn(dir)
		if pid == 0 {
			return
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(cmdline, []byte(dir)) {
			return // the PID is someone else's now
		}
		t.Errorf("the private containerd under %s (pid %d) was left running; stopping it", dir, pid)
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// killContainerTasks SIGKILLs the tasks left in namespace ns of the containerd at sock (by a
// failed test), so that no shim and no container outlives the test.
func killContainerTasks(sock, ns string) {
	out, _ := exec.Command("ctr", "--address", sock, "-n", ns, "tasks", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		exec.Command("ctr", "--address", sock, "-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id).Run()
	}
}

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
