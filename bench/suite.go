package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/units"
)

// States (results.json "state"): cold = every cache emptied; warm = the
// data read before, nothing dropped; warm-dropped = read before, then the
// kernel's page cache dropped (eddy's on-disk cache survives, as it does
// when the data outgrows RAM or the node reboots).
const (
	StateCold        = "cold"
	StateWarm        = "warm"
	StateWarmDropped = "warm-dropped"
)

// Link names (results.json "link").
const (
	Link1G       = "1gbit"
	Link10G      = "10gbit"
	LinkUnshaped = "unshaped"
)

// Config is one invocation of the suite. Zero fields take the defaults of
// the full suite, or of the quick suite when Quick is set.
type Config struct {
	Out   string // results directory (created)
	Quick bool
	// Links to measure over, in order (1gbit, 10gbit, unshaped).
	Links []string
	// Latencies are the one-way delays to measure at, on every link
	// (default: 0 only). 0 means direct; a non-zero delay puts the network
	// backends (see Proxied) behind TCP latency proxies that add it in each
	// direction, so every round trip grows by twice as much. local and
	// nfs-cat are measured once per link, undelayed.
	Latencies []time.Duration
	// Backends to measure (default all; see AllBackends).
	Backends []string
	// Workloads by name; "parallel" selects every parallel-N.
	Workloads []string
	// States to measure (default cold, warm).
	States []string
	// Runs per (backend, workload, state); the figure is their median.
	Runs int
	// Size of the large file (sequential and random reads).
	Size int64
	// SharedSize is the file the parallel readers share.
	SharedSize int64
	// SmallCount and SmallSize size the small-file dataset.
	SmallCount int
	SmallSize  int64
	// RandOps and RandMaxTime bound the random 4 KiB workload.
	RandOps     int
	RandMaxTime time.Duration
	// Parallel reader counts.
	Parallel []int
	// Eddy is the eddy binary that runs the daemons (default: this one).
	Eddy string
	// VersityGW is the S3 gateway binary of the S3 backends (default:
	// FindVersityGW).
	VersityGW string
	// DaemonLogLevel, when set, is passed to the eddy daemons (--log-level);
	// a failed run's error carries the warnings of its daemon's log.
	DaemonLogLevel string
	// EddyVersion is recorded in results.json.
	EddyVersion string
	// WorkDir is where the dataset, caches and mounts live (default
	// /var/tmp, on local disk); a fresh ebn-* directory is made inside.
	WorkDir string
	// Progress receives the live progress (default os.Stderr).
	Progress io.Writer
}

func (c *Config) setDefaults() error {
	if c.Out == "" {
		return errors.New("bench: an output directory is required (--out DIR)")
	}
	if len(c.Links) == 0 {
		c.Links = []string{Link1G}
	}
	for _, l := range c.Links {
		if linkRate(l) == "?" {
			return fmt.Errorf("bench: unknown link %q (want 1gbit, 10gbit, unshaped or a tc rate such as 500mbit)", l)
		}
	}
	if len(c.Latencies) == 0 {
		c.Latencies = []time.Duration{0}
	}
	for _, d := range c.Latencies {
		if d < 0 || d > MaxLatency {
			return fmt.Errorf("bench: latency %s out of range (want 0 to %s)", d, MaxLatency)
		}
	}
	c.Latencies = slices.Clone(c.Latencies)
	slices.Sort(c.Latencies)
	c.Latencies = slices.Compact(c.Latencies)
	if len(c.Backends) == 0 {
		c.Backends = AllBackends()
	}
	for _, b := range c.Backends {
		if !slices.Contains(KnownBackends(), b) {
			return fmt.Errorf("bench: unknown backend %q (want %s)", b, strings.Join(KnownBackends(), ","))
		}
	}
	if len(c.States) == 0 {
		c.States = []string{StateCold, StateWarm}
	}
	for _, st := range c.States {
		if st != StateCold && st != StateWarm && st != StateWarmDropped {
			return fmt.Errorf("bench: unknown state %q (want cold, warm, warm-dropped)", st)
		}
	}
	if c.Runs <= 0 {
		c.Runs = 3
	}
	def := func(v *int64, full, quick int64) {
		if *v <= 0 {
			*v = full
			if c.Quick {
				*v = quick
			}
		}
	}
	def(&c.Size, 4<<30, 1<<30)
	def(&c.SharedSize, 1<<30, 64<<20)
	c.SharedSize = min(c.SharedSize, c.Size) // a small --size shrinks the shared file too
	def(&c.SmallSize, 128<<10, 128<<10)
	if c.SmallCount <= 0 {
		c.SmallCount = 10000
		if c.Quick {
			c.SmallCount = 1000
		}
	}
	if c.RandOps <= 0 {
		c.RandOps = 20000
		if c.Quick {
			c.RandOps = 2000
		}
	}
	if c.RandMaxTime <= 0 {
		c.RandMaxTime = 30 * time.Second
		if c.Quick {
			c.RandMaxTime = 5 * time.Second
		}
	}
	if len(c.Parallel) == 0 {
		c.Parallel = []int{1, 4, 8}
	}
	if err := runDefaults("bench", &c.Eddy, &c.WorkDir, &c.Progress); err != nil {
		return err
	}
	if c.VersityGW == "" && slices.ContainsFunc(c.Backends, IsS3Backend) {
		c.VersityGW = FindVersityGW(c.Eddy)
	}
	return nil
}

