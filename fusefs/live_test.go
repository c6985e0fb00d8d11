package fusefs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
)

// liveBound is how long an open reader may take to see a change made
// elsewhere: the attribute timeout (1 s) plus slack for a loaded machine.
const liveBound = 5 * time.Second

// warmUp reads p through the mount until the store holds all of it, so the
// next open of p may use passthrough.
func warmUp(t *testing.T, st *cache.Store, mp, name string, size int64) {
	t.Helper()
	if _, err := os.ReadFile(filepath.Join(mp, name)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.CachedBytes(name) < size {
		if time.Now().After(deadline) {
			t.Fatalf("%s not complete in the cache: %d of %d bytes", name, st.CachedBytes(name), size)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readUntil reads f from off until it returns want, or fails after liveBound.
func readUntil(t *testing.T, f *os.File, off int64, want []byte, what string) {
	t.Helper()
	readUntilStat(t, f, off, want, what, true)
}

// readUntilStat is readUntil; stat false reads only (no fstat between
// reads), as a reader of a growing file may.
func readUntilStat(t *testing.T, f *os.File, off int64, want []byte, what string, stat bool) {
	t.Helper()
	got := make([]byte, len(want))
	deadline := time.Now().Add(liveBound)
	for {
		if stat {
			f.Stat() // as tail -f does: the kernel refreshes the size
		}
		n, _ := f.ReadAt(got, off)
		if n == len(want) && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: read %s at %d after %v, want %s", what, brief(got[:n]), off, liveBound, brief(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendTo(t *testing.T, p string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// An open reader sees bytes appended later, by another node (here: the
// origin directly) or through this mount, whether it reads through the
// daemon (a cold file) or by passthrough (a warm one).
func TestOpenReaderSeesAppends(t *testing.T) {
	for _, warm := range []bool{false, true} {
		for _, via := range []string{"origin", "mount", "origin-nostat"} {
			t.Run(fmt.Sprintf("warm=%v/via=%s", warm, via), func(t *testing.T) {
				dir, st, v, mp := realStoreMount(t)
				content := bytes.Repeat([]byte("0123456789abcdef"), 1<<16+7) // 1 MiB and a bit
				writeFile(t, filepath.Join(dir, "log"), content)
				if warm {
					warmUp(t, st, mp, "log", int64(len(content)))
				}
				before := st.Stats().PassthroughOpens
				r, err := os.Open(filepath.Join(mp, "log"))
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if warm && v.Passthrough() && st.Stats().PassthroughOpens == before {
					t.Fatal("warm file not opened with passthrough")
				}
				if got, err := os.ReadFile(filepath.Join(mp, "log")); err != nil || !bytes.Equal(got, content) {
					t.Fatalf("first read: %v", err)
				}
				target, stat := filepath.Join(dir, "log"), via != "origin-nostat"
				if via == "mount" {
					target = filepath.Join(mp, "log")
				}
				off := int64(len(content))
				for i := range 3 {
					line := []byte(fmt.Sprintf("appended line %d\n", i))
					appendTo(t, target, line)
					readUntilStat(t, r, off, line, fmt.Sprintf("append %d", i), stat)
					off += int64(len(line))
				}
				// The whole file, as the origin has it, through the old descriptor.
				want, _ := os.ReadFile(filepath.Join(dir, "log"))
				readUntil(t, r, 0, want, "whole file")
			})
		}
	}
}

// A file rewritten in place (same size, mtime restored) while a reader has
// it open is seen by that reader within the attribute timeout, and so is a
// rewrite that also grows the file (the new content is not an append).
func TestOpenReaderSeesRewrite(t *testing.T) {
	for _, c := range []struct {
		warm  bool
		grown int
	}{{false, 0}, {true, 0}, {false, 4097}, {true, 4097}} {
		t.Run(fmt.Sprintf("warm=%v/grown=%d", c.warm, c.grown), func(t *testing.T) {
			warm := c.warm
			dir, st, _, mp := realStoreMount(t)
			content := bytes.Repeat([]byte("v1-"), 100000)
			op := filepath.Join(dir, "f")
			writeFile(t, op, content)
			if warm {
				warmUp(t, st, mp, "f", int64(len(content)))
			}
			r, err := os.Open(filepath.Join(mp, "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, len(content))
			if _, err := r.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, content) {
				t.Fatalf("first read: %v", err)
			}
			fi, _ := os.Stat(op)
			v2 := append(bytes.Repeat([]byte("v2-"), 100000), bytes.Repeat([]byte("+"), c.grown)...)
			if err := os.WriteFile(op, v2, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chtimes(op, fi.ModTime(), fi.ModTime())
			readUntil(t, r, 0, v2, "rewrite")
		})
	}
}

// A writer opening a warm file that a passthrough reader on the same node
// holds open neither waits nor fails; the reader sees the written bytes,
// and the origin has them when close returns.
func TestWriterBesideWarmReader(t *testing.T) {
	for _, mode := range []string{"overwrite", "append", "truncate"} {
		t.Run(mode, func(t *testing.T) {
			dir, st, v, mp := realStoreMount(t)
			content := bytes.Repeat([]byte("warm data "), 200000) // 2 MB
			writeFile(t, filepath.Join(dir, "f"), content)
			warmUp(t, st, mp, "f", int64(len(content)))
			before := st.Stats().PassthroughOpens
			p := filepath.Join(mp, "f")
			r, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if v.Passthrough() && st.Stats().PassthroughOpens == before {
				t.Fatal("warm file not opened with passthrough")
			}
			want := append([]byte(nil), content...)
			flags := os.O_WRONLY
			var data []byte
			switch mode {
			case "overwrite":
				data = []byte("OVERWRITTEN")
				copy(want[1000:], data)
			case "append":
				flags |= os.O_APPEND
				data = []byte("appended at the end\n")
				want = append(want, data...)
			case "truncate":
				flags |= os.O_TRUNC
				data = []byte("all new\n")
				want = data
			}
			start := time.Now()
			w, err := os.OpenFile(p, flags, 0)
			if err != nil {
				t.Fatalf("open for writing beside a warm reader: %v", err)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("open for writing waited %v for the reader", d)
			}
			if mode == "overwrite" {
				_, err = w.WriteAt(data, 1000)
			} else {
				_, err = w.Write(data)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "f")); !bytes.Equal(got, want) {
				t.Fatalf("origin after close: %s, want %s", brief(got), brief(want))
			}
			readUntil(t, r, 0, want, "reader on the same node")
			if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("a new open reads %s, %v; want %s", brief(got), err, brief(want))
			}
		})
	}
}

// A file still changing is not opened with passthrough: reads go through
// the daemon, which follows its changes; once it has settled, it is.
func TestPassthroughSettle(t *testing.T) {
	requireFUSE(t)
	dir, st, v, mp := realStoreMountOpts(t, Options{PassthroughSettle: 2 * time.Second})
	if !v.Passthrough() {
		t.Skip("the kernel offers no passthrough")
	}
	content := bytes.Repeat([]byte("x"), 1<<20)
	writeFile(t, filepath.Join(dir, "f"), content)
	warmUp(t, st, mp, "f", int64(len(content)))
	before := st.Stats().PassthroughOpens
	if _, err := os.ReadFile(filepath.Join(mp, "f")); err != nil {
		t.Fatal(err)
	}
	if st.Stats().PassthroughOpens != before {
		t.Fatal("a file changed a moment ago was opened with passthrough")
	}
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(dir, "f"), old, old)
	time.Sleep(2100 * time.Millisecond)         // the chtimes changed ctime
	warmUp(t, st, mp, "f", int64(len(content))) // the new version (ctime) cached
	if _, err := os.ReadFile(filepath.Join(mp, "f")); err != nil {
		t.Fatal(err)
	}
	if st.Stats().PassthroughOpens == before {
		t.Fatal("a settled warm file was not opened with passthrough")
	}
}

// brief describes b for a failure message: its length, and where it
// differs is left to the caller; the first and last bytes.
func brief(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes %q...%q", len(b), b[:24], b[len(b)-24:])
}
