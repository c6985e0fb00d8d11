package fusefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The comparative POSIX conformance suite: every case runs once directly on
// an origin directory and once through a mount of another origin
// directory, and must give the same outcome (errnos and results).

type rec struct{ b strings.Builder }

// e records an operation's errno (or "ok").
func (r *rec) e(op string, err error) {
	var en syscall.Errno
	switch {
	case err == nil:
		fmt.Fprintf(&r.b, "%s=ok ", op)
	case errors.As(err, &en):
		fmt.Fprintf(&r.b, "%s=%s ", op, unix.ErrnoName(en))
	default:
		fmt.Fprintf(&r.b, "%s=%v ", op, err)
	}
}

func (r *rec) v(op string, v any) { fmt.Fprintf(&r.b, "%s=%v ", op, v) }

func (r *rec) read(op, p string) {
	b, err := os.ReadFile(p)
	r.e(op, err)
	r.v(op+".data", string(b))
}

func (r *rec) stat(op, p string) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	r.e(op, err)
	if err == nil {
		r.v(op+".mode", fmt.Sprintf("%o", st.Mode))
		r.v(op+".size", st.Size)
		r.v(op+".nlink", st.Nlink)
		r.v(op+".uid", st.Uid)
		r.v(op+".gid", st.Gid)
	}
}

type confCase struct {
	name  string
	setup func(d string) // as root, before
	run   func(r *rec, d string)
	asUID int // >0: run in a subprocess as this uid (and gid)
}

func w(p, s string) { os.WriteFile(p, []byte(s), 0o644) }

