package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
)

// S3 backends: a versitygw gateway in the server namespace serves the
// dataset as a bucket (uploaded once, before the first S3 run); the
// client side reads it over the same shaped link with s3fs, rclone mount
// and the eddy daemon's s3:// origin.
const (
	BS3FS   = "s3fs"
	BRclone = "rclone"
	BEddyS3 = "eddy-s3"
	// S3Backends are the S3 backends, measured only when asked for.
	S3Backends = "s3fs,rclone,eddy-s3"
)

const (
	s3Bucket = "eddy-bench"
	s3Port   = 7070
	// Fixed keys of the private gateway; it listens only inside the
	// suite's namespaces.
	s3Access = "EDDYBENCHKEY"
	s3Secret = "eddy-bench-secret-key"
	// s3SeedWorkers is how many uploads seed the bucket at a time.
	s3SeedWorkers = 8
)

func init() {
	backendLabels[BS3FS] = "s3fs-fuse over versitygw (path-style requests, its default: no disk cache)"
	backendLabels[BRclone] = "rclone mount of the bucket, --vfs-cache-mode full (disk cache under the work dir)"
	backendLabels[BEddyS3] = "eddy daemon, cache on, s3:// origin (the same versitygw bucket)"
}

// IsS3Backend reports whether a backend reads the versitygw bucket.
func IsS3Backend(name string) bool {
	switch name {
	case BS3FS, BRclone, BEddyS3:
		return true
	}
	return false
}

// FindVersityGW returns the versitygw binary: on PATH, else the one
// scripts/versitygw.sh builds under .tools/versitygw/bin, looked for from
// the current directory and from the eddy binary's parent directory.
func FindVersityGW(eddy string) string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	rel := filepath.Join(".tools", "versitygw", "bin", "versitygw")
	cands := []string{rel}
	if eddy != "" {
		cands = append(cands, filepath.Join(filepath.Dir(filepath.Dir(eddy)), rel))
	}
	for _, c := range cands {
		if abs, err := filepath.Abs(c); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	return rel
}

// versityGWVersion is the version scripts/versitygw.sh stamped next to
// the binary (its own --version says only "git"), else the binary's path.
func versityGWVersion(bin string) string {
	if v, err := os.ReadFile(filepath.Join(filepath.Dir(bin), ".version")); err == nil {
		return strings.TrimSpace(string(v)) + " (" + bin + ")"
	}
	return bin
}

// s3State is the gateway the S3 backends share, started and seeded on
// first use.
type s3State struct {
	once sync.Once
	gw   *topo.VersityGW
	err  error
}

func (e *env) s3Server(ctx context.Context) (*topo.VersityGW, error) {
	e.s3.once.Do(func() {
		if e.pair == nil {
			e.s3.err = errors.New("no network topology")
			return
		}
		gw, err := topo.StartVersityGW(ctx, topo.VersityGWOptions{Bin: e.cfg.VersityGW, Netns: e.pair.Server,
			Addr: e.pair.ServerAddr, Port: s3Port, Dir: filepath.Join(e.work, "versitygw"),
			Access: s3Access, Secret: s3Secret, ReadyFrom: e.pair.Client})
		if err != nil {
			e.s3.err = err
			return
		}
		e.noteCommand("versitygw", gw.Args)
		// Seeded from inside the server namespace: the upload does not
		// cross the shaped link.
		if _, _, err := gw.Seed(ctx, e.pair.Server, s3Bucket, e.ds.Root, s3SeedWorkers); err != nil {
			_ = gw.Close()
			e.s3.err = fmt.Errorf("seed bucket: %w", err)
			return
		}
		e.s3.gw = gw
	})
	return e.s3.gw, e.s3.err
}

// s3Endpoint is the gateway's http:// URL as the client side should reach
// it: directly, or through the latency proxy under a delay.
func (e *env) s3Endpoint(ctx context.Context) (string, error) {
	gw, err := e.s3Server(ctx)
	if err != nil {
		return "", err
	}
	if e.lat == 0 {
		return gw.Endpoint(), nil
	}
	p, err := e.proxy(ctx, gw.HostPort())
	if err != nil {
		return "", err
	}
	return "http://" + net.JoinHostPort(gw.Addr(), strconv.Itoa(p.Port())), nil
}

// s3Origin is eddy-s3's --origin.
func (e *env) s3Origin(ctx context.Context) (string, error) {
	ep, err := e.s3Endpoint(ctx)
	if err != nil {
		return "", err
	}
	return "s3://" + s3Bucket + "?endpoint=" + url.QueryEscape(ep) + "&path_style=1", nil
}

func (e *env) closeS3() error {
	if e.s3.gw == nil {
		return nil
	}
	err := e.s3.gw.Close()
	e.s3.gw = nil
	return err
}

func newS3Backend(e *env, name, dir string) (backend, error) {
	switch name {
	case BEddyS3:
		// The keys reach the daemon in its environment, never its command line.
		return &eddyBackend{env: e, bname: name, dir: dir, origin: e.s3Origin,
			denv: []string{"AWS_ACCESS_KEY_ID=" + s3Access, "AWS_SECRET_ACCESS_KEY=" + s3Secret}}, nil
	case BS3FS, BRclone:
		return &s3MountBackend{env: e, bname: name, dir: dir}, nil
	}
	return nil, fmt.Errorf("unknown S3 backend %q", name)
}

