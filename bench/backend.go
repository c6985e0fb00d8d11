package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/bench/topo"
)

// Backend names (results.json "backend").
const (
	BLocal     = "local"
	BNFS       = "nfs"
	BNFSCat    = "nfs-cat"
	BSSHFS     = "sshfs"
	BSSHFSKC   = "sshfs-kcache"
	BEddyNFS   = "eddy-nfs"
	BEddySSHFS = "eddy-sshfs"
	BEddyLocal = "eddy-local"
	// BEddyNFSTTL is eddy-nfs with the whole dataset under the dataset
	// consistency mode (--consistency '**=ttl:60s'), measured when asked.
	BEddyNFSTTL = "eddy-nfs-ttl"
	backendsAll = "local,nfs,nfs-cat,sshfs,sshfs-kcache,eddy-nfs,eddy-sshfs"
	// backendsExtra are measured only when asked for (--backends).
	backendsExtra = "eddy-local,eddy-nfs-ttl," + S3Backends
)

// AllBackends lists every backend of the default suite in the order it
// runs them.
func AllBackends() []string { return strings.Split(backendsAll, ",") }

// KnownBackends lists every backend the suite can measure: the default
// ones and the extra ones (eddy-local: eddy's own cost with no network;
// s3fs, rclone, eddy-s3: a versitygw bucket).
func KnownBackends() []string { return strings.Split(backendsAll+","+backendsExtra, ",") }

// Proxied reports whether a backend is measured through the TCP latency
// proxies when the suite adds latency. local has no network; nfs-cat
// stays the undelayed protocol-level cross-check of the NFS server.
func Proxied(backend string) bool {
	switch backend {
	case BSSHFS, BSSHFSKC, BEddySSHFS, BNFS, BEddyNFS, BEddyNFSTTL:
		return true
	case BS3FS, BRclone, BEddyS3:
		return true
	}
	return false
}

// backendLabels describe each backend honestly (results.md, plots).
var backendLabels = map[string]string{
	BLocal:   "local disk (same files, no network): the physical limit",
	BNFS:     "NFSv3, user space, via FUSE (eddy's nfs:// origin, --no-cache; the kernel has no NFS client)",
	BNFSCat:  "NFSv3 protocol-level read with libnfs nfs-cat (no FUSE, no file system)",
	BSSHFS:   "sshfs (aes128-gcm, no compression)",
	BSSHFSKC: "sshfs -o kernel_cache (aes128-gcm, no compression)",
	BEddyNFS: "eddy daemon, cache on, nfs:// origin",
	BEddyNFSTTL: "eddy daemon, cache on, nfs:// origin, the whole dataset under --consistency '**=ttl:60s' " +
		"(an open trusts the last origin check for 60 s)",
	BEddySSHFS: "eddy daemon, cache on, path origin on an sshfs mount",
	BEddyLocal: "eddy daemon, cache on, path origin on the local copy (no network): eddy's own cost per operation",
}

// backend serves the dataset at a directory for the workloads.
type backend interface {
	name() string
	// prepare readies the backend for one run and returns the directory
	// holding the dataset. cold empties every cache first (the backend's
	// own, then the kernel's page cache, which on this one machine is also
	// the servers').
	prepare(ctx context.Context, cold bool) (string, error)
	close() error
}

// diagnoser is a backend that can explain a failure (the tail of its
// daemon's log).
type diagnoser interface {
	diagnostics() string
}

// streamer is a backend that reads a file as a byte stream (nfs-cat), for
// the sequential workload only.
type streamer interface {
	stream(ctx context.Context, name string) (io.ReadCloser, func() error, error)
}

// dropCaches writes dirty pages back and drops the page, dentry and inode
// caches of the whole machine.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// --- local ---

type localBackend struct{ root string }

func (b *localBackend) name() string { return BLocal }
func (b *localBackend) prepare(_ context.Context, cold bool) (string, error) {
	if cold {
		if err := dropCaches(); err != nil {
			return "", err
		}
	}
	return b.root, nil
}
func (b *localBackend) close() error { return nil }