var confCases = []confCase{
	{name: "create_excl", run: func(r *rec, d string) {
		f, err := os.OpenFile(d+"/f", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
		r.e("create", err)
		if f != nil {
			f.Close()
		}
		_, err = os.OpenFile(d+"/f", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
		r.e("again", err)
		r.stat("st", d+"/f")
	}},
	{name: "trunc_append", setup: func(d string) { w(d+"/f", "0123456789") }, run: func(r *rec, d string) {
		f, err := os.OpenFile(d+"/f", os.O_WRONLY|os.O_APPEND, 0)
		r.e("append", err)
		f.WriteString("ab")
		f.WriteString("cd")
		f.Close()
		r.read("r1", d+"/f")
		f, err = os.OpenFile(d+"/f", os.O_RDWR|os.O_TRUNC, 0)
		r.e("trunc", err)
		f.Close()
		r.stat("st", d+"/f")
	}},
	{name: "write_seek_read", run: func(r *rec, d string) {
		f, _ := os.Create(d + "/f")
		f.WriteAt([]byte("xyz"), 5000)
		f.Seek(2, 0)
		f.Write([]byte("hi"))
		buf := make([]byte, 8)
		n, err := f.ReadAt(buf, 0)
		r.e("readat", err)
		r.v("n", n)
		r.v("buf", fmt.Sprintf("%q", buf[:n]))
		n, err = f.ReadAt(buf, 5001)
		r.v("tail", fmt.Sprintf("%q %v", buf[:n], err))
		off, _ := f.Seek(0, 2)
		r.v("end", off)
		f.Close()
		r.stat("st", d+"/f")
	}},
	{name: "truncate", setup: func(d string) { w(d+"/f", "hello world") }, run: func(r *rec, d string) {
		r.e("shrink", os.Truncate(d+"/f", 5))
		r.read("r1", d+"/f")
		r.e("grow", os.Truncate(d+"/f", 8))
		r.read("r2", d+"/f")
		r.e("dir", os.Truncate(d, 0))
	}},
	{name: "rename", setup: func(d string) {
		w(d+"/a", "A")
		w(d+"/b", "B")
		w(d+"/c", "C")
		os.MkdirAll(d+"/full/x", 0o755)
		os.Mkdir(d+"/empty", 0o755)
	}, run: func(r *rec, d string) {
		r.e("over", os.Rename(d+"/a", d+"/b"))
		r.read("b", d+"/b")
		r.stat("a", d+"/a")
		r.e("noreplace", unix.Renameat2(unix.AT_FDCWD, d+"/b", unix.AT_FDCWD, d+"/c", unix.RENAME_NOREPLACE))
		r.e("exchange", unix.Renameat2(unix.AT_FDCWD, d+"/b", unix.AT_FDCWD, d+"/c", unix.RENAME_EXCHANGE))
		r.read("b2", d+"/b")
		r.read("c2", d+"/c")
		r.e("dir_over_full", os.Rename(d+"/empty", d+"/full"))
		r.e("dir_over_file", os.Rename(d+"/empty", d+"/c"))
		r.e("file_over_dir", os.Rename(d+"/c", d+"/empty"))
		r.e("dir_into_self", os.Rename(d+"/full", d+"/full/x/y"))
		r.e("missing", os.Rename(d+"/nope", d+"/z"))
		r.e("dir_move", os.Rename(d+"/full", d+"/moved"))
		r.stat("moved_x", d+"/moved/x")
	}},
	{name: "unlink_open", setup: func(d string) { w(d+"/f", "still here") }, run: func(r *rec, d string) {
		f, err := os.Open(d + "/f")
		r.e("open", err)
		r.e("unlink", os.Remove(d+"/f"))
		buf := make([]byte, 32)
		n, _ := f.ReadAt(buf, 0)
		r.v("data", string(buf[:n]))
		var st unix.Stat_t
		r.e("fstat", unix.Fstat(int(f.Fd()), &st))
		r.v("nlink", st.Nlink)
		f.Close()
		r.stat("gone", d+"/f")
	}},
	{name: "dirs", setup: func(d string) { os.MkdirAll(d+"/full/x", 0o755); w(d+"/file", "") }, run: func(r *rec, d string) {
		r.e("mkdir", os.Mkdir(d+"/new", 0o751))
		r.stat("st", d+"/new")
		r.e("mkdir_exist", os.Mkdir(d+"/new", 0o755))
		r.e("rmdir_full", unix.Rmdir(d+"/full"))
		r.e("rmdir_file", unix.Rmdir(d+"/file"))
		r.e("unlink_dir", unix.Unlink(d+"/new"))
		r.e("rmdir", unix.Rmdir(d+"/new"))
		r.e("mkdir_in_missing", os.Mkdir(d+"/no/x", 0o755))
		r.e("mkdir_in_file", os.Mkdir(d+"/file/x", 0o755))
		r.e("long_name", os.Mkdir(d+"/"+strings.Repeat("n", 256), 0o755))
		ents, err := os.ReadDir(d)
		r.e("readdir", err)
		var names []string
		for _, e := range ents {
			names = append(names, fmt.Sprintf("%s:%v", e.Name(), e.Type()))
		}
		slices.Sort(names)
		r.v("names", names)
		_, err = os.OpenFile(d+"/file", os.O_RDONLY|syscall.O_DIRECTORY, 0)
		r.e("odirectory_file", err)
		_, err = os.OpenFile(d+"/full", os.O_WRONLY, 0)
		r.e("open_dir_wr", err)
	}},
	{name: "symlinks", setup: func(d string) { w(d+"/t", "target") }, run: func(r *rec, d string) {
		r.e("symlink", os.Symlink("t", d+"/l"))
		r.e("symlink_abs", os.Symlink("/nonexistent/x", d+"/abs"))
		r.e("symlink_exist", os.Symlink("t", d+"/l"))
		s, err := os.Readlink(d + "/l")
		r.e("readlink", err)
		r.v("target", s)
		s, _ = os.Readlink(d + "/abs")
		r.v("abs", s)
		r.stat("lst", d+"/l")
		r.read("through", d+"/l")
		_, err = os.ReadFile(d + "/abs")
		r.e("dangling", err)
		_, err = os.Readlink(d + "/t")
		r.e("readlink_file", err)
		_, err = os.OpenFile(d+"/l", os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		r.e("nofollow", err)
	}},
	{name: "hardlinks", setup: func(d string) { w(d+"/a", "shared"); os.Mkdir(d+"/dir", 0o755) }, run: func(r *rec, d string) {
		r.e("link", os.Link(d+"/a", d+"/b"))
		r.stat("a", d+"/a")
		r.e("link2", os.Link(d+"/b", d+"/dir/c"))
		r.stat("c", d+"/dir/c")
		w(d+"/b", "changed")
		r.read("via_a", d+"/a")
		r.e("unlink", os.Remove(d+"/a"))
		r.stat("b", d+"/b")
		r.e("link_dir", os.Link(d+"/dir", d+"/dir2"))
		r.e("link_exist", os.Link(d+"/b", d+"/dir/c"))
	}},
	{name: "attrs", setup: func(d string) { w(d+"/f", "x"); os.Mkdir(d+"/dir", 0o755) }, run: func(r *rec, d string) {
		r.e("chmod", unix.Chmod(d+"/f", 0o4751))
		r.e("chown", os.Lchown(d+"/f", 1234, 5678))
		r.stat("st", d+"/f")
		r.e("chmod2", unix.Chmod(d+"/f", 0o6755))
		r.e("chown_keep", os.Chown(d+"/f", -1, 99))
		r.stat("st2", d+"/f")
		at := time.Unix(1111111111, 123456789)
		mt := time.Unix(1222222222, 987654321)
		r.e("utimens", os.Chtimes(d+"/f", at, mt))
		var st unix.Stat_t
		unix.Stat(d+"/f", &st)
		r.v("atime", fmt.Sprintf("%d.%09d", st.Atim.Sec, st.Atim.Nsec))
		r.v("mtime", fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec))
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(42_000000007)}
		r.e("utimens_omit", unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", ts, 0))
		unix.Stat(d+"/f", &st)
		r.v("atime2", fmt.Sprintf("%d.%09d", st.Atim.Sec, st.Atim.Nsec))
		r.v("mtime2", fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec))
		r.e("chmod_dir", unix.Chmod(d+"/dir", 0o1777))
		r.stat("dir", d+"/dir")
		r.e("chmod_missing", os.Chmod(d+"/nope", 0o644))
	}},
	{name: "xattrs", setup: func(d string) { w(d+"/f", "x") }, run: func(r *rec, d string) {
		r.e("set", unix.Setxattr(d+"/f", "user.a", []byte("va"), 0))
		r.e("set2", unix.Setxattr(d+"/f", "user.b", []byte(strings.Repeat("v", 300)), 0))
		r.e("create_exist", unix.Setxattr(d+"/f", "user.a", []byte("x"), unix.XATTR_CREATE))
		r.e("replace_missing", unix.Setxattr(d+"/f", "user.c", []byte("x"), unix.XATTR_REPLACE))
		buf := make([]byte, 1024)
		n, err := unix.Getxattr(d+"/f", "user.a", buf)
		r.e("get", err)
		r.v("val", string(buf[:max(n, 0)]))
		_, err = unix.Getxattr(d+"/f", "user.b", make([]byte, 10))
		r.e("get_small", err)
		sz, _ := unix.Getxattr(d+"/f", "user.b", nil)
		r.v("size", sz)
		n, err = unix.Listxattr(d+"/f", buf)
		r.e("list", err)
		names := strings.Split(strings.TrimRight(string(buf[:max(n, 0)]), "\x00"), "\x00")
		slices.Sort(names)
		r.v("names", names)
		r.e("remove", unix.Removexattr(d+"/f", "user.a"))
		_, err = unix.Getxattr(d+"/f", "user.a", buf)
		r.e("get_removed", err)
		r.e("remove_missing", unix.Removexattr(d+"/f", "user.zz"))
	}},
	{name: "statfs", run: func(r *rec, d string) {
		var s unix.Statfs_t
		r.e("statfs", unix.Statfs(d, &s))
		r.v("bsize", s.Bsize)
		r.v("blocks", s.Blocks)
		r.v("files", s.Files)
		r.v("namelen", s.Namelen)
	}},
	{name: "mknod", run: func(r *rec, d string) {
		r.e("fifo", unix.Mknod(d+"/fifo", unix.S_IFIFO|0o640, 0))
		r.stat("st", d+"/fifo")
		r.e("exist", unix.Mknod(d+"/fifo", unix.S_IFIFO|0o640, 0))
	}},
	{name: "locks", setup: func(d string) { w(d+"/f", "lock me") }, run: func(r *rec, d string) {
		f1, _ := os.OpenFile(d+"/f", os.O_RDWR, 0)
		f2, _ := os.OpenFile(d+"/f", os.O_RDWR, 0)
		defer f1.Close()
		defer f2.Close()
		// flock: per open file description.
		r.e("flock_ex", unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB))
		r.e("flock_conflict", unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB))
		r.e("flock_un", unix.Flock(int(f1.Fd()), unix.LOCK_UN))
		r.e("flock_sh2", unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB))
		r.e("flock_sh1", unix.Flock(int(f1.Fd()), unix.LOCK_SH|unix.LOCK_NB))
		unix.Flock(int(f1.Fd()), unix.LOCK_UN)
		unix.Flock(int(f2.Fd()), unix.LOCK_UN)
		// OFD record locks.
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 4}
		r.e("ofd_set", unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &lk))
		lk2 := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 2, Len: 4}
		r.e("ofd_conflict", unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk2))
		lk3 := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 4, Len: 4}
		r.e("ofd_disjoint", unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk3))
		g := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 1}
		r.e("ofd_get", unix.FcntlFlock(f2.Fd(), unix.F_OFD_GETLK, &g))
		r.v("get_type", g.Type)
		r.v("get_range", fmt.Sprint(g.Start, g.Len))
		unlk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: 0, Len: 0}
		r.e("ofd_unlock", unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &unlk))
		r.e("ofd_after", unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk2))
		// A classic POSIX lock held here conflicts with another process.
		unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &unlk)
		pl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
		r.e("posix_set", unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &pl))
		r.v("other_process", helperLock(d+"/f"))
	}},
	{name: "perm_read_denied", setup: func(d string) {
		w(d+"/secret", "s")
		os.Chmod(d+"/secret", 0o600)
		os.Mkdir(d+"/rootdir", 0o755)
		os.Mkdir(d+"/open", 0o777)
		os.Chmod(d+"/open", 0o777)
		os.Mkdir(d+"/sticky", 0o777)
		unix.Chmod(d+"/sticky", 0o1777)
		w(d+"/sticky/rootfile", "r")
		os.Chmod(d+"/sticky/rootfile", 0o666)
	}, asUID: 1000, run: func(r *rec, d string) {
		_, err := os.ReadFile(d + "/secret")
		r.e("read_secret", err)
		r.e("chmod_other", os.Chmod(d+"/secret", 0o644))
		r.e("chown_other", os.Chown(d+"/secret", 1000, 1000))
		r.e("create_in_rootdir", os.WriteFile(d+"/rootdir/x", nil, 0o644))
		r.e("create_own", os.WriteFile(d+"/open/mine", []byte("m"), 0o640))
		r.stat("own", d+"/open/mine")
		r.e("mkdir_own", os.Mkdir(d+"/open/sub", 0o700))
		r.stat("own_dir", d+"/open/sub")
		r.e("chmod_own", os.Chmod(d+"/open/mine", 0o600))
		r.e("chown_give_away", os.Chown(d+"/open/mine", 0, 0))
		r.e("unlink_sticky_other", os.Remove(d+"/sticky/rootfile"))
		r.e("write_sticky_other", os.WriteFile(d+"/sticky/rootfile", []byte("w"), 0))
		r.e("utimes_other", os.Chtimes(d+"/secret", time.Unix(1, 0), time.Unix(1, 0)))
		r.e("setxattr_other", unix.Setxattr(d+"/secret", "user.x", []byte("v"), 0))
		r.e("symlink_own", os.Symlink("mine", d+"/open/l"))
		r.stat("own_link", d+"/open/l")
	}},
}

