package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A task's owner can read its logs through the share: the share's logs/
// directory is traversable by everyone (also one an earlier version left
// 0700), and the task's own log directory belongs to its user.
func TestLogsReadableByOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a command as another user: needs root")
	}
	share := t.TempDir()
	if err := os.Chmod(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(share); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
		}
	}
	// As an earlier version left it.
	if err := os.Mkdir(filepath.Join(share, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "t2"} {
		dir := filepath.Join(share, "logs", id)
		out, errOut, err := openLogs(Spec{LogDir: dir, Uid: 65534, Gid: 65534})
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("hello from " + id + "\n")
		out.Close()
		errOut.Close()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: owner %d mode %o, want the task's user and 0700", dir, st.Uid, fi.Mode().Perm())
		}
		cmd := exec.Command("cat", filepath.Join(dir, "stdout.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		b, err := cmd.CombinedOutput()
		if err != nil || string(b) != "hello from "+id+"\n" {
			t.Fatalf("the task's user reads its log: %q %v", b, err)
		}
		cmd = exec.Command("cat", filepath.Join(dir, "stdout.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65533, Gid: 65533}}
		if b, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("another user read the task's log: %q", b)
		}
	}
	if fi, _ := os.Stat(filepath.Join(share, "logs")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("logs/ has mode %o, want 0755", fi.Mode().Perm())
	}
}