// --- sshfs ---

type sshfsBackend struct {
	env    *env
	kcache bool
	mnt    string
	m      *topo.SSHFSMount
}

func (b *sshfsBackend) name() string {
	if b.kcache {
		return BSSHFSKC
	}
	return BSSHFS
}

func (b *sshfsBackend) prepare(ctx context.Context, cold bool) (string, error) {
	if b.m != nil && cold {
		if err := b.m.Unmount(); err != nil {
			return "", err
		}
		b.m = nil
	}
	if b.m == nil {
		s, err := b.env.sshClient(ctx)
		if err != nil {
			return "", err
		}
		if cold {
			if err := dropCaches(); err != nil {
				return "", err
			}
		}
		m, err := topo.MountSSHFS(ctx, s, topo.SSHFSOptions{Netns: b.env.clientNetns(), Remote: b.env.ds.Root,
			Mountpoint: b.mnt, KernelCache: b.kcache})
		if err != nil {
			return "", err
		}
		b.m = m
		b.env.noteCommand(b.name(), m.Args)
	}
	return b.mnt, nil
}

func (b *sshfsBackend) close() error {
	if b.m == nil {
		return nil
	}
	err := b.m.Unmount()
	b.m = nil
	return err
}

// --- eddy daemon (eddy-nfs, eddy-sshfs, and the nfs baseline with --no-cache) ---

type eddyBackend struct {
	env     *env
	bname   string
	noCache bool
	// origin returns the --origin value (starting servers or mounts it needs).
	origin func(ctx context.Context) (string, error)
	// resetOrigin, when set, empties the origin's own client-side caches
	// for a cold run (the sshfs mount under eddy-sshfs is remounted).
	resetOrigin func() error
	dir         string   // this backend's working directory
	denv        []string // more daemon environment (eddy-s3's keys)
	dflags      []string // more daemon flags (eddy-nfs-ttl's --consistency)
	d           *eddyDaemon
	gen         int // cache directories used so far
}

func (b *eddyBackend) name() string { return b.bname }

func (b *eddyBackend) prepare(ctx context.Context, cold bool) (string, error) {
	if b.d != nil && cold {
		if err := b.d.stop(); err != nil {
			return "", err
		}
		b.d = nil
		if b.resetOrigin != nil {
			if err := b.resetOrigin(); err != nil {
				return "", err
			}
		}
	}
	if b.d == nil {
		org, err := b.origin(ctx)
		if err != nil {
			return "", err
		}
		b.gen++
		cacheDir := filepath.Join(b.dir, fmt.Sprintf("cache-%d", b.gen))
		// Previous caches go: a new daemon starts from an empty cache dir.
		old, _ := filepath.Glob(filepath.Join(b.dir, "cache-*"))
		for _, o := range old {
			if err := os.RemoveAll(o); err != nil {
				return "", fmt.Errorf("remove old cache: %w", err)
			}
		}
		if cold {
			if err := dropCaches(); err != nil {
				return "", err
			}
		}
		d := &eddyDaemon{
			logLevel: b.env.cfg.DaemonLogLevel,
			bin:      b.env.cfg.Eddy, netns: b.env.clientNetns(), origin: org, noCache: b.noCache,
			mnt: filepath.Join(b.dir, "mnt"), cacheDir: cacheDir, socket: filepath.Join(b.dir, "eddy.sock"),
			logPath: filepath.Join(b.dir, fmt.Sprintf("daemon-%d.log", b.gen)), env: b.denv,
			extra: b.dflags,
		}
		if err := d.start(ctx); err != nil {
			return "", err
		}
		b.d = d
		b.env.noteCommand(b.name(), d.args)
	}
	return b.d.mnt, nil
}

// settler is a backend that finishes background work before warm runs.
type settler interface {
	// settle waits until the work is done (bounded by settleMax) and
	// returns how long that took and the bytes cached.
	settle(ctx context.Context, p *Progress, label string) (time.Duration, int64, error)
}