// helperLock tries to take a POSIX write lock on p from another process
// and returns its errno name.
func helperLock(p string) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestConformanceHelper$")
	cmd.Env = append(os.Environ(), "EFS_HELPER=lock", "EFS_HELPER_PATH="+p)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("helper failed: %v %s", err, out)
	}
	return strings.TrimSpace(lastLine(string(out)))
}

func lastLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "RESULT ") {
			return strings.TrimPrefix(l, "RESULT ")
		}
	}
	return s
}

// TestConformanceHelper is the subprocess side of the suite: it runs one
// case as another uid, or tries a lock.
func TestConformanceHelper(t *testing.T) {
	switch os.Getenv("EFS_HELPER") {
	case "":
		t.Skip("subprocess helper")
	case "lock":
		f, err := os.OpenFile(os.Getenv("EFS_HELPER_PATH"), os.O_RDWR, 0)
		if err != nil {
			fmt.Println("RESULT open", err)
			return
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
		var r rec
		r.e("lock", unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk))
		fmt.Println("RESULT " + r.b.String())
	case "case":
		var c *confCase
		for i := range confCases {
			if confCases[i].name == os.Getenv("EFS_HELPER_CASE") {
				c = &confCases[i]
			}
		}
		if c == nil {
			t.Fatal("no such case")
		}
		id := c.asUID
		if err := syscall.Setgroups(nil); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setresgid(id, id, id); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setresuid(id, id, id); err != nil {
			t.Fatal(err)
		}
		var r rec
		c.run(&r, os.Getenv("EFS_HELPER_PATH"))
		fmt.Println("RESULT " + r.b.String())
	}
}