// runDefaults fills in what every benchmark run needs when not given: the eddy binary (this
// one), the work directory (/var/tmp) and where progress goes (stderr).
func runDefaults(what string, eddy, workDir *string, progress *io.Writer) error {
	if *eddy == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("%s: find the eddy binary: %w", what, err)
		}
		*eddy = exe
	}
	if *workDir == "" {
		*workDir = "/var/tmp"
	}
	if *progress == nil {
		*progress = os.Stderr
	}
	return nil
}

// linkRate maps a link name to a tbf rate ("" = unshaped, "?" = unknown).
func linkRate(link string) string {
	switch link {
	case LinkUnshaped:
		return ""
	case Link1G, Link10G:
		return link
	}
	if strings.HasSuffix(link, "bit") && len(link) > 3 && link[0] >= '0' && link[0] <= '9' {
		return link
	}
	return "?"
}

// MaxLatency bounds the one-way delay the suite accepts.
const MaxLatency = time.Second

// ParseLatencies parses a comma-separated list of one-way delays such as
// "0ms,2ms,10ms" (Go durations; a bare 0 is accepted).
func ParseLatencies(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, fmt.Errorf("latency %q: want a duration such as 0ms, 2ms or 500us", f)
		}
		if d < 0 || d > MaxLatency {
			return nil, fmt.Errorf("latency %q out of range (want 0 to %s)", f, MaxLatency)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("no latency given (want e.g. 0ms,2ms)")
	}
	return out, nil
}

// latencyMs is a delay in (fractional) milliseconds, as results.json
// records it.
func latencyMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtLatency names a delay given in milliseconds: "2ms", "0.5ms".
func fmtLatency(ms float64) string { return strconv.FormatFloat(ms, 'f', -1, 64) + "ms" }

// where names the link and delay a figure was measured at, for progress
// lines: "[1gbit]" undelayed, "[1gbit +2ms]" through the latency proxy.
func where(link string, lat time.Duration) string {
	if lat == 0 {
		return "[" + link + "]"
	}
	return "[" + link + " +" + fmtLatency(latencyMs(lat)) + "]"
}

// selectWorkloads filters ws by names ("parallel" selects every parallel-N).
// datasetFor trims spec to what the named workloads read (all of it for
// none named): the large file for the sequential and random reads, the
// shared one for parallel readers, the small files for the epoch and the
// metadata walk. A run of one workload writes no gigabytes it never reads.
func datasetFor(spec DatasetSpec, names []string) DatasetSpec {
	if len(names) == 0 {
		return spec
	}
	var big, shared, small bool
	for _, n := range names {
		switch {
		case n == WSeq || n == WRand:
			big = true
		case n == "parallel" || strings.HasPrefix(n, wParPrefix):
			shared = true
		case n == WEpoch || n == WMeta:
			small = true
		default:
			return spec // unknown: selectWorkloads says so
		}
	}
	if !big {
		spec.BigSize = 0
	}
	if !shared {
		spec.SharedSize = 0
	}
	if !small {
		spec.SmallCount = 0
	}
	return spec
}

