package topo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SSHDConfig describes a private sshd: its own host key, its own client key,
// its own config file, listening on one address and port. Netns, when set,
// is the name of a network namespace under /run/netns that sshd runs in; ""
// means the caller's namespace (then listen on a loopback address).
type SSHDConfig struct {
	Netns string
	Addr  string // listen address, e.g. 10.78.0.1 or 127.0.0.1
	Port  int
	Dir   string // state directory (keys, config); created if missing, owned by the caller
}

// SSHD is a running sshd started by StartSSHD. Stop it with Stop.
type SSHD struct {
	cfg       SSHDConfig
	ClientKey string // private key file the server accepts for root
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	waitErr   error         // set before done is closed

	mu  sync.Mutex
	log []string // guarded by mu: last stderr lines
}

// Addr and Port return where the server listens.
func (s *SSHD) Addr() string { return s.cfg.Addr }
func (s *SSHD) Port() int    { return s.cfg.Port }

// StartSSHD generates keys and a config under cfg.Dir and starts sshd in the
// foreground (-D -e), in its own process group, inside cfg.Netns when set.
// It returns once sshd reports that it listens. The caller must call Stop.
func StartSSHD(ctx context.Context, cfg SSHDConfig) (*SSHD, error) {
	if cfg.Addr == "" || cfg.Port == 0 || cfg.Dir == "" {
		return nil, fmt.Errorf("start sshd: Addr, Port and Dir are required")
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/sshd"); serr != nil {
			return nil, fmt.Errorf("start sshd: %w", err)
		}
		sshd = "/usr/sbin/sshd"
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	// sshd insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("start sshd: privsep dir: %w", err)
	}
	hostKey := filepath.Join(cfg.Dir, "host_ed25519")
	clientKey := filepath.Join(cfg.Dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if _, err := os.Stat(k); err == nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "eddy-bench", "-f", k).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("start sshd: ssh-keygen %s: %w: %s", k, err, strings.TrimSpace(string(out)))
		}
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	authKeys := filepath.Join(cfg.Dir, "authorized_keys")
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	conf := filepath.Join(cfg.Dir, "sshd_config")
	text := strings.Join([]string{
		"ListenAddress " + cfg.Addr,
		"Port " + strconv.Itoa(cfg.Port),
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authKeys,
		"PidFile none",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"UseDNS no",
		"PrintMotd no",
		"LogLevel INFO",
		"Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",
		"Subsystem sftp internal-sftp",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}

	args := []string{sshd, "-D", "-e", "-f", conf}
	if cfg.Netns != "" {
		args = append([]string{"ip", "netns", "exec", cfg.Netns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	s := &SSHD{cfg: cfg, ClientKey: clientKey, cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go s.scan(stderr, ready)
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()

	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("start sshd: exited: %v: %s", s.waitErr, s.lastLog())
	case <-timer.C:
		_ = s.Stop()
		return nil, fmt.Errorf("start sshd: not listening after 10s: %s", s.lastLog())
	case <-ctx.Done():
		_ = s.Stop()
		return nil, fmt.Errorf("start sshd: %w", ctx.Err())
	}
}

func (s *SSHD) scan(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		s.log = append(s.log, line)
		if len(s.log) > 50 {
			s.log = s.log[len(s.log)-50:]
		}
		s.mu.Unlock()
		if !signalled && strings.Contains(line, "Server listening on") {
			signalled = true
			close(ready)
		}
	}
}

func (s *SSHD) lastLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.log)
	if n > 5 {
		return strings.Join(s.log[n-5:], " | ")
	}
	return strings.Join(s.log, " | ")
}

// Stop terminates sshd (and the sessions it forked, which share its process
// group) and waits for it. Safe to call more than once.
func (s *SSHD) Stop() error {
	return sshStopGroup(s.cmd, s.done, 5*time.Second)
}

// sshStopGroup sends SIGTERM to the process group of cmd, waits up to grace,
// then SIGKILLs the group.
func sshStopGroup(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) error {
	if cmd.Process == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("process %d did not exit after SIGKILL", pgid)
	}
}

