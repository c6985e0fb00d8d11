package integration

import (
	"bytes"
	"errors"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A file read cold, then warm, through a daemon over versitygw; a prefix
// with nested directories listed.
func TestS3ReadAndList(t *testing.T) {
	e := startS3(t)
	big := randomBytes(9<<20+123, 1)
	e.put("data/big.bin", big)
	e.put("data/a.txt", []byte("a\n"))
	e.put("data/sub/b.txt", []byte("b\n"))
	e.put("data/sub/deeper/c.txt", []byte("c\n"))
	e.put("data/empty/", nil)
	e.put("elsewhere/x", []byte("outside the prefix"))
	n := s3Node(t, e, "data")
	n.start()

	for _, pass := range []string{"cold", "warm"} {
		got, err := os.ReadFile(n.mnt("big.bin"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("%s read: %d bytes, %v (equal %v)", pass, len(got), err, bytes.Equal(got, big))
		}
		if pass == "cold" {
			waitCachedNode(t, n, "big.bin", int64(len(big)))
		}
	}
	list := func(dir string) string {
		ents, err := os.ReadDir(n.mnt(dir))
		if err != nil {
			t.Fatalf("readdir %s: %v", dir, err)
		}
		var s []string
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() {
				name += "/"
			}
			s = append(s, name)
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	if got := list("."); got != "a.txt big.bin empty/ sub/" {
		t.Errorf("root: %s", got)
	}
	if got := list("sub"); got != "b.txt deeper/" {
		t.Errorf("sub: %s", got)
	}
	if got := list("sub/deeper"); got != "c.txt" {
		t.Errorf("sub/deeper: %s", got)
	}
	if got := list("empty"); got != "" {
		t.Errorf("empty: %q", got)
	}
	fi, err := os.Stat(n.mnt("sub/deeper/c.txt"))
	if err != nil || fi.Size() != 2 || fi.Mode().Perm() != 0o644 {
		t.Errorf("stat c.txt: %v %v", fi, err)
	}
	if fi, err := os.Stat(n.mnt("sub")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("stat sub: %v %v", fi, err)
	}
	if _, err := os.Stat(n.mnt("nope")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of an absent name: %v, want ENOENT", err)
	}
}

// Writes through the mount reach the server at close; a replacement on the
// server is seen at the next open; rename is copy + delete; the operations
// S3 cannot do fail with EPERM.
func TestS3WriteReplaceRename(t *testing.T) {
	e := startS3(t)
	e.put("w/keep.txt", []byte("version one\n"))
	n := s3Node(t, e, "w")
	n.start()

	if err := os.WriteFile(n.mnt("new.txt"), []byte("written through eddy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := e.get("w/new.txt"); err != nil || string(b) != "written through eddy\n" {
		t.Fatalf("object after close: %q %v", b, err)
	}
	if err := os.Mkdir(n.mnt("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := randomBytes(20<<20, 2) // more than one part of a multipart upload
	if err := os.WriteFile(n.mnt("dir/big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := e.get("w/dir/big.bin"); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("big object after close: %d bytes %v", len(b), err)
	}
	// Partial overwrite in place.
	f, err := os.OpenFile(n.mnt("keep.txt"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("VERSION"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := e.get("w/keep.txt"); string(b) != "VERSION one\n" {
		t.Fatalf("partial overwrite stored %q", b)
	}

	// Replaced on the server (same size): the next open sees it.
	if got, err := os.ReadFile(n.mnt("keep.txt")); err != nil || string(got) != "VERSION one\n" {
		t.Fatalf("read before the replacement: %q %v", got, err)
	}
	e.put("w/keep.txt", []byte("version two\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := os.ReadFile(n.mnt("keep.txt"))
		if err == nil && string(got) == "version two\n" {
			break
		}
		if err == nil && string(got) != "VERSION one\n" || time.Now().After(deadline) {
			t.Fatalf("read after the replacement: %q %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := os.Rename(n.mnt("new.txt"), n.mnt("dir/renamed.txt")); err != nil {
		t.Fatal(err)
	}
	if b, err := e.get("w/dir/renamed.txt"); err != nil || string(b) != "written through eddy\n" {
		t.Errorf("renamed object: %q %v", b, err)
	}
	if _, err := e.get("w/new.txt"); err == nil {
		t.Error("old name still stored after rename")
	} else if _, err := os.Stat(n.mnt("new.txt")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("old name after rename: %v", err)
	}
	if err := os.Rename(n.mnt("dir"), n.mnt("dir2")); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("directory rename: %v, want EXDEV", err)
	}
	if err := os.Remove(n.mnt("dir")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rmdir of a non-empty directory: %v, want ENOTEMPTY", err)
	}
	for what, err := range map[string]error{
		"link":    os.Link(n.mnt("keep.txt"), n.mnt("hard")),
		"symlink": os.Symlink("keep.txt", n.mnt("soft")),
		"chmod":   os.Chmod(n.mnt("keep.txt"), 0o600),
		"chown":   os.Chown(n.mnt("keep.txt"), 1, 1),
		"utimes":  os.Chtimes(n.mnt("keep.txt"), time.Unix(1, 0), time.Unix(1, 0)),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", what, err)
		}
	}
	if err := os.Remove(n.mnt("dir/big.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(n.mnt("dir/renamed.txt")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(n.mnt("dir")); err != nil || !fi.IsDir() {
		t.Errorf("directory after its last file went: %v %v", fi, err)
	}
	if err := os.Remove(n.mnt("dir")); err != nil {
		t.Errorf("rmdir of the emptied directory: %v", err)
	}
}

// The server stops: cached files stay readable with --offline-grace,
// uncached ones fail with EIO (not ENOENT), and all is well once it is back.
func TestS3ServerStopped(t *testing.T) {
	e := startS3(t)
	cached := randomBytes(3<<20, 3)
	e.put("o/cached.bin", cached)
	e.put("o/uncached.bin", randomBytes(1<<20, 4))
	n := s3Node(t, e, "o")
	n.start("--origin-timeout", "3s", "--offline-grace", "10m")
	if got, err := os.ReadFile(n.mnt("cached.bin")); err != nil || !bytes.Equal(got, cached) {
		t.Fatalf("warm-up read: %v", err)
	}
	waitCachedNode(t, n, "cached.bin", int64(len(cached)))
	if _, err := os.Stat(n.mnt("uncached.bin")); err != nil {
		t.Fatal(err)
	}
	e.stop()

	r := within(30*time.Second, func() error {
		got, err := os.ReadFile(n.mnt("cached.bin"))
		if err == nil && !bytes.Equal(got, cached) {
			t.Error("offline read returned wrong bytes")
		}
		return err
	})
	if r.hung || r.err != nil {
		t.Errorf("offline read of a cached file: hung=%v %v", r.hung, r.err)
	}
	r = within(30*time.Second, func() error { _, err := os.ReadFile(n.mnt("uncached.bin")); return err })
	switch {
	case r.hung:
		t.Fatal("uncached read with the server down hung")
	case !isEIO(r.err):
		t.Errorf("uncached read with the server down: %v, want EIO", r.err)
	}
	e.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.ReadFile(n.mnt("uncached.bin"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read after the server came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Wrong credentials: the daemon does not start, and says why in one line.
func TestS3WrongCredentials(t *testing.T) {
	e := startS3(t)
	n := s3Node(t, e, "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	err := n.tryStart()
	if err == nil {
		t.Fatal("daemon started with a wrong secret")
	}
	want := "s3 origin: credentials refused by http://" + e.addr + ": "
	log := n.log()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, want) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no %q in the daemon's output:\n%s", want, log)
	}
	if strings.Contains(log, "not-the-secret") || strings.Contains(log, s3Secret) {
		t.Error("the daemon's output shows a secret")
	}
	t.Logf("start-up error: %s", line)
}
