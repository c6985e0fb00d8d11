package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
)

// Result status values.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// RunFigure is one run of a Result.
type RunFigure struct {
	Seconds   float64 `json:"seconds"`
	Bytes     int64   `json:"bytes"`
	Ops       int64   `json:"ops"`
	MBps      float64 `json:"mb_per_s"`
	OpsPerSec float64 `json:"ops_per_s"`
	Partial   bool    `json:"partial,omitempty"`
}

func newRunFigure(m Measure) RunFigure {
	return RunFigure{Seconds: m.Seconds, Bytes: m.Bytes, Ops: m.Ops, MBps: m.MBps(), OpsPerSec: m.OpsPerSec(), Partial: m.Partial}
}

// Result is one (backend, workload, state, link): the median of its runs.
type Result struct {
	Backend  string `json:"backend"`
	Label    string `json:"label"`
	Workload string `json:"workload"`
	State    string `json:"state"` // cold | warm | warm-dropped
	Link     string `json:"link"`
	// LatencyMs is the one-way delay the TCP latency proxy added in each
	// direction (0: none, the backend was reached directly).
	LatencyMs float64 `json:"latency_ms"`
	Status    string  `json:"status"` // ok | failed
	Error     string  `json:"error,omitempty"`
	// SettleSeconds: how long an eddy backend took, before its warm runs,
	// to finish the background fetches of what the runs before had read
	// (its cached bytes stopped growing); see settler.
	SettleSeconds float64 `json:"settle_seconds,omitempty"`
	// MBps and OpsPerSec are medians over Runs (decimal MB/s); ops_per_s
	// only where the workload counts operations.
	MBps      float64     `json:"mb_per_s"`
	OpsPerSec float64     `json:"ops_per_s,omitempty"`
	Runs      []RunFigure `json:"runs"`
	// PairedLocal are runs of the same workload on the local disk
	// interleaved with an eddy backend's warm runs (local, eddy, eddy,
	// local, ...), and LocalFractionPaired the median over the pairs of
	// eddy's figure over the local one: the fraction of the physical limit
	// with the disk's drift over the suite's hour taken out.
	PairedLocal         []RunFigure `json:"paired_local_runs,omitempty"`
	LocalFractionPaired float64     `json:"local_fraction_paired,omitempty"`
}

// figure is what comparisons of a workload use: ops/s for metadata, else
// MB/s (of a result's medians or of one run).
func figure(workload string, mbps, ops float64) float64 {
	if workload == WMeta {
		return ops
	}
	return mbps
}

// pairValue is figure of one run.
func pairValue(workload string, f RunFigure) float64 { return figure(workload, f.MBps, f.OpsPerSec) }

// summarizePaired sets LocalFractionPaired from Runs and PairedLocal.
func (r *Result) summarizePaired() {
	var fr []float64
	for i := range min(len(r.Runs), len(r.PairedLocal)) {
		if l := pairValue(r.Workload, r.PairedLocal[i]); l > 0 {
			fr = append(fr, pairValue(r.Workload, r.Runs[i])/l)
		}
	}
	r.LocalFractionPaired = median(fr)
}

