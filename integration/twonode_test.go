package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Two eddy daemons over ONE origin: what one node (or the origin itself)
// changes, the other sees within the attribute timeout, open readers
// included; permissions and ownership are the origin's on every node; and
// the programs people run on shared directories work across nodes.
//
// The flavours: "path" (both daemons over the same origin directory) and
// "nfs" (both over the same nfs:// export of one nfs-ganesha).
func TestTwoNode(t *testing.T) {
	t.Run("path", func(t *testing.T) { tnSuite(t, tnPathShare(t)) })
	t.Run("nfs", func(t *testing.T) { tnSuite(t, tnNFSShare(t)) })
}

func tnSuite(t *testing.T, s *tnShare) {
	// Files that later subtests open warm (passthrough) are written first, so
	// they have settled by the time they are used.
	for _, rel := range []string{"tn-b-warm.bin", "tn-c-warm-a.log", "tn-c-warm-origin.log",
		"tn-d-overwrite.txt", "tn-d-truncate.txt", "tn-f-mmap.bin"} {
		if err := os.WriteFile(s.org(rel), tnPattern("old "+rel, 256<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a_create_delete", func(t *testing.T) { tnCreateDelete(t, s) })
	t.Run("e_permissions", func(t *testing.T) { tnPermissions(t, s) })
	t.Run("b_rewrite_same_size_same_mtime", func(t *testing.T) {
		t.Run("cached", func(t *testing.T) { tnRewriteSameSize(t, s, "tn-b-cached.bin", false) })
		t.Run("warm", func(t *testing.T) { tnRewriteSameSize(t, s, "tn-b-warm.bin", true) })
	})
	t.Run("c_open_reader_sees_appends", func(t *testing.T) { tnOpenReaderAppends(t, s) })
	t.Run("d_writer_beside_warm_reader", func(t *testing.T) {
		t.Run("overwrite", func(t *testing.T) { tnWriterBesideWarmReader(t, s, "tn-d-overwrite.txt", false) })
		t.Run("truncate", func(t *testing.T) { tnWriterBesideWarmReader(t, s, "tn-d-truncate.txt", true) })
	})
	t.Run("g_reused_inode_number", func(t *testing.T) { tnReusedIno(t, s) })
	t.Run("f_programs", func(t *testing.T) {
		t.Run("tail_F", func(t *testing.T) { tnTailF(t, s) })
		t.Run("python_reads_growing_file", func(t *testing.T) { tnPythonGrowing(t, s) })
		t.Run("sqlite_rollback_journal", func(t *testing.T) { tnSqlite(t, s, "delete") })
		t.Run("sqlite_wal", func(t *testing.T) { tnSqlite(t, s, "wal") })
		t.Run("git", func(t *testing.T) { tnGit(t, s) })
		t.Run("rsync_inplace", func(t *testing.T) { tnRsync(t, s) })
		t.Run("mmap_reader", func(t *testing.T) { tnMmap(t, s) })
		t.Run("cp_mv", func(t *testing.T) { tnCpMv(t, s) })
	})
}

// g. Node B deletes a file node A has just made and looked at, and makes
// new ones until one gets its inode number (ext4 gives it to the next file
// at once): node A, whose kernel still holds the old name, reads the new
// file's bytes by the new name and ENOENT by the old one, never one for the
// other.
func tnReusedIno(t *testing.T, s *tnShare) {
	const dir = "tn-g"
	if err := os.Mkdir(s.a.mnt(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	oldData := []byte("made on node A\n")
	if err := os.WriteFile(s.a.mnt(dir+"/old"), oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(s.a.mnt(dir + "/old")); err != nil || !bytes.Equal(got, oldData) {
		t.Fatalf("node A reads its own file: %q %v", got, err)
	}
	fi, err := os.Stat(s.org(dir + "/old"))
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	if err := os.Remove(s.b.mnt(dir + "/old")); err != nil {
		t.Fatal(err)
	}
	newData := []byte("made on node B, later, another file\n")
	name := ""
	for i := 0; i < 32 && name == ""; i++ {
		n := fmt.Sprintf("%s/new-%d", dir, i)
		if err := os.WriteFile(s.b.mnt(n), newData, 0o644); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(s.org(n)); err == nil && fi.Sys().(*syscall.Stat_t).Ino == ino {
			name = n
		}
	}
	if name == "" {
		// On one machine the daemons' caches share the origin's file
		// system, and a spare data file may take the number first
		// (fusefs's TestReusedInodeNumberIsANewFile covers the path
		// origin without a cache).
		t.Skipf("no new file got the deleted one's inode number %d (another file, such as a cache's spare data file, took it)", ino)
	}
	got, err := os.ReadFile(s.a.mnt(name))
	if err != nil || !bytes.Equal(got, newData) {
		t.Fatalf("node A reads %s (inode %d, as the deleted file had): %q %v, want %q", name, ino, got, err, newData)
	}
	got, err = os.ReadFile(s.a.mnt(dir + "/old"))
	if err == nil {
		t.Fatalf("node A reads the file node B deleted: %q (the new file with its inode number holds %q)", got, newData)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("node A reads the file node B deleted: %v, want ENOENT", err)
	}
}

// tnVisible is the bound for a change made elsewhere to show on a node: the
// attribute timeout plus slack for the daemons and the origin.
const tnVisible = tnAttr + 2*time.Second

// a. A file written on node A is read on node B, its deletion seen there,
// both within the attribute timeout, though B looked the name up before.
func tnCreateDelete(t *testing.T, s *tnShare) {
	const dir, name = "tn-a", "note.txt"
	rel := dir + "/" + name
	if err := os.Mkdir(s.org(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// B looks first: the kernel and the daemon may remember that it is absent.
	if _, err := os.Stat(s.b.mnt(rel)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("node B: stat of %s before it exists: %v, want ENOENT", rel, err)
	}
	if ents, err := os.ReadDir(s.b.mnt(dir)); err != nil || len(ents) != 0 {
		t.Fatalf("node B: listing of the empty %s: %v %v", dir, ents, err)
	}
	want := []byte("written on node A (" + s.flavour + ")\n")
	if err := os.WriteFile(s.a.mnt(rel), want, 0o644); err != nil {
		t.Fatal(err)
	}
	var last string
	took, ok := tnPoll(tnVisible, func() bool {
		got, err := os.ReadFile(s.b.mnt(rel))
		last = fmt.Sprintf("%q, %v", got, err)
		return err == nil && bytes.Equal(got, want)
	})
	if !ok {
		t.Fatalf("node B does not see the file node A wrote within %s (attribute timeout %s): last read %s\n%s", tnVisible, tnAttr, last, s.logs())
	}
	t.Logf("node B read the file node A wrote after %s", took.Round(time.Millisecond))
	took, ok = tnPoll(tnVisible, func() bool {
		ents, err := os.ReadDir(s.b.mnt(dir))
		last = fmt.Sprintf("%v, %v", ents, err)
		return err == nil && len(ents) == 1 && ents[0].Name() == name
	})
	if !ok {
		t.Fatalf("node B's listing of %s lacks the file node A wrote after %s: %s", dir, tnVisible, last)
	}
	t.Logf("node B listed it after %s more", took.Round(time.Millisecond))

	if err := os.Remove(s.a.mnt(rel)); err != nil {
		t.Fatal(err)
	}
	took, ok = tnPoll(tnVisible, func() bool {
		_, serr := os.Stat(s.b.mnt(rel))
		_, rerr := os.ReadFile(s.b.mnt(rel))
		ents, lerr := os.ReadDir(s.b.mnt(dir))
		last = fmt.Sprintf("stat: %v, read: %v, listing: %v %v", serr, rerr, ents, lerr)
		return errors.Is(serr, fs.ErrNotExist) && errors.Is(rerr, fs.ErrNotExist) && lerr == nil && len(ents) == 0
	})
	if !ok {
		t.Fatalf("node B still sees the file node A deleted %s later (attribute timeout %s): %s\n%s", tnVisible, tnAttr, last, s.logs())
	}
	t.Logf("node B saw the deletion after %s", took.Round(time.Millisecond))
}

// b. Node A rewrites a file B has read (cached, or warm: passthrough) with the
// same size, within the same second, and restores its mtime: B's next open
// reads the new bytes.
func tnRewriteSameSize(t *testing.T, s *tnShare, rel string, warm bool) {
	const size = 256 << 10
	var old []byte
	if warm {
		old = tnPattern("old "+rel, size)
		f := s.b.warmOpen(t, s, rel)
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, old) {
			t.Fatalf("node B: warm read of the old version: %v %s", err, tnShort(got))
		}
	} else {
		old = tnPattern("old "+rel, size)
		if err := os.WriteFile(s.a.mnt(rel), old, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(s.b.mnt(rel)); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("node B: read of the old version: %v %s", err, tnShort(got))
		}
		if err := s.b.waitCached(rel, size, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	before, err := os.Stat(s.org(rel))
	if err != nil {
		t.Fatal(err)
	}
	neu := tnPattern("NEW "+rel, size)
	if err := os.WriteFile(s.a.mnt(rel), neu, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(s.a.mnt(rel), before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(s.org(rel))
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("setup: node A's rewrite left the origin at size %d mtime %v, want size %d mtime %v",
			after.Size(), after.ModTime(), before.Size(), before.ModTime())
	}
	if !warm && time.Now().Unix() != before.ModTime().Unix() {
		t.Logf("note: the rewrite ended in the second after the first write (the mtime was restored all the same)")
	}
	got, err := os.ReadFile(s.b.mnt(rel))
	if err == nil && bytes.Equal(got, neu) {
		return
	}
	first := fmt.Sprintf("%v %s", err, tnShort(got))
	took, ok := tnPoll(tnVisible, func() bool {
		got, err := os.ReadFile(s.b.mnt(rel))
		return err == nil && bytes.Equal(got, neu)
	})
	later := "and still after " + tnVisible.String()
	if ok {
		later = "the new bytes came " + took.Round(time.Millisecond).String() + " later"
	}
	t.Fatalf("node B's next open after node A rewrote %s (same size, mtime restored) read %s, want the new bytes; %s\n%s",
		rel, first, later, s.logs())
}

// c. A reader on node B keeps a file open; bytes appended on node A, or on
// the origin itself, arrive through that descriptor within about twice the
// attribute timeout. Cold (cached I/O) and warm (passthrough) files.
func tnOpenReaderAppends(t *testing.T, s *tnShare) {
	type tcase struct {
		name, rel  string
		warm       bool
		viaOrigin  bool
		f          *os.File
		appended   []byte
		got        []byte
		err        error
		took       time.Duration
		arrived    bool
		freshAfter string
	}
	cases := []*tcase{
		{name: "cold_append_on_A", rel: "tn-c-cold-a.log"},
		{name: "cold_append_on_origin", rel: "tn-c-cold-origin.log", viaOrigin: true},
		{name: "warm_append_on_A", rel: "tn-c-warm-a.log", warm: true},
		{name: "warm_append_on_origin", rel: "tn-c-warm-origin.log", warm: true, viaOrigin: true},
	}
	// Readers open on B, read to the end, and stay open.
	setupErr := map[string]string{}
	for _, c := range cases {
		var old []byte
		if c.warm {
			old = tnPattern("old "+c.rel, 256<<10)
			c.f = s.b.warmOpen(t, s, c.rel)
		} else {
			old = tnPattern("old "+c.rel, 64<<10)
			if err := os.WriteFile(s.org(c.rel), old, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(s.b.mnt(c.rel))
			if err != nil {
				t.Fatalf("node B: open %s: %v", c.rel, err)
			}
			c.f = f
		}
		defer c.f.Close()
		got, err := io.ReadAll(c.f)
		if err != nil || !bytes.Equal(got, old) {
			setupErr[c.name] = fmt.Sprintf("node B: reading %s to its end before the append: %v %s", c.rel, err, tnShort(got))
		}
	}
	// Append everywhere, then watch all the readers at once.
	for _, c := range cases {
		c.appended = []byte(fmt.Sprintf("appended to %s by %s at %s\n", c.rel, map[bool]string{false: "node A", true: "the origin"}[c.viaOrigin], time.Now().Format(time.RFC3339Nano)))
		path := s.a.mnt(c.rel)
		if c.viaOrigin {
			path = s.org(c.rel)
		}
		if err := tnAppend(path, c.appended); err != nil {
			t.Fatalf("append to %s: %v", path, err)
		}
	}
	const bound = 10 * time.Second
	var wg sync.WaitGroup
	for _, c := range cases {
		if setupErr[c.name] != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			buf := make([]byte, 64<<10)
			for time.Since(start) < bound {
				n, err := c.f.Read(buf)
				c.got = append(c.got, buf[:n]...)
				if err != nil && err != io.EOF {
					c.err = err
					break
				}
				if len(c.got) >= len(c.appended) {
					c.arrived = true
					break
				}
				if n == 0 {
					time.Sleep(50 * time.Millisecond)
				}
			}
			c.took = time.Since(start)
			b, err := os.ReadFile(s.b.mnt(c.rel))
			c.freshAfter = fmt.Sprintf("a fresh open on B reads %d bytes ending %s (%v)", len(b), tnShort(b[max(0, len(b)-len(c.appended)):]), err)
		}()
	}
	wg.Wait()
	limit := 2*tnAttr + 500*time.Millisecond
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if e := setupErr[c.name]; e != "" {
				t.Fatal(e)
			}
			mode := "cached I/O (cold)"
			if c.warm {
				mode = "warm (passthrough)"
			}
			switch {
			case c.err != nil:
				t.Fatalf("open %s reader on node B of %s: read after the append: %v", mode, c.rel, c.err)
			case !c.arrived:
				t.Fatalf("open %s reader on node B of %s did not see the %d appended bytes within %s (got %s); %s",
					mode, c.rel, len(c.appended), bound, tnShort(c.got), c.freshAfter)
			case !bytes.Equal(c.got, c.appended):
				t.Fatalf("open %s reader on node B of %s read %s after the old end, want %q", mode, c.rel, tnShort(c.got), c.appended)
			case c.took > limit:
				t.Fatalf("open %s reader on node B of %s saw the appended bytes only after %s, want within ~2x the attribute timeout (%s)",
					mode, c.rel, c.took.Round(time.Millisecond), limit)
			}
			t.Logf("open %s reader on node B saw the append after %s", mode, c.took.Round(time.Millisecond))
		})
	}
}

// d. On one node, a reader holds a warm (passthrough) file open; a writer
// opening it on the same node is not blocked nor refused (ETXTBSY), and
// once the writer closed, the reader reads the new bytes at offset 0.
func tnWriterBesideWarmReader(t *testing.T, s *tnShare, rel string, truncate bool) {
	n := s.a
	old := tnPattern("old "+rel, 256<<10)
	r := n.warmOpen(t, s, rel)
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("node %s: warm read: %v %s", n.name, err, tnShort(got))
	}
	flags := os.O_WRONLY
	neu := tnPattern("NEW "+rel, len(old)) // overwrite in place, same size
	if truncate {
		flags |= os.O_TRUNC // what the shell's > does
		neu = []byte("replaced while a reader had it open\n")
	}
	var w *os.File
	res := within(10*time.Second, func() error {
		var err error
		w, err = os.OpenFile(n.mnt(rel), flags, 0)
		return err
	})
	switch {
	case res.hung:
		t.Fatalf("node %s: opening %s for writing (flags %#x) while a warm reader has it open hangs (> 10 s)\n%s", n.name, rel, flags, s.logs())
	case res.err != nil:
		t.Fatalf("node %s: opening %s for writing (flags %#x) while a warm reader has it open: %v after %s\n%s",
			n.name, rel, flags, res.err, res.took.Round(time.Millisecond), s.logs())
	case res.took > 500*time.Millisecond:
		w.Close()
		t.Fatalf("node %s: opening %s for writing while a warm reader has it open took %s, want < 500ms", n.name, rel, res.took.Round(time.Millisecond))
	}
	t.Logf("node %s: the writer's open took %s", n.name, res.took.Round(time.Millisecond))
	if _, err := w.Write(neu); err != nil {
		w.Close()
		t.Fatalf("node %s: write beside a warm reader: %v", n.name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("node %s: close of the writer: %v", n.name, err)
	}
	if got, err := os.ReadFile(s.org(rel)); err != nil || !bytes.Equal(got, neu) {
		t.Fatalf("origin after the writer closed: %v %s, want the new bytes", err, tnShort(got))
	}
	var last string
	buf := make([]byte, len(old)+4096)
	took, ok := tnPoll(tnAttr+500*time.Millisecond, func() bool {
		k, err := r.ReadAt(buf, 0)
		last = fmt.Sprintf("%d bytes %s, %v", k, tnShort(buf[:k]), err)
		return (err == nil || err == io.EOF) && bytes.Equal(buf[:k], neu)
	})
	if !ok {
		t.Fatalf("node %s: the open warm reader's pread at 0 after the writer closed reads %s, want the writer's %d bytes %s",
			n.name, last, len(neu), tnShort(neu))
	}
	t.Logf("node %s: the open reader read the new bytes after %s", n.name, took.Round(time.Millisecond))
}

// e. Modes, owners, link counts, sizes and mtimes are the origin's on both
// nodes, for entries made on the origin and through node A; an
// unprivileged user is refused (or allowed) exactly as on the origin.
func tnPermissions(t *testing.T, s *tnShare) {
	const nobody = 65534
	type entry struct {
		rel      string
		dir      bool
		mode     os.FileMode
		uid, gid int
	}
	entries := []entry{
		{rel: "f0000", mode: 0},
		{rel: "f0600", mode: 0o600},
		{rel: "f0644", mode: 0o644},
		{rel: "f0711", mode: 0o711},
		{rel: "fnobody", mode: 0o600, uid: nobody, gid: nobody},
		{rel: "d0000", dir: true, mode: 0},
		{rel: "d0600", dir: true, mode: 0o600},
		{rel: "d0644", dir: true, mode: 0o644},
		{rel: "d0711", dir: true, mode: 0o711},
	}
	// build builds the tree under root and says which step failed.
	build := func(root string) error {
		if err := os.Mkdir(root, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(root, 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(root, e.rel)
			if e.dir {
				if err := os.Mkdir(p, 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(p, "inner"), []byte("inner of "+e.rel+"\n"), 0o644); err != nil {
					return err
				}
			} else {
				content := "content of " + e.rel + "\n"
				if e.rel == "f0711" {
					content = "#!/bin/sh\necho ran f0711\n"
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					return err
				}
			}
			if err := os.Chmod(p, e.mode); err != nil {
				return err
			}
			if e.uid != 0 {
				if err := os.Lchown(p, e.uid, e.gid); err != nil {
					return err
				}
			}
		}
		return os.Link(filepath.Join(root, "f0644"), filepath.Join(root, "f0644.link"))
	}
	names := []string{"f0644.link"}
	for _, e := range entries {
		names = append(names, e.rel)
		if e.dir {
			names = append(names, e.rel+"/inner")
		}
	}
	for _, set := range []struct{ name, root string }{{"made_on_origin", s.org("tn-e-origin")}, {"made_through_A", s.a.mnt("tn-e-via-a")}} {
		t.Run(set.name, func(t *testing.T) {
			if err := build(set.root); err != nil {
				t.Fatalf("making the tree under %s: %v", set.root, err)
			}
			rel := filepath.Base(set.root)
			// Owners and the hard link as the origin has them.
			for _, name := range names {
				want, err := tnLstat(s.org(filepath.Join(rel, name)))
				if err != nil {
					t.Errorf("origin: %s: %v", name, err)
					continue
				}
				if name == "f0644" || name == "f0644.link" {
					if want.nlink != 2 {
						t.Errorf("setup: origin %s has nlink %d, want 2", name, want.nlink)
					}
				}
				for _, p := range []*tnPeer{s.a, s.b} {
					got, err := tnLstat(p.mnt(filepath.Join(rel, name)))
					if err != nil {
						t.Errorf("node %s: stat %s: %v (origin: %s)", p.name, name, err, want)
						continue
					}
					if got != want {
						t.Errorf("node %s: %s: %s\n\t\t\t\twant (origin) %s", p.name, name, got, want)
					}
				}
			}
			// The same commands as uid 65534 on the origin and through each mount.
			cmds := [][]string{
				{"cat", "f0000"},
				{"cat", "f0600"},
				{"cat", "f0644"},
				{"cat", "f0644.link"},
				{"cat", "fnobody"},
				{"./f0711"},
				{"ls", "d0000"},
				{"ls", "d0600"},
				{"ls", "d0644"},
				{"ls", "d0711"},
				{"cat", "d0000/inner"},
				{"cat", "d0600/inner"},
				{"cat", "d0644/inner"},
				{"cat", "d0711/inner"},
				// Writes last: one wrongly allowed changes the tree.
				{"sh", "-c", "echo more >> f0644"},
				{"sh", "-c", "echo more >> fnobody"},
				{"touch", "d0711/new"},
			}
			for _, c := range cmds {
				want := tnRunAs(nobody, nobody, s.org(rel), c[0], c[1:]...)
				for i := 0; strings.Contains(want.stderr, "text file busy") && i < 10; i++ {
					// The NFS server still holds the file just written
					// through a mount open for writing: exec on its own
					// directory fails until it lets go.
					time.Sleep(100 * time.Millisecond)
					want = tnRunAs(nobody, nobody, s.org(rel), c[0], c[1:]...)
				}
				busy := strings.Contains(want.stderr, "text file busy")
				for _, p := range []*tnPeer{s.a, s.b} {
					got := tnRunAs(nobody, nobody, p.mnt(rel), c[0], c[1:]...)
					if busy {
						// The origin cannot say: nobody may execute but not
						// read f0711, so the shell must be refused the script.
						if got.exit == 0 {
							t.Errorf("as uid %d, %q through node %s ran: %s", nobody, strings.Join(c, " "), p.name, got)
						}
						continue
					}
					if got != want {
						t.Errorf("as uid %d, %q through node %s: %s\n\t\t\t\twant (on the origin) %s", nobody, strings.Join(c, " "), p.name, got, want)
					}
				}
			}
		})
	}
}

// f. Programs, across the two nodes.

// tail -F on node B follows a log node A's logger loop appends to.
func tnTailF(t *testing.T, s *tnShare) {
	const rel = "tn-f-tail.log"
	if err := os.WriteFile(s.a.mnt(rel), []byte("header\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb tnSyncBuf
	tail, err := startBounded(30*time.Second, &out, &errb, "tail", "-F", "-s", "0.2", "-n", "+1", s.b.mnt(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer tail.stop()
	if _, ok := tnPoll(tnVisible, func() bool { return out.String() == "header\n" }); !ok {
		t.Fatalf("tail -F on node B: %q after %s, want the header line (stderr %q)", out.String(), tnVisible, errb.String())
	}
	// The logger: a shell loop appending a line every 100 ms (open, write, close each).
	const lines = 30
	loop := fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "line $i" >> "$1"; i=$((i+1)); sleep 0.1; done`, lines)
	if _, stderr, err := tnRun(30*time.Second, "/", nil, "", "sh", "-c", loop, "sh", s.a.mnt(rel)); err != nil {
		t.Fatalf("the logger loop on node A: %v %s", err, stderr)
	}
	want := "header\n"
	for i := 1; i <= lines; i++ {
		want += fmt.Sprintf("line %d\n", i)
	}
	if got, err := os.ReadFile(s.org(rel)); err != nil || string(got) != want {
		t.Fatalf("setup: origin has %q, %v", got, err)
	}
	const bound = 10 * time.Second
	took, ok := tnPoll(bound, func() bool { return len(out.String()) >= len(want) })
	if !ok || out.String() != want {
		t.Fatalf("tail -F on node B printed (after %s):\n%s\nwant every line node A appended:\n%s\n(tail's stderr: %q)",
			took.Round(time.Millisecond), out.String(), want, errb.String())
	}
	t.Logf("tail -F on node B had every line %s after the logger ended", took.Round(time.Millisecond))
}

// python3 on node B reads a file node A keeps open and appends to, until the
// END line.
func tnPythonGrowing(t *testing.T, s *tnShare) {
	tnEnsure(t, "fuse", "python3")
	const rel = "tn-f-python.log"
	if err := os.WriteFile(s.a.mnt(rel), []byte("start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const script = `
import sys, time
f = open(sys.argv[1])
deadline = time.time() + 10
buf = ''
while time.time() < deadline:
    chunk = f.read()
    if chunk:
        buf += chunk
        if buf.endswith('END\n'):
            break
    else:
        time.sleep(0.05)
sys.stdout.write(buf)
`
	var out, errb tnSyncBuf
	py, err := startBounded(20*time.Second, &out, &errb, "python3", "-c", script, s.b.mnt(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer py.stop()
	time.Sleep(300 * time.Millisecond) // python has opened the file and read "start"
	w, err := os.OpenFile(s.a.mnt(rel), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := "start\n"
	for i := 1; i <= 20; i++ {
		line := fmt.Sprintf("row %d\n", i)
		want += line
		if _, err := w.WriteString(line); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want += "END\n"
	if _, err := w.WriteString("END\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	err = py.wait()
	if err != nil || out.String() != want {
		t.Fatalf("python3 on node B reading the growing file: %v; read:\n%s\nwant:\n%s\n(stderr %q)", err, out.String(), want, errb.String())
	}
}

// sqlite3 in rollback-journal or WAL mode: inserts on node A, queries on B.
func tnSqlite(t *testing.T, s *tnShare, mode string) {
	tnEnsure(t, "fuse", "sqlite3")
	rel := "tn-f-sqlite-" + mode + ".db"
	sq := func(p *tnPeer, sql string) (string, error) {
		out, stderr, err := tnRun(30*time.Second, "/", nil, sql, "sqlite3", "-batch", "-bail", p.mnt(rel))
		if err != nil {
			return out, fmt.Errorf("sqlite3 on node %s: %v: %s", p.name, err, strings.TrimSpace(stderr))
		}
		return strings.TrimSpace(out), nil
	}
	if s.flavour != "path" {
		// NFSv3 locks need NLM, which eddy's nfs:// origin does not speak:
		// POSIX locks are refused (ENOLCK), as a kernel NFSv3 client's are
		// against a server without NLM, and sqlite reports the database
		// locked rather than risk two nodes writing it at once.
		_, err := sq(s.a, "PRAGMA journal_mode="+mode+";\nCREATE TABLE t(x INTEGER, pad TEXT);\n")
		if err == nil || !strings.Contains(err.Error(), "locked") {
			t.Fatalf("sqlite3 over nfs:// without locks: %v, want \"database is locked\"", err)
		}
		return
	}
	if out, err := sq(s.a, "PRAGMA journal_mode="+mode+";\nCREATE TABLE t(x INTEGER, pad TEXT);\n"); err != nil || out != mode {
		t.Fatalf("create on node A: %q %v, want journal mode %q", out, err, mode)
	}
	// B reads the empty table first.
	var out string
	var err error
	if _, ok := tnPoll(tnVisible, func() bool { out, err = sq(s.b, "SELECT count(*) FROM t;"); return err == nil && out == "0" }); !ok {
		t.Fatalf("node B: count of the new table: %q %v, want 0", out, err)
	}
	var script strings.Builder
	for i := 1; i <= 100; i++ { // one transaction each
		fmt.Fprintf(&script, "INSERT INTO t VALUES(%d, '%s');\n", i, strings.Repeat("p", 200))
	}
	if _, err := sq(s.a, script.String()); err != nil {
		t.Fatalf("inserts on node A: %v", err)
	}
	var first string
	took, ok := tnPoll(tnVisible, func() bool {
		out, err = sq(s.b, "PRAGMA integrity_check;\nSELECT count(*), sum(x) FROM t;\n")
		if first == "" {
			first = fmt.Sprintf("%q %v", out, err)
		}
		return err == nil && out == "ok\n100|5050"
	})
	if !ok {
		t.Fatalf("node B after node A closed the %s-mode database: %q %v, want integrity ok and 100 rows summing to 5050\n%s", mode, out, err, s.logs())
	}
	if took > 50*time.Millisecond {
		t.Logf("node B's first query read %s; the right answer came after %s", first, took.Round(time.Millisecond))
	}
	// The origin has it too (the truth, read without eddy).
	if o, stderr, err := tnRun(30*time.Second, "/", nil, "PRAGMA integrity_check;\nSELECT count(*), sum(x) FROM t;\n", "sqlite3", "-batch", "-bail", s.org(rel)); err != nil || strings.TrimSpace(o) != "ok\n100|5050" {
		t.Fatalf("the origin's copy of the %s-mode database: %q %v %s", mode, o, err, stderr)
	}
	// And the other way round.
	if _, err := sq(s.b, "INSERT INTO t VALUES(101, 'b');"); err != nil {
		t.Fatalf("insert on node B: %v", err)
	}
	if _, ok := tnPoll(tnVisible, func() bool { out, err = sq(s.a, "SELECT count(*) FROM t;"); return err == nil && out == "101" }); !ok {
		t.Fatalf("node A after node B's insert: %q %v, want 101", out, err)
	}
}

// git: init and commits on node A; log, status and fsck on node B.
func tnGit(t *testing.T, s *tnShare) {
	tnEnsure(t, "fuse", "git")
	home := t.TempDir()
	env := append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=tn", "GIT_AUTHOR_EMAIL=tn@example.org",
		"GIT_COMMITTER_NAME=tn", "GIT_COMMITTER_EMAIL=tn@example.org", "LC_ALL=C")
	git := func(p *tnPeer, args ...string) (string, error) {
		out, stderr, err := tnRun(30*time.Second, p.mnt("tn-f-git"), env, "", "git", args...)
		if err != nil {
			return out, fmt.Errorf("git %s on node %s: %v: %s", strings.Join(args, " "), p.name, err, strings.TrimSpace(stderr))
		}
		return out, nil
	}
	if err := os.Mkdir(s.a.mnt("tn-f-git"), 0o755); err != nil {
		t.Fatal(err)
	}
	steps := [][]string{{"init", "-q", "-b", "main"}}
	for _, st := range steps {
		if _, err := git(s.a, st...); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(s.a.mnt("tn-f-git/src"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.a.mnt("tn-f-git/README"), []byte("two nodes\n"), 0o644)
	writeRandom(t, s.a.mnt("tn-f-git/src/blob.bin"), 1<<20, 77)
	for _, st := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", "first"}} {
		if _, err := git(s.a, st...); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(s.a.mnt("tn-f-git/README"), []byte("two nodes, one share\n"), 0o644)
	if _, err := git(s.a, "commit", "-q", "-am", "second"); err != nil {
		t.Fatal(err)
	}
	wantLog, err := git(s.a, "log", "--format=%H %s")
	if err != nil {
		t.Fatal(err)
	}
	var out string
	took, ok := tnPoll(tnVisible, func() bool { out, err = git(s.b, "log", "--format=%H %s"); return err == nil && out == wantLog })
	if !ok {
		t.Fatalf("git log on node B: %q %v, want %q\n%s", out, err, wantLog, s.logs())
	}
	if took > 50*time.Millisecond {
		t.Logf("git log on node B was right after %s", took.Round(time.Millisecond))
	}
	if out, err := git(s.b, "status", "--porcelain"); err != nil || out != "" {
		t.Fatalf("git status on node B: %q %v, want a clean tree", out, err)
	}
	if out, err := git(s.b, "fsck", "--full", "--strict"); err != nil {
		t.Fatalf("git fsck on node B: %v %s", err, out)
	}
	// A commit on B, seen on A.
	os.WriteFile(s.b.mnt("tn-f-git/fromB"), []byte("b\n"), 0o644)
	for _, st := range [][]string{{"add", "fromB"}, {"commit", "-q", "-m", "third, on B"}} {
		if _, err := git(s.b, st...); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := tnPoll(tnVisible, func() bool {
		out, err = git(s.a, "log", "-1", "--format=%s")
		return err == nil && out == "third, on B\n"
	}); !ok {
		t.Fatalf("git log on node A after a commit on B: %q %v", out, err)
	}
	if out, err := git(s.a, "status", "--porcelain"); err != nil || out != "" {
		t.Fatalf("git status on node A after a commit on B: %q %v, want a clean tree", out, err)
	}
}

// rsync --inplace of a changed file onto node A's mount; the checksum on B.
func tnRsync(t *testing.T, s *tnShare) {
	tnEnsure(t, "fuse", "rsync")
	src := filepath.Join(t.TempDir(), "src.bin")
	writeRandom(t, src, 2<<20, 90)
	const rel = "tn-f-rsync.bin"
	rsync := func() {
		t.Helper()
		if out, stderr, err := tnRun(60*time.Second, "/", nil, "", "rsync", "-t", "--inplace", "--no-whole-file", src, s.a.mnt(rel)); err != nil {
			t.Fatalf("rsync to node A: %v %s %s", err, out, stderr)
		}
	}
	rsync()
	if got, want := sha256File(t, s.b.mnt(rel)), sha256File(t, src); got != want {
		t.Fatal("node B: checksum of the first copy differs")
	}
	// Change 64 KiB in the middle and grow the file.
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("c"), 64<<10), 1<<20)
	f.WriteAt(bytes.Repeat([]byte("g"), 100<<10), 2<<20)
	f.Close()
	future := time.Now().Add(time.Minute)
	os.Chtimes(src, future, future)
	rsync()
	want := sha256File(t, src)
	if got := sha256File(t, s.org(rel)); got != want {
		t.Fatal("origin: checksum after rsync --inplace differs from the source")
	}
	var got string
	took, ok := tnPoll(tnVisible, func() bool { got, err = hashFile(s.b.mnt(rel)); return err == nil && got == want })
	if !ok {
		fi, _ := os.Stat(s.b.mnt(rel))
		t.Fatalf("node B: checksum after rsync --inplace on node A still differs after %s (%v; B's size %v, want %d)", tnVisible, err, fi.Size(), (2<<20)+(100<<10))
	}
	t.Logf("node B had the new checksum after %s", took.Round(time.Millisecond))
}

// An mmap reader on node B of a warm file node A rewrites: reopened and
// mapped again, it sees the new bytes.
func tnMmap(t *testing.T, s *tnShare) {
	const rel = "tn-f-mmap.bin"
	old := tnPattern("old "+rel, 256<<10)
	f := s.b.warmOpen(t, s, rel)
	f.Close()
	if got, err := tnMmapRead(s.b.mnt(rel)); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("node B: mmap of the old version: %v %s", err, tnShort(got))
	}
	neu := tnPattern("NEW "+rel, len(old))
	w, err := os.OpenFile(s.a.mnt(rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(neu, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	took, ok := tnPoll(tnVisible, func() bool { got, err = tnMmapRead(s.b.mnt(rel)); return err == nil && bytes.Equal(got, neu) })
	if !ok {
		t.Fatalf("node B: mmap after node A rewrote the file: %v %s, want the new bytes\n%s", err, tnShort(got), s.logs())
	}
	t.Logf("node B's mmap saw the new bytes after %s", took.Round(time.Millisecond))
}

// cp -p and mv on node A, seen on node B (which had looked at the old names).
func tnCpMv(t *testing.T, s *tnShare) {
	base := "tn-f-cpmv"
	for _, d := range []string{"from/sub", "to", "copies"} {
		if err := os.MkdirAll(s.org(filepath.Join(base, d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sum := writeRandom(t, s.org(base+"/from/sub/data.bin"), 1<<20, 91)
	os.Chmod(s.org(base+"/from/sub/data.bin"), 0o640)
	old := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	os.Chtimes(s.org(base+"/from/sub/data.bin"), old, old)
	// B looks at everything first.
	if got := sha256File(t, s.b.mnt(base+"/from/sub/data.bin")); got != sum {
		t.Fatal("node B: first read differs")
	}
	os.ReadDir(s.b.mnt(base + "/to"))
	os.ReadDir(s.b.mnt(base + "/copies"))
	if _, err := os.Stat(s.b.mnt(base + "/to/sub")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("node B: %v", err)
	}
	a := func(rel string) string { return s.a.mnt(filepath.Join(base, rel)) }
	if _, stderr, err := tnRun(30*time.Second, "/", nil, "", "cp", "-p", a("from/sub/data.bin"), a("copies/data.bin")); err != nil {
		t.Fatalf("cp -p on node A: %v %s", err, stderr)
	}
	if _, stderr, err := tnRun(30*time.Second, "/", nil, "", "mv", a("from/sub"), a("to/")); err != nil {
		t.Fatalf("mv on node A: %v %s", err, stderr)
	}
	b := func(rel string) string { return s.b.mnt(filepath.Join(base, rel)) }
	var last string
	took, ok := tnPoll(tnVisible, func() bool {
		_, oldErr := os.Stat(b("from/sub"))
		moved, mErr := hashFile(b("to/sub/data.bin"))
		copied, cErr := hashFile(b("copies/data.bin"))
		fromEnts, _ := os.ReadDir(b("from"))
		var cst tnStat
		var sErr error
		cst, sErr = tnLstat(b("copies/data.bin"))
		last = fmt.Sprintf("old name: %v; moved: %v; copy: %v %v; copy stat: %s %v; from/ lists %d entries",
			oldErr, mErr, cErr, copied == sum, cst, sErr, len(fromEnts))
		return errors.Is(oldErr, fs.ErrNotExist) && mErr == nil && moved == sum && cErr == nil && copied == sum &&
			sErr == nil && cst.mode&0o7777 == 0o640 && cst.mtimeNanos == old.UnixNano() && len(fromEnts) == 0
	})
	if !ok {
		t.Fatalf("node B after cp -p and mv on node A (%s later): %s", tnVisible, last)
	}
	t.Logf("node B saw the copy and the move after %s", took.Round(time.Millisecond))
}

// bounded is a program run in the background with a time limit.
type bounded struct {
	done chan error
	stop func()
	wait func() error
}

func startBounded(limit time.Duration, stdout, stderr io.Writer, name string, args ...string) (*bounded, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &bounded{done: make(chan error, 1)}
	go func() { b.done <- cmd.Wait() }()
	var once sync.Once
	var werr error
	b.wait = func() error {
		once.Do(func() {
			select {
			case werr = <-b.done:
			case <-time.After(limit):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-b.done
				werr = fmt.Errorf("%s killed after %s", name, limit)
			}
		})
		return werr
	}
	b.stop = func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		b.wait()
	}
	return b, nil
}
