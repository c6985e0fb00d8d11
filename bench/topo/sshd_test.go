package topo

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func sshNeed(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd host keys, FUSE mount")
	}
	for _, bin := range []string{"ssh-keygen", "sshfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh ssh): %v", bin, err)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

func sshFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSSHDAndSSHFS starts a private sshd on loopback, mounts a directory
// with sshfs (with and without kernel_cache), reads a file through it and
// checks that everything is gone after Stop/Unmount.
func TestSSHDAndSSHFS(t *testing.T) {
	sshNeed(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	export := filepath.Join(dir, "export")
	if err := os.MkdirAll(export, 0o755); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("ebn-sshfs "), 100000)
	if err := os.WriteFile(filepath.Join(export, "f.bin"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := StartSSHD(ctx, SSHDConfig{Addr: "127.0.0.1", Port: sshFreePort(t), Dir: filepath.Join(dir, "sshd")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})

	for _, tc := range []struct {
		name   string
		kcache bool
	}{{"plain", false}, {"kernel_cache", true}} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := filepath.Join(dir, "mnt-"+tc.name)
			m, err := MountSSHFS(ctx, s, SSHFSOptions{Remote: export, Mountpoint: mnt, KernelCache: tc.kcache})
			if err != nil {
				t.Fatal(err)
			}
			unmounted := false
			t.Cleanup(func() {
				if !unmounted {
					_ = m.Unmount()
				}
			})
			got, err := os.ReadFile(filepath.Join(mnt, "f.bin"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes through sshfs, differ from the %d written", len(got), len(want))
			}
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			unmounted = true
			if ok, err := SSHMounted(mnt); err != nil || ok {
				t.Fatalf("still mounted after Unmount: %v %v", ok, err)
			}
			select {
			case <-m.done:
			default:
				t.Fatal("sshfs still running after Unmount")
			}
		})
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	default:
		t.Fatal("sshd still running after Stop")
	}
}

func TestStartSSHDBadConfig(t *testing.T) {
	if _, err := StartSSHD(context.Background(), SSHDConfig{}); err == nil {
		t.Fatal("StartSSHD with an empty config succeeded")
	}
}
