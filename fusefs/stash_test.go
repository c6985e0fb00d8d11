package fusefs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// plusOrigin lists directories with attributes (as NFS READDIRPLUS does)
// and counts the Lstat calls made to it, and the Stat calls made to the
// files opened through it.
type plusOrigin struct {
	origin.FS
	lstats atomic.Int64
	fstats atomic.Int64
}

type statCounted struct {
	origin.File
	n *atomic.Int64
}

func (f statCounted) Stat(ctx context.Context) (origin.Attr, error) {
	f.n.Add(1)
	return f.File.Stat(ctx)
}

func (p *plusOrigin) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	f, err := p.FS.Open(ctx, name, flag)
	if err != nil {
		return nil, err
	}
	return statCounted{f, &p.fstats}, nil
}

// attrCalls counts the origin round trips for attributes.
func (p *plusOrigin) attrCalls() int64 { return p.lstats.Load() + p.fstats.Load() }

func (p *plusOrigin) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	p.lstats.Add(1)
	return p.FS.Lstat(ctx, name)
}

func (p *plusOrigin) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	ents, err := p.FS.ReadDir(ctx, name)
	for i := range ents {
		if a, err := p.FS.Lstat(ctx, origin.Join(name, ents[i].Name)); err == nil {
			ents[i].Attr = &a
		}
	}
	return ents, err
}

func mountPlus(t *testing.T, dir string, opts Options) (*plusOrigin, string) {
	t.Helper()
	requireFUSE(t)
	inner, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	org := &plusOrigin{FS: inner}
	_, mp := mountOrigin(t, org, inner, nil, opts)
	return org, mp
}

func dropKernelCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Skipf("cannot drop the kernel's dentry cache: %v", err)
	}
}

