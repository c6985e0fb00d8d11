package bench

// The cluster benchmark's results: runs, rows (medians), what limited each row, and the
// report (results.json) with the targets and whether they were met.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/units"
)

// ClusterRun is one run of a ClusterRow.
type ClusterRun struct {
	// WallS: from the moment every node starts reading until the last one has every byte;
	// of the env workload, from the moment every task is released for submission until the
	// last container started.
	WallS float64 `json:"wall_s"`
	// NodeSeconds and NodeMBps: each node's own read (node 0 first; file workload).
	NodeSeconds []float64 `json:"node_seconds,omitempty"`
	NodeMBps    []float64 `json:"node_mb_per_s,omitempty"`
	// NodeStartS and NodeImageS (env workload, node 0 first): each node's task from its
	// submit call to its container running, and the node's time until the image was ready
	// (reading and importing the tarball).
	NodeStartS []float64 `json:"node_submit_to_start_s,omitempty"`
	NodeImageS []float64 `json:"node_image_s,omitempty"`
	// OriginBytes: bytes the server namespace sent during the reads (its veth's tx_bytes):
	// the file's (or tarball's) bytes plus NFS and TCP overhead.
	OriginBytes int64 `json:"origin_bytes"`
	// PeerBytes, ServedBytes, MissBytes: the sums over the nodes of eddy's cache stats (chunk
	// bytes fetched from peers, served to peers, fetched from the origin).
	PeerBytes   int64 `json:"peer_bytes"`
	ServedBytes int64 `json:"served_bytes"`
	MissBytes   int64 `json:"miss_bytes"`
	// NodeMissBytes and NodeServedBytes: each node's origin and served bytes (node 0 first):
	// who read the origin and who carried the copies.
	NodeMissBytes   []int64 `json:"node_miss_bytes,omitempty"`
	NodeServedBytes []int64 `json:"node_served_bytes,omitempty"`
	// CPUBusy: the machine's busy fraction over the reads (all CPUs, every process: the
	// machine is shared); DaemonsCPUS, GaneshaCPUS, ReadersCPUS: the CPU seconds of the node
	// daemons, the NFS server and this process (the readers' checksums).
	CPUBusy     float64 `json:"cpu_busy"`
	DaemonsCPUS float64 `json:"daemons_cpu_s"`
	GaneshaCPUS float64 `json:"ganesha_cpu_s"`
	ReadersCPUS float64 `json:"readers_cpu_s"`
	Load1Before float64 `json:"load1_before"`
	Load1After  float64 `json:"load1_after"`
}

// ClusterRow is one (workload, backend, nodes): the medians of its runs.
type ClusterRow struct {
	Workload string `json:"workload"` // file | env
	Backend  string `json:"backend"`
	Label    string `json:"label"`
	Nodes    int    `json:"nodes"`
	// FileBytes: the size of what every node reads: the file, or the environment's tarball.
	FileBytes int64  `json:"file_bytes"`
	Status    string `json:"status"` // ok | failed
	Error     string `json:"error,omitempty"`
	// SubmitToStartS and ImageS (env workload): a node's submit-to-start and image-ready
	// time, the median over the nodes of each run, then over the runs.
	SubmitToStartS float64 `json:"submit_to_start_s,omitempty"`
	ImageS         float64 `json:"image_s,omitempty"`

	OriginBytes int64   `json:"origin_bytes"`
	OriginRatio float64 `json:"origin_ratio"` // origin_bytes / file_bytes
	WallS       float64 `json:"wall_s"`
	// MBps: per node (the median over the nodes of each run, then over the runs);
	// AggregateMBps: nodes x file bytes / wall_s.
	MBps          float64 `json:"mb_per_s"`
	AggregateMBps float64 `json:"aggregate_mb_per_s"`
	PeerBytes     int64   `json:"peer_bytes"`
	ServedBytes   int64   `json:"served_bytes"`
	CPUBusy       float64 `json:"cpu_busy"`
	DaemonsCPUS   float64 `json:"daemons_cpu_s"`
	// SuiteCores: the CPU seconds of the suite's own processes (daemons, ganesha, readers)
	// over wall_s: the cores this figure used, of the machine's (the rest of cpu_busy is
	// other work on the shared machine).
	SuiteCores  float64 `json:"suite_cores"`
	Load1Before float64 `json:"load1_before"`
	// ServerLinkUtil: the server's sending rate over its link's rate; NodeLinkUtil: a node's
	// median reading rate over its link's rate; NodeUplinkUtil: the busiest node's serving
	// rate (to peers) over its link's rate (0: link unshaped).
	ServerLinkUtil float64 `json:"server_link_util"`
	NodeLinkUtil   float64 `json:"node_link_util"`
	NodeUplinkUtil float64 `json:"node_uplink_util"`
	// Bound names what limited the row: server-link, node-uplink, node-link, cpu, or other.
	Bound string       `json:"bound"`
	Runs  []ClusterRun `json:"runs"`
}

