package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/daemon"
)

// node is one eddy daemon run as a subprocess of the test, with its own
// origin, mountpoint, cache dir and socket under the test's temp dir.
type node struct {
	t        testing.TB
	Origin   string
	Mount    string
	CacheDir string
	Socket   string
	LogFile  string

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; nil when not running
	done chan struct{} // closed when cmd has exited; guarded by mu
	err  error         // cmd's exit error, valid after done; guarded by mu
}

// newNode prepares directories (origin may be "" for a fresh one) and
// registers the cleanup that stops the daemon and unmounts even on failure.
func newNode(t testing.TB, originDir string) *node {
	t.Helper()
	needFUSE(t)
	return newNodeAt(t, t.TempDir(), originDir)
}

// newNodeIn prepares a node under base with a fresh origin.
func newNodeIn(t testing.TB, base string) *node { return newNodeAt(t, base, "") }

func newNodeAt(t testing.TB, base, originDir string) *node {
	if originDir == "" {
		originDir = filepath.Join(base, "edm-origin")
		if err := os.MkdirAll(originDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := &node{
		t:        t,
		Origin:   originDir,
		Mount:    filepath.Join(base, "edm-mnt"),
		CacheDir: filepath.Join(base, "edm-cache"),
		Socket:   filepath.Join(base, "edm-run", "eddy.sock"),
		LogFile:  filepath.Join(base, "edm-daemon.log"),
	}
	if err := os.MkdirAll(n.Mount, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.cleanup)
	return n
}

// daemonArgs are the flags the node runs with, before extra ones.
func (n *node) daemonArgs(extra ...string) []string {
	args := []string{"daemon", "--origin", n.Origin, "--mount", n.Mount, "--cache-dir", n.CacheDir,
		"--socket", n.Socket, "--log-level", "info", "--shutdown-timeout", "5s"}
	return append(args, extra...)
}

// start runs the daemon and waits until the mount and the API answer.
func (n *node) start(extra ...string) {
	n.t.Helper()
	if err := n.tryStart(extra...); err != nil {
		n.t.Fatalf("start daemon: %v\n--- daemon log ---\n%s", err, n.log())
	}
}

func (n *node) tryStart(extra ...string) error {
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return errors.New("daemon already running")
	}
	logf, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	fmt.Fprintf(logf, "=== start %s\n", strings.Join(n.daemonArgs(extra...), " "))
	cmd := exec.Command(eddyBin, n.daemonArgs(extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(done)
	}()

	cl := api.NewUnix(n.Socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			n.mu.Lock()
			err := n.err
			n.cmd = nil
			n.mu.Unlock()
			return fmt.Errorf("daemon exited during start-up: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, herr := cl.Health(ctx)
		cancel()
		if herr == nil {
			if m, ok, _ := daemon.MountAt(n.Mount); ok && strings.HasPrefix(m.FSType, "fuse") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon not ready after 30s (health: %v)", herr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pid returns the daemon's process id (0 if not running).
func (n *node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// signal sends sig to the daemon and waits up to timeout for it to exit.
// It returns the exit error (nil for a clean exit).
func (n *node) signal(sig syscall.Signal, timeout time.Duration) (exited bool, exitErr error) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return true, nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		return false, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cmd = nil
	return true, n.err
}

// stop stops the daemon with SIGTERM (SIGKILL after 15 s) and fails the
// test if it does not exit cleanly.
func (n *node) stop() {
	n.t.Helper()
	exited, err := n.signal(syscall.SIGTERM, 15*time.Second)
	if !exited {
		n.kill9()
		n.t.Fatalf("daemon did not exit 15s after SIGTERM\n%s", n.log())
	}
	if err != nil {
		n.t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, n.log())
	}
}

// kill9 kills the daemon with SIGKILL (leaving a stale mount behind).
func (n *node) kill9() {
	n.signal(syscall.SIGKILL, 10*time.Second)
}

// cleanup stops the daemon by PID and removes any mount left behind.
func (n *node) cleanup() {
	if exited, _ := n.signal(syscall.SIGTERM, 10*time.Second); !exited {
		n.kill9()
	}
	for i := 0; i < 4; i++ {
		if _, ok, _ := daemon.MountAt(n.Mount); !ok {
			break
		}
		_ = unix.Unmount(n.Mount, unix.MNT_DETACH)
	}
	if n.t.Failed() {
		n.t.Logf("--- daemon log (%s) ---\n%s", n.LogFile, n.tail(200))
	}
}

func (n *node) log() string {
	return n.tail(80)
}

func (n *node) tail(lines int) string {
	b, _ := os.ReadFile(n.LogFile)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// eddy runs the CLI against this node and returns its stdout.
func (n *node) eddy(args ...string) (string, error) {
	n.t.Helper()
	cmd := exec.Command(eddyBin, append([]string{"--socket", n.Socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("eddy %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// stats runs `eddy cache stats --json` and decodes it.
func (n *node) stats() api.CacheStats {
	n.t.Helper()
	out, err := n.eddy("cache", "stats", "--json")
	if err != nil {
		n.t.Fatal(err)
	}
	var s api.CacheStats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		n.t.Fatalf("cache stats --json: %v: %q", err, out)
	}
	return s
}

// mnt and org return a path in the mount and in the origin.
func (n *node) mnt(name string) string { return filepath.Join(n.Mount, name) }
func (n *node) org(name string) string { return filepath.Join(n.Origin, name) }

// writeRandom writes size pseudo-random bytes (seeded) to path and returns
// their SHA-256.
func writeRandom(t testing.TB, path string, size int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := rand.New(rand.NewChaCha8(seedBytes(seed)))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		for i := int64(0); i < n; i += 8 {
			v := r.Uint64()
			for j := int64(0); j < 8 && i+j < n; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:n])
		left -= n
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// sha256File returns the SHA-256 of a file's content.
func sha256File(t testing.TB, path string) string {
	t.Helper()
	sum, err := hashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readAll reads a whole file with 1 MiB reads and returns the byte count.
func readAll(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
}

// dropCaches drops the kernel's page cache (root).
func dropCaches(t testing.TB) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o644); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// waitUntil polls cond every 100 ms until it holds, or fails t after d with what was awaited and
// logs() (the daemons' log tails).
func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", d, what, logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