// s3MountBackend is s3fs or rclone mount of the bucket, in the client
// namespace. A cold run remounts (and empties rclone's disk cache);
// warm-dropped keeps the mount and rclone's disk cache.
type s3MountBackend struct {
	env   *env
	bname string
	dir   string
	gen   int
	m     *fuseProc
}

func (b *s3MountBackend) name() string { return b.bname }

func (b *s3MountBackend) prepare(ctx context.Context, cold bool) (string, error) {
	if b.m != nil && cold {
		if err := b.m.stop(); err != nil {
			return "", err
		}
		b.m = nil
	}
	if b.m != nil {
		return b.m.mnt, nil
	}
	ep, err := b.env.s3Endpoint(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return "", err
	}
	b.gen++
	old, _ := filepath.Glob(filepath.Join(b.dir, "cache-*"))
	for _, o := range old {
		if err := os.RemoveAll(o); err != nil {
			return "", fmt.Errorf("remove old cache: %w", err)
		}
	}
	mnt := filepath.Join(b.dir, "mnt")
	var args []string
	switch b.bname {
	case BS3FS:
		pw := filepath.Join(b.dir, "passwd-s3fs")
		if err := os.WriteFile(pw, []byte(s3Access+":"+s3Secret+"\n"), 0o600); err != nil {
			return "", err
		}
		args = []string{"s3fs", s3Bucket, mnt, "-f", "-o",
			"url=" + ep + ",use_path_request_style,passwd_file=" + pw}
	case BRclone:
		conf := filepath.Join(b.dir, "rclone.conf")
		c := fmt.Sprintf("[bench]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = %s\n"+
			"secret_access_key = %s\nendpoint = %s\nregion = us-east-1\nforce_path_style = true\n", s3Access, s3Secret, ep)
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			return "", err
		}
		args = []string{"rclone", "mount", "bench:" + s3Bucket, mnt, "--config", conf,
			"--vfs-cache-mode", "full", "--cache-dir", filepath.Join(b.dir, fmt.Sprintf("cache-%d", b.gen))}
	}
	if cold {
		if err := dropCaches(); err != nil {
			return "", err
		}
	}
	m := &fuseProc{args: args, netns: b.env.clientNetns(), mnt: mnt,
		logPath: filepath.Join(b.dir, fmt.Sprintf("%s-%d.log", b.bname, b.gen))}
	if err := m.start(ctx); err != nil {
		return "", fmt.Errorf("%s: %w", b.bname, err)
	}
	b.m = m
	b.env.noteCommand(b.bname, args)
	return mnt, nil
}

func (b *s3MountBackend) close() error {
	if b.m == nil {
		return nil
	}
	err := b.m.stop()
	b.m = nil
	return err
}

func (b *s3MountBackend) diagnostics() string {
	if b.m == nil {
		return ""
	}
	return b.bname + " log: " + tailFile(b.m.logPath, 1200)
}

// fuseProc is a FUSE file system process in the foreground (s3fs -f,
// rclone mount), in the client namespace and its own process group.
type fuseProc struct {
	args          []string
	netns         string
	mnt, logPath  string
	cmd           *exec.Cmd
	done          chan struct{}
	waitErr       error
	startDeadline time.Duration
}

func (f *fuseProc) start(ctx context.Context) error {
	if err := os.MkdirAll(f.mnt, 0o755); err != nil {
		return err
	}
	args := f.args
	if f.netns != "" {
		args = append([]string{"nsenter", "--net=" + topo.NetnsPath(f.netns), "--"}, args...)
	}
	logf, err := os.Create(f.logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	// The keys come from the files written for it; AWS_* of the caller
	// (a CA bundle, keys of another account) must not change how it talks
	// to the plain-http gateway.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	f.cmd, f.done = cmd, make(chan struct{})
	go func() { f.waitErr = cmd.Wait(); close(f.done) }()
	limit := f.startDeadline
	if limit == 0 {
		limit = 30 * time.Second
	}
	deadline := time.Now().Add(limit)
	for {
		if ok, _ := topo.SSHMounted(f.mnt); ok {
			if _, err := os.ReadDir(f.mnt); err == nil {
				return nil
			}
		}
		select {
		case <-f.done:
			return fmt.Errorf("exited (%v): %s", f.waitErr, tailFile(f.logPath, 800))
		case <-ctx.Done():
			_ = f.stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = f.stop()
			return fmt.Errorf("not mounted after %s: %s", limit, tailFile(f.logPath, 800))
		}
	}
}

// stop unmounts, waits for the process to exit, and on a hang kills its
// group and detaches the mount lazily.
func (f *fuseProc) stop() error {
	if f.cmd == nil {
		return nil
	}
	var errs []error
	if ok, _ := topo.SSHMounted(f.mnt); ok {
		if out, err := exec.Command("umount", f.mnt).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w: %s", f.mnt, err, strings.TrimSpace(string(out))))
		}
	}
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
			<-f.done
		}
	}
	if ok, _ := topo.SSHMounted(f.mnt); ok {
		if out, err := exec.Command("umount", "-l", f.mnt).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount -l %s: %w: %s", f.mnt, err, strings.TrimSpace(string(out))))
		}
	} else {
		errs = nil // unmounted in the end
	}
	f.cmd = nil
	return errors.Join(errs...)
}