// What limited a row (ClusterRow.Bound).
const (
	BoundServerLink = "server-link"
	BoundNodeUplink = "node-uplink" // one node serving its peers filled its link
	BoundNodeLink   = "node-link"
	BoundCPU        = "cpu"
	BoundOther      = "other"
)

// Thresholds of clusterBound: a link this full is the limit; with neither link this full,
// cores this busy are.
const (
	boundLinkUtil = 0.8
	boundCPUBusy  = 0.85
)

// summarize sets the row's medians, link utilisation and bound from its runs; serverBps and
// nodeBps are the links' rates in bytes/s (0: unshaped).
func (r *ClusterRow) summarize(serverBps, nodeBps float64) {
	if len(r.Runs) == 0 {
		return
	}
	var wall, origin, mb, peer, served, busy, dcpu, cores, load, up []float64
	for _, x := range r.Runs {
		wall = append(wall, x.WallS)
		if x.WallS > 0 {
			cores = append(cores, (x.DaemonsCPUS+x.GaneshaCPUS+x.ReadersCPUS)/x.WallS)
			if nodeBps > 0 && len(x.NodeServedBytes) > 0 {
				up = append(up, float64(slices.Max(x.NodeServedBytes))/x.WallS/nodeBps)
			}
		}
		origin = append(origin, float64(x.OriginBytes))
		mb = append(mb, median(x.NodeMBps))
		peer = append(peer, float64(x.PeerBytes))
		served = append(served, float64(x.ServedBytes))
		busy = append(busy, x.CPUBusy)
		dcpu = append(dcpu, x.DaemonsCPUS)
		load = append(load, x.Load1Before)
	}
	r.WallS = round2(median(wall))
	r.OriginBytes = int64(median(origin))
	if r.FileBytes > 0 {
		r.OriginRatio = round3(float64(r.OriginBytes) / float64(r.FileBytes))
	}
	r.MBps = round1(median(mb))
	if r.WallS > 0 {
		r.AggregateMBps = round1(float64(r.Nodes) * float64(r.FileBytes) / 1e6 / r.WallS)
	}
	r.PeerBytes, r.ServedBytes = int64(median(peer)), int64(median(served))
	r.CPUBusy, r.DaemonsCPUS, r.Load1Before = round3(median(busy)), round2(median(dcpu)), round2(median(load))
	r.SuiteCores, r.NodeUplinkUtil = round2(median(cores)), round3(median(up))
	if serverBps > 0 && r.WallS > 0 {
		r.ServerLinkUtil = round3(float64(r.OriginBytes) / r.WallS / serverBps)
	}
	if nodeBps > 0 {
		r.NodeLinkUtil = round3(r.MBps * 1e6 / nodeBps)
	}
	r.Bound = clusterBound(r.ServerLinkUtil, r.NodeUplinkUtil, r.NodeLinkUtil, r.CPUBusy)
}