func selectWorkloads(ws []Workload, names []string) ([]Workload, error) {
	if len(names) == 0 {
		return ws, nil
	}
	var out []Workload
	for _, n := range names {
		found := false
		for _, w := range ws {
			if w.Name == n || (n == "parallel" && strings.HasPrefix(w.Name, wParPrefix)) {
				out = append(out, w)
				found = true
			}
		}
		if !found {
			var all []string
			for _, w := range ws {
				all = append(all, w.Name)
			}
			return nil, fmt.Errorf("bench: unknown workload %q (want %s or parallel)", n, strings.Join(all, ", "))
		}
	}
	return out, nil
}

// Run runs the suite: generates the dataset, builds the topology, measures
// every selected backend and workload on every link, and writes
// results.json, results.md and the SVG plots into cfg.Out. Everything it
// starts (namespaces, servers, mounts, daemons, temp files) is torn down
// before it returns, also when ctx is cancelled; the results gathered so
// far are written either way.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: must run as root (network namespaces, FUSE mounts, drop_caches)")
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	prog := NewProgress(cfg.Progress)
	defer prog.Close()

	rep = newReport(&cfg)
	work, err := os.MkdirTemp(cfg.WorkDir, "ebn-")
	if err != nil {
		return nil, fmt.Errorf("bench: work dir: %w", err)
	}
	e := &env{cfg: &cfg, work: work}
	var backends []backend
	defer func() {
		// Teardown, in dependency order: daemons and mounts, then the
		// servers and their origin mounts, then the namespaces, then files.
		var errs []error
		for _, b := range backends {
			if cerr := b.close(); cerr != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", b.name(), cerr))
			}
		}
		if cerr := e.close(); cerr != nil {
			errs = append(errs, cerr)
		}
		if e.pair != nil {
			if cerr := e.pair.Close(); cerr != nil {
				errs = append(errs, cerr)
			}
		}
		if mounted := mountsUnder(work); len(mounted) > 0 {
			errs = append(errs, fmt.Errorf("bench: still mounted, %s left in place: %s", work, strings.Join(mounted, " ")))
		} else if cerr := os.RemoveAll(work); cerr != nil {
			errs = append(errs, fmt.Errorf("bench: remove %s: %w", work, cerr))
		}
		rep.Finished = time.Now().UTC()
		if cerr := errors.Join(errs...); cerr != nil {
			rep.Errors = append(rep.Errors, cerr.Error())
			err = errors.Join(err, cerr)
		}
		if rep != nil {
			rep.Commands = e.commands
			rep.LatencyProxies = e.latencyProxies()
			if werr := rep.Write(cfg.Out); werr != nil {
				err = errors.Join(err, werr)
			}
		}
		prog.Printf("bench: results in %s", cfg.Out)
	}()

	spec := datasetFor(DatasetSpec{BigSize: cfg.Size, SharedSize: cfg.SharedSize, SmallCount: cfg.SmallCount, SmallSize: cfg.SmallSize, PerDir: 100}, cfg.Workloads)
	prog.Printf("bench: generating dataset (%s) in %s", units.FormatBytesUpToGiB(spec.Bytes()), work)
	prog.Begin("generate dataset")
	ds, err := Generate(ctx, filepath.Join(work, "export"), spec, prog)
	if err != nil {
		return rep, err
	}
	e.ds = ds
	ws, err := selectWorkloads(Workloads(ds, WorkloadSettings{EpochReaders: 4, RandOps: cfg.RandOps,
		RandMaxTime: cfg.RandMaxTime, Parallel: cfg.Parallel, ReadBuf: 1 << 20}), cfg.Workloads)
	if err != nil {
		return rep, err
	}
	rep.setParameters(&cfg, spec, ws)

	if slices.ContainsFunc(cfg.Backends, func(b string) bool { return b != BLocal }) {
		e.pair, err = topo.NewPair(ctx, topo.PairOptions{Prefix: "ebn", ServerAddr: "10.78.0.1", ClientAddr: "10.78.0.2",
			Rate: linkRate(cfg.Links[0])})
		if err != nil {
			return rep, fmt.Errorf("bench: topology: %w", err)
		}
		prog.Printf("bench: namespaces %s (%s) and %s (%s) joined by veth", e.pair.Server, e.pair.ServerAddr, e.pair.Client, e.pair.ClientAddr)
	}

	for _, link := range cfg.Links {
		if e.pair != nil {
			if err := e.pair.Shape(ctx, linkRate(link)); err != nil {
				return rep, fmt.Errorf("bench: shape link %s: %w", link, err)
			}
		}
		prog.Printf("bench: link %s", link)
		for li, lat := range cfg.Latencies {
			if err := e.setLatency(lat); err != nil {
				rep.Errors = append(rep.Errors, err.Error())
			}
			if lat > 0 {
				prog.Printf("bench: link %s, latency +%s each way (round trip +%s): %s through TCP latency proxies in the server namespace",
					link, fmtLatency(latencyMs(lat)), fmtLatency(2*latencyMs(lat)), strings.Join(slices.DeleteFunc(slices.Clone(cfg.Backends), func(b string) bool { return !Proxied(b) }), ", "))
			}
			for _, bn := range cfg.Backends {
				blat := lat
				if !Proxied(bn) {
					if li > 0 {
						continue // measured once per link, undelayed
					}
					blat = 0
				}
				b, err := newBackend(e, bn)
				if err != nil {
					return rep, err
				}
				backends = append(backends, b)
				for _, w := range ws {
					if _, ok := b.(streamer); ok && w.Name != WSeq {
						continue // nfs-cat is a cross-check of the sequential read only
					}
					for _, state := range cfg.States {
						r := measure(ctx, prog, &cfg, e, link, blat, b, w, state)
						rep.Results = append(rep.Results, r)
						if ctx.Err() != nil {
							return rep, ctx.Err()
						}
					}
				}
				if err := b.close(); err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("close %s: %v", bn, err))
				}
			}
		}
	}
	return rep, nil
}

