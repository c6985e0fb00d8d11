package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
	"golang.org/x/sys/unix"
)

// Every fault test asserts: no stale or corrupt bytes (SHA-256 of what a
// reader got against what the server holds), no call hanging past the
// origin timeout, a clear error (EIO) where the data cannot be had, and
// nothing lost on the origin.

const (
	faultTimeout = 3 * time.Second
	// hangLimit bounds one failing system call: the origin timeout for
	// each origin call it makes (lookup, open, read), plus scheduling slack
	// on a busy 2-core machine.
	hangLimit = 3*faultTimeout + 5*time.Second
)

var timeoutFlag = []string{"--origin-timeout", faultTimeout.String()}

// The server stops while an uncached file is being read, and comes back
// within the timeout: the reader only notices a delay, and gets exactly
// the file's bytes. Stopped for longer than the timeout: EIO, no hang; the
// next read after the restart is correct.
func TestFaultServerStoppedMidRead(t *testing.T) {
	env := fltNFS(t, "400mbit") // ~45 MB/s: the read takes a while
	const size = 96 << 20
	want := fltWrite(t, env.org("big"), size, 1, false)
	n := fltNode(t, env, "--origin-timeout", "20s")
	n.start()

	f, err := os.Open(n.mnt("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := env.g.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(3 * time.Second)
		restarted <- env.g.Start(context.Background())
	}()
	r := within(60*time.Second, func() error {
		_, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
		return err
	})
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if r.hung {
		t.Fatal("read hung across a 3s server restart")
	}
	if r.err != nil {
		t.Fatalf("read across a server restart within the timeout failed: %v", r.err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatal("bytes read across the server restart differ from the file")
	}
	t.Logf("rest of the read took %v across the restart", r.took)

	// Down for longer than the timeout: EIO for uncached data, in bounded
	// time; never a short or empty file.
	n2 := fltNode(t, env, timeoutFlag...)
	n2.start()
	want2 := fltWrite(t, env.org("big2"), 32<<20, 2, false)
	f2, err := os.Open(n2.mnt("big2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if _, err := io.ReadFull(f2, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := env.g.Stop(); err != nil {
		t.Fatal(err)
	}
	r = within(hangLimit+30*time.Second, func() error {
		_, err := io.Copy(io.Discard, f2)
		return err
	})
	switch {
	case r.hung:
		t.Fatalf("read with the server down hung for %v", r.took)
	case r.err == nil:
		t.Fatal("read of uncached data with the server down succeeded (short file?)")
	case !isEIO(r.err):
		t.Errorf("read with the server down: %v, want EIO", r.err)
	}
	if err := env.g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fltHash(n2.mnt("big2")); err != nil || got != want2 {
		t.Fatalf("read after the server came back: %v (match %v)", err, got == want2)
	}
	if got, _, _ := fltHash(env.org("big")); got != want {
		t.Fatal("origin file changed")
	}
}

// The server stops while a fully cached file is read. With --offline-grace
// the cached bytes are served; without it, EIO within the timeout. Writes
// fail fast either way and nothing is lost when the server returns.
func TestFaultServerStoppedCachedRead(t *testing.T) {
	for _, grace := range []bool{true, false} {
		name := map[bool]string{true: "grace", false: "nograce"}[grace]
		t.Run(name, func(t *testing.T) {
			env := fltNFS(t, topo.Unshaped)
			want := fltWrite(t, env.org("cached"), 16<<20, 3, false)
			flags := append([]string{}, timeoutFlag...)
			if grace {
				flags = append(flags, "--offline-grace", "10m")
			}
			n := fltNode(t, env, flags...)
			n.start()
			if got, _, err := fltHash(n.mnt("cached")); err != nil || got != want {
				t.Fatalf("warm-up read: %v", err)
			}
			n.waitCached(t, "cached", 16<<20)
			if err := os.WriteFile(n.mnt("before"), []byte("written before the outage\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := env.g.Stop(); err != nil {
				t.Fatal(err)
			}
			if grace {
				fi, err := os.Stat(n.mnt("cached"))
				if err != nil || fi.Size() != 16<<20 {
					sz := int64(-1)
					if fi != nil {
						sz = fi.Size()
					}
					t.Errorf("offline stat of a cached file: size %d, %v; want %d", sz, err, 16<<20)
				}
			}
			var got string
			var gotSize int64
			r := within(hangLimit, func() (err error) {
				got, gotSize, err = fltHash(n.mnt("cached"))
				return err
			})
			switch {
			case r.hung:
				t.Fatalf("cached read with the server down hung for %v", r.took)
			case grace && (r.err != nil || got != want):
				t.Fatalf("offline-grace read of a cached file: %d bytes, %v (match %v)", gotSize, r.err, got == want)
			case !grace && r.err == nil:
				t.Fatal("read with the server down and no grace succeeded; it must fail (EIO)")
			case !grace && !isEIO(r.err):
				t.Errorf("read with the server down: %v, want EIO", r.err)
			}
			w := within(hangLimit, func() error {
				return os.WriteFile(n.mnt("during"), []byte("x"), 0o644)
			})
			if w.hung || w.err == nil {
				t.Fatalf("write with the server down: hung=%v err=%v; want a fast error", w.hung, w.err)
			}
			// The stats say the origin is down, and why.
			out, err := n.cli("cache", "stats", "--json")
			var st struct {
				OriginHealth *struct {
					Up        bool   `json:"up"`
					LastError string `json:"last_error"`
				} `json:"origin_health"`
			}
			if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.OriginHealth == nil {
				t.Fatalf("cache stats during the outage: %v %s", err, out)
			}
			if st.OriginHealth.Up || st.OriginHealth.LastError == "" {
				t.Errorf("origin health during the outage: %+v, want down with its last error", *st.OriginHealth)
			}
			if err := env.g.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(hangLimit)
			for {
				got, _, err := fltHash(n.mnt("cached"))
				if err == nil && got == want {
					break
				}
				if err == nil && got != want || time.Now().After(deadline) {
					t.Fatalf("read after the server came back: %v (match %v)", err, got == want)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if b, err := os.ReadFile(env.org("before")); err != nil || string(b) != "written before the outage\n" {
				t.Fatalf("write made before the outage lost on the origin: %q, %v", b, err)
			}
			if err := os.WriteFile(n.mnt("after"), []byte("y"), 0o644); err != nil {
				t.Fatalf("write after recovery: %v", err)
			}
			if b, _ := os.ReadFile(env.org("after")); string(b) != "y" {
				t.Fatal("write after recovery did not reach the origin")
			}
		})
	}
}

// The link is cut (veth down) and restored: reads of uncached data and
// writes fail with EIO in bounded time, and everything works again, with
// the right bytes, once the link is back.
func TestFaultLinkCut(t *testing.T) {
	env := fltNFS(t, topo.Unshaped)
	wantA := fltWrite(t, env.org("a"), 8<<20, 4, false)
	wantB := fltWrite(t, env.org("b"), 8<<20, 5, false)
	n := fltNode(t, env, timeoutFlag...)
	n.start()
	if got, _, err := fltHash(n.mnt("a")); err != nil || got != wantA {
		t.Fatalf("read a: %v", err)
	}
	payload := bytes.Repeat([]byte("eddy"), 256<<10)
	if err := os.WriteFile(n.mnt("w"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	linkUp := env.cutLink(t)
	r := within(hangLimit, func() error { _, _, err := fltHash(n.mnt("b")); return err })
	if r.hung || r.err == nil {
		t.Fatalf("uncached read with the link cut: hung=%v err=%v; want EIO in bounded time", r.hung, r.err)
	}
	if !isEIO(r.err) {
		t.Errorf("uncached read with the link cut: %v, want EIO", r.err)
	}
	w := within(hangLimit, func() error { return os.WriteFile(n.mnt("w2"), []byte("z"), 0o644) })
	if w.hung || w.err == nil {
		t.Fatalf("write with the link cut: hung=%v err=%v; want an error in bounded time", w.hung, w.err)
	}
	linkUp()
	fltReadAgain(t, n.mnt("b"), wantB, hangLimit+20*time.Second)
	if b, err := os.ReadFile(env.org("w")); err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("file written before the cut is not intact on the origin (%d bytes, %v)", len(b), err)
	}
}

// A caller whose call hangs on the origin (the link is cut; the origin
// timeout is long) is let go as soon as it is killed, as on a hard NFS
// mount, instead of sitting in the kernel until the timeout.
func TestFaultKilledCallerLetGo(t *testing.T) {
	env := fltNFS(t, topo.Unshaped)
	want := fltWrite(t, env.org("b"), 1<<20, 6, false)
	n := fltNode(t, env, "--origin-timeout", "120s")
	n.start()
	if _, err := os.Stat(n.mnt(".")); err != nil {
		t.Fatal(err)
	}
	linkUp := env.cutLink(t)
	cmd := exec.Command("stat", n.mnt("b"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(150 * time.Second):
		}
	}()
	select {
	case <-exited:
		t.Fatalf("stat with the link cut ended at once (%v); want it waiting on the origin", cmd.ProcessState)
	case <-time.After(2 * time.Second):
	}
	killed := time.Now()
	cmd.Process.Kill()
	select {
	case <-exited:
		t.Logf("the killed caller exited after %v", time.Since(killed))
	case <-time.After(10 * time.Second):
		t.Fatal("a caller killed while its call waited on the origin did not exit")
	}
	linkUp()
	fltReadAgain(t, n.mnt("b"), want, 150*time.Second)
}

// The cache directory sits on a 32 MiB tmpfs that something else fills up:
// every read is still served, correctly, from the origin; when the space
// comes back, reads stay correct and the cache is used again.
func TestFaultCacheDiskFull(t *testing.T) {
	env := fltNFS(t, topo.Unshaped)
	n := fltNode(t, env, timeoutFlag...)
	fsDir := filepath.Join(t.TempDir(), "enf-cachefs")
	if err := os.MkdirAll(fsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", fsDir, "tmpfs", 0, "size=32m"); err != nil {
		t.Fatalf("mount tmpfs for the cache dir: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fsDir, unix.MNT_DETACH) })
	n.CacheDir = filepath.Join(fsDir, "cache")
	if err := os.MkdirAll(n.CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"f1", "f2", "f3"}
	want := map[string]string{}
	for i, name := range names {
		want[name] = fltWrite(t, env.org(name), 12<<20, uint64(10+i), false)
	}
	n.start()
	check := func(stage string) {
		t.Helper()
		for _, name := range names {
			got, size, err := fltHash(n.mnt(name))
			if err != nil || got != want[name] {
				t.Fatalf("%s: read %s: %d bytes, %v (match %v)", stage, name, size, err, got == want[name])
			}
		}
		fltDropCaches(t)
	}
	if got, _, err := fltHash(n.mnt("f1")); err != nil || got != want["f1"] {
		t.Fatalf("first read of f1: %v", err)
	}
	// Fill what is left of the cache file system.
	filler := filepath.Join(fsDir, "enf-filler")
	ff, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for {
		if _, err := ff.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the cache fs: %v", err)
			}
			break
		}
	}
	ff.Close()
	check("cache disk full")
	check("cache disk full, again")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	check("space back")
	// The cache recovers: with the space back, reads fill it again.
	cached := func() float64 {
		out, err := n.cli("cache", "stats", "--json")
		if err != nil {
			t.Fatalf("cache stats: %v: %s", err, out)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("cache stats --json: %v: %s", err, out)
		}
		v, _ := m["cached_bytes"].(float64)
		return v
	}
	deadline := time.Now().Add(20 * time.Second)
	for cached() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cache holds nothing 20s after space came back: it did not recover")
		}
		check("space back, refilling")
		time.Sleep(time.Second)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(fsDir, &st); err == nil {
		t.Logf("cache fs after recovery: %d KiB used", (st.Blocks-st.Bfree)*uint64(st.Bsize)>>10)
	}
	if out, err := n.cli("cache", "stats", "--json"); err == nil {
		t.Logf("stats: %s", strings.TrimSpace(out))
	}
}

// kill -9 of the daemon in the middle of a fetch, then a restart: the
// restarted daemon serves exactly the file's bytes.
func TestFaultDaemonKilledMidFetch(t *testing.T) {
	env := fltNFS(t, "400mbit")
	want := fltWrite(t, env.org("big"), 64<<20, 6, false)
	n := fltNode(t, env, timeoutFlag...)
	n.start()
	reader := make(chan error, 1)
	go func() { _, _, err := fltHash(n.mnt("big")); reader <- err }()
	time.Sleep(700 * time.Millisecond)
	n.kill9()
	select {
	case err := <-reader:
		t.Logf("reader after kill -9: %v", err)
	case <-time.After(hangLimit):
		t.Fatal("reader hung after the daemon was killed")
	}
	n.start()
	for i := 0; i < 2; i++ { // the second read comes from the cache
		got, size, err := fltHash(n.mnt("big"))
		if err != nil || got != want {
			t.Fatalf("read %d after restart: %d bytes, %v (match %v)", i, size, err, got == want)
		}
		fltDropCaches(t)
	}
}

// The file is rewritten on the server while the node reads it: every
// complete read is one version or the other (never a mix of a replaced
// file), a failed read fails with a clear error, and a read that starts
// after the rewrite sees the new bytes, even for a same-size in-place
// rewrite with the old mtime restored.
func TestFaultRewriteWhileReading(t *testing.T) {
	env := fltNFS(t, topo.Unshaped)
	const size = 16 << 20
	v1 := fltWrite(t, env.org("f"), size, 7, true)
	n := fltNode(t, env, timeoutFlag...)
	n.start()
	if got, _, err := fltHash(n.mnt("f")); err != nil || got != v1 {
		t.Fatalf("first read: %v", err)
	}
	_, b1, err := fltBlocks(env.org("f"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		versions = map[string]bool{v1: true}
		vblocks  = [][]string{b1}
		stop     = make(chan struct{})
		bad      []string
		reads    int
	)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, blocks, err := fltBlocks(n.mnt("f"))
				mu.Lock()
				reads++
				switch {
				case err != nil && !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ESTALE):
					bad = append(bad, "unclear error: "+err.Error())
				case err == nil && !versions[got]:
					bad = append(bad, fmt.Sprintf("read matches no version; per 1 MiB block: %s", fltDescribe(blocks, vblocks)))
				}
				mu.Unlock()
			}
		}()
	}
	var last string
	for i := 0; i < 4; i++ {
		time.Sleep(300 * time.Millisecond)
		// Register the version before it becomes visible.
		path := env.org("f") + ".enf-tmp"
		h := fltWrite(t, path, size, uint64(100+i), false)
		_, bl, err := fltBlocks(path)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		versions[h] = true
		vblocks = append(vblocks, bl)
		mu.Unlock()
		if err := os.Rename(path, env.org("f")); err != nil {
			t.Fatal(err)
		}
		last = h
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d reads went wrong: %v", len(bad), reads, bad[:min(len(bad), 5)])
	}
	if got, _, err := fltHash(n.mnt("f")); err != nil || got != last {
		t.Fatalf("read after the last rewrite: %v (new bytes %v)", err, got == last)
	}
	// Same size, in place, old mtime restored: still caught.
	fi, err := os.Stat(env.org("f"))
	if err != nil {
		t.Fatal(err)
	}
	v3 := fltWrite(t, env.org("f"), size, 999, false)
	if err := os.Chtimes(env.org("f"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fltHash(n.mnt("f")); err != nil || got != v3 {
		t.Fatalf("read after an in-place same-size rewrite with mtime restored: %v (new bytes %v)", err, got == v3)
	}
	t.Logf("%d concurrent reads during 4 rewrites", reads)
}