// SSHFSOptions says how to mount the server's directory with sshfs.
type SSHFSOptions struct {
	Netns       string // client network namespace ("" = the caller's); entered with nsenter --net so the mount stays visible
	Remote      string // absolute directory on the server
	Mountpoint  string // created if missing
	KernelCache bool   // -o kernel_cache
	Extra       []string
}

// SSHFSMount is a running sshfs (foreground, own process group).
type SSHFSMount struct {
	Mountpoint string
	Args       []string // the exact command line, for the record
	cmd        *exec.Cmd
	done       chan struct{}
	waitErr    error
	out        *sshTail
}

// SSHFSCiphers is the cipher the benchmark and tests use: the fastest on
// these machines, which have AES-NI.
const SSHFSCiphers = "aes128-gcm@openssh.com"

// MountSSHFS mounts s's opts.Remote at opts.Mountpoint with sshfs, from
// opts.Netns, with aes128-gcm and no compression. It returns once the mount
// is visible in this process's mount namespace.
func MountSSHFS(ctx context.Context, s *SSHD, opts SSHFSOptions) (*SSHFSMount, error) {
	if err := os.MkdirAll(opts.Mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("mount sshfs: %w", err)
	}
	o := []string{
		"port=" + strconv.Itoa(s.Port()),
		"IdentityFile=" + s.ClientKey,
		"StrictHostKeyChecking=no",
		"UserKnownHostsFile=/dev/null",
		"BatchMode=yes",
		"LogLevel=ERROR",
		"Ciphers=" + SSHFSCiphers,
		"Compression=no",
	}
	if opts.KernelCache {
		o = append(o, "kernel_cache")
	}
	o = append(o, opts.Extra...)
	args := []string{"sshfs", "-f", "-o", strings.Join(o, ","),
		"root@" + s.Addr() + ":" + opts.Remote, opts.Mountpoint}
	if opts.Netns != "" {
		args = append([]string{"nsenter", "--net=/run/netns/" + opts.Netns, "--"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	tail := &sshTail{}
	cmd.Stdout = tail
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("mount sshfs: %w", err)
	}
	m := &SSHFSMount{Mountpoint: opts.Mountpoint, Args: args, cmd: cmd, done: make(chan struct{}), out: tail}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ok, _ := SSHMounted(opts.Mountpoint); ok {
			return m, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("mount sshfs: exited: %v: %s", m.waitErr, tail.String())
		case <-ctx.Done():
			_ = m.Unmount()
			return nil, fmt.Errorf("mount sshfs: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = m.Unmount()
			return nil, fmt.Errorf("mount sshfs: not mounted after 15s: %s", tail.String())
		}
	}
}

// Unmount unmounts and waits for sshfs to exit; on a hang it kills sshfs
// and detaches the mount lazily, so nothing is left behind.
func (m *SSHFSMount) Unmount() error {
	var errs []error
	if ok, _ := SSHMounted(m.Mountpoint); ok {
		if out, err := exec.Command("umount", m.Mountpoint).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w: %s", m.Mountpoint, err, strings.TrimSpace(string(out))))
		}
	}
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		errs = append(errs, sshStopGroup(m.cmd, m.done, 2*time.Second))
	}
	if ok, _ := SSHMounted(m.Mountpoint); ok {
		out, err := exec.Command("umount", "-l", m.Mountpoint).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("umount -l %s: %w: %s", m.Mountpoint, err, strings.TrimSpace(string(out))))
		}
	} else if len(errs) > 0 {
		// Unmounted in the end (sshfs exited): the earlier umount failure does not matter.
		errs = nil
	}
	return errors.Join(errs...)
}

// SSHMounted reports whether dir is a mount point in this process's mount
// namespace (/proc/self/mountinfo).
func SSHMounted(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && sshUnescapeMount(f[4]) == abs {
			return true, nil
		}
	}
	return false, nil
}

func sshUnescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sshTail keeps the last few KiB written to it (a child's output).
type sshTail struct {
	mu  sync.Mutex
	buf []byte // guarded by mu
}

func (t *sshTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *sshTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
