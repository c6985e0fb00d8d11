package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
)

// privateContainerd is a containerd this runtime started with its own root, state and socket.
type privateContainerd struct {
	dir     string
	sock    string
	pidPath string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *os.File
}

// containerdBinaries are what a private containerd needs to run containers.
var containerdBinaries = []string{"containerd", "containerd-shim-runc-v2", "runc"}

// privateStateExists reports whether a private containerd ran under dir before (its root
// holds images and containers).
func privateStateExists(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "root"))
	return err == nil && fi.IsDir()
}

// containerdSocketLimit is the longest socket path containerd accepts: it refuses any over
// 104 bytes (the smallest sun_path among the systems it runs on), whatever Linux allows.
const containerdSocketLimit = 104

// ttrpcSuffix is what the private config appends to the gRPC socket for the ttrpc one: the
// longer of the two paths containerd listens on, so the one the length check must count.
const ttrpcSuffix = ".ttrpc"

// PrivateContainerdSocket is the socket of the private containerd under dir (for `ctr -a`):
// dir/containerd.sock, or a name under /run derived from dir when the ttrpc socket beside it
// (containerd.sock.ttrpc) would be too long for containerd.
func PrivateContainerdSocket(dir string) string {
	sock := filepath.Join(dir, "containerd.sock")
	if len(sock)+len(ttrpcSuffix) > containerdSocketLimit {
		sock = fmt.Sprintf("/run/eddy-containerd-%016x.sock", xxhash.Sum64String(dir))
	}
	return sock
}

// startContainerd starts containerd with a private config under dir (CRI disabled) and waits
// until its socket answers. A containerd that an earlier daemon started with the same config
// and left running (the daemon was killed) is stopped first, by the PID it recorded.
func startContainerd(ctx context.Context, dir string) (*privateContainerd, error) {
	var bin string
	for _, name := range containerdBinaries {
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("start containerd: %w: %s is not installed (not in PATH)", ErrNoContainerd, name)
		}
		if name == "containerd" {
			bin = p
		}
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	sock := PrivateContainerdSocket(dir)
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+ttrpcSuffix)
	cfgPath := filepath.Join(dir, "config.toml")
	pidPath := filepath.Join(dir, "containerd.pid")
	stopStale(pidPath, cfgPath)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	_ = os.Remove(sock)
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	p := &privateContainerd{dir: dir, sock: sock, pidPath: pidPath, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { _ = cmd.Wait(); close(p.done) }()
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		p.stop()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			logf.Close()
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			return nil, fmt.Errorf("start containerd: exited early: %s", tail(string(b), 600))
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("start containerd: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("start containerd: socket did not answer within 15s")
		}
	}
}

// stop terminates containerd (by PID): SIGTERM, then SIGKILL after 10 s. Shims of running
// containers are separate processes and keep running.
func (p *privateContainerd) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
	_ = os.Remove(p.pidPath)
	// containerd leaves its ttrpc socket behind; a fallback one under /run would pile up.
	_ = os.Remove(p.sock)
	_ = os.Remove(p.sock + ttrpcSuffix)
	return nil
}

// stopStale stops the containerd recorded in pidPath if it still runs with the config at
// cfgPath (so it is one an earlier daemon started here): SIGTERM, then SIGKILL after 10 s.
func stopStale(pidPath, cfgPath string) {
	b, err := os.ReadFile(pidPath)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "\x00"+cfgPath) {
		return // gone, or the PID now belongs to something else
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(100 * time.Millisecond)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