const (
	settlePoll   = time.Second
	settleStable = 3 // polls with cached bytes unchanged
	settleMax    = 5 * time.Minute
)

// settle waits until the daemon's cached bytes stop growing.
func (b *eddyBackend) settle(ctx context.Context, p *Progress, label string) (time.Duration, int64, error) {
	if b.noCache || b.d == nil {
		return 0, 0, nil
	}
	c := api.NewUnix(b.d.socket)
	start := time.Now()
	last, stable := int64(-1), 0
	p.Begin(label)
	for {
		st, err := c.CacheStats(ctx)
		if err != nil {
			return time.Since(start), 0, fmt.Errorf("settle %s: cache stats: %w", b.name(), err)
		}
		if st.CachedBytes == last {
			stable++
		} else {
			if last >= 0 {
				p.Add(st.CachedBytes-last, 0)
			}
			last, stable = st.CachedBytes, 0
		}
		if stable >= settleStable || time.Since(start) >= settleMax {
			return time.Since(start), last, nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), last, ctx.Err()
		case <-time.After(settlePoll):
		}
	}
}

func (b *eddyBackend) diagnostics() string {
	if b.d == nil {
		return ""
	}
	return "daemon log: " + logProblems(b.d.logPath, 12)
}

// logProblems returns the last n warning/error lines of a slog text log,
// or its tail when there are none.
func logProblems(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var hits []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "error") {
			hits = append(hits, l)
		}
	}
	if len(hits) == 0 {
		return tailFile(path, 1500)
	}
	if len(hits) > n {
		hits = hits[len(hits)-n:]
	}
	return strings.Join(hits, " | ")
}

func (b *eddyBackend) close() error {
	if b.d == nil {
		return nil
	}
	err := b.d.stop()
	b.d = nil
	return err
}

// eddyDaemon is one `eddy daemon` process started by the suite, in the
// client network namespace, in its own process group.
type eddyDaemon struct {
	bin, netns, origin, logLevel   string
	noCache                        bool
	mnt, cacheDir, socket, logPath string
	extra                          []string // more daemon flags (e.g. cluster mode)
	env                            []string // more environment (e.g. EDDY_TOKEN)
	args                           []string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// daemonArgs is the command line of `eddy daemon` (the cache, mount and origin flags).
func (d *eddyDaemon) daemonArgs() []string {
	a := []string{d.bin, "daemon", "--origin", d.origin, "--mount", d.mnt, "--socket", d.socket}
	if d.logLevel != "" {
		a = append(a, "--log-level", d.logLevel)
	}
	if d.noCache {
		a = append(a, "--no-cache")
	} else {
		a = append(a, "--cache-dir", d.cacheDir)
	}
	return append(a, d.extra...)
}

func (d *eddyDaemon) start(ctx context.Context) error {
	for _, dir := range []string{d.mnt, filepath.Dir(d.socket)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("start eddy daemon: %w", err)
		}
	}
	if !d.noCache {
		if err := os.MkdirAll(d.cacheDir, 0o755); err != nil {
			return fmt.Errorf("start eddy daemon: %w", err)
		}
	}
	d.args = d.daemonArgs()
	args := d.args
	if d.netns != "" {
		args = append([]string{"nsenter", "--net=" + topo.NetnsPath(d.netns), "--"}, args...)
	}
	logf, err := os.Create(d.logPath)
	if err != nil {
		return fmt.Errorf("start eddy daemon: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), "EDDY_SOCKET="+d.socket), d.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start eddy daemon: %w", err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { d.waitErr = cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, _ := topo.SSHMounted(d.mnt); ok {
			// The mount is up; wait until the root answers.
			if _, err := os.Stat(d.mnt); err == nil {
				return nil
			}
		}
		select {
		case <-d.done:
			return fmt.Errorf("start eddy daemon: exited (%v): %s", d.waitErr, tailFile(d.logPath, 800))
		case <-ctx.Done():
			_ = d.stop()
			return fmt.Errorf("start eddy daemon: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = d.stop()
			return fmt.Errorf("start eddy daemon: not mounted after 30s: %s", tailFile(d.logPath, 800))
		}
	}
}

// stop sends SIGTERM (the daemon unmounts), waits, then kills the group and
// detaches a mount left behind.
func (d *eddyDaemon) stop() error {
	if d.cmd == nil {
		return nil
	}
	var errs []error
	select {
	case <-d.done:
	default:
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			errs = append(errs, fmt.Errorf("eddy daemon %d ignored SIGTERM for 20s; killed", d.cmd.Process.Pid))
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-d.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("eddy daemon %d survived SIGKILL", d.cmd.Process.Pid))
			}
		}
	}
	if ok, _ := topo.SSHMounted(d.mnt); ok {
		errs = append(errs, fmt.Errorf("eddy daemon left %s mounted", d.mnt))
		if out, err := exec.Command("umount", "-l", d.mnt).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount -l %s: %w: %s", d.mnt, err, out))
		}
	}
	return errors.Join(errs...)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// --- nfs-cat ---

