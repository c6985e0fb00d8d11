package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/fusefs"
)

// Two nodes, one share: two eddy daemons (own mount, cache dir and socket
// each) over one origin, either the same origin directory ("path") or the
// same NFS export served by nfs-ganesha ("nfs"). The daemons run with their
// default flags.

// tnAttr is the daemons' --attr-timeout (the default).
const tnAttr = time.Second

// tnSettle is how long a file must be unchanged before a warm open uses
// kernel passthrough (the daemons' default --passthrough-settle), plus slack.
const tnSettle = fusefs.DefaultPassthroughSettle + 300*time.Millisecond

// tnPeer is one of the two daemons, whatever the flavour.
type tnPeer struct {
	name   string // "A" or "B"
	Mount  string
	Socket string
	tail   func(lines int) string
}

func (p *tnPeer) mnt(rel string) string { return filepath.Join(p.Mount, rel) }

// cli runs the eddy CLI against this node and returns its stdout.
func (p *tnPeer) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, eddyBin, append([]string{"--socket", p.Socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("eddy %s on node %s: %v: %s", strings.Join(args, " "), p.name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (p *tnPeer) stats() (api.CacheStats, error) {
	var s api.CacheStats
	out, err := p.cli("cache", "stats", "--json")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("cache stats --json on node %s: %v: %q", p.name, err, out)
	}
	return s, nil
}

// passthroughOpens is the node's passthrough open count (-1 if the stats
// cannot be read; only logged).
func (p *tnPeer) passthroughOpens() int64 {
	s, err := p.stats()
	if err != nil {
		return -1
	}
	return s.PassthroughOpens
}

// waitCached waits until the node's cache holds all size bytes of rel (a
// read's end is not yet that: chunks are persisted behind the reader).
func (p *tnPeer) waitCached(rel string, size int64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		out, err := p.cli("cache", "ls", "--json", rel)
		var files []struct {
			Path        string `json:"path"`
			CachedBytes int64  `json:"cached_bytes"`
		}
		if err == nil && json.Unmarshal([]byte(out), &files) == nil {
			for _, f := range files {
				if (f.Path == rel || strings.HasSuffix(f.Path, "/"+rel)) && f.CachedBytes == size {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: %s not fully cached (%d bytes) within %s: %s %v", p.name, rel, size, d, strings.TrimSpace(out), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmOpen makes rel warm on p: the file must have settled (tnSettle), it is
// read fully once, its cache copy completed, and then opened again; the
// returned file is that second open (normally a passthrough open; the
// passthrough count's change is logged).
func (p *tnPeer) warmOpen(t *testing.T, s *tnShare, rel string) *os.File {
	t.Helper()
	s.waitSettled(t, rel)
	n, err := readAll(p.mnt(rel))
	if err != nil {
		t.Fatalf("node %s: first read of %s: %v", p.name, rel, err)
	}
	if err := p.waitCached(rel, n, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	before := p.passthroughOpens()
	f, err := os.Open(p.mnt(rel))
	if err != nil {
		t.Fatalf("node %s: warm open of %s: %v", p.name, rel, err)
	}
	after := p.passthroughOpens()
	if after > before {
		t.Logf("node %s: warm open of %s used passthrough (passthrough_opens %d -> %d)", p.name, rel, before, after)
	} else {
		t.Logf("node %s: NOTE warm open of %s did not count a passthrough open (passthrough_opens %d -> %d)", p.name, rel, before, after)
	}
	return f
}

// tnShare is one origin with two daemons over it.
type tnShare struct {
	flavour string
	origin  string // the origin's directory on this machine (for NFS, the export), the truth
	a, b    *tnPeer
}

func (s *tnShare) org(rel string) string { return filepath.Join(s.origin, rel) }

func (s *tnShare) logs() string {
	return "--- node A log ---\n" + s.a.tail(30) + "\n--- node B log ---\n" + s.b.tail(30)
}

// places are the origin directory and both mounts, with labels.
func (s *tnShare) places() []tnPlace {
	return []tnPlace{{"origin", s.origin}, {"node A", s.a.Mount}, {"node B", s.b.Mount}}
}

type tnPlace struct{ label, root string }

// waitSettled sleeps until rel (on the origin) has been unchanged long
// enough for a warm open to use passthrough.
func (s *tnShare) waitSettled(t *testing.T, rel string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(s.org(rel), &st); err != nil {
		t.Fatal(err)
	}
	changed := time.Unix(st.Mtim.Unix())
	if c := time.Unix(st.Ctim.Unix()); c.After(changed) {
		changed = c
	}
	if d := time.Until(changed.Add(tnSettle)); d > 0 {
		time.Sleep(d)
	}
}

// tnPathShare: two nodes over the same origin directory.
func tnPathShare(t *testing.T) *tnShare {
	t.Helper()
	needFUSE(t)
	base := t.TempDir()
	openPath(t, base)
	origin := filepath.Join(base, "tn-origin")
	if err := os.MkdirAll(origin, 0o755); err != nil {
		t.Fatal(err)
	}
	na := newNodeAt(t, filepath.Join(base, "tn-a"), origin)
	nb := newNodeAt(t, filepath.Join(base, "tn-b"), origin)
	na.start()
	nb.start()
	return &tnShare{flavour: "path", origin: origin,
		a: &tnPeer{name: "A", Mount: na.Mount, Socket: na.Socket, tail: na.tail},
		b: &tnPeer{name: "B", Mount: nb.Mount, Socket: nb.Socket, tail: nb.tail},
	}
}

// tnNFSShare: two nodes over the same nfs:// origin (one ganesha).
func tnNFSShare(t *testing.T) *tnShare {
	t.Helper()
	needFUSE(t)
	tnEnsure(t, "nfs", "ganesha.nfsd", "rpcbind")
	env := fltNFS(t, topo.Unshaped)
	openPath(t, env.export)
	na := fltNode(t, env)
	nb := fltNode(t, env)
	na.start()
	nb.start()
	openPath(t, filepath.Dir(na.Mount))
	openPath(t, filepath.Dir(nb.Mount))
	return &tnShare{flavour: "nfs", origin: env.export,
		a: &tnPeer{name: "A", Mount: na.Mount, Socket: na.Socket, tail: na.tail},
		b: &tnPeer{name: "B", Mount: nb.Mount, Socket: nb.Socket, tail: nb.tail},
	}
}

var tnDeps sync.Map // group -> *tnDepsOnce

type tnDepsOnce struct {
	once sync.Once
	out  []byte
	err  error
}

// tnEnsure makes sure the programs bins are installed, installing the
// scripts/deps.sh group (idempotent, apt-get) once if one is missing; it
// fails the test if they still cannot be found.
func tnEnsure(t *testing.T, group string, bins ...string) {
	t.Helper()
	missing := func() []string {
		var m []string
		for _, b := range bins {
			if _, err := exec.LookPath(b); err != nil {
				m = append(m, b)
			}
		}
		return m
	}
	if len(missing()) == 0 {
		return
	}
	v, _ := tnDeps.LoadOrStore(group, &tnDepsOnce{})
	d := v.(*tnDepsOnce)
	d.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "../scripts/deps.sh", group)
		d.out, d.err = cmd.CombinedOutput()
	})
	if m := missing(); len(m) > 0 {
		t.Fatalf("%s not installed, and scripts/deps.sh %s did not install it: %v\n%s", strings.Join(m, ", "), group, d.err, d.out)
	}
}

// tnPoll evaluates cond every 20 ms until it holds or d has passed; it
// returns how long it took and whether it held.
func tnPoll(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tnRun runs a command (bounded by limit) and returns its stdout, stderr and error.
func tnRun(limit time.Duration, dir string, env []string, stdin string, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: killed after %s: %w", name, strings.Join(args, " "), limit, err)
	}
	return out.String(), errb.String(), err
}

// tnResult is what a command run as an unprivileged user did.
type tnResult struct {
	exit           int
	stdout, stderr string
}

func (r tnResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.exit, r.stdout, strings.TrimSpace(r.stderr))
}

// tnRunAs runs name args as uid/gid (no supplementary groups) in dir.
func tnRunAs(uid, gid uint32, dir string, name string, args ...string) tnResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "LC_ALL=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := tnResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		r.exit = -1
		r.stderr += " [" + err.Error() + "]"
	}
	if ctx.Err() != nil {
		r.stderr += " [killed after 10s]"
	}
	return r
}

// tnStat is what two views of the same file must agree on.
type tnStat struct {
	mode       uint32 // type and permission bits
	uid, gid   uint32
	nlink      uint64
	size       int64
	mtimeNanos int64
}

func (s tnStat) String() string {
	return fmt.Sprintf("mode %07o uid %d gid %d nlink %d size %d mtime %s",
		s.mode, s.uid, s.gid, s.nlink, s.size, time.Unix(0, s.mtimeNanos).UTC().Format("15:04:05.000000000"))
}

func tnLstat(path string) (tnStat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return tnStat{}, err
	}
	return tnStat{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: uint64(st.Nlink), size: st.Size,
		mtimeNanos: st.Mtim.Nano()}, nil
}

// tnMmapRead maps the whole file read-only (MAP_SHARED), copies it and
// unmaps it.
func tnMmapRead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		return nil, nil
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	out := append([]byte(nil), m...)
	if err := syscall.Munmap(m); err != nil {
		return nil, err
	}
	return out, nil
}

// tnSyncBuf is a bytes.Buffer safe for a command's output and a poller.
type tnSyncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *tnSyncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *tnSyncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tnPattern is size bytes of a recognisable text pattern tagged with tag.
func tnPattern(tag string, size int) []byte {
	line := []byte(tag + " 0123456789abcdefghijklmnopqrstuvwxyz\n")
	return bytes.Repeat(line, size/len(line)+1)[:size]
}

// tnAppend appends data to path with O_APPEND and closes it.
func tnAppend(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tnShort shortens b for a failure message.
func tnShort(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q...(%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}
