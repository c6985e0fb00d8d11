package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// inoOf is p's inode number.
func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// createWithIno makes files (or directories holding a file "inside") in dir
// on the origin until one gets inode number ino (the file system gives a
// deleted object's number to the next new one, ext4 at once) and returns
// its name, or "" if none did.
func createWithIno(t *testing.T, dir string, ino uint64, isDir bool, data []byte) string {
	t.Helper()
	for i := 0; i < 64; i++ {
		name := fmt.Sprintf("new-%d", i)
		p := filepath.Join(dir, name)
		if isDir {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(p, "inside"), data)
		} else {
			writeFile(t, p, data)
		}
		if inoOf(t, p) == ino {
			return name
		}
	}
	return ""
}

// A file (or directory) made elsewhere with the inode number of a deleted
// one that this mount's kernel still holds (its name cached, its pages) is
// another object: the old name never reads the new one's bytes, and the new
// name reads them. (go-fuse keeps inodes by identity; with the inode number alone the
// new file was handed the old inode, and the old name, still valid in the
// kernel, read whatever file the inode's newest name named: git on one node
// read a commit object as its index after a commit on another.)
func TestReusedInodeNumberIsANewFile(t *testing.T) {
	for _, kind := range []string{"file", "dir"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			// A long attribute timeout: the kernel keeps the old name for
			// the whole test, as it does for a second by default.
			_, mp := mountT(t, dir, nil, Options{AttrTimeout: time.Minute, EntryTimeout: time.Minute})
			oldData, newData := []byte("the old file\n"), []byte("another file, made elsewhere\n")
			if kind == "file" {
				writeFile(t, filepath.Join(mp, "old"), oldData)
			} else {
				if err := os.Mkdir(filepath.Join(mp, "old"), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(mp, "old", "inside"), oldData)
			}
			if _, err := os.Lstat(filepath.Join(mp, "old")); err != nil {
				t.Fatal(err)
			}
			ino := inoOf(t, filepath.Join(dir, "old"))
			// Elsewhere: the old one goes, a new file takes its number.
			if err := os.RemoveAll(filepath.Join(dir, "old")); err != nil {
				t.Fatal(err)
			}
			name := createWithIno(t, dir, ino, kind == "dir", newData)
			if name == "" {
				t.Skipf("the origin's file system (%s) gave no new file the deleted one's inode number", dir)
			}
			newPath := filepath.Join(mp, name)
			if kind == "dir" {
				newPath = filepath.Join(newPath, "inside")
			}
			got, err := os.ReadFile(newPath)
			if err != nil || string(got) != string(newData) {
				t.Fatalf("the new file through the mount: %q %v, want %q", got, err, newData)
			}
			if fi, err := os.Lstat(filepath.Join(mp, name)); err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
				t.Fatalf("the new file's inode number through the mount: %v %v, want the origin's %d", fi, err, ino)
			}
			old := filepath.Join(mp, "old")
			if kind == "dir" {
				old = filepath.Join(old, "inside")
			}
			got, err = os.ReadFile(old)
			if err == nil {
				t.Fatalf("%s after its removal elsewhere read %q, want ENOENT (the new file is %q)", old, got, newData)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s after its removal elsewhere: %v, want ENOENT", old, err)
			}
		})
	}
}

// A path origin on a FUSE file system (this mount standing in for sshfs)
// gives Gen 0: its file handles hold the per-lookup inode numbers such file
// systems hand out, which change for one file when the kernel forgets it.
func TestFUSEOriginHasNoGen(t *testing.T) {
	dir := t.TempDir()
	_, mp := mountT(t, dir, nil, Options{})
	writeFile(t, filepath.Join(mp, "f"), []byte("x"))
	org, err := origin.NewPath(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer org.Close()
	a, err := org.Lstat(context.Background(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if !a.InoVolatile || a.Gen != 0 {
		t.Fatalf("attributes over a FUSE origin: InoVolatile %v, Gen %d; want true, 0", a.InoVolatile, a.Gen)
	}
}
