package fusefs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/eddy-cluster/eddy/origin"
)

// nobody is the unprivileged user the permission tests run commands as.
const nobody = 65534

// traversable opens every directory from p up to / for others (x), so an
// unprivileged user can reach a test's temp dirs; it undoes nothing, the
// dirs are the test's own.
func traversable(t *testing.T, p string) {
	t.Helper()
	for d := p; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// asNobody runs a command as uid/gid 65534 and reports whether it succeeded.
func asNobody(t *testing.T, name string, args ...string) (bool, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

// The mount reports each object's mode, owner, link count, size and times
// as the origin has them, and an unprivileged user is refused through the
// mount exactly where the origin refuses them (mode 0000 included: go-fuse
// would report 0644 for it unless told not to).
func TestPermissionsAsOrigin(t *testing.T) {
	for _, withCache := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocache", true: "cache"}[withCache], func(t *testing.T) {
			dir := t.TempDir()
			traversable(t, dir)
			files := []struct {
				name string
				mode os.FileMode
				uid  int
			}{
				{"zero", 0, 0},
				{"private", 0o600, 0},
				{"public", 0o644, 0},
				{"nobodys", 0o600, nobody},
				{"setgid", 0o2755, 0},
			}
			for _, f := range files {
				writeFile(t, filepath.Join(dir, f.name), []byte("secret "+f.name))
				if err := os.Chown(filepath.Join(dir, f.name), f.uid, f.uid); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(filepath.Join(dir, f.name), f.mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Link(filepath.Join(dir, "public"), filepath.Join(dir, "public-link")); err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				name string
				mode os.FileMode
			}{{"dzero", 0}, {"dexec", 0o711}, {"dopen", 0o755}, {"dsticky", 0o1777}} {
				p := filepath.Join(dir, d.name)
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(p, "inner"), []byte("inner of "+d.name))
				if err := os.Chmod(filepath.Join(p, "inner"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, d.mode); err != nil {
					t.Fatal(err)
				}
			}
			var c Cache
			if withCache {
				org, _ := origin.NewPath(dir)
				defer org.Close()
				c = newFakeCache(t, org)
			}
			_, mp := mountT(t, dir, c, Options{})
			traversable(t, mp)

			names := []string{"zero", "private", "public", "public-link", "nobodys", "setgid",
				"dzero", "dexec", "dopen", "dsticky", "dexec/inner", "dopen/inner"}
			for _, name := range names {
				var o, m syscall.Stat_t
				if err := syscall.Lstat(filepath.Join(dir, name), &o); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Lstat(filepath.Join(mp, name), &m); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if o.Mode != m.Mode || o.Uid != m.Uid || o.Gid != m.Gid || o.Nlink != m.Nlink || o.Size != m.Size ||
					o.Mtim != m.Mtim || o.Ctim != m.Ctim {
					t.Errorf("%s: mount shows mode %o uid %d gid %d nlink %d size %d mtime %v ctime %v; origin mode %o uid %d gid %d nlink %d size %d mtime %v ctime %v",
						name, m.Mode, m.Uid, m.Gid, m.Nlink, m.Size, m.Mtim, m.Ctim, o.Mode, o.Uid, o.Gid, o.Nlink, o.Size, o.Mtim, o.Ctim)
				}
			}

			// The same commands as nobody, on the origin and through the mount.
			checks := [][]string{
				{"cat", "zero"}, {"cat", "private"}, {"cat", "public"}, {"cat", "nobodys"},
				{"ls", "dzero"}, {"cat", "dzero/inner"}, {"ls", "dexec"}, {"cat", "dexec/inner"},
				{"ls", "dopen"}, {"cat", "dopen/inner"}, {"touch", "dopen/new"}, {"touch", "dsticky/new"},
				{"sh", "-c", "echo x >> public"}, {"sh", "-c", "echo x >> nobodys"}, {"rm", "-f", "dsticky/inner"},
			}
			for _, cmd := range checks {
				args := append([]string(nil), cmd[1:]...)
				last := len(args) - 1
				orgArgs := append([]string(nil), args...)
				mntArgs := append([]string(nil), args...)
				if cmd[0] == "sh" {
					orgArgs[last] = "cd " + dir + " && " + args[last]
					mntArgs[last] = "cd " + mp + " && " + args[last]
				} else {
					orgArgs[last] = filepath.Join(dir, args[last])
					mntArgs[last] = filepath.Join(mp, args[last])
				}
				okOrg, outOrg := asNobody(t, cmd[0], orgArgs...)
				// Undo a change the origin run made, so the mount run meets
				// the same state.
				if okOrg && cmd[0] == "touch" {
					os.Remove(orgArgs[last])
				}
				okMnt, outMnt := asNobody(t, cmd[0], mntArgs...)
				if okOrg != okMnt {
					t.Errorf("nobody: %v: origin ok=%v (%s), mount ok=%v (%s)", cmd, okOrg, outOrg, okMnt, outMnt)
				}
			}
		})
	}
}
