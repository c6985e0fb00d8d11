package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// escapeFixture builds base/root (the origin) and base/outside (a secret
// that no origin operation may touch), with symlinks inside root that point
// outside in every way a symlink can.
func escapeFixture(t *testing.T) (p *PathFS, root, secret string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret = filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("top secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "sub", "file"), []byte("inside"), 0o644))
	must(os.Symlink(outside, filepath.Join(root, "abs")))                   // absolute, to a dir outside
	must(os.Symlink(secret, filepath.Join(root, "abssecret")))              // absolute, to a file outside
	must(os.Symlink("../outside", filepath.Join(root, "up")))               // relative, climbing out
	must(os.Symlink("../../outside", filepath.Join(root, "sub", "upup")))   // from a subdir
	must(os.Symlink("sub", filepath.Join(root, "insub")))                   // stays inside: allowed
	must(os.Symlink("/proc/self/root", filepath.Join(root, "magic")))       // magic link route
	must(os.Symlink("../outside/secret", filepath.Join(root, "relsecret"))) // final element to a file outside
	p, err := NewPath(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, root, secret
}

func TestPathEscapes(t *testing.T) {
	p, _, secret := escapeFixture(t)
	ctx := context.Background()
	owner := Owner{Uid: 0, Gid: 0}
	mode := uint32(0o777)
	size := int64(0)
	type tc struct {
		name string
		op   func() error
		want error // ErrEscape or an errno
	}
	open := func(name string, flag int) func() error {
		return func() error {
			f, err := p.Open(ctx, name, flag)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	cases := []tc{
		{"dotdot lstat", func() error { _, err := p.Lstat(ctx, "../outside/secret"); return err }, ErrEscape},
		{"inner dotdot", func() error { _, err := p.Lstat(ctx, "sub/../../outside/secret"); return err }, ErrEscape},
		{"nul byte", func() error { _, err := p.Lstat(ctx, "sub\x00/file"); return err }, ErrEscape},
		{"abs dir symlink lstat", func() error { _, err := p.Lstat(ctx, "abs/secret"); return err }, ErrEscape},
		{"abs dir symlink open", open("abs/secret", os.O_RDONLY), ErrEscape},
		{"relative climb open", open("up/secret", os.O_RDONLY), ErrEscape},
		{"subdir climb open", open("sub/upup/secret", os.O_RDWR), ErrEscape},
		{"magic link", func() error { _, err := p.Lstat(ctx, "magic/etc"); return err }, ErrEscape},
		{"final abs symlink not followed on open", open("abssecret", os.O_RDONLY), syscall.ELOOP},
		{"final rel symlink not followed on open", open("relsecret", os.O_WRONLY), syscall.ELOOP},
		{"final symlink O_TRUNC", open("abssecret", os.O_WRONLY|os.O_TRUNC), syscall.ELOOP},
		{"create through symlink dir", func() error {
			_, err := p.Create(ctx, "abs/new", os.O_RDWR, 0o644, owner)
			return err
		}, ErrEscape},
		{"create over final symlink", func() error {
			_, err := p.Create(ctx, "abssecret", os.O_RDWR|os.O_TRUNC, 0o644, owner)
			return err
		}, syscall.ELOOP},
		{"mkdir through symlink", func() error { return p.Mkdir(ctx, "up/newdir", 0o755, owner) }, ErrEscape},
		{"unlink through symlink", func() error { return p.Unlink(ctx, "abs/secret") }, ErrEscape},
		{"rename out", func() error { return p.Rename(ctx, "sub/file", "up/stolen", 0) }, ErrEscape},
		{"rename in", func() error { return p.Rename(ctx, "up/secret", "sub/got", 0) }, ErrEscape},
		{"link in", func() error { return p.Link(ctx, "abs/secret", "sub/hard") }, ErrEscape},
		{"chmod final symlink", func() error { return p.SetAttr(ctx, "abssecret", SetAttr{Mode: &mode}) }, syscall.EOPNOTSUPP},
		{"truncate final symlink", func() error { return p.SetAttr(ctx, "relsecret", SetAttr{Size: &size}) }, syscall.ELOOP},
		{"chmod through dir symlink", func() error { return p.SetAttr(ctx, "abs/secret", SetAttr{Mode: &mode}) }, ErrEscape},
		{"getxattr through symlink", func() error { _, err := p.Getxattr(ctx, "up/secret", "user.x"); return err }, ErrEscape},
		{"setxattr through symlink", func() error { return p.Setxattr(ctx, "abs/secret", "user.x", []byte("v"), 0) }, ErrEscape},
		{"readdir through symlink", func() error { _, err := p.ReadDir(ctx, "abs"); return err }, syscall.ENOTDIR},
		{"readdir climbing", func() error { _, err := p.ReadDir(ctx, "sub/upup"); return err }, syscall.ENOTDIR},
		{"readlink through symlink", func() error { _, err := p.Readlink(ctx, "abs/x"); return err }, ErrEscape},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.op()
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == ErrEscape && Errno(err) != syscall.EACCES {
				t.Fatalf("Errno(%v) = %v, want EACCES", err, Errno(err))
			}
		})
	}
	// The secret is untouched.
	b, err := os.ReadFile(secret)
	if err != nil || string(b) != "top secret" {
		t.Fatalf("secret changed: %q %v", b, err)
	}
	st, _ := os.Stat(secret)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret mode changed: %v", st.Mode())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(secret), "stolen")); err == nil {
		t.Fatal("file renamed outside the root")
	}
	// A symlink that stays beneath the root resolves.
	if a, err := p.Lstat(ctx, "insub/file"); err != nil || a.Size != 6 {
		t.Fatalf("inside symlink: %+v %v", a, err)
	}
	// Symlinks themselves are visible as symlinks.
	if a, err := p.Lstat(ctx, "abssecret"); err != nil || !a.IsSymlink() {
		t.Fatalf("lstat symlink: %+v %v", a, err)
	}
	if tgt, err := p.Readlink(ctx, "up"); err != nil || tgt != "../outside" {
		t.Fatalf("readlink: %q %v", tgt, err)
	}
}

func TestPathOps(t *testing.T) {
	root := t.TempDir()
	p, err := NewPath(root)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	owner := Owner{Uid: 1234, Gid: 2345}

	// Create: owner and exact mode (no umask applied twice).
	f, err := p.Create(ctx, "a", os.O_RDWR|os.O_EXCL, 0o664, owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(ctx, []byte("hello world"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(ctx, buf, 6)
	if string(buf[:n]) != "world" || (err != nil && err != io.EOF) {
		t.Fatalf("readat: %q %v", buf[:n], err)
	}
	if fd, ok := f.(Fder); !ok || fd.Fd() < 0 {
		t.Fatal("path file is not an Fder")
	}
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := p.Lstat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Uid != 1234 || a.Gid != 2345 || a.Mode&07777 != 0o664 || !a.IsRegular() || a.Size != 11 || a.Change != 0 {
		t.Fatalf("created attr: %+v", a)
	}
	// O_EXCL on an existing file.
	if _, err := p.Create(ctx, "a", os.O_RDWR|os.O_EXCL, 0o600, owner); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("excl create: %v", err)
	}
	// Create without O_EXCL opens the existing file and keeps owner and mode.
	f, err = p.Create(ctx, "a", os.O_RDWR, 0o600, Owner{Uid: 1, Gid: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if a2, _ := p.Lstat(ctx, "a"); a2.Uid != 1234 || a2.Mode&07777 != 0o664 {
		t.Fatalf("reopen changed attrs: %+v", a2)
	}

	// Mkdir in a set-group-ID directory keeps the group and the bit.
	if err := p.Mkdir(ctx, "g", 0o2775, Owner{Uid: 0, Gid: 777}); err != nil {
		t.Fatal(err)
	}
	if err := p.Mkdir(ctx, "g/sub", 0o750, owner); err != nil {
		t.Fatal(err)
	}
	if d, _ := p.Lstat(ctx, "g/sub"); !d.IsDir() || d.Gid != 777 || d.Uid != 1234 || d.Mode&07777 != 0o2750 {
		t.Fatalf("setgid mkdir: %+v (mode %o)", d, d.Mode&07777)
	}

	// Symlink, readlink, hard link.
	if err := p.Symlink(ctx, "../whatever/../a", "g/l", owner); err != nil {
		t.Fatal(err)
	}
	if tgt, err := p.Readlink(ctx, "g/l"); err != nil || tgt != "../whatever/../a" {
		t.Fatalf("readlink %q %v", tgt, err)
	}
	if l, _ := p.Lstat(ctx, "g/l"); l.Uid != 1234 || l.Gid != 777 {
		t.Fatalf("symlink owner: %+v", l)
	}
	if err := p.Link(ctx, "a", "g/hard"); err != nil {
		t.Fatal(err)
	}
	if h, _ := p.Lstat(ctx, "a"); h.Nlink != 2 {
		t.Fatalf("nlink %d", h.Nlink)
	}

	// Mknod: FIFO.
	if err := p.Mknod(ctx, "fifo", syscall.S_IFIFO|0o640, 0, owner); err != nil {
		t.Fatal(err)
	}
	if fi, _ := p.Lstat(ctx, "fifo"); fi.Mode&syscall.S_IFMT != syscall.S_IFIFO || fi.Mode&07777 != 0o640 || fi.Uid != 1234 {
		t.Fatalf("fifo: %+v", fi)
	}

	// ReadDir.
	ents, err := p.ReadDir(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
		if e.Ino == 0 || e.Mode == 0 {
			t.Fatalf("entry %+v", e)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "fifo", "g"}) {
		t.Fatalf("readdir: %v", names)
	}

	// SetAttr: mode, owner, size, ns times.
	m := uint32(0o600)
	uid, gid := uint32(42), uint32(43)
	sz := int64(5)
	at := time.Unix(1000, 123456789)
	mt := time.Unix(2000, 987654321)
	if err := p.SetAttr(ctx, "a", SetAttr{Mode: &m, Uid: &uid, Gid: &gid, Size: &sz, Atime: &at, Mtime: &mt}); err != nil {
		t.Fatal(err)
	}
	a, _ = p.Lstat(ctx, "a")
	if a.Mode&07777 != 0o600 || a.Uid != 42 || a.Gid != 43 || a.Size != 5 || !a.Atime.Equal(at) || !a.Mtime.Equal(mt) {
		t.Fatalf("setattr: %+v", a)
	}
	// Only mtime: atime left alone.
	mt2 := time.Unix(3000, 1)
	if err := p.SetAttr(ctx, "a", SetAttr{Mtime: &mt2}); err != nil {
		t.Fatal(err)
	}
	if a, _ = p.Lstat(ctx, "a"); !a.Atime.Equal(at) || !a.Mtime.Equal(mt2) {
		t.Fatalf("mtime only: %+v", a)
	}

	// Rename flags.
	if err := p.Rename(ctx, "a", "fifo", unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("noreplace: %v", err)
	}
	ia, _ := p.Lstat(ctx, "a")
	ifi, _ := p.Lstat(ctx, "fifo")
	if err := p.Rename(ctx, "a", "fifo", unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if x, _ := p.Lstat(ctx, "fifo"); x.Ino != ia.Ino {
		t.Fatal("exchange did not swap")
	}
	if x, _ := p.Lstat(ctx, "a"); x.Ino != ifi.Ino {
		t.Fatal("exchange did not swap back side")
	}
	if err := p.Rename(ctx, "fifo", "g/sub/moved", 0); err != nil {
		t.Fatal(err)
	}

	// Errors carry the errno and the op.
	_, err = p.Lstat(ctx, "nope")
	if !IsNotExist(err) || Errno(err) != syscall.ENOENT {
		t.Fatalf("enoent: %v", err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "lstat" {
		t.Fatalf("error has no op: %#v", err)
	}
	if err := p.Rmdir(ctx, "g"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := p.Unlink(ctx, "g"); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("unlink dir: %v", err)
	}
	if _, err := p.Create(ctx, "missing/x", os.O_RDWR, 0o644, owner); !IsNotExist(err) {
		t.Fatalf("create in missing dir: %v", err)
	}

	// Xattrs (user namespace on ext4/tmpfs).
	if err := p.Setxattr(ctx, "g/hard", "user.k", []byte("v1"), 0); err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			t.Logf("no user xattrs on %s: skipping xattr checks", root)
		} else {
			t.Fatal(err)
		}
	} else {
		if v, err := p.Getxattr(ctx, "g/hard", "user.k"); err != nil || !bytes.Equal(v, []byte("v1")) {
			t.Fatalf("getxattr %q %v", v, err)
		}
		if err := p.Setxattr(ctx, "g/hard", "user.k", []byte("v2"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
			t.Fatalf("xattr create existing: %v", err)
		}
		if l, err := p.Listxattr(ctx, "g/hard"); err != nil || !slices.Contains(l, "user.k") {
			t.Fatalf("listxattr %v %v", l, err)
		}
		if err := p.Removexattr(ctx, "g/hard", "user.k"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Getxattr(ctx, "g/hard", "user.k"); !errors.Is(err, syscall.ENODATA) {
			t.Fatalf("removed xattr: %v", err)
		}
		// Root directory xattrs.
		if err := p.Setxattr(ctx, ".", "user.root", []byte("r"), 0); err != nil {
			t.Fatal(err)
		}
	}

	// Statfs.
	sf, err := p.Statfs(ctx)
	if err != nil || sf.Blocks == 0 || sf.Bsize == 0 || sf.NameLen == 0 {
		t.Fatalf("statfs %+v %v", sf, err)
	}

	// Open flags reach the file: O_APPEND, O_TRUNC.
	f, err = p.Open(ctx, "g/hard", os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(ctx, []byte("++"), 0); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat(ctx)
	f.Close()
	if st.Size != 7 {
		t.Fatalf("append size %d", st.Size)
	}
	if _, err := p.Open(ctx, "g/hard", os.O_RDWR|os.O_CREATE); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("open with O_CREAT: %v", err)
	}
	f, err = p.Open(ctx, "g/hard", os.O_RDWR|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if h, _ := p.Lstat(ctx, "g/hard"); h.Size != 0 {
		t.Fatalf("trunc size %d", h.Size)
	}
	// Root lstat, root rename/unlink refused.
	if r, err := p.Lstat(ctx, "."); err != nil || !r.IsDir() {
		t.Fatalf("root: %+v %v", r, err)
	}
	if err := p.Unlink(ctx, "."); err == nil {
		t.Fatal("unlink of the root succeeded")
	}
	if p.String() != root {
		t.Fatalf("String %q", p.String())
	}
}

func TestNewPathErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct {
		name string
		root string
		want error
	}{
		{"missing", filepath.Join(dir, "missing"), syscall.ENOENT},
		{"not a dir", file, syscall.ENOTDIR},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewPath(c.root); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if _, err := NewPath(""); err == nil {
		t.Fatal("empty root accepted")
	}
}

// On an origin whose inode numbers are not stable (a FUSE origin such as sshfs), the inode
// number is not part of a file's fingerprint: the same file looked up again after the kernel
// forgot its inode is the same content, not a change.
func TestFingerprintIgnoresVolatileIno(t *testing.T) {
	now := time.Now()
	a := Attr{Ino: 7, Dev: 3, Size: 10, Mtime: now, Ctime: now}
	b := a
	b.Ino = 8
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatal("a different inode number on a stable origin must change the fingerprint")
	}
	a.InoVolatile, b.InoVolatile = true, true
	b.Gen = a.Gen + 1 // a FUSE origin's handles hold its volatile numbers
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatalf("volatile inode numbers changed the fingerprint: %s vs %s", a.Fingerprint(), b.Fingerprint())
	}
	b.Size = 11
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatal("a size change must still change the fingerprint")
	}
}

// The path origin's attributes are the file system's (as stat reports them),
// and Gen tells a file from a later one that got its inode number.
func TestPathAttrsAndGen(t *testing.T) {
	for _, btime := range []bool{false, true} {
		t.Run(map[bool]string{false: "file-handle", true: "birth-time"}[btime], func(t *testing.T) {
			testPathAttrsAndGen(t, btime)
		})
	}
}

// testPathAttrsAndGen: with btime, Gen is the birth time, as on a file
// system without file handles.
func testPathAttrsAndGen(t *testing.T, btime bool) {
	dir := t.TempDir()
	p, err := NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.birthTimeGen = btime
	ctx := context.Background()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("first"), 0o640); err != nil {
		t.Fatal(err)
	}
	a, err := p.Lstat(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if a.Ino != st.Ino || a.Dev != st.Dev || a.Mode != st.Mode || a.Size != st.Size || a.Nlink != uint32(st.Nlink) ||
		a.Uid != st.Uid || a.Gid != st.Gid || a.Blocks != st.Blocks || !a.Mtime.Equal(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)) ||
		!a.Ctime.Equal(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) {
		t.Fatalf("Lstat %+v, stat says %+v", a, st)
	}
	f, err := p.Open(ctx, "f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	fa, err := f.Stat(ctx)
	f.Close()
	if err != nil || fa != a {
		t.Fatalf("Stat of the open file %+v %v, Lstat %+v", fa, err, a)
	}
	if a.Gen == 0 {
		t.Skipf("neither birth times nor file handles on %s", dir)
	}
	// Symlinks (not followed) and directories have a Gen of their own.
	if btime {
		time.Sleep(20 * time.Millisecond) // a later tick (above)
	}
	os.Symlink("f", filepath.Join(dir, "l"))
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	for _, n := range []string{"l", "d"} {
		b, err := p.Lstat(ctx, n)
		if err != nil || b.Gen == 0 || b.Gen == a.Gen {
			t.Fatalf("Lstat %s: %+v %v (f's Gen %d)", n, b, err, a.Gen)
		}
	}
	// Removed, and a new file made until one gets the old inode number.
	os.Remove(filepath.Join(dir, "f"))
	if btime {
		// Birth times are stamped per tick of the file system's clock:
		// only a file made in a later tick is told apart by them.
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 64; i++ {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("second"), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := p.Lstat(ctx, "f")
		if err != nil {
			t.Fatal(err)
		}
		if b.Ino == a.Ino {
			if b.Gen == a.Gen {
				t.Fatalf("a new file with the old one's inode number has its Gen %d", a.Gen)
			}
			return
		}
		os.Rename(filepath.Join(dir, "f"), filepath.Join(dir, fmt.Sprintf("kept-%d", i)))
	}
	t.Skipf("no new file on %s got the old inode number", dir)
}

// Two files with the same inode number, size and times are two versions
// when their Gen differs.
func TestFingerprintHasGen(t *testing.T) {
	a := Attr{Ino: 7, Dev: 1, Size: 5, Mtime: time.Unix(1, 0), Ctime: time.Unix(1, 0), Gen: 1}
	b := a
	b.Gen = 3
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatalf("fingerprints of Gen %d and %d are equal: %v", a.Gen, b.Gen, a.Fingerprint())
	}
}

// What the file handle behind Gen costs a path origin's Lstat:
// go test -run '^$' -bench PathLstat ./origin
func BenchmarkPathLstat(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, btime := range []bool{false, true} {
		b.Run(map[bool]string{false: "file-handle", true: "birth-time"}[btime], func(b *testing.B) {
			p, err := NewPath(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			p.birthTimeGen = btime
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.Lstat(ctx, "f"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