type nfsCatBackend struct{ env *env }

func (b *nfsCatBackend) name() string { return BNFSCat }

func (b *nfsCatBackend) prepare(ctx context.Context, cold bool) (string, error) {
	if _, err := b.env.nfsServer(ctx); err != nil {
		return "", err
	}
	if cold {
		if err := dropCaches(); err != nil {
			return "", err
		}
	}
	return "", nil
}

func (b *nfsCatBackend) close() error { return nil }

func (b *nfsCatBackend) stream(ctx context.Context, name string) (io.ReadCloser, func() error, error) {
	g, err := b.env.nfsServer(ctx)
	if err != nil {
		return nil, nil, err
	}
	url := g.URL() + "/" + name
	args := []string{"nsenter", "--net=" + topo.NetnsPath(b.env.clientNetns()), "--", "nfs-cat", url}
	b.env.noteCommand(BNFSCat, args)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("nfs-cat: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("nfs-cat: %w", err)
	}
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("nfs-cat %s: %w: %s", url, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	return out, wait, nil
}

// env holds what the backends share: the dataset, the topology and the
// servers, started on first use.
type env struct {
	cfg  *Config
	work string
	ds   *Dataset
	pair *topo.Pair

	sshOnce sync.Once
	sshd    *topo.SSHD
	sshErr  error

	nfsOnce sync.Once
	nfs     *topo.Ganesha
	nfsErr  error

	// s3 is the versitygw gateway of the S3 backends
	s3 s3State

	// sshfs mount used as eddy-sshfs's path origin
	originMnt *topo.SSHFSMount

	// lat is the one-way delay the proxied backends are measured at now;
	// proxies (by target address) add it, started on first use.
	lat     time.Duration
	proxies map[string]*topo.LatencyProxy
	// proxyStats sums, per delay, what the closed proxies forwarded.
	proxyStats map[time.Duration]topo.LatencyStats

	mu       sync.Mutex
	commands map[string][]string // guarded by mu: backend -> exact command line
	coldDone map[string]bool     // guarded by mu: backend/workload -> last cold run did all its work
}

func (e *env) clientNetns() string {
	if e.pair == nil {
		return ""
	}
	return e.pair.Client
}

// noteCommand records a backend's exact command line; under a delay, as
// "backend@+Nms" (its ports are the proxies').
func (e *env) noteCommand(backend string, args []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.commands == nil {
		e.commands = map[string][]string{}
	}
	key := backend
	if e.lat > 0 && Proxied(backend) {
		key += "@+" + fmtLatency(latencyMs(e.lat))
	}
	e.commands[key] = append([]string(nil), args...)
}

// setLatency switches the proxied backends to a new one-way delay: the
// mounts and proxies of the previous one go (the backends themselves were
// closed by the suite already).
func (e *env) setLatency(lat time.Duration) error {
	if lat == e.lat {
		return nil
	}
	err := e.resetSSHFSOrigin()
	err = errors.Join(err, e.closeProxies())
	e.lat = lat
	if err != nil {
		return fmt.Errorf("bench: switch to latency %s: %w", lat, err)
	}
	return nil
}

// proxy returns the latency proxy in front of target (host:port on the
// server side), starting it on first use. It runs in the server namespace
// and listens on the server's address, so clients cross the same shaped
// veth as without it and only the port changes; its hop to the real
// server is loopback inside that namespace (unshaped).
func (e *env) proxy(ctx context.Context, target string) (*topo.LatencyProxy, error) {
	if p := e.proxies[target]; p != nil {
		return p, nil
	}
	p, err := topo.StartLatencyProxy(ctx, topo.LatencyProxyOptions{Netns: e.pair.Server,
		Listen: net.JoinHostPort(e.pair.ServerAddr, "0"), Target: target, Delay: e.lat})
	if err != nil {
		return nil, fmt.Errorf("latency proxy for %s: %w", target, err)
	}
	if e.proxies == nil {
		e.proxies = map[string]*topo.LatencyProxy{}
	}
	e.proxies[target] = p
	return p, nil
}

func (e *env) closeProxies() error {
	var errs []error
	for t, p := range e.proxies {
		errs = append(errs, p.Close())
		delete(e.proxies, t)
		if e.proxyStats == nil {
			e.proxyStats = map[time.Duration]topo.LatencyStats{}
		}
		st, sum := p.Stats(), e.proxyStats[p.Delay()]
		sum.Connections += st.Connections
		sum.Chunks += st.Chunks
		sum.Bytes += st.Bytes
		sum.Late += st.Late
		sum.MaxLate = max(sum.MaxLate, st.MaxLate)
		e.proxyStats[p.Delay()] = sum
	}
	return errors.Join(errs...)
}

// latencyProxies reports, per delay, how closely the proxies kept it.
func (e *env) latencyProxies() []ProxyStats {
	var out []ProxyStats
	for d, st := range e.proxyStats {
		ps := ProxyStats{LatencyMs: latencyMs(d), Connections: st.Connections, Chunks: st.Chunks, Bytes: st.Bytes,
			MaxLateUs: float64(st.MaxLate) / float64(time.Microsecond)}
		if st.Chunks > 0 {
			ps.MeanLateUs = float64(st.Late) / float64(st.Chunks) / float64(time.Microsecond)
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b ProxyStats) int { return cmp.Compare(a.LatencyMs, b.LatencyMs) })
	return out
}

// sshClient is the sshd as the client side should reach it: directly, or
// through the latency proxy under a delay.
func (e *env) sshClient(ctx context.Context) (*topo.SSHD, error) {
	s, err := e.sshServer(ctx)
	if err != nil || e.lat == 0 {
		return s, err
	}
	p, err := e.proxy(ctx, net.JoinHostPort(s.Addr(), fmt.Sprint(s.Port())))
	if err != nil {
		return nil, err
	}
	return s.Via(s.Addr(), p.Port()), nil
}

// nfsOrigin is the nfs:// origin of the export: directly, or under a
// delay through two latency proxies (NFS and MOUNT; both ports are in
// the URL, so the portmapper is not used).
func (e *env) nfsOrigin(ctx context.Context) (string, error) {
	g, err := e.nfsServer(ctx)
	if err != nil {
		return "", err
	}
	if e.lat == 0 {
		return g.URL(), nil
	}
	pn, err := e.proxy(ctx, net.JoinHostPort(g.Addr(), fmt.Sprint(topo.GaneshaNFSPort)))
	if err != nil {
		return "", err
	}
	pm, err := e.proxy(ctx, net.JoinHostPort(g.Addr(), fmt.Sprint(topo.GaneshaMountPort)))
	if err != nil {
		return "", err
	}
	return g.URLVia(g.Addr(), pn.Port(), pm.Port()), nil
}

func (e *env) sshServer(ctx context.Context) (*topo.SSHD, error) {
	e.sshOnce.Do(func() {
		if e.pair == nil {
			e.sshErr = errors.New("no network topology")
			return
		}
		e.sshd, e.sshErr = topo.StartSSHD(ctx, topo.SSHDConfig{Netns: e.pair.Server, Addr: e.pair.ServerAddr,
			Port: sshPort, Dir: filepath.Join(e.work, "sshd")})
	})
	return e.sshd, e.sshErr
}

func (e *env) nfsServer(ctx context.Context) (*topo.Ganesha, error) {
	e.nfsOnce.Do(func() {
		if e.pair == nil {
			e.nfsErr = errors.New("no network topology")
			return
		}
		e.nfs, e.nfsErr = topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: e.pair.Server, Addr: e.pair.ServerAddr,
			Export: e.ds.Root, ReadyFrom: e.pair.Client})
	})
	return e.nfs, e.nfsErr
}

