package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// privateContainerd is a containerd this runtime started with its own root, state and socket.
type privateContainerd struct {
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startContainerd starts containerd with a private config under dir (CRI disabled) and waits
// until its socket answers.
func startContainerd(ctx context.Context, dir string) (*privateContainerd, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	if len(sock) > 100 {
		return nil, fmt.Errorf("start containerd: socket path %s too long for a unix socket", sock)
	}
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
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
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
	p := &privateContainerd{dir: dir, sock: sock, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { _ = cmd.Wait(); close(p.done) }()
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
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
