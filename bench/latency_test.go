package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLatencies(t *testing.T) {
	tests := []struct {
		in   string
		want []time.Duration
		err  bool
	}{
		{"0ms", []time.Duration{0}, false},
		{"0", []time.Duration{0}, false},
		{"0ms, 2ms,10ms", []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond}, false},
		{"500us", []time.Duration{500 * time.Microsecond}, false},
		{"2", nil, true},
		{"-1ms", nil, true},
		{"2s", nil, true},
		{"", nil, true},
		{"fast", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseLatencies(tc.in)
		if (err != nil) != tc.err || (!tc.err && !slices.Equal(got, tc.want)) {
			t.Errorf("ParseLatencies(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
	c := Config{Out: "x", Latencies: []time.Duration{10 * time.Millisecond, 0, 2 * time.Millisecond, 0}}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Latencies, []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond}) {
		t.Fatalf("latencies %v, want sorted and unique", c.Latencies)
	}
	c = Config{Out: "x"}
	if err := c.setDefaults(); err != nil || !slices.Equal(c.Latencies, []time.Duration{0}) {
		t.Fatalf("default latencies %v (%v), want [0]", c.Latencies, err)
	}
	if err := (&Config{Out: "x", Latencies: []time.Duration{-time.Millisecond}}).setDefaults(); err == nil {
		t.Fatal("negative latency accepted")
	}
}

// TestReportUndelayedUnchanged renders the stored results of the last
// quick suite (made before latency existed) and compares them with the
// stored results.md and plots byte for byte: undelayed output keeps its
// form.
func TestReportUndelayedUnchanged(t *testing.T) {
	src := filepath.Join("results", "quick-1gbit")
	data, err := os.ReadFile(filepath.Join(src, "results.json"))
	if err != nil {
		t.Skipf("no stored results: %v", err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.md", "throughput-1gbit.svg", "ops-1gbit.svg", "speedup-1gbit.svg"} {
		want, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s rendered from the stored results.json differs from the stored one", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "latency-1gbit.svg")); err == nil {
		t.Error("latency plot written for results without latency")
	}
	out, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	for _, r := range back.Results {
		if v, ok := r["latency_ms"]; !ok || v != 0.0 {
			t.Fatalf("result without latency_ms 0: %v", r)
		}
	}
}

// TestReportLatency renders a synthetic report with a delayed run: one
// table per (link, latency), unproxied backends repeated undelayed, the
// latency comparison, and plots per latency.
func TestReportLatency(t *testing.T) {
	rep := &Report{Versions: map[string]string{"go": "x"}, Parameters: map[string]any{"runs": 3}}
	add := func(b, w, st string, lat, mb, ops float64, err string) {
		r := Result{Backend: b, Workload: w, State: st, Link: Link1G, LatencyMs: lat, Status: StatusOK, MBps: mb, OpsPerSec: ops,
			Runs: []RunFigure{{Seconds: 1, MBps: mb, OpsPerSec: ops}}}
		if err != "" {
			r.Status, r.Error, r.MBps, r.OpsPerSec = StatusFailed, err, 0, 0
		}
		rep.Results = append(rep.Results, r)
	}
	add(BLocal, WMeta, StateCold, 0, 0, 100000, "")
	add(BSSHFS, WMeta, StateCold, 0, 0, 4000, "")
	add(BEddySSHFS, WMeta, StateCold, 0, 0, 6000, "")
	add(BSSHFS, WMeta, StateCold, 2, 0, 1000, "")
	add(BEddySSHFS, WMeta, StateCold, 2, 0, 3000, "")
	add(BSSHFS, WEpoch, StateCold, 0, 80, 600, "")
	add(BSSHFS, WEpoch, StateCold, 2, 0, 0, "mount went away")
	rep.LatencyProxies = []ProxyStats{{LatencyMs: 2, Connections: 3, Chunks: 500, Bytes: 1 << 20, MeanLateUs: 80, MaxLateUs: 1500}}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## Link: 1gbit\n",
		"## Link: 1gbit, latency +2ms one-way (round trip +4ms)",
		"local: not proxied, undelayed figures repeated.",
		// The delayed table repeats local's undelayed figure.
		"| metadata | cold | 100000 ops/s | 1000 ops/s | 3000 ops/s |",
		"### eddy's speedup over each baseline, and its fraction of local disk (1gbit, +2ms)",
		"| metadata | cold | 3.00x | 3% |",
		"## Latency: 1gbit",
		"| metadata | cold | sshfs | 4000 ops/s | 1000 ops/s [25%] |",
		"| metadata | cold | eddy-sshfs | 6000 ops/s | 3000 ops/s [50%] |",
		"Measured: 500 reads forwarded over 3 connections, written on average 80 µs after their due time (max 1.5 ms).",
		"| small-files-epoch | cold | sshfs | 80.0 MB/s (600 ops/s) | FAILED |",
		"- sshfs small-files-epoch cold (1gbit, +2ms): mount went away",
		"throughput-1gbit-2ms.svg", "ops-1gbit-2ms.svg", "latency-1gbit.svg",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	if strings.Contains(string(md), "| metadata | cold | local |") {
		t.Error("the latency comparison lists local, which is never delayed")
	}
	for _, f := range []string{"ops-1gbit.svg", "ops-1gbit-2ms.svg", "latency-1gbit.svg"} {
		svg, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("</svg>")) {
			t.Fatalf("%s is not an SVG", f)
		}
	}
	lat, _ := os.ReadFile(filepath.Join(dir, "latency-1gbit.svg"))
	for _, want := range []string{"sshfs 0ms", "sshfs +2ms", "eddy-sshfs +2ms", "metadata, cold"} {
		if !bytes.Contains(lat, []byte(want)) {
			t.Errorf("latency plot lacks %q", want)
		}
	}
}
