package fusefs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/consistency"
	"github.com/eddy-cluster/eddy/origin"
	"github.com/eddy-cluster/eddy/origin/nfs"
)

// BenchmarkNFSSmallFileEpoch is eddy bench's small-file epoch (128 KiB
// files, 100 to a directory, read whole in a random order by 4 readers)
// through mounts over an nfs:// origin: nfs-ganesha in a network namespace
// behind a 1 Gbit/s veth, as eddy bench stands it up. The readers run in a
// child process, so the CPU time this process spends during an epoch is the
// daemon side's alone (FUSE, cache, NFS client; not ganesha's). Besides
// files/s it reports what does not depend on the machine's load, per file:
// the daemon's CPU time (cpu-us/file), heap allocations (allocs/file), NFS
// calls (rpc/file) and FUSE requests (req/file, counted over one more epoch
// with go-fuse's debug log on; the kinds are logged).
//
//   - nfs: no cache, the NFS baseline of eddy bench (eddy --no-cache);
//   - eddy: the cache, strict close-to-open (the default);
//   - eddy-ttl: the cache, the whole share under '**=ttl:60s'.
//
// Cold epochs start from an empty cache and a dropped page cache; warm ones
// follow a cold one and the wait until every file is complete in the cache.
//
//	go test -run '^$' -bench NFSSmallFileEpoch -benchtime 3x ./fusefs
//
// EDDY_EPOCH_FILES sets the number of files (default 1,000, eddy bench
// --quick's); EDDY_EPOCH_PROFILE=DIR writes a CPU profile of each timed
// epoch there.
func BenchmarkNFSSmallFileEpoch(b *testing.B) {
	requireFUSE(b)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("EDDY_EPOCH_FILES")); err == nil && v > 0 {
		n = v
	}
	srv := startEpochServer(b)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("small/d%03d/f%06d", i/100, i)
		p := filepath.Join(srv.export, names[i])
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(p, epochContent(i), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// The bench's dataset is written minutes before the epochs: old enough
	// for passthrough (Options.PassthroughSettle) and for long attribute
	// timeouts (AttrTimeoutMax).
	old := time.Now().Add(-time.Hour)
	for _, nm := range names {
		os.Chtimes(filepath.Join(srv.export, nm), old, old)
	}
	order := make([]int, n)
	for i := range order {
		order[i] = (i * 7919) % n
	}
	list := filepath.Join(b.TempDir(), "order")
	var lb strings.Builder
	for _, i := range order {
		fmt.Fprintf(&lb, "%d %s\n", i, names[i])
	}
	if err := os.WriteFile(list, []byte(lb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	ttl, err := consistency.ParseAll([]string{"**=ttl:60s"})
	if err != nil {
		b.Fatal(err)
	}
	configs := []struct {
		name  string
		cache bool
		opts  Options
	}{
		{"nfs", false, Options{}},
		{"eddy", true, Options{}},
		{"eddy-ttl", true, Options{Consistency: ttl}},
	}
	for _, c := range configs {
		for _, state := range []string{"cold", "warm"} {
			b.Run(c.name+"/"+state, func(b *testing.B) {
				var m epochMount
				if state == "warm" {
					m = srv.mount(b, c.cache, c.opts)
					m.fill(b, list, names)
				}
				var sum epochSample
				for i := range b.N {
					if state == "cold" {
						m = srv.mount(b, c.cache, c.opts)
						dropPageCache(b)
					}
					prof := ""
					if dir := os.Getenv("EDDY_EPOCH_PROFILE"); dir != "" {
						prof = filepath.Join(dir, fmt.Sprintf("%s-%s-%d.pprof", c.name, state, i))
					}
					sum.add(m.epoch(b, list, prof, false))
					if state == "cold" {
						m.unmount(b)
					}
				}
				// One more epoch, counting FUSE requests.
				if state == "cold" {
					m = srv.mount(b, c.cache, c.opts)
					dropPageCache(b)
				}
				counted := m.epoch(b, list, "", true)
				if state == "cold" {
					m.unmount(b)
				}
				files := float64(sum.files)
				b.ReportMetric(files/sum.wall.Seconds(), "files/s")
				b.ReportMetric(float64(sum.cpu.Microseconds())/files, "cpu-us/file")
				b.ReportMetric(float64(sum.allocs)/files, "allocs/file")
				b.ReportMetric(float64(sum.rpcTotal())/files, "rpc/file")
				b.ReportMetric(float64(counted.reqTotal())/float64(counted.files), "req/file")
				b.Logf("%s/%s: %d files; NFS calls/file %s; FUSE requests/file %s; load %s",
					c.name, state, sum.files, perFile(sum.rpc, sum.files), perFile(counted.req, counted.files), loadAvg())
			})
		}
	}
}

// epochPattern holds every file's content: file i's is the 128 KiB from
// offset i%256, so the readers check it with one memcmp.
var epochPattern = func() []byte {
	p := make([]byte, 128<<10+256)
	for j := range p {
		p[j] = byte(j*13 + j/509)
	}
	return p
}()

// epochContent is file i's content.
func epochContent(i int) []byte { return epochPattern[i%256:][:128<<10] }

type epochServer struct {
	pair   *topo.Pair
	g      *topo.Ganesha
	export string
}

func startEpochServer(b *testing.B) *epochServer {
	b.Helper()
	if _, err := exec.LookPath("ganesha.nfsd"); err != nil {
		b.Skip("nfs-ganesha not installed (scripts/deps.sh nfs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute) // other suites may hold the rpcbind lock
	defer cancel()
	p, err := topo.NewPair(ctx, topo.PairOptions{Prefix: "efe", Rate: "1gbit"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	export := b.TempDir()
	g, err := topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: p.Server, ReadyFrom: p.Client, Addr: p.ServerAddr,
		Export: export, LockTimeout: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	return &epochServer{pair: p, g: g, export: export}
}

// epochMount is one mount over the server, with its own NFS client.
type epochMount struct {
	org   *nfs.FS
	st    *cache.Store
	v     *View
	mp    string
	debug *requestCounter
	done  func()
}

func (s *epochServer) mount(b *testing.B, withCache bool, opts Options) epochMount {
	b.Helper()
	cfg, err := nfs.ParseURL(s.g.URL())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	org, err := nfs.New(ctx, cfg, origin.OpenOptions{Dial: s.pair.DialClient, Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	m := epochMount{org: org, debug: &requestCounter{counts: map[string]int64{}}}
	var c Cache
	if withCache {
		m.st, err = cache.Open(ctx, org, cache.Config{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		c = m.st
	}
	// The daemon's defaults (cmd/eddy).
	if opts.AttrTimeoutMax == 0 {
		opts.AttrTimeoutMax = time.Minute
	}
	if opts.PassthroughSettle == 0 {
		opts.PassthroughSettle = DefaultPassthroughSettle
	}
	opts.Logger = slog.New(m.debug)
	mp, err := os.MkdirTemp("", "efe-mnt-")
	if err != nil {
		b.Fatal(err)
	}
	v, err := Mount(context.Background(), mp, org, c, opts)
	if err != nil {
		b.Fatal(err)
	}
	m.v, m.mp = v, mp
	var once sync.Once
	m.done = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := v.Unmount(ctx); err != nil {
				b.Errorf("unmount %s: %v", mp, err)
			}
			if m.st != nil {
				m.st.Close()
			}
			org.Close()
			os.Remove(mp)
		})
	}
	b.Cleanup(m.done)
	return m
}

func (m epochMount) unmount(b *testing.B) { m.done() }

// fill reads every file until the cache holds all of them, then reads them
// once more (the epoch before a warm one).
func (m epochMount) fill(b *testing.B, list string, names []string) {
	b.Helper()
	m.epoch(b, list, "", false)
	if m.st != nil {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			all := true
			for _, nm := range names {
				if m.st.CachedBytes(nm) < 128<<10 {
					all = false
					break
				}
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("cache not complete after 5 minutes")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	m.epoch(b, list, "", false)
}

// epochSample is what one or more epochs cost.
type epochSample struct {
	files  int64
	wall   time.Duration
	cpu    time.Duration
	allocs uint64
	rpc    map[string]int64
	req    map[string]int64
}

func (s *epochSample) add(o epochSample) {
	s.files += o.files
	s.wall += o.wall
	s.cpu += o.cpu
	s.allocs += o.allocs
	if s.rpc == nil {
		s.rpc = map[string]int64{}
	}
	for k, v := range o.rpc {
		s.rpc[k] += v
	}
}

func (s epochSample) rpcTotal() (n int64) {
	for _, v := range s.rpc {
		n += v
	}
	return n
}

func (s epochSample) reqTotal() (n int64) {
	for _, v := range s.req {
		n += v
	}
	return n
}

func perFile(m map[string]int64, files int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.3f ", k, float64(m[k])/float64(files))
	}
	return strings.TrimSpace(b.String())
}

// epoch runs one epoch in a child process and measures this process
// meanwhile; with count, go-fuse's debug log counts the FUSE requests.
func (m epochMount) epoch(b *testing.B, list, profile string, count bool) epochSample {
	b.Helper()
	if count {
		m.debug.reset()
		m.debug.on.Store(true)
		m.v.Server().SetDebug(true)
	}
	rpc0 := m.org.CallsSent()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEpochReaderChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDDY_EPOCH_ROOT="+m.mp, "EDDY_EPOCH_LIST="+list)
	out, err := cmd.CombinedOutput()
	if profile != "" {
		pprof.StopCPUProfile()
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	runtime.ReadMemStats(&ms1)
	if count {
		m.v.Server().SetDebug(false)
		m.debug.on.Store(false)
	}
	if err != nil {
		b.Fatalf("epoch: %v\n%s", err, out)
	}
	var files int64
	var secs float64
	if _, err := fmt.Sscanf(lastPrefixed(out, "epoch "), "epoch %d files %f s", &files, &secs); err != nil {
		b.Fatalf("epoch: no result line: %v\n%s", err, out)
	}
	s := epochSample{
		files:  files,
		wall:   time.Duration(secs * float64(time.Second)),
		cpu:    time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()),
		allocs: ms1.Mallocs - ms0.Mallocs,
		rpc:    map[string]int64{},
	}
	for k, v := range m.org.CallsSent() {
		if d := v - rpc0[k]; d > 0 {
			s.rpc[k] = d
		}
	}
	if count {
		s.req = m.debug.snapshot()
	}
	return s
}

func lastPrefixed(out []byte, prefix string) string {
	var last string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			last = sc.Text()
		}
	}
	return last
}

func dropPageCache(b *testing.B) {
	b.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatal(err)
	}
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// requestCounter is a slog handler that counts go-fuse's debug lines of
// received requests by kind, while on.
type requestCounter struct {
	on     atomic.Bool
	mu     sync.Mutex
	counts map[string]int64 // guarded by mu
}

func (c *requestCounter) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || c.on.Load()
}

func (c *requestCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		fmt.Fprintln(os.Stderr, r.Level, r.Message)
	}
	rest, ok := strings.CutPrefix(r.Message, "go-fuse: rx ")
	if !ok {
		return nil
	}
	_, rest, _ = strings.Cut(rest, ": ")
	op, _, _ := strings.Cut(rest, " ")
	c.mu.Lock()
	c.counts[op]++
	c.mu.Unlock()
	return nil
}

func (c *requestCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *requestCounter) WithGroup(string) slog.Handler      { return c }

func (c *requestCounter) reset() {
	c.mu.Lock()
	clear(c.counts)
	c.mu.Unlock()
}

func (c *requestCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// TestEpochReaderChild is the reader side of BenchmarkNFSSmallFileEpoch,
// run in a child process: it reads the files EDDY_EPOCH_LIST names under
// EDDY_EPOCH_ROOT with 4 readers, checks their content and prints the time.
func TestEpochReaderChild(t *testing.T) {
	root, list := os.Getenv("EDDY_EPOCH_ROOT"), os.Getenv("EDDY_EPOCH_LIST")
	if root == "" || list == "" {
		t.Skip("the reader of BenchmarkNFSSmallFileEpoch")
	}
	data, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	type item struct {
		i    int
		name string
	}
	var items []item
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var it item
		if _, err := fmt.Sscanf(l, "%d %s", &it.i, &it.name); err != nil {
			t.Fatal(err)
		}
		items = append(items, it)
	}
	work := make(chan item)
	errs := make(chan error, 4)
	start := time.Now()
	for range 4 {
		go func() {
			buf := make([]byte, 128<<10+1)
			var failed error
			for it := range work {
				if failed != nil {
					continue // drain the queue
				}
				f, err := os.Open(filepath.Join(root, it.name))
				if err != nil {
					failed = err
					continue
				}
				nr, err := io.ReadFull(f, buf)
				f.Close()
				if nr != 128<<10 || !bytes.Equal(buf[:nr], epochContent(it.i)) {
					failed = fmt.Errorf("%s: %d bytes or wrong content (%v)", it.name, nr, err)
				}
			}
			errs <- failed
		}()
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("epoch %d files %.6f s\n", len(items), time.Since(start).Seconds())
}
