package nfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/origin"
)

// server is a real nfs-ganesha in a network namespace, reached from the
// client namespace through a veth.
type server struct {
	pair   *topo.Pair
	g      *topo.Ganesha
	export string
}

// startServer stands up ganesha; it skips only where ganesha cannot run.
func startServer(t *testing.T) *server { return startServerB(t) }

func startServerB(t testing.TB) *server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nfs-ganesha in a network namespace needs root")
	}
	if _, err := exec.LookPath("ganesha.nfsd"); err != nil {
		t.Skip("nfs-ganesha not installed (scripts/deps.sh nfs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute) // other suites may hold the rpcbind lock
	defer cancel()
	p, err := topo.NewPair(ctx, topo.PairOptions{Prefix: "enf"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	export := t.TempDir()
	g, err := topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: p.Server, ReadyFrom: p.Client, Addr: p.ServerAddr, Export: export, LockTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ganesha log tail:\n%s", g.Logs())
		}
		g.Close()
	})
	return &server{pair: p, g: g, export: export}
}

func (s *server) open(t *testing.T, query string, timeout time.Duration) *FS {
	t.Helper()
	return s.openT(t, query, timeout)
}

func (s *server) openB(b *testing.B, query string) *FS {
	b.Helper()
	return s.openT(b, query, 30*time.Second)
}