// A listing with attributes answers the lookups that follow it (ls -l, a
// walk), and so do attributes read before the kernel forgot the names; a
// file written through the mount is looked up again at the origin, never
// served with its size from before the write.
func TestStashAnswersLookups(t *testing.T) {
	dir := t.TempDir()
	const n = 50
	for i := range n {
		writeFile(t, filepath.Join(dir, "d", fmt.Sprintf("f%02d", i)), []byte("0123456789"))
	}
	org, mp := mountPlus(t, dir, Options{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second})

	if _, err := os.Lstat(filepath.Join(mp, "d")); err != nil {
		t.Fatal(err)
	}
	before := org.lstats.Load()
	ents, err := os.ReadDir(filepath.Join(mp, "d"))
	if err != nil || len(ents) != n {
		t.Fatalf("readdir: %d entries, %v", len(ents), err)
	}
	for i := range n {
		fi, err := os.Lstat(filepath.Join(mp, "d", fmt.Sprintf("f%02d", i)))
		if err != nil || fi.Size() != 10 {
			t.Fatalf("stat f%02d: %v, %v", i, fi, err)
		}
	}
	if got := org.lstats.Load() - before; got != 0 {
		t.Fatalf("%d origin lstats for %d names just listed with their attributes, want 0", got, n)
	}

	// The kernel forgets the names; the stash still holds them.
	dropKernelCaches(t)
	before = org.lstats.Load()
	for i := range n {
		if _, err := os.Lstat(filepath.Join(mp, "d", fmt.Sprintf("f%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := org.lstats.Load() - before; got != 0 {
		t.Fatalf("%d origin lstats after the kernel forgot the names, want 0", got)
	}

	// Written through the mount: the next lookup sees the new size.
	p := filepath.Join(mp, "d", "f07")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("abcde")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dropKernelCaches(t)
	fi, err := os.Lstat(p)
	if err != nil || fi.Size() != 15 {
		t.Fatalf("after an append through the mount: size %v, %v; want 15", fi.Size(), err)
	}
	// Truncated and removed through the mount.
	if err := os.Truncate(filepath.Join(mp, "d", "f08"), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mp, "d", "f09")); err != nil {
		t.Fatal(err)
	}
	dropKernelCaches(t)
	if fi, err := os.Lstat(filepath.Join(mp, "d", "f08")); err != nil || fi.Size() != 3 {
		t.Fatalf("after a truncate through the mount: %v, %v; want size 3", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(mp, "d", "f09")); !os.IsNotExist(err) {
		t.Fatalf("removed through the mount, lookup says %v", err)
	}
	// Renamed directory: nothing below the old name is served.
	if err := os.Rename(filepath.Join(mp, "d"), filepath.Join(mp, "e")); err != nil {
		t.Fatal(err)
	}
	dropKernelCaches(t)
	if _, err := os.Lstat(filepath.Join(mp, "d", "f01")); !os.IsNotExist(err) {
		t.Fatalf("renamed away, lookup of the old name says %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(mp, "e", "f07")); err != nil || fi.Size() != 15 {
		t.Fatalf("renamed: %v, %v", fi, err)
	}
}

// With the kernel's caching off (timeouts 0) the stash is off too: every
// lookup asks the origin.
func TestStashOffWithoutTimeouts(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("x"))
	org, mp := mountPlus(t, dir, Options{EntryTimeout: -1, AttrTimeout: -1})
	if _, err := os.ReadDir(mp); err != nil {
		t.Fatal(err)
	}
	before := org.lstats.Load()
	if _, err := os.Lstat(filepath.Join(mp, "f")); err != nil {
		t.Fatal(err)
	}
	if org.lstats.Load() == before {
		t.Fatal("lookup with timeouts 0 answered without asking the origin")
	}
}

// A stash entry expires with the timeout the kernel was given.
func TestStashExpires(t *testing.T) {
	s := newAttrStash()
	now := time.Now()
	s.put("a", origin.Attr{Size: 1}, now, time.Hour, s.generation())
	s.put("b", origin.Attr{Size: 2}, now.Add(-2*time.Second), time.Second, s.generation())
	if a, ok := s.get("a"); !ok || a.Size != 1 {
		t.Fatalf("a: %v %v", a, ok)
	}
	if _, ok := s.get("b"); ok {
		t.Fatal("b served after its timeout")
	}
	// An answer read before a drop is not stashed after it.
	gen := s.generation()
	s.drop("x/y")
	s.put("x/y", origin.Attr{Size: 3}, now, time.Hour, gen)
	if _, ok := s.get("x/y"); ok {
		t.Fatal("an answer that raced with a change was stashed")
	}
	s.put("x/y", origin.Attr{Size: 3}, now, time.Hour, s.generation())
	s.dropTree("x")
	if _, ok := s.get("x/y"); ok {
		t.Fatal("dropTree left an entry below it")
	}
}

// The first open of a file just looked up costs one origin round trip (the
// close-to-open check), not a second one for the attributes the kernel
// already holds; a change made behind the mount is still seen at the next
// open (the kernel's size is dropped), and so is one made through it.
func TestOpenKeepsCurrentKernelAttrs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("0123456789"))
	org, mp := mountPlus(t, dir, Options{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second})
	p := filepath.Join(mp, "f")

	before := org.attrCalls()
	if b, err := readAll(p); err != nil || string(b) != "0123456789" {
		t.Fatalf("first read: %q %v", b, err)
	}
	// The lookup asks the origin; the open it is part of needs no second
	// check (vouch.go).
	if got := org.attrCalls() - before; got != 1 {
		t.Fatalf("%d origin attribute calls for a lookup and an open, want 1", got)
	}

	// Behind the mount: longer, and its mtime moved.
	writeFile(t, filepath.Join(dir, "f"), []byte("0123456789abcdefghij"))
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "f"), future, future); err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(p); err != nil || string(b) != "0123456789abcdefghij" {
		t.Fatalf("read after the origin changed: %q %v", b, err)
	}

	// Through the mount: shorter.
	if err := os.WriteFile(p, []byte("xyz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(p); err != nil || string(b) != "xyz" {
		t.Fatalf("read after a write through the mount: %q %v", b, err)
	}
	// Unchanged: no invalidation, the kernel's attributes serve the read.
	before = org.attrCalls()
	if b, err := readAll(p); err != nil || string(b) != "xyz" {
		t.Fatalf("read again: %q %v", b, err)
	}
	if got := org.attrCalls() - before; got != 1 {
		t.Fatalf("%d origin attribute calls for an open of an unchanged file, want 1", got)
	}
}

// readAll reads a file with read(2) alone (os.ReadFile would fstat it
// first): only the read itself may need the file's size.
func readAll(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 1<<16)
	n, err := io.ReadFull(f, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return buf[:n], err
}
