package topo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// RpcbindLock serialises rpcbind machine-wide: its files under /run are
// shared by every network namespace, so only one may run at a time.
const RpcbindLock = "/run/eddy-topo-rpcbind.lock"

// GaneshaOptions configures StartGanesha.
type GaneshaOptions struct {
	// Netns is the (server) network namespace to run rpcbind and ganesha in.
	Netns string
	// Addr is the address ganesha binds, reachable from the client side.
	Addr string
	// Export is the directory to export (NFSv3 clients mount this path).
	Export string
	// ReadyFrom is the namespace readiness is checked from (the client
	// side); defaults to Netns.
	ReadyFrom string
	// LockTimeout bounds the wait for the machine-wide rpcbind lock
	// (default 5 minutes: another suite may hold it for a while).
	LockTimeout time.Duration
	// StartTimeout bounds the wait for ganesha to serve (default 30 s).
	StartTimeout time.Duration
	// KeepLogs leaves Dir (config and logs) in place after Close.
	KeepLogs bool
}

// Ganesha is an nfs-ganesha server (VFS FSAL) with its own rpcbind, running
// in a network namespace. Stop/Start restart the NFS server alone (rpcbind
// stays up) to simulate a server restart; Close stops everything.
type Ganesha struct {
	opts GaneshaOptions
	// Dir holds the generated config, the logs and the recovery dir.
	Dir string

	lock *os.File

	mu      sync.Mutex
	rpcbind *exec.Cmd // guarded by mu
	nfsd    *exec.Cmd // guarded by mu
	nfsdEnd chan struct{}
	starts  int // guarded by mu
}