// sshfsOrigin mounts (once) the plain sshfs mount eddy-sshfs uses as its
// origin directory.
func (e *env) sshfsOrigin(ctx context.Context) (string, error) {
	if e.originMnt != nil {
		return e.originMnt.Mountpoint, nil
	}
	s, err := e.sshClient(ctx)
	if err != nil {
		return "", err
	}
	m, err := topo.MountSSHFS(ctx, s, topo.SSHFSOptions{Netns: e.clientNetns(), Remote: e.ds.Root,
		Mountpoint: filepath.Join(e.work, "origin-sshfs")})
	if err != nil {
		return "", fmt.Errorf("sshfs origin: %w", err)
	}
	e.originMnt = m
	return m.Mountpoint, nil
}

// resetSSHFSOrigin unmounts eddy-sshfs's origin mount; the next
// sshfsOrigin mounts it afresh.
func (e *env) resetSSHFSOrigin() error {
	if e.originMnt == nil {
		return nil
	}
	err := e.originMnt.Unmount()
	e.originMnt = nil
	return err
}

// close stops the shared servers and mounts.
func (e *env) close() error {
	var errs []error
	if e.originMnt != nil {
		errs = append(errs, e.originMnt.Unmount())
		e.originMnt = nil
	}
	errs = append(errs, e.closeProxies())
	if e.sshd != nil {
		errs = append(errs, e.sshd.Stop())
		e.sshd = nil
	}
	if e.nfs != nil {
		errs = append(errs, e.nfs.Close())
		e.nfs = nil
	}
	errs = append(errs, e.closeS3())
	return errors.Join(errs...)
}