func runCase(t *testing.T, c confCase, d string) string {
	t.Helper()
	if c.setup != nil {
		c.setup(d)
	}
	if c.asUID == 0 {
		var r rec
		c.run(&r, d)
		return r.b.String()
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestConformanceHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "EFS_HELPER=case", "EFS_HELPER_CASE="+c.name, "EFS_HELPER_PATH="+d)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	return lastLine(string(out))
}

func TestConformance(t *testing.T) {
	requireFUSE(t)
	for _, withCache := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocache", true: "cache"}[withCache], func(t *testing.T) {
			direct := t.TempDir()
			viaOrigin := t.TempDir()
			// Let the unprivileged helper reach both trees.
			for _, d := range []string{direct, viaOrigin, filepath.Dir(direct), filepath.Dir(viaOrigin)} {
				os.Chmod(d, 0o755)
			}
			var c Cache
			if withCache {
				c = newFakeCacheDir(t, viaOrigin)
			}
			_, mp := mountT(t, viaOrigin, c, Options{})
			for _, cc := range confCases {
				t.Run(cc.name, func(t *testing.T) {
					dd := filepath.Join(direct, cc.name)
					md := filepath.Join(mp, cc.name)
					if err := os.Mkdir(dd, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.Mkdir(md, 0o755); err != nil {
						t.Fatal(err)
					}
					want := runCase(t, cc, dd)
					got := runCase(t, cc, md)
					t.Logf("outcome: %s", got)
					if got != want {
						t.Errorf("outcome differs\n direct: %s\n mount:  %s\n diff:   %s", want, got, firstDiff(want, got))
					}
				})
			}
		})
	}
}

func firstDiff(a, b string) string {
	fa, fb := strings.Fields(a), strings.Fields(b)
	for i := range min(len(fa), len(fb)) {
		if fa[i] != fb[i] {
			return fa[i] + " vs " + fb[i]
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(fa), len(fb))
}
