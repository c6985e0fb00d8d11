package integration

import (
	"bytes"
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

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/daemon"
)

func TestMountReadYourWrites(t *testing.T) {
	n := newNode(t, "")
	n.start()

	p := n.mnt("dir/hello.txt")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("hello, eddy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Write-through: the origin has it as soon as close returned.
	if got, err := os.ReadFile(n.org("dir/hello.txt")); err != nil || string(got) != "hello, eddy\n" {
		t.Fatalf("origin after write = %q, %v", got, err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "hello, eddy\n" {
		t.Fatalf("mount read = %q, %v", got, err)
	}
	// Overwrite a file whose content is cached: the new bytes are read back.
	if err := os.WriteFile(p, []byte("HELLO, EDDY\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "HELLO, EDDY\n" {
		t.Fatalf("mount read after overwrite = %q, %v", got, err)
	}
	// Append through an open handle, read through another.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("more\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "HELLO, EDDY\nmore\n" {
		t.Fatalf("mount read after append = %q, %v", got, err)
	}
}

func TestMountForeignModificationSameSizeSameSecond(t *testing.T) {
	n := newNode(t, "")
	const size = 3 << 20
	old := bytes.Repeat([]byte("a"), size)
	if err := os.WriteFile(n.org("f.bin"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	n.start()
	if got, err := os.ReadFile(n.mnt("f.bin")); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("first read: %v", err)
	}
	fi, err := os.Stat(n.org("f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite behind the mount's back: same size, restore the old mtime.
	neu := bytes.Repeat([]byte("b"), size)
	if err := os.WriteFile(n.org("f.bin"), neu, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(n.org("f.bin"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(n.org("f.bin")); fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("test setup: size/mtime differ: %v %v", fi2.ModTime(), fi.ModTime())
	}
	got, err := os.ReadFile(n.mnt("f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, neu) {
		t.Fatalf("stale content after reopen: first byte %q, want 'b'", got[0])
	}
}

func TestMountRestartKeepsCache(t *testing.T) {
	n := newNode(t, "")
	const size = 24 << 20
	sum := writeRandom(t, n.org("data.bin"), size, 1)
	n.start()
	if got := sha256File(t, n.mnt("data.bin")); got != sum {
		t.Fatal("first read: checksum mismatch")
	}
	if s := n.stats(); s.MissBytes < size {
		t.Fatalf("first run: miss_bytes = %d, want >= %d", s.MissBytes, size)
	}
	n.stop()
	n.start()
	if got := sha256File(t, n.mnt("data.bin")); got != sum {
		t.Fatal("after restart: checksum mismatch")
	}
	s := n.stats()
	if s.MissBytes != 0 {
		t.Fatalf("after restart: miss_bytes = %d, want 0 (served from the kept cache)", s.MissBytes)
	}
	if s.CachedBytes < size || s.Files < 1 {
		t.Fatalf("after restart: cached_bytes = %d files = %d", s.CachedBytes, s.Files)
	}
}

func TestMountKill9MidFetchThenRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 256 MiB twice")
	}
	n := newNode(t, "")
	const size = 256 << 20
	sum := writeRandom(t, n.org("big.bin"), size, 2)
	dropCaches(t)
	n.start()
	f, err := os.Open(n.mnt("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var read int64
	for read < 24<<20 {
		k, err := f.Read(buf)
		if err != nil {
			t.Fatalf("read before kill: %v", err)
		}
		read += int64(k)
	}
	n.kill9() // fetches and read-ahead are in flight
	_, err = io.Copy(io.Discard, f)
	f.Close()
	if err == nil {
		t.Log("reader finished without an error after kill -9 (the kernel had it all)")
	}
	if !daemon.IsStale(n.Mount) {
		t.Logf("mount not stale after kill -9")
	}
	n.start() // cleans the stale mount
	if got := sha256File(t, n.mnt("big.bin")); got != sum {
		t.Fatal("after kill -9 and restart: checksum mismatch")
	}
	dropCaches(t)
	if got := sha256File(t, n.mnt("big.bin")); got != sum {
		t.Fatal("second read after restart: checksum mismatch")
	}
	if s := n.stats(); s.ChecksumFailures != 0 {
		t.Logf("checksum failures after kill -9 (dropped and refetched): %d", s.ChecksumFailures)
	}
}

func TestMountConcurrentReadersFetchOnce(t *testing.T) {
	n := newNode(t, "")
	const size = 64 << 20
	sum := writeRandom(t, n.org("cold.bin"), size, 3)
	n.start()
	const readers = 8
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Each reader starts at its own offset and wraps around, so
			// several ask for the same missing chunks at once.
			f, err := os.Open(n.mnt("cold.bin"))
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			start := int64(i%4) * size / 4
			for off := int64(0); off < size; off += int64(len(buf)) {
				pos := (start + off) % size
				if _, err := f.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
					errs[i] = fmt.Errorf("reader %d at %d: %w", i, pos, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := sha256File(t, n.mnt("cold.bin")); got != sum {
		t.Fatal("checksum mismatch")
	}
	// Reads the kernel issues out of order may be served straight from the
	// origin (direct_bytes, not stored); every chunk is fetched into the
	// cache exactly once.
	if s := n.stats(); s.MissBytes-s.DirectBytes != size {
		t.Fatalf("miss_bytes %d - direct_bytes %d = %d, want exactly %d (each chunk fetched once)",
			s.MissBytes, s.DirectBytes, s.MissBytes-s.DirectBytes, size)
	}
}

func TestMountCacheFullReadsSucceed(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a tmpfs")
	}
	n := newNode(t, "")
	// The cache lives on a 48 MiB tmpfs; its quota claims 1 GiB.
	if err := os.MkdirAll(n.CacheDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("edm-tmpfs", n.CacheDir, "tmpfs", 0, "size=48m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(n.CacheDir, unix.MNT_DETACH) })
	sums := map[string]string{}
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("f%d.bin", i)
		sums[name] = writeRandom(t, n.org(name), 24<<20, uint64(10+i))
	}
	n.start("--cache-size", "1G", "--min-free", "0%")
	for round := 0; round < 2; round++ {
		for name, sum := range sums {
			if got := sha256File(t, n.mnt(name)); got != sum {
				t.Fatalf("round %d: %s: checksum mismatch", round, name)
			}
		}
	}
	s := n.stats()
	t.Logf("cache full: errors=%d last_error=%q degraded=%v cached=%d evictions=%d", s.Errors, s.LastError, s.Degraded, s.CachedBytes, s.Evictions)
	if s.Errors == 0 && s.LastError == "" {
		t.Fatalf("a full cache disk left no trace in stats: %+v", s.CacheCounters)
	}
}

func TestMountPassthroughForWarmFiles(t *testing.T) {
	n := newNode(t, "")
	const size = 16 << 20
	sum := writeRandom(t, n.org("warm.bin"), size, 4)
	// The file was written a moment ago: passthrough at once, not after
	// --passthrough-settle.
	n.start("--passthrough-settle=-1s")
	out, err := n.eddy("cache", "warm", "--json", n.mnt("warm.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var last api.WarmEvent
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if err := json.Unmarshal([]byte(line), &last); err != nil {
			t.Fatalf("warm --json line %q: %v", line, err)
		}
	}
	if !last.Done || last.Error != "" || last.BytesDone != size {
		t.Fatalf("warm: last event %+v", last)
	}
	if got := sha256File(t, n.mnt("warm.bin")); got != sum {
		t.Fatal("checksum mismatch")
	}
	s := n.stats()
	if s.PassthroughOpens == 0 {
		t.Fatalf("passthrough_opens = 0 after reading a warm file: %+v", s.CacheCounters)
	}
	if s.PassthroughBytes < size {
		t.Fatalf("passthrough_bytes = %d after a passthrough read of %d bytes", s.PassthroughBytes, size)
	}
}

func TestMountSigtermUnmountsCleanly(t *testing.T) {
	n := newNode(t, "")
	if err := os.WriteFile(n.org("x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start()
	if _, err := os.ReadFile(n.mnt("x")); err != nil {
		t.Fatal(err)
	}
	n.stop() // fails the test unless the daemon exits 0
	if _, ok, _ := daemon.MountAt(n.Mount); ok {
		t.Fatal("still mounted after SIGTERM")
	}
	if _, err := os.Stat(n.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	if _, err := os.Stat(n.mnt("x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mountpoint still shows the share: %v", err)
	}
}

func TestMountStaleMountCleanedAtStart(t *testing.T) {
	n := newNode(t, "")
	if err := os.WriteFile(n.org("x"), []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start()
	n.kill9()
	if !daemon.IsStale(n.Mount) {
		t.Fatal("expected a stale mount after kill -9")
	}
	n.start()
	if got, err := os.ReadFile(n.mnt("x")); err != nil || string(got) != "still here" {
		t.Fatalf("read after restart over a stale mount = %q, %v", got, err)
	}
}

func TestDaemonClearErrors(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	origin := filepath.Join(base, "edm-origin")
	mnt := filepath.Join(base, "edm-mnt")
	busy := filepath.Join(base, "edm-busy")
	for _, d := range []string{origin, mnt, busy} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("edm-busy", busy, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(busy, unix.MNT_DETACH) })
	badToml := filepath.Join(base, "bad.toml")
	if err := os.WriteFile(badToml, []byte("cache_sise = \"1G\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "edm.sock")
	cache := filepath.Join(base, "edm-cache")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing origin", []string{"--origin", filepath.Join(base, "nope"), "--mount", mnt, "--cache-dir", cache}, "no such directory"},
		{"origin is a file", []string{"--origin", filepath.Join(base, "file"), "--mount", mnt, "--cache-dir", cache}, "not a directory"},
		{"no origin flag", []string{"--mount", mnt, "--cache-dir", cache}, "--origin is required"},
		{"mountpoint in use", []string{"--origin", origin, "--mount", busy, "--cache-dir", cache}, "in use"},
		{"cache dir inside the mount", []string{"--origin", origin, "--mount", mnt, "--cache-dir", filepath.Join(mnt, "c")}, "inside the mount"},
		{"cache dir inside the origin", []string{"--origin", origin, "--mount", mnt, "--cache-dir", filepath.Join(origin, "c")}, "inside the origin"},
		{"mount inside the origin", []string{"--origin", origin, "--mount", filepath.Join(origin, "m"), "--cache-dir", cache}, "inside the origin"},
		{"bad cache size", []string{"--origin", origin, "--mount", mnt, "--cache-dir", cache, "--cache-size", "12Q"}, "--cache-size"},
		{"bad duration", []string{"--origin", origin, "--mount", mnt, "--cache-dir", cache, "--revalidate", "soon"}, "revalidate"},
		{"unknown flag", []string{"--origin", origin, "--mount", mnt, "--cache-dir", cache, "--frobnicate"}, "frobnicate"},
		{"unknown config key", []string{"--origin", origin, "--mount", mnt, "--cache-dir", cache, "--config", badToml}, "unknown key"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			cmd := exec.Command(eddyBin, append([]string{"daemon", "--socket", sock}, c.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatal("daemon did not exit on a bad configuration")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit = %v, want a failure", err)
			}
			msg := strings.TrimSpace(stderr.String())
			lines := strings.Split(msg, "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, c.want) || !strings.HasPrefix(last, "eddy: ") {
				t.Fatalf("stderr = %q; want a last line 'eddy: ...%s...'", msg, c.want)
			}
			if m, ok, _ := daemon.MountAt(mnt); ok {
				t.Fatalf("left a mount behind: %+v", m)
			}
		})
	}
}

func TestCacheCommands(t *testing.T) {
	n := newNode(t, "")
	if err := os.MkdirAll(n.org("ds"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		writeRandom(t, n.org(fmt.Sprintf("ds/part%d", i)), 2<<20, uint64(20+i))
	}
	n.start()
	if _, err := n.eddy("cache", "warm", "ds"); err != nil {
		t.Fatal(err)
	}
	out, err := n.eddy("cache", "ls", "--json", "ds")
	if err != nil {
		t.Fatal(err)
	}
	var files []struct {
		Path        string  `json:"path"`
		CachedBytes int64   `json:"cached_bytes"`
		Percent     float64 `json:"percent"`
		Pinned      bool    `json:"pinned"`
	}
	if err := json.Unmarshal([]byte(out), &files); err != nil {
		t.Fatalf("ls --json: %v: %s", err, out)
	}
	if len(files) != 3 || files[0].Percent != 100 {
		t.Fatalf("ls after warm = %+v", files)
	}
	if _, err := n.eddy("cache", "pin", n.mnt("ds/part0")); err != nil {
		t.Fatal(err)
	}
	out, err = n.eddy("cache", "ls", "--json", n.mnt("ds/part0"))
	if err != nil {
		t.Fatal(err)
	}
	files = nil
	if err := json.Unmarshal([]byte(out), &files); err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || !files[0].Pinned {
		t.Fatalf("ls after pin = %+v, want ds/part0 pinned", files)
	}
	// A pinned file is never evicted: by name it is an error that says so,
	// and a directory eviction skips it.
	_, err = n.eddy("cache", "evict", "ds/part0")
	if err == nil || !strings.Contains(err.Error(), "pinned; unpin it first") {
		t.Fatalf("evict of a pinned file: err = %v, want a 'pinned; unpin it first' error", err)
	}
	if _, err := n.eddy("cache", "evict", "ds"); err != nil {
		t.Fatal(err)
	}
	out, err = n.eddy("cache", "ls", "--json", "ds")
	if err != nil {
		t.Fatal(err)
	}
	files = nil
	if err := json.Unmarshal([]byte(out), &files); err != nil {
		t.Fatal(err)
	}
	keptPinned := false
	for _, f := range files {
		pinned := f.Path == "ds/part0" || strings.HasSuffix(f.Path, "/ds/part0")
		if pinned != (f.CachedBytes == 2<<20) {
			t.Errorf("after evict of the directory: %+v (only the pinned ds/part0 must stay cached)", f)
		}
		keptPinned = keptPinned || pinned && f.CachedBytes == 2<<20
	}
	if !keptPinned {
		t.Errorf("after evict of the directory: pinned ds/part0 not cached any more: %+v", files)
	}
	if _, err := n.eddy("cache", "unpin", "ds/part0"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.eddy("cache", "warm", "ds"); err != nil {
		t.Fatal(err)
	}
	before := n.stats()
	if _, err := n.eddy("cache", "evict", "ds"); err != nil {
		t.Fatal(err)
	}
	out, err = n.eddy("cache", "ls", "--json", "ds")
	if err != nil {
		t.Fatal(err)
	}
	files = nil
	if err := json.Unmarshal([]byte(out), &files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.CachedBytes != 0 {
			t.Errorf("after evict: %+v still cached", f)
		}
	}
	if after := n.stats(); after.Evictions < before.Evictions+3 {
		t.Errorf("evictions %d -> %d, want +3", before.Evictions, after.Evictions)
	}
	table, err := n.eddy("cache", "stats")
	if err != nil || !strings.Contains(table, "hit bytes") || !strings.Contains(table, "passthrough opens") {
		t.Fatalf("cache stats table = %q, %v", table, err)
	}
	if _, err := n.eddy("cache", "warm", "../../etc/passwd"); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Fatalf("warm outside the share: err = %v, want an escape error", err)
	}
	// Errors and socket on the subcommand.
	cmd := exec.Command(eddyBin, "cache", "stats", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "cannot reach the eddy daemon") {
		t.Fatalf("stats on a missing socket = %q, %v", out, err)
	}
}

// Closed files stay open in the daemon, idle, one descriptor each: a
// second pass over a dataset reads nothing from the origin, a file changed
// on the origin while idle is never served stale, and evicting an idle
// file closes its data file at once.
func TestMountIdleFiles(t *testing.T) {
	n := newNode(t, "")
	const files, size = 200, 64 << 10
	if err := os.Mkdir(n.org("ds"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("ds/f%03d", i) }
	sums := make([]string, files)
	for i := range files {
		sums[i] = writeRandom(t, n.org(name(i)), size, uint64(100+i))
	}
	n.start()
	readAll := func(pass string) {
		for i := range files {
			if got := sha256File(t, n.mnt(name(i))); got != sums[i] {
				t.Fatalf("%s: %s: checksum mismatch", pass, name(i))
			}
		}
	}
	readAll("first pass")
	waitUntil(t, "every file cached and idle", 30*time.Second, func() bool {
		s := n.stats()
		return s.CachedBytes >= files*size && s.FillBacklog == 0 && s.IdleFiles >= files
	}, func() string { return fmt.Sprintf("%+v\n%s", n.stats().CacheCounters, n.tail(40)) })
	// dataFDs: the daemon's descriptors of data files, by descriptor, true when the file is
	// removed. A data file made from a spare (an unnamed O_TMPFILE file linked to its name at
	// first use) keeps the name "<data dir>/#<inode> (deleted)" here, so links and size tell
	// them apart: spares not yet linked are empty and unlinked, and are no file's data.
	dataFDs := func() map[string]bool {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.pid()))
		if err != nil {
			t.Fatal(err)
		}
		open := map[string]bool{}
		for _, e := range ents {
			fd := fmt.Sprintf("/proc/%d/fd/%s", n.pid(), e.Name())
			l, err := os.Readlink(fd)
			if err != nil || !strings.HasPrefix(l, n.CacheDir+"/") || !strings.Contains(l, "/data/") {
				continue
			}
			var st syscall.Stat_t
			if err := syscall.Stat(fd, &st); err != nil {
				continue // closed meanwhile
			}
			if st.Nlink == 0 && st.Size == 0 && strings.HasPrefix(filepath.Base(l), "#") {
				continue // a spare
			}
			open[e.Name()+" "+l] = st.Nlink == 0
		}
		return open
	}
	idle := n.stats().IdleFiles
	if fds := dataFDs(); int64(len(fds)) < files || int64(len(fds)) > idle {
		t.Fatalf("%d data files open in the daemon for %d idle files (%d read)", len(fds), idle, files)
	}

	// A removed data file is closed once its last handle is released (the
	// kernel sends RELEASE after close returns).
	deleted := func(when string) {
		var held string
		waitUntil(t, when+": removed data files closed", 5*time.Second, func() bool {
			held = ""
			for l, removed := range dataFDs() {
				if removed {
					held = l
				}
			}
			return held == ""
		}, func() string { return "still open: " + held })
	}
	deleted("after the first pass")
	miss := n.stats().MissBytes
	readAll("second pass")
	if s := n.stats(); s.MissBytes != miss {
		t.Fatalf("second pass read %d bytes from the origin, want 0", s.MissBytes-miss)
	}

	// Replaced (renamed over) and rewritten in place while idle.
	tmp := n.org("ds/.new")
	sums[1] = writeRandom(t, tmp, size, 9001)
	if err := os.Rename(tmp, n.org(name(1))); err != nil {
		t.Fatal(err)
	}
	neu := bytes.Repeat([]byte("z"), size)
	if err := os.WriteFile(n.org(name(2)), neu, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, n.mnt(name(1))); got != sums[1] {
		t.Fatal("a file replaced on the origin while idle: stale content")
	}
	deleted("after reading a file replaced on the origin")
	if got, err := os.ReadFile(n.mnt(name(2))); err != nil || !bytes.Equal(got, neu) {
		t.Fatalf("a file rewritten on the origin while idle: stale content (%v)", err)
	}

	deleted("after reading files changed on the origin")

	// Evicting an idle file closes its data file. (Other files may close at
	// the same time: the O_DIRECT writer of a file just read is closed when
	// its chunks' commit lets the entry go idle, later under load.)
	before := dataFDs()
	if _, err := n.eddy("cache", "evict", name(3)); err != nil {
		t.Fatal(err)
	}
	after := dataFDs()
	for fd := range after {
		if _, ok := before[fd]; !ok {
			t.Fatalf("data file %s opened by the eviction", fd)
		}
	}
	if len(after) >= len(before) {
		t.Fatalf("%d data files open after evicting an idle file, %d before", len(after), len(before))
	}
	deleted("after evicting an idle file")
	if got := sha256File(t, n.mnt(name(3))); got != sums[3] {
		t.Fatal("evicted file: checksum mismatch")
	}
}