// StartGanesha takes the rpcbind lock, starts rpcbind and ganesha.nfsd in
// opts.Netns and waits until the NFS and MOUNT ports answer from
// opts.ReadyFrom. Everything is torn down again if any step fails.
func StartGanesha(ctx context.Context, opts GaneshaOptions) (g *Ganesha, err error) {
	if opts.Netns == "" || opts.Addr == "" || opts.Export == "" {
		return nil, errors.New("topo: GaneshaOptions needs Netns, Addr and Export")
	}
	if opts.ReadyFrom == "" {
		opts.ReadyFrom = opts.Netns
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 5 * time.Minute
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	for _, bin := range []string{"ganesha.nfsd", "rpcbind", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("topo: %s not installed (scripts/deps.sh nfs): %w", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "enf-ganesha-")
	if err != nil {
		return nil, fmt.Errorf("topo: ganesha dir: %w", err)
	}
	g = &Ganesha{opts: opts, Dir: dir}
	defer func() {
		if err != nil {
			_ = g.Close()
			g = nil
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, "recovery"), 0o755); err != nil {
		return g, fmt.Errorf("topo: ganesha recovery dir: %w", err)
	}
	if err := os.WriteFile(g.ConfigPath(), []byte(g.config()), 0o644); err != nil {
		return g, fmt.Errorf("topo: ganesha config: %w", err)
	}
	lock, err := lockFile(ctx, RpcbindLock, opts.LockTimeout)
	if err != nil {
		return g, err
	}
	g.lock = lock

	rlog, err := os.Create(filepath.Join(dir, "rpcbind.log"))
	if err != nil {
		return g, fmt.Errorf("topo: rpcbind log: %w", err)
	}
	defer rlog.Close()
	rb := CommandIn(context.Background(), opts.Netns, "rpcbind", "-f")
	rb.Stdout, rb.Stderr = rlog, rlog
	if err := rb.Start(); err != nil {
		return g, fmt.Errorf("topo: start rpcbind: %w", err)
	}
	g.mu.Lock()
	g.rpcbind = rb
	g.mu.Unlock()
	go func() { _ = rb.Wait() }()
	rctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := WaitPort(rctx, opts.Netns, "127.0.0.1:111"); err != nil {
		return g, fmt.Errorf("topo: rpcbind: %w (log %s)", err, rlog.Name())
	}
	if err := g.Start(ctx); err != nil {
		return g, err
	}
	return g, nil
}

// ConfigPath is the generated ganesha.conf.
func (g *Ganesha) ConfigPath() string { return filepath.Join(g.Dir, "ganesha.conf") }

// LogPath is ganesha's log file.
func (g *Ganesha) LogPath() string { return filepath.Join(g.Dir, "ganesha.log") }

// Addr is the server address.
func (g *Ganesha) Addr() string { return g.opts.Addr }

// Export is the exported directory.
func (g *Ganesha) Export() string { return g.opts.Export }

// URL is the nfs:// origin spec of the export (NFSv3).
func (g *Ganesha) URL() string { return "nfs://" + g.opts.Addr + g.opts.Export }

func (g *Ganesha) config() string {
	return fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 3, 4;
	Bind_addr = %s;
	NFS_Port = 2049;
	MNT_Port = 20048;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
NFSV4 {
	RecoveryBackend = fs;
	RecoveryRoot = %s;
	Graceless = true;
}
EXPORT {
	Export_Id = 1;
	Path = %s;
	Pseudo = /export;
	Access_Type = RW;
	Squash = No_Root_Squash;
	Transports = TCP;
	SecType = sys;
	# Tests change the export behind ganesha's back: never trust cached
	# attributes or directory entries.
	Attr_Expiration_Time = 0;
	FSAL { Name = VFS; }
}
MDCACHE {
	Use_Getattr_Directory_Invalidation = true;
}
LOG {
	Default_Log_Level = EVENT;
}
`, g.opts.Addr, filepath.Join(g.Dir, "recovery"), g.opts.Export)
}

// Start starts ganesha.nfsd (after Stop, or the first time from
// StartGanesha) and waits until it serves.
func (g *Ganesha) Start(ctx context.Context) error {
	g.mu.Lock()
	if g.nfsd != nil {
		g.mu.Unlock()
		return errors.New("topo: ganesha already running")
	}
	g.starts++
	pidfile := filepath.Join(g.Dir, fmt.Sprintf("ganesha.%d.pid", g.starts))
	cmd := CommandIn(context.Background(), g.opts.Netns, "ganesha.nfsd", "-F",
		"-f", g.ConfigPath(), "-L", g.LogPath(), "-p", pidfile, "-N", "NIV_EVENT")
	out, err := os.OpenFile(filepath.Join(g.Dir, "ganesha.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.mu.Unlock()
		return fmt.Errorf("topo: ganesha output: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		g.mu.Unlock()
		return fmt.Errorf("topo: start ganesha: %w", err)
	}
	out.Close()
	end := make(chan struct{})
	g.nfsd, g.nfsdEnd = cmd, end
	g.mu.Unlock()
	go func() { _ = cmd.Wait(); close(end) }()

	wctx, cancel := context.WithTimeout(ctx, g.opts.StartTimeout)
	defer cancel()
	for _, port := range []string{"2049", "20048"} {
		if err := WaitPort(wctx, g.opts.ReadyFrom, net.JoinHostPort(g.opts.Addr, port)); err != nil {
			_ = g.Stop()
			return fmt.Errorf("topo: ganesha not serving: %w (log %s)", err, g.LogPath())
		}
	}
	return nil
}

// Stop stops ganesha.nfsd (SIGTERM, then SIGKILL after 10 s) and waits for
// it to exit. rpcbind and the lock stay held. Stopping a stopped server is a
// no-op.
func (g *Ganesha) Stop() error { return g.stop(syscall.SIGTERM) }

// Kill stops ganesha.nfsd with SIGKILL (a crash) and waits for it.
func (g *Ganesha) Kill() error { return g.stop(syscall.SIGKILL) }

// Running reports whether ganesha.nfsd is running.
func (g *Ganesha) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nfsd != nil
}

func (g *Ganesha) stop(sig syscall.Signal) error {
	g.mu.Lock()
	cmd, end := g.nfsd, g.nfsdEnd
	g.nfsd, g.nfsdEnd = nil, nil
	g.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// nsenter execs ganesha.nfsd in place, so the PID is ganesha's.
	_ = cmd.Process.Signal(sig)
	select {
	case <-end:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	select {
	case <-end:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("topo: ganesha pid %d did not exit", cmd.Process.Pid)
	}
}

// Close stops ganesha and rpcbind, releases the rpcbind lock and removes the
// working directory (logs included, unless KeepLogs; tests print Logs()
// first when they failed).
func (g *Ganesha) Close() error {
	err := g.Stop()
	g.mu.Lock()
	rb := g.rpcbind
	g.rpcbind = nil
	g.mu.Unlock()
	if rb != nil && rb.Process != nil {
		_ = rb.Process.Kill()
		waitGone(rb.Process.Pid, 5*time.Second)
	}
	if g.lock != nil {
		g.lock.Close() // releases the flock
		g.lock = nil
	}
	if g.Dir != "" && !g.opts.KeepLogs {
		os.RemoveAll(g.Dir)
	}
	return err
}

// Logs returns the tail of ganesha's log, for test failure messages.
func (g *Ganesha) Logs() string {
	b, _ := os.ReadFile(g.LogPath())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockFile takes an exclusive flock on path, polling until timeout.
func lockFile(ctx context.Context, path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("topo: open %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("topo: flock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("topo: %s held by another suite for %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("topo: waiting for %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