// measure runs one (backend, workload, state) cfg.Runs times.
func measure(ctx context.Context, prog *Progress, cfg *Config, e *env, link string, lat time.Duration, b backend, w Workload, state string) Result {
	r := Result{Backend: b.name(), Label: backendLabels[b.name()], Workload: w.Name, State: state, Link: link,
		LatencyMs: latencyMs(lat), Status: StatusOK}
	at := where(link, lat)
	coldKey := fmt.Sprintf("%s/%s/%d", b.name(), w.Name, lat)
	cold := state == StateCold
	fail := func(err error) Result {
		r.Status, r.Error = StatusFailed, err.Error()
		if d, ok := b.(diagnoser); ok && ctx.Err() == nil {
			if diag := d.diagnostics(); diag != "" {
				r.Error += "; " + diag
			}
		}
		prog.Printf("  %s %-12s %-18s %-12s FAILED: %v", at, r.Backend, r.Workload, state, err)
		return r
	}
	once := func(run int) (Measure, error) {
		root, err := b.prepare(ctx, cold)
		if err != nil {
			return Measure{}, fmt.Errorf("prepare %s: %w", b.name(), err)
		}
		if state == StateWarmDropped && run >= 0 {
			if err := dropCaches(); err != nil {
				return Measure{}, err
			}
		}
		label := fmt.Sprintf("%s %s %s %s run %d/%d", at, b.name(), w.Name, state, run+1, cfg.Runs)
		if run < 0 {
			label = fmt.Sprintf("%s %s %s priming", at, b.name(), w.Name)
		}
		prog.Begin(label)
		if s, ok := b.(streamer); ok {
			return timed(func() (int64, int64, error) {
				rc, wait, err := s.stream(ctx, e.ds.Big.Name)
				if err != nil {
					return 0, 0, err
				}
				n, err := verifyStream(ctx, rc, e.ds.Big, 1<<20, prog)
				rc.Close()
				return n, 1, errors.Join(err, wait())
			})
		}
		return w.Run(ctx, root, run, prog)
	}
	if !cold {
		// Warm means: the data the workload touches has been read before.
		// The cold runs did that unless the last one stopped at its time
		// limit; then read it once, unmeasured.
		if !e.lastColdComplete(coldKey) {
			if _, err := once(-1); err != nil {
				return fail(err)
			}
		}
		// Read before means cached: eddy finishes the background fetches
		// of what was read (chunks behind random reads, holes left by a
		// sequential reader that outran the disk) when its readers stop,
		// as between two epochs of a job.
		if s, ok := b.(settler); ok {
			d, cached, err := s.settle(ctx, prog, fmt.Sprintf("%s %s %s settling", at, b.name(), w.Name))
			if err != nil {
				return fail(err)
			}
			r.SettleSeconds = d.Seconds()
			if d >= settlePoll*settleStable+settlePoll {
				prog.Printf("  %s %-12s %-18s background fetches done in %.0fs (%s cached)", at, b.name(), w.Name, d.Seconds(), units.FormatBytesUpToGiB(cached))
			}
		}
	}
	pair := pairLocal(cfg, b, state)
	local := func(run int) (Measure, error) {
		if state == StateWarmDropped && run >= 0 {
			if err := dropCaches(); err != nil {
				return Measure{}, err
			}
		}
		if run < 0 {
			prog.Begin(fmt.Sprintf("%s %s %s paired priming", at, BLocal, w.Name))
		} else {
			prog.Begin(fmt.Sprintf("%s %s %s %s run %d/%d, paired with %s", at, BLocal, w.Name, state, run+1, cfg.Runs, b.name()))
		}
		return w.Run(ctx, e.ds.Root, run, prog)
	}
	pairedRun := func(i int) error {
		lm, err := local(i)
		if err != nil {
			return fmt.Errorf("paired local run: %w", err)
		}
		r.PairedLocal = append(r.PairedLocal, newRunFigure(lm))
		return nil
	}
	for i := 0; i < cfg.Runs; i++ {
		if pair {
			// Both sides read their files once, unmeasured, right before
			// the pair: on a VM the host caches the disk, and a file read
			// recently comes back several times faster after drop_caches
			// than one read long ago; this puts both in the same state.
			if _, err := local(-1); err != nil {
				return fail(fmt.Errorf("paired local run: %w", err))
			}
			if _, err := once(-1); err != nil {
				return fail(err)
			}
		}
		// Paired runs alternate their order (local first in even runs):
		// neither side always runs right after the other's reads.
		if pair && i%2 == 0 {
			if err := pairedRun(i); err != nil {
				return fail(err)
			}
		}
		m, err := once(i)
		if err != nil {
			return fail(err)
		}
		r.Runs = append(r.Runs, newRunFigure(m))
		if cold {
			e.setLastCold(coldKey, !m.Partial)
		}
		if pair && i%2 == 1 {
			if err := pairedRun(i); err != nil {
				return fail(err)
			}
		}
	}
	r.summarize(w)
	if pair {
		r.summarizePaired()
	}
	line := fmt.Sprintf("  %s %-12s %-18s %-12s", at, r.Backend, r.Workload, state)
	if w.HasMBps {
		line += fmt.Sprintf(" %9.1f MB/s", r.MBps)
	}
	if w.HasOps {
		line += fmt.Sprintf(" %10.0f ops/s", r.OpsPerSec)
	}
	var per []string
	for _, f := range r.Runs {
		per = append(per, fmt.Sprintf("%.2fs", f.Seconds))
	}
	if pair {
		line += fmt.Sprintf("  %.0f%% of local (paired)", 100*r.LocalFractionPaired)
	}
	prog.Printf("%s  (runs %s)", line, strings.Join(per, " "))
	return r
}

// pairLocal reports whether b's runs in state are interleaved with local
// runs: the warm runs of an eddy backend with a cache, when the suite
// measures the local disk too.
func pairLocal(cfg *Config, b backend, state string) bool {
	eb, ok := b.(*eddyBackend)
	return ok && !eb.noCache && state != StateCold && slices.Contains(cfg.Backends, BLocal)
}

// lastColdComplete reports whether the last cold run of key
// (backend/workload/latency) did all its work.
func (e *env) lastColdComplete(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.coldDone[key]
}

func (e *env) setLastCold(key string, complete bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.coldDone == nil {
		e.coldDone = map[string]bool{}
	}
	e.coldDone[key] = complete
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	sort.Strings(out)
	return out
}

// commandVersion runs a command and returns the first line of its output.
func commandVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unavailable: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