func (s *server) openT(t testing.TB, query string, timeout time.Duration) *FS {
	t.Helper()
	cfg, err := ParseURL(s.g.URL() + query)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := New(ctx, cfg, origin.OpenOptions{Dial: s.pair.DialClient, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestNFSOriginOperations(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "?conns=3", 10*time.Second)
	ctx := context.Background()
	owner := origin.Owner{Uid: 1234, Gid: 5678}

	// Create + write (bigger than one WRITE) + read back.
	data := randBytes(t, 3<<20+12345)
	fl, err := f.Create(ctx, "a.bin", syscall.O_RDWR|syscall.O_EXCL, 0o640, owner)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := fl.WriteAt(ctx, data, 0); err != nil || n != len(data) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	fl.Close()
	onDisk, err := os.ReadFile(filepath.Join(s.export, "a.bin"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("server copy differs (%d bytes, %v)", len(onDisk), err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(s.export, "a.bin"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != owner.Uid || st.Gid != owner.Gid || st.Mode&0o7777 != 0o640 {
		t.Errorf("new file owner %d:%d mode %o, want 1234:5678 640", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if _, err := f.Create(ctx, "a.bin", syscall.O_RDWR|syscall.O_EXCL, 0o640, owner); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("exclusive create of existing file: %v, want EEXIST", err)
	}

	a, err := f.Lstat(ctx, "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != int64(len(data)) || !a.IsRegular() || a.Ino != st.Ino || a.Mtime.UnixNano() != st.Mtim.Nano() || a.Ctime.UnixNano() != st.Ctim.Nano() {
		t.Errorf("Lstat = %+v, server stat %+v", a, st)
	}
	rf, err := f.Open(ctx, "a.bin", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off, n int
	}{{0, len(data)}, {1, 100}, {1 << 20, 2 << 20}, {len(data) - 10, 10}} {
		buf := make([]byte, c.n)
		n, err := rf.ReadAt(ctx, buf, int64(c.off))
		if err != nil || n != c.n || !bytes.Equal(buf, data[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d, %d) = %d, %v (equal %v)", c.off, c.n, n, err, bytes.Equal(buf[:n], data[c.off:c.off+n]))
		}
	}
	buf := make([]byte, 100)
	if n, err := rf.ReadAt(ctx, buf, int64(len(data)-40)); n != 40 || err != io.EOF {
		t.Errorf("ReadAt across EOF = %d, %v; want 40, EOF", n, err)
	}

	// Directories, listing, symlinks, links, rename, setattr, remove.
	if err := f.Mkdir(ctx, "d", 0o755, owner); err != nil {
		t.Fatal(err)
	}
	if err := f.Mkdir(ctx, "d/e", 0o700, owner); err != nil {
		t.Fatal(err)
	}
	if err := f.Mkdir(ctx, "d", 0o755, owner); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mkdir existing: %v, want EEXIST", err)
	}
	if err := f.Symlink(ctx, "../a.bin", "d/link", owner); err != nil {
		t.Fatal(err)
	}
	if tgt, err := f.Readlink(ctx, "d/link"); err != nil || tgt != "../a.bin" {
		t.Errorf("Readlink = %q, %v", tgt, err)
	}
	if a, err := f.Lstat(ctx, "d/link"); err != nil || !a.IsSymlink() {
		t.Errorf("Lstat symlink = %+v, %v", a, err)
	}
	if err := f.Link(ctx, "a.bin", "d/hard"); err != nil {
		t.Fatal(err)
	}
	if a, err := f.Lstat(ctx, "d/hard"); err != nil || a.Nlink != 2 {
		t.Errorf("hard link nlink = %d, %v", a.Nlink, err)
	}
	if err := f.Mknod(ctx, "d/fifo", syscall.S_IFIFO|0o600, 0, owner); err != nil {
		t.Fatal(err)
	}
	ents, err := f.ReadDir(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
		if e.Mode == 0 || e.Ino == 0 {
			t.Errorf("entry %+v lacks mode or ino", e)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"e", "fifo", "hard", "link"}) {
		t.Errorf("ReadDir(d) = %v", names)
	}
	if err := f.Rmdir(ctx, "d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: %v, want ENOTEMPTY", err)
	}
	if err := f.Rename(ctx, "d/hard", "d/e/moved", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename(ctx, "a.bin", "d/e/moved", 1 /* RENAME_NOREPLACE */); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rename noreplace onto existing: %v, want EEXIST", err)
	}
	// Renaming a directory invalidates cached handles beneath it.
	if _, err := f.Lstat(ctx, "d/e/moved"); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename(ctx, "d", "d2", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Lstat(ctx, "d/e/moved"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("old path after dir rename: %v, want ENOENT", err)
	}
	if _, err := f.Lstat(ctx, "d2/e/moved"); err != nil {
		t.Errorf("new path after dir rename: %v", err)
	}
	mode, size, mt := uint32(0o600), int64(10), time.Unix(1_600_000_000, 123456789)
	if err := f.SetAttr(ctx, "a.bin", origin.SetAttr{Mode: &mode, Size: &size, Mtime: &mt}); err != nil {
		t.Fatal(err)
	}
	if a, err := f.Lstat(ctx, "a.bin"); err != nil || a.Size != 10 || a.Mode&0o7777 != 0o600 || !a.Mtime.Equal(mt) {
		t.Errorf("after SetAttr: %+v, %v", a, err)
	}
	for _, n := range []string{"d2/link", "d2/fifo", "d2/e/moved"} {
		if err := f.Unlink(ctx, n); err != nil {
			t.Errorf("unlink %s: %v", n, err)
		}
	}
	if err := f.Rmdir(ctx, "d2/e"); err != nil {
		t.Error(err)
	}
	if _, err := f.Lstat(ctx, "nope/x"); !errors.Is(err, syscall.ENOENT) || !origin.IsNotExist(err) || origin.IsTrouble(err) {
		t.Errorf("missing path: %v, want plain ENOENT", err)
	}
	if _, err := f.Getxattr(ctx, "a.bin", "user.x"); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("getxattr: %v, want ENOTSUP", err)
	}
	if st, err := f.Statfs(ctx); err != nil || st.Blocks == 0 {
		t.Errorf("Statfs = %+v, %v", st, err)
	}
	// O_TRUNC open.
	tf, err := f.Open(ctx, "a.bin", syscall.O_WRONLY|syscall.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	tf.Close()
	if a, _ := f.Lstat(ctx, "a.bin"); a.Size != 0 {
		t.Errorf("size after O_TRUNC = %d", a.Size)
	}
}

// A file deleted and recreated on the server under the same name: the old
// directory handle and path mapping go stale and are looked up again.
func TestNFSOriginStaleHandles(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "", 10*time.Second)
	ctx := context.Background()
	dir := filepath.Join(s.export, "sub")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("one"), 0o644)
	if _, err := f.Lstat(ctx, "sub/f"); err != nil {
		t.Fatal(err)
	}
	fl, err := f.Open(ctx, "sub/f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	// Replace the directory (its cached handle goes stale) and the file.
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("two!"), 0o644)
	a, err := f.Lstat(ctx, "sub/f")
	if err != nil || a.Size != 4 {
		t.Fatalf("Lstat after replacing the directory: %+v, %v", a, err)
	}
	// The open handle names a deleted file: ESTALE (trouble), never ENOENT
	// and never the new file's bytes.
	buf := make([]byte, 4)
	if n, err := fl.ReadAt(ctx, buf, 0); !errors.Is(err, syscall.ESTALE) || !origin.IsTrouble(err) {
		t.Fatalf("read of a replaced file = %d %q, %v; want ESTALE", n, buf[:n], err)
	}
	nf, err := f.Open(ctx, "sub/f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := nf.ReadAt(ctx, buf, 0); n != 4 || string(buf) != "two!" {
		t.Fatalf("read new file = %q, %v", buf[:n], err)
	}

	// Replaced between a lookup and the open that uses its handle: the
	// open reads the file that lookup found (the version its caller was
	// told about) or fails ESTALE, never the new file's bytes; a lookup
	// after the change finds the new file.
	if _, err := f.Lstat(ctx, "sub/f"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "f"))
	os.WriteFile(filepath.Join(dir, "f"), []byte("3333"), 0o644)
	of, err := f.Open(ctx, "sub/f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := of.ReadAt(ctx, buf, 0); !errors.Is(err, syscall.ESTALE) && (err != nil || string(buf[:n]) != "two!") {
		t.Fatalf("read through the looked-up handle of a replaced file = %q, %v; want the old bytes or ESTALE", buf[:n], err)
	}
	if _, err := f.Lstat(ctx, "sub/f"); err != nil {
		t.Fatal(err)
	}
	nf, err = f.Open(ctx, "sub/f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := nf.ReadAt(ctx, buf, 0); n != 4 || string(buf) != "3333" {
		t.Fatalf("read after a stale handle = %q, %v", buf[:n], err)
	}
}

// The server stops and comes back: operations in flight wait and succeed,
// connections are re-established, nothing is read wrong.
func TestNFSOriginServerRestart(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "?conns=2", 20*time.Second)
	ctx := context.Background()
	data := randBytes(t, 8<<20)
	os.WriteFile(filepath.Join(s.export, "big"), data, 0o644)
	fl, err := f.Open(ctx, "big", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.g.Stop(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var got []byte
	var rerr error
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = make([]byte, len(data))
		_, rerr = fl.ReadAt(ctx, got, 0)
	}()
	time.Sleep(1500 * time.Millisecond)
	if err := s.g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rerr != nil || !bytes.Equal(got, data) {
		t.Fatalf("read across a server restart: %v (equal %v)", rerr, bytes.Equal(got, data))
	}
	t.Logf("read waited %v across the restart", time.Since(start))

	// Server down for longer than the timeout: a clear unavailable error,
	// never ENOENT, and no hang past the timeout.
	short := s.open(t, "", 2*time.Second)
	if err := s.g.Kill(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = short.Lstat(ctx, "big")
	if !errors.Is(err, origin.ErrUnavailable) || errors.Is(err, syscall.ENOENT) || origin.Errno(err) != syscall.EIO {
		t.Fatalf("Lstat with the server down: %v; want ErrUnavailable/EIO", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Lstat took %v with a 2s timeout", d)
	}
	if err := s.g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if a, err := short.Lstat(ctx, "big"); err != nil || a.Size != int64(len(data)) {
		t.Fatalf("Lstat after the server came back: %+v, %v", a, err)
	}
}

// The link is cut: calls fail as unavailable within the timeout (a dead
// TCP connection is detected, not waited on), and work again once the link
// is back, on fresh connections.
func TestNFSOriginLinkCut(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "?conns=2", 3*time.Second)
	ctx := context.Background()
	os.WriteFile(filepath.Join(s.export, "x"), []byte("hello"), 0o644)
	if _, err := f.Lstat(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.pair.LinkDown(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, err := f.Lstat(ctx, "x")
		if !errors.Is(err, origin.ErrUnavailable) || errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Lstat with the link cut: %v; want unavailable", err)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Fatalf("Lstat with the link cut took %v (timeout 3s)", d)
		}
	}
	if err := s.pair.LinkUp(ctx); err != nil {
		t.Fatal(err)
	}
	fl, err := f.Open(ctx, "x", syscall.O_RDONLY)
	if err != nil {
		t.Fatalf("Open after the link came back: %v", err)
	}
	buf := make([]byte, 5)
	if n, err := fl.ReadAt(ctx, buf, 0); n != 5 || string(buf) != "hello" {
		t.Fatalf("read after the link came back: %q, %v", buf[:n], err)
	}
}

// An open right after a lookup of the same name uses the handle that lookup
// returned (no second LOOKUP), and the file vouches for the attributes of
// its reads until a reply shows another version; a rename through the FS
// forgets the looked-up handles.
func TestNFSOriginOpenAfterLookup(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "", 10*time.Second)
	other := s.open(t, "", 10*time.Second)
	ctx := context.Background()
	data := randBytes(t, 1<<20)
	if err := os.WriteFile(filepath.Join(s.export, "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.export, "x.bin"), []byte("the other file"), 0o644); err != nil {
		t.Fatal(err)
	}

	a, err := f.Lstat(ctx, "w.bin")
	if err != nil {
		t.Fatal(err)
	}
	lookups := f.sent[procLookup].Load()
	fl, err := f.Open(ctx, "w.bin", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if n := f.sent[procLookup].Load() - lookups; n != 0 {
		t.Errorf("open after a lookup sent %d LOOKUPs, want 0", n)
	}
	buf := make([]byte, len(data))
	if n, err := fl.ReadAt(ctx, buf, 0); n != len(data) || (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(buf, data) {
		t.Fatalf("ReadAt = %d, %v (equal %v)", n, err, bytes.Equal(buf, data))
	}
	w, ok := fl.(origin.AttrWitness)
	if !ok {
		t.Fatal("NFS file is no origin.AttrWitness")
	}
	if wa, ok := w.Witnessed(); !ok || wa.Fingerprint() != a.Fingerprint() {
		t.Fatalf("Witnessed = %v, %v; want the lookup's %v", wa.Fingerprint(), ok, a.Fingerprint())
	}

	// Another client writes: the next read's reply shows another version.
	wf, err := other.Open(ctx, "w.bin", syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.WriteAt(ctx, []byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	wf.Close()
	if _, err := fl.ReadAt(ctx, buf[:4096], 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Witnessed(); ok {
		t.Error("Witnessed still vouches after a read of another version")
	}

	// A rename through the FS: the name now holds the other file.
	if _, err := f.Lstat(ctx, "w.bin"); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename(ctx, "x.bin", "w.bin", 0); err != nil {
		t.Fatal(err)
	}
	fl2, err := f.Open(ctx, "w.bin", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fl2.Close()
	got := make([]byte, 64)
	n, err := fl2.ReadAt(ctx, got, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if string(got[:n]) != "the other file" {
		t.Fatalf("open after a rename read %q, want the renamed file", got[:n])
	}
}

// Gen is the same for one file whichever call reports it (lookup, the open
// file's getattr, a listing), and differs for a new file that got a deleted
// one's inode number.
func TestNFSOriginGen(t *testing.T) {
	s := startServer(t)
	f := s.open(t, "", 10*time.Second)
	ctx := context.Background()
	p := filepath.Join(s.export, "g")
	os.WriteFile(p, []byte("first"), 0o644)
	a, err := f.Lstat(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if a.Gen == 0 {
		t.Fatalf("Lstat %+v: no Gen", a)
	}
	fl, err := f.Open(ctx, "g", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	fa, err := fl.Stat(ctx)
	fl.Close()
	if err != nil || fa.Gen != a.Gen {
		t.Fatalf("the open file's Gen %d (%v), the lookup's %d", fa.Gen, err, a.Gen)
	}
	ents, err := f.ReadDir(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name == "g" && (e.Attr == nil || e.Attr.Gen != a.Gen) {
			t.Fatalf("the listing's attributes of g: %+v, the lookup's Gen %d", e.Attr, a.Gen)
		}
	}
	os.Remove(p)
	for i := 0; i < 64; i++ {
		os.WriteFile(p, []byte("second"), 0o644)
		b, err := f.Lstat(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		if b.Ino == a.Ino {
			if b.Gen == a.Gen {
				t.Fatalf("a new file with the old one's inode number %d has its Gen", a.Ino)
			}
			return
		}
		os.Rename(p, filepath.Join(s.export, fmt.Sprintf("kept-%d", i)))
	}
	t.Skipf("no new file on %s got the old inode number", s.export)
}