const sshPort = 2278

func newBackend(e *env, name string) (backend, error) {
	dir := filepath.Join(e.work, name)
	switch name {
	case BLocal:
		return &localBackend{root: e.ds.Root}, nil
	case BSSHFS, BSSHFSKC:
		return &sshfsBackend{env: e, kcache: name == BSSHFSKC, mnt: filepath.Join(e.work, "mnt-"+name)}, nil
	case BNFSCat:
		return &nfsCatBackend{env: e}, nil
	case BNFS, BEddyNFS:
		return &eddyBackend{env: e, bname: name, noCache: name == BNFS, dir: dir,
			origin: e.nfsOrigin}, nil
	case BEddyNFSTTL:
		return &eddyBackend{env: e, bname: name, dir: dir, origin: e.nfsOrigin,
			dflags: []string{"--consistency", "**=ttl:60s"}}, nil
	case BEddySSHFS:
		return &eddyBackend{env: e, bname: name, dir: dir, origin: e.sshfsOrigin, resetOrigin: e.resetSSHFSOrigin}, nil
	case BEddyLocal:
		return &eddyBackend{env: e, bname: name, dir: dir,
			origin: func(context.Context) (string, error) { return e.ds.Root, nil }}, nil
	case BS3FS, BRclone, BEddyS3:
		return newS3Backend(e, name, dir)
	}
	return nil, fmt.Errorf("unknown backend %q (want one of %s)", name, strings.Join(KnownBackends(), ","))
}