// clusterBound names the limit of a figure: a link that ran nearly full (the server's, the
// busiest serving node's upload, a node's download), else the cores when they were nearly all
// busy, else something else (latency, protocol, a stall).
func clusterBound(serverUtil, uplinkUtil, nodeUtil, cpuBusy float64) string {
	switch {
	case serverUtil >= boundLinkUtil:
		return BoundServerLink
	case uplinkUtil >= boundLinkUtil:
		return BoundNodeUplink
	case nodeUtil >= boundLinkUtil:
		return BoundNodeLink
	case cpuBusy >= boundCPUBusy:
		return BoundCPU
	}
	return BoundOther
}

// parseRateBps converts a tc rate ("1gbit", "500mbit", "100kbit", "8bit") into bytes per
// second (decimal prefixes, as tc reads them); "" is 0 (unshaped).
func parseRateBps(rate string) float64 {
	r := strings.ToLower(strings.TrimSpace(rate))
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(r, u.suffix) {
			r, mult = strings.TrimSuffix(r, u.suffix), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(r, 64)
	if err != nil || v <= 0 {
		return 0
	}
	return v * mult / 8
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// Target status values.
const (
	TargetMet         = "met"
	TargetMissed      = "missed"
	TargetNotMeasured = "not measured"
)

// ClusterTarget is one of the benchmark's targets and whether the results meet it.
type ClusterTarget struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // met | missed | not measured
}

// Targets of the cluster benchmark.
const (
	targetOriginRatio = 1.1 // eddy-peers origin bytes / file bytes, at every N
	targetWallGrowth  = 1.5 // eddy-peers wall at the largest N / wall at N = 1
	targetSpeedupN    = 8   // the N the speedup over nfs is wanted at
	targetSpeedup     = 4.0 // nfs wall / eddy-peers wall at targetSpeedupN
)

// clusterTargets evaluates the targets on rows (the file workload's; the env workload has
// no targets yet).
func clusterTargets(rows []ClusterRow) []ClusterTarget {
	rows = rowsOf(rows, WorkloadFile)
	find := func(b string, n int) (ClusterRow, bool) {
		for _, r := range rows {
			if r.Backend == b && r.Nodes == n && r.Status == StatusOK {
				return r, true
			}
		}
		return ClusterRow{}, false
	}
	var peers []ClusterRow
	for _, r := range rows {
		if r.Backend == ClusterEddyPeers && r.Status == StatusOK {
			peers = append(peers, r)
		}
	}
	var out []ClusterTarget

	t1 := ClusterTarget{Target: fmt.Sprintf("eddy-peers origin_bytes <= %.1fx file_bytes at every N", targetOriginRatio), Status: TargetNotMeasured}
	var got []string
	for _, r := range peers {
		got = append(got, fmt.Sprintf("N=%d %.3fx", r.Nodes, r.OriginRatio))
		if r.OriginRatio > targetOriginRatio {
			t1.Status = TargetMissed
		} else if t1.Status == TargetNotMeasured {
			t1.Status = TargetMet
		}
	}
	t1.Measured = strings.Join(got, ", ")
	out = append(out, t1)

	t2 := ClusterTarget{Target: fmt.Sprintf("eddy-peers wall_s at the largest N <= %.1fx its wall_s at N=1", targetWallGrowth), Status: TargetNotMeasured}
	one, ok1 := find(ClusterEddyPeers, 1)
	var largest ClusterRow
	for _, r := range peers {
		if r.Nodes > largest.Nodes {
			largest = r
		}
	}
	if ok1 && largest.Nodes > 1 && one.WallS > 0 {
		g := largest.WallS / one.WallS
		t2.Measured = fmt.Sprintf("N=%d %.2f s / N=1 %.2f s = %.2fx", largest.Nodes, largest.WallS, one.WallS, g)
		t2.Status = metIf(g <= targetWallGrowth)
	}
	out = append(out, t2)

	t3 := ClusterTarget{Target: fmt.Sprintf("at N=%d eddy-peers >= %.0fx faster than nfs (nfs wall_s / eddy-peers wall_s)", targetSpeedupN, targetSpeedup),
		Status: TargetNotMeasured}
	p8, okp := find(ClusterEddyPeers, targetSpeedupN)
	n8, okn := find(ClusterNFS, targetSpeedupN)
	if okp && okn && p8.WallS > 0 {
		s := n8.WallS / p8.WallS
		t3.Measured = fmt.Sprintf("nfs %.2f s / eddy-peers %.2f s = %.2fx", n8.WallS, p8.WallS, s)
		t3.Status = metIf(s >= targetSpeedup)
	} else {
		// Not measured at N=8 (e.g. --quick): the largest N both have, for information.
		best := 0
		for _, r := range peers {
			if _, ok := find(ClusterNFS, r.Nodes); ok && r.Nodes > best && r.Nodes > 1 {
				best = r.Nodes
			}
		}
		t3.Measured = fmt.Sprintf("N=%d not measured", targetSpeedupN)
		if best > 0 {
			p, _ := find(ClusterEddyPeers, best)
			n, _ := find(ClusterNFS, best)
			t3.Measured += fmt.Sprintf("; at N=%d: nfs %.2f s / eddy-peers %.2f s = %.2fx", best, n.WallS, p.WallS, n.WallS/p.WallS)
		}
	}
	out = append(out, t3)
	return out
}

func metIf(ok bool) string {
	if ok {
		return TargetMet
	}
	return TargetMissed
}

// ClusterReport is the cluster benchmark's results.json.
type ClusterReport struct {
	RunInfo
	Parameters map[string]any      `json:"parameters"`
	Commands   map[string][]string `json:"commands,omitempty"` // "backend nodeI" -> the daemon's command line
	Results    []ClusterRow        `json:"results"`
	Targets    []ClusterTarget     `json:"targets"`
	Errors     []string            `json:"errors,omitempty"`
}

func newClusterReport(cfg *ClusterConfig) *ClusterReport {
	r := &ClusterReport{RunInfo: newRunInfo(cfg.EddyVersion, "nfs-ganesha"), Results: []ClusterRow{}}
	shape := func(l string) string {
		if rt := linkRate(l); rt != "" {
			return "tbf rate " + rt + " burst 256kb latency 50ms on both veth ends"
		}
		return "no qdisc"
	}
	r.Parameters = map[string]any{
		"quick":       cfg.Quick,
		"workloads":   cfg.Workloads,
		"nodes":       cfg.Nodes,
		"backends":    cfg.Backends,
		"labels":      clusterLabels,
		"file_bytes":  cfg.Size,
		"runs":        cfg.Runs,
		"figure":      "median of runs; mb_per_s is per node (median over the nodes, then over the runs)",
		"server_link": cfg.ServerLink + ": " + shape(cfg.ServerLink),
		"node_link":   cfg.NodeLink + ": " + shape(cfg.NodeLink),
		"topology": "a Linux bridge in a namespace of its own; the server namespace (nfs-ganesha, VFS FSAL, NFSv3) " +
			"and one namespace per node plugged into it with a veth each, every port shaped on both ends; " +
			"one eddy daemon per node namespace, node 0 the scheduler of the eddy backends, the others --join it",
		"cold":     "every run starts new daemons on empty cache directories after sync + echo 3 > /proc/sys/vm/drop_caches",
		"workload": "file: every node opens the file and reads it to its end with 1 MiB reads, all nodes released at once",
		"env_workload": "env: one container task (`true`, 1 core) pinned to each node, all submitted at once through node 0; every node's daemon " +
			"runs a private containerd, new for every run, so each node reads the environment's tarball through its mount and imports it; " +
			"wall_s until the last container started, submit_to_start_s per node from its submit call to its container running",
		"env_payload_bytes": cfg.EnvSize,
		"verify":            "xxhash64 of every node's bytes against the file's, known from writing it",
		"origin_bytes":      "tx_bytes of the server namespace's veth over the reads (NFS and TCP overhead included)",
		"cpu_busy":          "/proc/stat over the reads: the whole machine, every process (it is shared)",
		"bound": fmt.Sprintf("server-link (the server's sending), node-uplink (the busiest node's serving to its peers) or node-link (a node's median reading) "+
			"when that link ran >= %.0f%% full, else cpu when cpu_busy >= %.0f%%, else other", 100*boundLinkUtil, 100*boundCPUBusy),
		"suite_cores": "CPU seconds of the suite's own processes (daemons, ganesha, the readers' checksums) over wall_s",
		"mb":          "decimal megabytes (1e6 bytes)",
	}
	return r
}

// evaluate sets the targets from the results.
func (r *ClusterReport) evaluate() { r.Targets = clusterTargets(r.Results) }

// Write writes results.json, the plots and results.md into dir.
func (r *ClusterReport) Write(dir string) error { return writeReport(dir, r, r.writePlots, r.Markdown) }

// Markdown is results.md: the table, the targets, what limited each figure, the plots and
// the failures.
func (r *ClusterReport) Markdown(plots []string) string {
	var b strings.Builder
	p := r.Parameters
	fmt.Fprintf(&b, "# eddy bench cluster\n\n")
	fmt.Fprintf(&b, "%s to %s on %s (%d CPUs, %s, %s), %s.\n\n", r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339),
		r.Machine.Hostname, r.Machine.CPUs, r.Machine.CPU, units.FormatBytesUpToGiB(r.Machine.MemBytes), r.Kernel)
	files, envRows := rowsOf(r.Results, WorkloadFile), rowsOf(r.Results, WorkloadEnv)
	fmt.Fprintf(&b, "Server link %v, each node's link %v; figures are the median of %v runs. "+
		"The machine is shared with other work: `cpu_busy` (whole machine) and the 1-minute load before each run are recorded with every figure.\n\n",
		p["server_link"], p["node_link"], p["runs"])
	if len(files) > 0 {
		fmt.Fprintf(&b, "## N nodes read one file at once\n\nEvery node reads one %s file at once.\n\n", units.FormatBytesUpToGiB(files[0].FileBytes))
		b.WriteString("| backend | nodes | wall s | per node MB/s | aggregate MB/s | origin bytes | origin / file | peer bytes | served bytes | cpu busy | suite cores | load1 before | bound | runs (wall s) |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	}
	for _, x := range files {
		if x.Status != StatusOK {
			fmt.Fprintf(&b, "| %s | %d | failed | | | | | | | | | | | |\n", x.Backend, x.Nodes)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.1f | %.1f | %d | %.3f | %d | %d | %.0f%% | %.2f | %.2f | %s | %s |\n",
			x.Backend, x.Nodes, x.WallS, x.MBps, x.AggregateMBps, x.OriginBytes, x.OriginRatio, x.PeerBytes, x.ServedBytes,
			100*x.CPUBusy, x.SuiteCores, x.Load1Before, x.Bound, runWalls(x.Runs))
	}
	if len(envRows) > 0 {
		b.WriteString(envMarkdown(envRows, p))
	}
	if len(files) > 0 { // the targets are the file workload's
		b.WriteString("\n## Targets\n\n| target | measured | status |\n|---|---|---|\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Target, t.Measured, t.Status)
		}
	}
	b.WriteString("\n## What limited each figure\n\n")
	fmt.Fprintf(&b, "`bound` is %v. ", p["bound"])
	var cpu []string
	for _, x := range r.Results {
		if x.Status == StatusOK && x.Bound == BoundCPU {
			cpu = append(cpu, fmt.Sprintf("%s %s N=%d (cpu busy %.0f%%, of which the suite's own processes %.2f cores; links: server %.0f%%, busiest node's upload %.0f%%, node download %.0f%% full)",
				x.workload(), x.Backend, x.Nodes, 100*x.CPUBusy, x.SuiteCores, 100*x.ServerLinkUtil, 100*x.NodeUplinkUtil, 100*x.NodeLinkUtil))
		}
	}
	if len(cpu) > 0 {
		fmt.Fprintf(&b, "The %d cores, not the links, limited: %s.\n", r.Machine.CPUs, strings.Join(cpu, "; "))
	} else {
		b.WriteString("No figure was limited by the cores alone.\n")
	}
	for _, x := range r.Results {
		if x.Status == StatusOK && x.Bound == BoundNodeUplink {
			fmt.Fprintf(&b, "\n%s %s N=%d was limited by one node's upload link (%.0f%% full): %s.\n", x.workload(), x.Backend, x.Nodes,
				100*x.NodeUplinkUtil, servedShares(x.Runs))
		}
	}
	if len(plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, f := range plots {
			fmt.Fprintf(&b, "![%s](%s)\n", strings.TrimSuffix(f, ".svg"), f)
		}
	}
	var failed []string
	for _, x := range r.Results {
		if x.Status != StatusOK {
			failed = append(failed, fmt.Sprintf("- %s %s N=%d: %s", x.workload(), x.Backend, x.Nodes, oneLine(x.Error)))
		}
	}
	for _, e := range r.Errors {
		failed = append(failed, "- "+oneLine(e))
	}
	if len(failed) > 0 {
		b.WriteString("\n## Failures\n\n" + strings.Join(failed, "\n") + "\n")
	}
	return b.String()
}

// envMarkdown is results.md's section of the env workload.
func envMarkdown(rows []ClusterRow, p map[string]any) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## N nodes start a container from one tarball at once\n\n%v. The environment is busybox and %s of random payload, a %s tarball.\n\n",
		p["env_workload"], units.FormatBytesUpToGiB(toInt64(p["env_payload_bytes"])), units.FormatBytesUpToGiB(rows[0].FileBytes))
	b.WriteString("| backend | nodes | wall s (last container started) | submit to start s (median) | image ready s (median) | origin bytes | origin / tarball | peer bytes | cpu busy | load1 before | bound | runs (wall s) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range rows {
		if x.Status != StatusOK {
			fmt.Fprintf(&b, "| %s | %d | failed | | | | | | | | | |\n", x.Backend, x.Nodes)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %d | %.3f | %d | %.0f%% | %.2f | %s | %s |\n",
			x.Backend, x.Nodes, x.WallS, x.SubmitToStartS, x.ImageS, x.OriginBytes, x.OriginRatio, x.PeerBytes,
			100*x.CPUBusy, x.Load1Before, x.Bound, runWalls(x.Runs))
	}
	return b.String()
}

func runWalls(runs []ClusterRun) string {
	var walls []string
	for _, run := range runs {
		walls = append(walls, fmt.Sprintf("%.2f", run.WallS))
	}
	return strings.Join(walls, " ")
}

// servedShares says, per run, which node served the largest share of the chunks the nodes
// fetched from each other: "node 3 served 100% of 3.00 GiB in run 1, ...".
func servedShares(runs []ClusterRun) string {
	var parts []string
	for i, x := range runs {
		var sum, top int64
		who := 0
		for j, v := range x.NodeServedBytes {
			sum += v
			if v > top {
				top, who = v, j
			}
		}
		if sum > 0 {
			parts = append(parts, fmt.Sprintf("node %d served %.0f%% of %s in run %d", who, 100*float64(top)/float64(sum),
				units.FormatBytesUpToGiB(sum), i+1))
		}
	}
	return strings.Join(parts, ", ")
}

func toInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	case int:
		return int64(x)
	}
	return 0
}