func (r *Result) summarize(w Workload) {
	var mb, ops []float64
	for _, f := range r.Runs {
		mb = append(mb, f.MBps)
		ops = append(ops, f.OpsPerSec)
	}
	if w.HasMBps {
		r.MBps = median(mb)
	}
	if w.HasOps {
		r.OpsPerSec = median(ops)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// value is the figure results are compared by: ops/s for metadata, MB/s
// otherwise.
func (r Result) value() float64 { return figure(r.Workload, r.MBps, r.OpsPerSec) }

// Machine describes where the suite ran.
type Machine struct {
	Hostname string `json:"hostname"`
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"mem_bytes"`
	OS       string `json:"os"`
}

// Report is results.json.
type Report struct {
	Started    time.Time           `json:"started"`
	Finished   time.Time           `json:"finished"`
	Machine    Machine             `json:"machine"`
	Kernel     string              `json:"kernel"`
	Versions   map[string]string   `json:"versions"`
	Parameters map[string]any      `json:"parameters"`
	Commands   map[string][]string `json:"commands,omitempty"` // backend -> exact command line used
	Results    []Result            `json:"results"`
	Errors     []string            `json:"errors,omitempty"`
	// LatencyProxies says, per delay, how closely the latency proxies kept
	// it (absent when nothing was delayed).
	LatencyProxies []ProxyStats `json:"latency_proxies,omitempty"`
}

// ProxyStats sums what the latency proxies of one delay forwarded. A
// chunk is one read, written whole; "late" is how long after its due time
// (read time + delay) it was written: timer wake-up and scheduling, and
// waiting for a receiver that does not keep up.
type ProxyStats struct {
	LatencyMs   float64 `json:"latency_ms"`
	Connections int64   `json:"connections"`
	Chunks      int64   `json:"chunks"`
	Bytes       int64   `json:"bytes"`
	MeanLateUs  float64 `json:"mean_late_us"`
	MaxLateUs   float64 `json:"max_late_us"`
}

func newReport(cfg *Config) *Report {
	host, _ := os.Hostname()
	r := &Report{
		Started: time.Now().UTC(),
		Machine: Machine{Hostname: host, CPUs: runtime.NumCPU(), CPU: cpuModel(), MemBytes: memBytes(), OS: osRelease()},
		Kernel:  commandVersion("uname", "-srvm"),
		Versions: map[string]string{
			"eddy": cfg.EddyVersion,
			"go":   runtime.Version(),
		},
		Results: []Result{},
	}
	for _, pkg := range []string{"nfs-ganesha", "libnfs-utils", "openssh-server", "sshfs", "fuse3", "fio"} {
		r.Versions[pkg] = commandVersion("dpkg-query", "-W", "-f", "${Version}", pkg)
	}
	if slices.ContainsFunc(cfg.Backends, IsS3Backend) {
		for _, pkg := range []string{"s3fs", "rclone"} {
			r.Versions[pkg] = commandVersion("dpkg-query", "-W", "-f", "${Version}", pkg)
		}
		r.Versions["versitygw"] = versityGWVersion(cfg.VersityGW)
	}
	return r
}

func (r *Report) setParameters(cfg *Config, spec DatasetSpec, ws []Workload) {
	wp := map[string]any{}
	for _, w := range ws {
		wp[w.Name] = w.Params
	}
	rates := map[string]string{}
	for _, l := range cfg.Links {
		if rt := linkRate(l); rt != "" {
			rates[l] = "tbf rate " + rt + " burst 256kb latency 50ms on both veth ends"
		} else {
			rates[l] = "no qdisc"
		}
	}
	r.Parameters = map[string]any{
		"quick":     cfg.Quick,
		"runs":      cfg.Runs,
		"figure":    "median of runs",
		"links":     cfg.Links,
		"link_spec": rates,
		"backends":  cfg.Backends,
		"labels":    backendLabels,
		"dataset": map[string]any{
			"big_file_bytes": spec.BigSize, "shared_file_bytes": spec.SharedSize,
			"small_files": spec.SmallCount, "small_file_bytes": spec.SmallSize, "files_per_dir": spec.PerDir,
			"content": "pseudo-random (splitmix64 per 4 KiB block), incompressible",
		},
		"workloads":    wp,
		"cold":         "backend's caches emptied (sshfs remounted; eddy restarted on a fresh cache dir), then sync + echo 3 > /proc/sys/vm/drop_caches (server and client share this kernel, so the server's page cache is dropped too)",
		"warm":         "the same data read before by the cold runs (or one unmeasured priming run), nothing dropped",
		"warm-dropped": "as warm, then sync + drop_caches before each run: only on-disk caches (eddy's) remain",
		"states":       cfg.States,
		"verify":       "every byte read is checked: xxhash64 per file/stream, 4 KiB blocks compared with the generated content",
		"mb":           "decimal megabytes (1e6 bytes)",
	}
	if slices.ContainsFunc(cfg.Latencies, func(d time.Duration) bool { return d > 0 }) {
		var ms []float64
		for _, d := range cfg.Latencies {
			ms = append(ms, latencyMs(d))
		}
		var proxied []string
		for _, b := range cfg.Backends {
			if Proxied(b) {
				proxied = append(proxied, b)
			}
		}
		r.Parameters["latencies_ms"] = ms
		r.Parameters["latency_spec"] = map[string]any{
			"how": "TCP latency proxy of our own (bench/topo), one per server port, in the server namespace on the server's address: " +
				"each byte it reads is written latency_ms later, in each direction (round trip +2 x latency_ms); " +
				"clients cross the same shaped veth as undelayed, the proxy's hop to the server is loopback",
			"buffer_bytes_per_direction": topo.DefaultLatencyBuffer,
			"proxied_backends":           proxied,
			"sshfs":                      "ssh -p to the proxy in front of sshd",
			"nfs":                        "nfs://SERVER:PROXY/EXPORT?mountport=PROXY: NFS and MOUNT both through proxies, no portmapper",
			"unproxied":                  "local and nfs-cat, measured once per link at latency_ms 0",
			"not_modelled":               "the connection handshake's round trip, loss",
		}
	}
}

// Write writes results.json, results.md and the plots into dir.
func (r *Report) Write(dir string) error { return writeReport(dir, r, r.writePlots, r.Markdown) }

// writeReport writes a report as results.json, its plots, and results.md naming them.
func writeReport(dir string, rep any, plots func(dir string) ([]string, error), markdown func(plots []string) string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	names, err := plots(dir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(names)), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// links, backends and workloads present in the results, in suite order.
func (r *Report) axes() (links, backends, workloads []string) {
	add := func(s []string, v string) []string {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
		return s
	}
	for _, x := range r.Results {
		links = add(links, x.Link)
		backends = add(backends, x.Backend)
		workloads = add(workloads, x.Workload)
	}
	return
}

// states present in the results, in the order cold, warm, warm-dropped.
func (r *Report) states() []string {
	var out []string
	for _, st := range []string{StateCold, StateWarm, StateWarmDropped} {
		if slices.ContainsFunc(r.Results, func(x Result) bool { return x.State == st }) {
			out = append(out, st)
		}
	}
	return out
}

// latencies present in the results (one-way ms), ascending.
func (r *Report) latencies() []float64 {
	var out []float64
	for _, x := range r.Results {
		if !slices.Contains(out, x.LatencyMs) {
			out = append(out, x.LatencyMs)
		}
	}
	slices.Sort(out)
	return out
}

// find returns the result of (link, latency, backend, workload, state). A
// backend that is never proxied (local, nfs-cat) answers for every latency
// with its undelayed figure.
func (r *Report) find(link string, lat float64, backend, workload, state string) (Result, bool) {
	for _, x := range r.Results {
		if x.Link == link && x.LatencyMs == lat && x.Backend == backend && x.Workload == workload && x.State == state {
			return x, true
		}
	}
	if lat != 0 && !Proxied(backend) {
		return r.find(link, 0, backend, workload, state)
	}
	return Result{}, false
}

// measuredAt reports whether any result was measured at (link, latency).
func (r *Report) measuredAt(link string, lat float64) bool {
	return slices.ContainsFunc(r.Results, func(x Result) bool { return x.Link == link && x.LatencyMs == lat })
}

// backendsAt lists, in suite order, the backends that have a figure at
// latency lat (the unproxied ones with their undelayed figure).
func (r *Report) backendsAt(backends []string, lat float64) []string {
	var out []string
	for _, b := range backends {
		if slices.ContainsFunc(r.Results, func(x Result) bool {
			return x.Backend == b && (x.LatencyMs == lat || (lat != 0 && x.LatencyMs == 0 && !Proxied(b)))
		}) {
			out = append(out, b)
		}
	}
	return out
}

// section names a (link, latency) pair: "1gbit", or "1gbit, +2ms".
func section(link string, lat float64) string {
	if lat == 0 {
		return link
	}
	return link + ", +" + fmtLatency(lat)
}

// latencyWorkloads are the workloads the latency comparison shows: those
// made of round trips.
var latencyWorkloads = []string{WMeta, WEpoch, WRand}

func fmtFigure(x Result) string {
	if x.Status != StatusOK {
		return "FAILED"
	}
	switch {
	case x.Workload == WMeta:
		return fmt.Sprintf("%s ops/s", fmtNum(x.OpsPerSec))
	case x.OpsPerSec > 0:
		return fmt.Sprintf("%s MB/s (%s ops/s)", fmtNum(x.MBps), fmtNum(x.OpsPerSec))
	}
	return fmt.Sprintf("%s MB/s", fmtNum(x.MBps))
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// speedupPairs are the comparisons results.md reports: eddy over each
// baseline on the same origin, and each eddy over the local-disk limit.
var speedupPairs = [][2]string{
	{BEddyNFS, BNFS}, {BEddyNFS, BNFSCat}, {BEddySSHFS, BSSHFS}, {BEddySSHFS, BSSHFSKC},
	{BEddySSHFS, BNFS}, {BEddyS3, BS3FS}, {BEddyS3, BRclone},
}

// Markdown renders results.md.
func (r *Report) Markdown(plots []string) string {
	var b strings.Builder
	links, backends, workloads := r.axes()
	states := r.states()
	fmt.Fprintf(&b, "# eddy bench results\n\n")
	fmt.Fprintf(&b, "%s, %d CPUs (%s), %.1f GiB RAM, kernel %s. Started %s, finished %s.\n\n",
		r.Machine.Hostname, r.Machine.CPUs, r.Machine.CPU, float64(r.Machine.MemBytes)/(1<<30), r.Kernel,
		r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339))
	if q, _ := r.Parameters["quick"].(bool); q {
		b.WriteString("Quick suite (`eddy bench --quick`): smaller files than the full suite.\n\n")
	}
	fmt.Fprintf(&b, "Figures are medians of %v runs; MB = 10^6 bytes; every byte read was verified. Exact parameters in results.json.\n\n", r.Parameters["runs"])
	b.WriteString("Backends:\n\n")
	for _, bn := range backends {
		fmt.Fprintf(&b, "- **%s**: %s\n", bn, backendLabels[bn])
	}
	b.WriteString("\n")
	lats := r.latencies()
	for _, link := range links {
		for _, lat := range lats {
			if !r.measuredAt(link, lat) {
				continue
			}
			r.markdownSection(&b, link, lat, r.backendsAt(backends, lat), workloads, states)
		}
	}
	if len(lats) > 1 {
		for _, link := range links {
			r.markdownLatency(&b, link, lats, backends, workloads, states)
		}
	}
	var failed []Result
	for _, x := range r.Results {
		if x.Status != StatusOK {
			failed = append(failed, x)
		}
	}
	if len(failed) > 0 {
		b.WriteString("## Failed\n\n")
		for _, x := range failed {
			fmt.Fprintf(&b, "- %s %s %s (%s): %s\n", x.Backend, x.Workload, x.State, section(x.Link, x.LatencyMs), oneLine(x.Error))
		}
		b.WriteString("\n")
	}
	if len(r.Errors) > 0 {
		b.WriteString("## Suite errors\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", oneLine(e))
		}
		b.WriteString("\n")
	}
	if len(plots) > 0 {
		b.WriteString("## Plots\n\n")
		for _, p := range plots {
			fmt.Fprintf(&b, "![%s](%s)\n\n", p, p)
		}
	}
	b.WriteString("## Versions\n\n")
	keys := make([]string, 0, len(r.Versions))
	for k := range r.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, r.Versions[k])
	}
	return b.String()
}

// markdownSection writes the table of one (link, latency) and eddy's
// speedups there.
func (r *Report) markdownSection(b *strings.Builder, link string, lat float64, backends, workloads, states []string) {
	if lat == 0 {
		fmt.Fprintf(b, "## Link: %s\n\n", link)
	} else {
		fmt.Fprintf(b, "## Link: %s, latency +%s one-way (round trip +%s)\n\n", link, fmtLatency(lat), fmtLatency(2*lat))
		var direct []string
		for _, bn := range backends {
			if !Proxied(bn) {
				direct = append(direct, bn)
			}
		}
		b.WriteString("The network backends reach their servers through the TCP latency proxy (each byte delayed " + fmtLatency(lat) + " in each direction).")
		for _, ps := range r.LatencyProxies {
			if ps.LatencyMs == lat && ps.Chunks > 0 {
				fmt.Fprintf(b, " Measured: %d reads forwarded over %d connections, written on average %.0f µs after their due time (max %.1f ms).",
					ps.Chunks, ps.Connections, ps.MeanLateUs, ps.MaxLateUs/1000)
			}
		}
		if len(direct) > 0 {
			fmt.Fprintf(b, " %s: not proxied, undelayed figures repeated.", strings.Join(direct, ", "))
		}
		b.WriteString("\n\n")
	}
	b.WriteString("| workload | state |")
	for _, bn := range backends {
		fmt.Fprintf(b, " %s |", bn)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(backends)) + "\n")
	for _, w := range workloads {
		for _, st := range states {
			fmt.Fprintf(b, "| %s | %s |", w, st)
			for _, bn := range backends {
				if x, ok := r.find(link, lat, bn, w, st); ok {
					fmt.Fprintf(b, " %s |", fmtFigure(x))
				} else {
					b.WriteString(" – |")
				}
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	// Speedups and fraction of local.
	var cols [][2]string
	for _, p := range speedupPairs {
		if slices.Contains(backends, p[0]) && slices.Contains(backends, p[1]) {
			cols = append(cols, p)
		}
	}
	for _, e := range []string{BEddyNFS, BEddySSHFS, BEddyLocal, BEddyS3} {
		if slices.Contains(backends, e) && slices.Contains(backends, BLocal) {
			cols = append(cols, [2]string{e, BLocal})
		}
	}
	if len(cols) == 0 {
		return
	}
	fmt.Fprintf(b, "### eddy's speedup over each baseline, and its fraction of local disk (%s)\n\n", section(link, lat))
	b.WriteString("| workload | state |")
	for _, c := range cols {
		if c[1] == BLocal {
			fmt.Fprintf(b, " %s / local |", c[0])
		} else {
			fmt.Fprintf(b, " %s ÷ %s |", c[0], c[1])
		}
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(cols)) + "\n")
	paired := false
	for _, w := range workloads {
		for _, st := range states {
			fmt.Fprintf(b, "| %s | %s |", w, st)
			for _, c := range cols {
				x, ok1 := r.find(link, lat, c[0], w, st)
				y, ok2 := r.find(link, lat, c[1], w, st)
				switch {
				case !ok1 || !ok2:
					b.WriteString(" – |")
				case x.Status != StatusOK || y.Status != StatusOK || y.value() == 0:
					b.WriteString(" n/a |")
				case c[1] == BLocal && x.LocalFractionPaired > 0:
					fmt.Fprintf(b, " %.0f%% (paired %.0f%%) |", 100*x.value()/y.value(), 100*x.LocalFractionPaired)
					paired = true
				case c[1] == BLocal:
					fmt.Fprintf(b, " %.0f%% |", 100*x.value()/y.value())
				default:
					fmt.Fprintf(b, " %.2fx |", x.value()/y.value())
				}
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	if paired {
		b.WriteString("Fraction of local: eddy's median over local's median, and in brackets the paired figure: each warm eddy run interleaved with a local run of the same workload (local, eddy, eddy, local, ...) and the median of the per-pair ratios, which takes out the local disk's drift between the local backend's runs and eddy's.\n\n")
	}
}

// markdownLatency writes, for one link, the round-trip-bound workloads of
// every proxied backend side by side at each latency, with each figure's
// fraction of the same backend's undelayed one.
func (r *Report) markdownLatency(b *strings.Builder, link string, lats []float64, backends, workloads, states []string) {
	type row struct{ w, st, bn string }
	var rows []row
	for _, w := range latencyWorkloads {
		if !slices.Contains(workloads, w) {
			continue
		}
		for _, st := range states {
			for _, bn := range backends {
				if !Proxied(bn) {
					continue
				}
				if slices.ContainsFunc(lats, func(l float64) bool { _, ok := r.find(link, l, bn, w, st); return ok && l != 0 }) {
					rows = append(rows, row{w, st, bn})
				}
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "## Latency: %s\n\n", link)
	b.WriteString("One-way delay added by the TCP latency proxy (a round trip grows by twice as much); in square brackets, the figure's fraction of the same backend's 0 ms figure.\n\n")
	b.WriteString("| workload | state | backend |")
	for _, l := range lats {
		if l == 0 {
			b.WriteString(" 0ms |")
		} else {
			fmt.Fprintf(b, " +%s |", fmtLatency(l))
		}
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(lats)) + "\n")
	for _, rw := range rows {
		fmt.Fprintf(b, "| %s | %s | %s |", rw.w, rw.st, rw.bn)
		base, hasBase := r.find(link, 0, rw.bn, rw.w, rw.st)
		for _, l := range lats {
			x, ok := r.find(link, l, rw.bn, rw.w, rw.st)
			switch {
			case !ok:
				b.WriteString(" – |")
			case l != 0 && hasBase && x.Status == StatusOK && base.Status == StatusOK && base.value() > 0:
				fmt.Fprintf(b, " %s [%.0f%%] |", fmtFigure(x), 100*x.value()/base.value())
			default:
				fmt.Fprintf(b, " %s |", fmtFigure(x))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memBytes() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
		}
	}
	return kb * 1024
}

func osRelease() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}
