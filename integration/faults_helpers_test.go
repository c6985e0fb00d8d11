package integration

import (
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
	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/daemon"
)

// Fault tests: a real nfs-ganesha in a server network namespace, the eddy
// daemon in the client namespace (nsenter, so its FUSE mount is visible
// here), joined by a veth the tests can cut.

// nfsEnv is a ganesha server and the namespaces around it.
type nfsEnv struct {
	pair   *topo.Pair
	g      *topo.Ganesha
	export string // the exported directory (the truth, written directly)
}

// fltNFS stands up the server; it skips only where ganesha cannot run.
// rate shapes the veth (topo.Unshaped for none), so a read lasts long
// enough to be interrupted.
func fltNFS(t *testing.T, rate string) *nfsEnv {
	t.Helper()
	needFUSE(t)
	if _, err := exec.LookPath("ganesha.nfsd"); err != nil {
		t.Skip("nfs-ganesha not installed (scripts/deps.sh nfs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute) // other suites may hold the rpcbind lock
	defer cancel()
	p, err := topo.NewPair(ctx, topo.PairOptions{Prefix: "enf", Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	export := filepath.Join(t.TempDir(), "enf-export")
	if err := os.MkdirAll(export, 0o777); err != nil {
		t.Fatal(err)
	}
	g, err := topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: p.Server, ReadyFrom: p.Client, Addr: p.ServerAddr, Export: export, LockTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- ganesha log ---\n%s", g.Logs())
		}
		g.Close()
	})
	return &nfsEnv{pair: p, g: g, export: export}
}

func (e *nfsEnv) org(name string) string { return filepath.Join(e.export, name) }

// cutLink takes the veth down. The function it returns brings it back up;
// cleanup does that too if the test did not.
func (e *nfsEnv) cutLink(t *testing.T) (up func()) {
	t.Helper()
	ctx := context.Background()
	if err := e.pair.LinkDown(ctx); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var err error
	t.Cleanup(func() { once.Do(func() { e.pair.LinkUp(ctx) }) })
	return func() {
		t.Helper()
		once.Do(func() { err = e.pair.LinkUp(ctx) })
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fltReadAgain reads path until it succeeds (the origin is back), within
// limit, and fails on any wrong bytes.
func fltReadAgain(t *testing.T, path, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got, _, err := fltHash(path)
		if err == nil {
			if got != want {
				t.Fatal("read after the origin came back returned wrong bytes")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("read after the origin came back still fails: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fnode is an eddy daemon running in the client namespace.
type fnode struct {
	t        *testing.T
	env      *nfsEnv
	Mount    string
	CacheDir string
	Socket   string
	LogFile  string
	flags    []string

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu
	done chan struct{} // guarded by mu
}

func fltNode(t *testing.T, env *nfsEnv, flags ...string) *fnode {
	t.Helper()
	base := t.TempDir()
	n := &fnode{t: t, env: env,
		Mount:    filepath.Join(base, "enf-mnt"),
		CacheDir: filepath.Join(base, "enf-cache"),
		Socket:   filepath.Join(base, "enf-run", "eddy.sock"),
		LogFile:  filepath.Join(base, "enf-daemon.log"),
		flags:    flags,
	}
	for _, d := range []string{n.Mount, n.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(n.cleanup)
	return n
}

func (n *fnode) start() {
	n.t.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		n.t.Fatal("daemon already running")
	}
	args := append([]string{"daemon", "--origin", n.env.g.URL(), "--mount", n.Mount, "--cache-dir", n.CacheDir,
		"--socket", n.Socket, "--log-level", "info", "--shutdown-timeout", "5s"}, n.flags...)
	logf, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		n.t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== start %s\n", strings.Join(args, " "))
	cmd := topo.CommandIn(context.Background(), n.env.pair.Client, eddyBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.mu.Unlock()
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() { cmd.Wait(); logf.Close(); close(done) }()

	cl := api.NewUnix(n.Socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			n.mu.Lock()
			n.cmd = nil
			n.mu.Unlock()
			n.t.Fatalf("daemon exited during start-up\n%s", n.tail(60))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, herr := cl.Health(ctx)
		cancel()
		if herr == nil {
			if m, ok, _ := daemon.MountAt(n.Mount); ok && strings.HasPrefix(m.FSType, "fuse") {
				return
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("daemon not ready after 30s (health: %v)\n%s", herr, n.tail(60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig and waits up to d for the daemon to exit.
func (n *fnode) signal(sig syscall.Signal, d time.Duration) bool {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		n.mu.Lock()
		n.cmd = nil
		n.mu.Unlock()
		return true
	case <-time.After(d):
		return false
	}
}

func (n *fnode) kill9() { n.signal(syscall.SIGKILL, 10*time.Second) }

func (n *fnode) cleanup() {
	if !n.signal(syscall.SIGTERM, 10*time.Second) {
		n.kill9()
	}
	for i := 0; i < 4; i++ {
		if _, ok, _ := daemon.MountAt(n.Mount); !ok {
			break
		}
		_ = unix.Unmount(n.Mount, unix.MNT_DETACH)
	}
	if n.t.Failed() {
		n.t.Logf("--- daemon log (%s) ---\n%s", n.LogFile, n.tail(150))
	}
}

func (n *fnode) tail(lines int) string {
	b, _ := os.ReadFile(n.LogFile)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func (n *fnode) mnt(name string) string { return filepath.Join(n.Mount, name) }

// cli runs the eddy CLI against this node.
func (n *fnode) cli(args ...string) (string, error) {
	out, err := exec.Command(eddyBin, append([]string{"--socket", n.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

// fltWrite writes size seeded pseudo-random bytes to path (atomically, via
// a temporary file and rename, when atomic) and returns their SHA-256.
func fltWrite(t *testing.T, path string, size int64, seed uint64, atomic bool) string {
	t.Helper()
	target := path
	if atomic {
		target = path + ".enf-tmp"
	}
	f, err := os.Create(target)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	for i := 0; i < 8; i++ {
		key[i] = byte(seed >> (8 * i))
	}
	h := sha256.New()
	r := rand.New(rand.NewChaCha8(key))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		for i := range buf[:n] {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:n])
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if atomic {
		if err := os.Rename(target, path); err != nil {
			t.Fatal(err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fltHash reads path to the end and returns its SHA-256.
func fltHash(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// result of an operation run with a deadline.
type timed struct {
	err  error
	took time.Duration
	hung bool
}

// within runs fn and reports how long it took; if it has not returned after
// limit it reports a hang (fn keeps running; the test's cleanup kills the
// daemon, which ends it).
func within(limit time.Duration, fn func() error) timed {
	start := time.Now()
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	select {
	case err := <-ch:
		return timed{err: err, took: time.Since(start)}
	case <-time.After(limit):
		return timed{hung: true, took: limit}
	}
}

// isEIO reports whether err is EIO from the mount.
func isEIO(err error) bool { return errors.Is(err, syscall.EIO) }

func fltDropCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		t.Logf("drop_caches: %v", err)
	}
}

// fltBlocks returns the SHA-256 of the whole file at path and of each of its
// 1 MiB blocks, to tell a mix of versions from garbage.
func fltBlocks(path string) (whole string, blocks []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			h.Write(buf[:n])
			bh := sha256.Sum256(buf[:n])
			blocks = append(blocks, hex.EncodeToString(bh[:8]))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return "", nil, rerr
		}
	}
	return hex.EncodeToString(h.Sum(nil)), blocks, nil
}

// fltDescribe says, block by block, which known version (by index) a read
// matches: "v0 v0 v1 ? ..." ('?' = none of them).
func fltDescribe(blocks []string, versions [][]string) string {
	var b strings.Builder
	for i, bh := range blocks {
		tag := "?"
		for vi, v := range versions {
			if i < len(v) && v[i] == bh {
				tag = fmt.Sprintf("v%d", vi)
				break
			}
		}
		b.WriteString(tag + " ")
	}
	return strings.TrimSpace(b.String())
}

// waitCached waits until the node's cache holds all size bytes of name
// (chunks are persisted behind the reader, so a read's end is not yet that).
func (n *fnode) waitCached(t *testing.T, name string, size int64) {
	t.Helper()
	waitFullyCached(t, n.cli, name, size)
}

// waitFullyCached waits until `eddy cache ls`, run by cli, shows all size
// bytes of name cached.
func waitFullyCached(t *testing.T, cli func(args ...string) (string, error), name string, size int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := cli("cache", "ls", "--json", name)
		var files []struct {
			Path        string `json:"path"`
			CachedBytes int64  `json:"cached_bytes"`
		}
		if err == nil && json.Unmarshal([]byte(out), &files) == nil {
			for _, f := range files {
				if f.Path == name && f.CachedBytes == size {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not fully cached within 30 s: %s %v", name, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
