package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRateBps(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
	}{
		{"1gbit", 125e6}, {"10gbit", 1250e6}, {"500mbit", 62.5e6}, {"100kbit", 12.5e3}, {"8bit", 1},
		{"1Gbit", 125e6}, {"", 0}, {"unshaped", 0}, {"fast", 0},
	} {
		if got := parseRateBps(c.in); got != c.want {
			t.Errorf("parseRateBps(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestClusterBound(t *testing.T) {
	for _, c := range []struct {
		server, up, node, cpu float64
		want                  string
	}{
		{0.95, 0.9, 0.95, 1, BoundServerLink}, // a full link is the limit, however busy the cores
		{0.3, 0.95, 0.3, 1, BoundNodeUplink},  // one node serving everyone
		{0.5, 0.2, 0.9, 1, BoundNodeLink},
		{0.5, 0.2, 0.6, 0.97, BoundCPU},
		{0.5, 0.2, 0.6, 0.5, BoundOther},
		{0, 0, 0, 0.9, BoundCPU}, // unshaped links
	} {
		if got := clusterBound(c.server, c.up, c.node, c.cpu); got != c.want {
			t.Errorf("clusterBound(%v, %v, %v, %v) = %s, want %s", c.server, c.up, c.node, c.cpu, got, c.want)
		}
	}
}

func TestParseProcStatCPU(t *testing.T) {
	busy, total := parseProcStatCPU("cpu  100 5 50 800 40 3 2 0 7 0")
	// user nice system idle iowait irq softirq steal: idle and iowait are not busy; guest
	// (already in user) is not counted twice.
	if busy != 160 || total != 1000 {
		t.Fatalf("busy %v total %v, want 160 and 1000", busy, total)
	}
	if b, tt := parseProcStatCPU("intr 1 2 3"); b != 0 || tt != 0 {
		t.Fatalf("not a cpu line: %v %v", b, tt)
	}
}

func TestClusterRowSummarize(t *testing.T) {
	r := ClusterRow{Backend: ClusterEddyPeers, Nodes: 4, FileBytes: 1 << 30, Status: StatusOK, Runs: []ClusterRun{
		{WallS: 12, NodeMBps: []float64{90, 100, 110, 95}, OriginBytes: 1100 << 20, CPUBusy: 0.99, PeerBytes: 3 << 30,
			DaemonsCPUS: 10, GaneshaCPUS: 1, ReadersCPUS: 1, NodeServedBytes: []int64{1 << 30, 1 << 30, 1 << 30, 0}},
		{WallS: 10, NodeMBps: []float64{100, 120, 110, 130}, OriginBytes: 1080 << 20, CPUBusy: 0.98, PeerBytes: 3 << 30,
			DaemonsCPUS: 10, GaneshaCPUS: 1, ReadersCPUS: 1, NodeServedBytes: []int64{1 << 30, 1 << 30, 1 << 30, 0}},
		{WallS: 14, NodeMBps: []float64{80, 80, 80, 80}, OriginBytes: 1300 << 20, CPUBusy: 0.97, PeerBytes: 3 << 30,
			DaemonsCPUS: 10, GaneshaCPUS: 1, ReadersCPUS: 1, NodeServedBytes: []int64{1 << 30, 1 << 30, 1 << 30, 0}},
	}}
	r.summarize(125e6, 125e6)
	if r.WallS != 12 || r.OriginBytes != 1100<<20 || r.MBps != 97.5 || r.CPUBusy != 0.98 {
		t.Fatalf("medians: wall %v origin %v mb/s %v cpu %v", r.WallS, r.OriginBytes, r.MBps, r.CPUBusy)
	}
	if want := round3(float64(1100<<20) / (1 << 30)); r.OriginRatio != want {
		t.Fatalf("origin ratio %v, want %v", r.OriginRatio, want)
	}
	if want := round1(4 * float64(1<<30) / 1e6 / 12); r.AggregateMBps != want {
		t.Fatalf("aggregate %v, want %v", r.AggregateMBps, want)
	}
	if r.SuiteCores != 1 || r.NodeUplinkUtil != round3(float64(1<<30)/12/125e6) {
		t.Fatalf("suite cores %v, uplink %v", r.SuiteCores, r.NodeUplinkUtil)
	}
	// 97.5 MB/s of a 125 MB/s node link is 78%, the busiest uplink 72%: below the link
	// threshold, so the busy cores are the limit.
	if r.Bound != BoundCPU {
		t.Fatalf("bound %s (server %.2f up %.2f node %.2f), want cpu", r.Bound, r.ServerLinkUtil, r.NodeUplinkUtil, r.NodeLinkUtil)
	}
	// One node serving every copy fills its link.
	r.Runs[1].NodeServedBytes = []int64{0, 0, 0, 3 << 30}
	r.Runs[0].NodeServedBytes = []int64{0, 0, 0, 3 << 30}
	r.summarize(125e6, 125e6)
	if r.Bound != BoundNodeUplink {
		t.Fatalf("bound %s (uplink %.2f), want node-uplink", r.Bound, r.NodeUplinkUtil)
	}
}

func peersRows(walls map[int]float64, ratios map[int]float64, nfs map[int]float64) []ClusterRow {
	var rows []ClusterRow
	for n, w := range nfs {
		rows = append(rows, ClusterRow{Backend: ClusterNFS, Nodes: n, Status: StatusOK, WallS: w, OriginRatio: float64(n)})
	}
	for n, w := range walls {
		rows = append(rows, ClusterRow{Backend: ClusterEddyPeers, Nodes: n, Status: StatusOK, WallS: w, OriginRatio: ratios[n]})
	}
	return rows
}

func TestClusterTargets(t *testing.T) {
	for _, c := range []struct {
		name   string
		rows   []ClusterRow
		status [3]string
	}{
		{"all met", peersRows(map[int]float64{1: 10, 8: 14}, map[int]float64{1: 1.01, 8: 1.05}, map[int]float64{1: 10, 8: 80}),
			[3]string{TargetMet, TargetMet, TargetMet}},
		{"origin missed at one N", peersRows(map[int]float64{1: 10, 8: 14}, map[int]float64{1: 1.01, 8: 1.3}, map[int]float64{8: 80}),
			[3]string{TargetMissed, TargetMet, TargetMet}},
		{"wall grows too much, too slow", peersRows(map[int]float64{1: 10, 8: 25}, map[int]float64{1: 1, 8: 1}, map[int]float64{8: 80}),
			[3]string{TargetMet, TargetMissed, TargetMissed}},
		{"quick: no N=8", peersRows(map[int]float64{1: 10, 4: 12}, map[int]float64{1: 1, 4: 1}, map[int]float64{1: 10, 4: 40}),
			[3]string{TargetMet, TargetMet, TargetNotMeasured}},
		{"nothing", nil, [3]string{TargetNotMeasured, TargetNotMeasured, TargetNotMeasured}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := clusterTargets(c.rows)
			if len(ts) != 3 {
				t.Fatalf("%d targets, want 3", len(ts))
			}
			for i, tg := range ts {
				if tg.Status != c.status[i] {
					t.Errorf("target %q: %s (%s), want %s", tg.Target, tg.Status, tg.Measured, c.status[i])
				}
			}
		})
	}
	// A failed row is not evidence either way.
	rows := peersRows(map[int]float64{1: 10}, map[int]float64{1: 1}, nil)
	rows = append(rows, ClusterRow{Backend: ClusterEddyPeers, Nodes: 8, Status: StatusFailed, OriginRatio: 9})
	if ts := clusterTargets(rows); ts[0].Status != TargetMet || ts[1].Status != TargetNotMeasured {
		t.Fatalf("with a failed row: %+v", ts)
	}
	// Not measured at N=8: the largest N both have is given for information.
	ts := clusterTargets(peersRows(map[int]float64{1: 10, 4: 12}, map[int]float64{1: 1, 4: 1}, map[int]float64{4: 48}))
	if !strings.Contains(ts[2].Measured, "at N=4") || !strings.Contains(ts[2].Measured, "4.00x") {
		t.Fatalf("speedup at the largest N: %q", ts[2].Measured)
	}
}

func TestLineChart(t *testing.T) {
	svg := lineChart("t <1>", "nodes", "s", []int{1, 2, 4}, []series{
		{name: "nfs", color: "#111", ys: []float64{1, 2, 4}},
		{name: "eddy-peers", color: "#222", ys: []float64{1, math.NaN(), 1.2}},
	}, 3, "ref")
	for _, want := range []string{"<svg", "</svg>", "t &lt;1&gt;", "eddy-peers", "stroke-dasharray", "ref"} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	// A gap (NaN) leaves its point out: 3 points of nfs + 2 of eddy-peers.
	if n := strings.Count(svg, "<circle"); n != 5 {
		t.Errorf("%d points, want 5", n)
	}
	if strings.Contains(svg, "NaN") {
		t.Error("svg holds NaN")
	}
	if lineChart("empty", "x", "y", []int{1}, nil, 0, "") == "" {
		t.Error("empty chart")
	}
}

func TestNiceStep(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0.3, 0.5}, {1, 1}, {1.1, 2}, {3, 5}, {7, 10}, {42, 50}, {0, 1}} {
		if got := niceStep(c.in); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestClusterReportWrite(t *testing.T) {
	dir := t.TempDir()
	rep := &ClusterReport{Parameters: map[string]any{"file_bytes": int64(1 << 30), "runs": 1, "server_link": "1gbit", "node_link": "1gbit",
		"bound": "b"}, RunInfo: RunInfo{Machine: Machine{CPUs: 2}}}
	rep.Results = peersRows(map[int]float64{1: 10, 4: 12}, map[int]float64{1: 1, 4: 1.01}, map[int]float64{1: 10, 4: 40})
	for i := range rep.Results {
		rep.Results[i].FileBytes = 1 << 30
		rep.Results[i].Bound = BoundServerLink
	}
	rep.Results[0].Bound = BoundCPU
	rep.Results[1].Bound = BoundNodeUplink
	rep.Results[1].Runs = []ClusterRun{{NodeServedBytes: []int64{1 << 20, 3 << 20}}}
	rep.Results = append(rep.Results, ClusterRow{Backend: ClusterEddy, Nodes: 4, Status: StatusFailed, Error: "node 2: boom\nmore"})
	rep.evaluate()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "results.md", "wall-time.svg", "origin-bytes.svg", "node-mbps.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	var back struct {
		Results []map[string]any `json:"results"`
		Targets []ClusterTarget  `json:"targets"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"backend", "nodes", "file_bytes", "origin_bytes", "wall_s", "mb_per_s", "cpu_busy", "bound"} {
		if _, ok := back.Results[0][k]; !ok {
			t.Errorf("results.json rows lack %q", k)
		}
	}
	if len(back.Targets) != 3 {
		t.Errorf("%d targets in results.json", len(back.Targets))
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"## Targets", "| met |", "not measured", "limited: ", "node 2: boom more", "![wall-time](wall-time.svg)",
		"one node's upload link", "node 1 served 75% of 4.0 MiB in run 1"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}
