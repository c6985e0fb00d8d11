package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testDataset(t *testing.T) *Dataset {
	t.Helper()
	ds, err := Generate(context.Background(), filepath.Join(t.TempDir(), "export"),
		DatasetSpec{BigSize: 3<<20 + 100, SharedSize: 1 << 20, SmallCount: 25, SmallSize: 10<<10 + 3, PerDir: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestFillRangeMatchesBlocks(t *testing.T) {
	a := make([]byte, 5*BlockSize)
	fillRange(a, 7, 3*BlockSize)
	for i := 0; i < 5; i++ {
		b := make([]byte, BlockSize)
		fillBlock(b, 7, int64(3+i))
		if !bytes.Equal(a[i*BlockSize:(i+1)*BlockSize], b) {
			t.Fatalf("block %d of the range differs from fillBlock", i)
		}
	}
	c := make([]byte, BlockSize)
	fillBlock(c, 8, 3)
	if bytes.Equal(a[:BlockSize], c) {
		t.Fatal("different seeds gave the same block")
	}
}

func TestGenerateLayout(t *testing.T) {
	ds := testDataset(t)
	if len(ds.Small) != 25 || len(ds.Dirs) != 3 {
		t.Fatalf("small files %d dirs %d, want 25 and 3", len(ds.Small), len(ds.Dirs))
	}
	for _, f := range append([]FileSpec{ds.Big, ds.Shared}, ds.Small...) {
		st, err := os.Stat(filepath.Join(ds.Root, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != f.Size {
			t.Fatalf("%s: size %d, want %d", f.Name, st.Size(), f.Size)
		}
		if f.Sum == 0 {
			t.Fatalf("%s: no checksum recorded", f.Name)
		}
	}
}

// TestWorkloadsVerify runs every workload over a local dataset, then
// corrupts the data each one reads and checks that the run fails.
func TestWorkloadsVerify(t *testing.T) {
	ds := testDataset(t)
	ws := Workloads(ds, WorkloadSettings{EpochReaders: 4, RandOps: 300, RandMaxTime: time.Minute, Parallel: []int{1, 3}, ReadBuf: 64 << 10})
	names := map[string]bool{}
	for _, w := range ws {
		names[w.Name] = true
		m, err := w.Run(context.Background(), ds.Root, 0, nil)
		if err != nil {
			t.Fatalf("%s: %v", w.Name, err)
		}
		if m.Seconds <= 0 || m.Ops <= 0 || (w.HasMBps && m.Bytes <= 0) {
			t.Fatalf("%s: implausible measure %+v", w.Name, m)
		}
		if w.Params == nil {
			t.Fatalf("%s: no parameters recorded", w.Name)
		}
	}
	for _, n := range []string{WSeq, WEpoch, WRand, WMeta, "parallel-1", "parallel-3"} {
		if !names[n] {
			t.Fatalf("workload %s missing", n)
		}
	}
	if m, _ := ws[2].Run(context.Background(), ds.Root, 0, nil); m.Ops != 300 || m.Bytes != 300*BlockSize || m.Partial {
		t.Fatalf("random-4k: %+v, want 300 complete ops", m)
	}

	// Flip one byte in the middle of every file: every workload that reads
	// data must notice.
	for _, f := range append([]FileSpec{ds.Big, ds.Shared}, ds.Small...) {
		p := filepath.Join(ds.Root, f.Name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < f.Size; off += BlockSize {
			data[off] ^= 0xFF // every block, so random reads hit one too
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range ws {
		if w.Name == WMeta {
			continue
		}
		if _, err := w.Run(context.Background(), ds.Root, 0, nil); !errors.Is(err, ErrMismatch) {
			t.Fatalf("%s over corrupt data: err %v, want ErrMismatch", w.Name, err)
		}
	}
	// Metadata notices a missing file.
	if err := os.Remove(filepath.Join(ds.Root, ds.Small[3].Name)); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Name == WMeta {
			if _, err := w.Run(context.Background(), ds.Root, 0, nil); !errors.Is(err, ErrMismatch) {
				t.Fatalf("metadata with a file missing: err %v, want ErrMismatch", err)
			}
		}
	}
}

func TestRandomTimeLimitIsPartial(t *testing.T) {
	ds := testDataset(t)
	ws := Workloads(ds, WorkloadSettings{EpochReaders: 1, RandOps: 1 << 30, RandMaxTime: 50 * time.Millisecond, ReadBuf: 1 << 20})
	w := ws[2]
	m, err := w.Run(context.Background(), ds.Root, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Partial || m.Seconds > 5 {
		t.Fatalf("random-4k with a 50ms limit: %+v, want a partial run", m)
	}
}

func TestSelectWorkloads(t *testing.T) {
	ws := []Workload{{Name: WSeq}, {Name: WMeta}, {Name: "parallel-1"}, {Name: "parallel-8"}}
	tests := []struct {
		in   []string
		want string
		err  bool
	}{
		{nil, "seq-read,metadata,parallel-1,parallel-8", false},
		{[]string{"parallel"}, "parallel-1,parallel-8", false},
		{[]string{"metadata", "parallel-8"}, "metadata,parallel-8", false},
		{[]string{"nope"}, "", true},
	}
	for _, tc := range tests {
		got, err := selectWorkloads(ws, tc.in)
		if (err != nil) != tc.err {
			t.Fatalf("%v: err %v", tc.in, err)
		}
		var names []string
		for _, w := range got {
			names = append(names, w.Name)
		}
		if !tc.err && strings.Join(names, ",") != tc.want {
			t.Fatalf("%v: got %v, want %s", tc.in, names, tc.want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  bool
		size int64
	}{
		{"full", Config{Out: "x"}, false, 4 << 30},
		{"quick", Config{Out: "x", Quick: true}, false, 1 << 30},
		{"no out", Config{}, true, 0},
		{"bad link", Config{Out: "x", Links: []string{"fast"}}, true, 0},
		{"bad backend", Config{Out: "x", Backends: []string{"ceph"}}, true, 0},
		{"small size shrinks shared", Config{Out: "x", Size: 32 << 20}, false, 32 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.setDefaults()
			if (err != nil) != tc.err {
				t.Fatalf("err %v", err)
			}
			if err == nil && (tc.cfg.Size != tc.size || tc.cfg.SharedSize > tc.cfg.Size || tc.cfg.Runs < 3) {
				t.Fatalf("size %d shared %d runs %d", tc.cfg.Size, tc.cfg.SharedSize, tc.cfg.Runs)
			}
		})
	}
	if linkRate(LinkUnshaped) != "" || linkRate("500mbit") != "500mbit" || linkRate("x") != "?" {
		t.Fatal("linkRate")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Fatalf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestReportWrite renders a synthetic report: a failed baseline is shown
// as failed, speedups and local fractions are computed, plots are SVG.
func TestReportWrite(t *testing.T) {
	rep := &Report{Versions: map[string]string{"go": "x"}, Parameters: map[string]any{"runs": 3}}
	add := func(b, w, st string, mb, ops float64, err string) {
		r := Result{Backend: b, Workload: w, State: st, Link: Link1G, Status: StatusOK, MBps: mb, OpsPerSec: ops,
			Runs: []RunFigure{{Seconds: 1, MBps: mb}}}
		if err != "" {
			r.Status, r.Error, r.MBps = StatusFailed, err, 0
		}
		rep.Results = append(rep.Results, r)
	}
	add(BLocal, WSeq, "warm", 2000, 0, "")
	add(BNFS, WSeq, "warm", 100, 0, "")
	add(BEddyNFS, WSeq, "warm", 1900, 0, "")
	add(BSSHFS, WSeq, "warm", 0, 0, "sshd would not start")
	add(BEddyNFS, WMeta, "warm", 0, 5000, "")
	add(BNFS, WMeta, "warm", 0, 500, "")
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| seq-read | warm | 2000 MB/s | 100 MB/s | 1900 MB/s | FAILED |", "19.00x", "95%", "10.00x",
		"sshd would not start", "throughput-1gbit.svg", "speedup-1gbit.svg"} {
		if !strings.Contains(string(md), want) {
			t.Fatalf("results.md lacks %q:\n%s", want, md)
		}
	}
	var back struct {
		Results []map[string]any `json:"results"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 6 {
		t.Fatalf("results.json holds %d results, want 6 (failed ones included)", len(back.Results))
	}
	for _, k := range []string{"backend", "workload", "state", "link", "mb_per_s", "runs", "status"} {
		if _, ok := back.Results[0][k]; !ok {
			t.Fatalf("results.json result lacks %q", k)
		}
	}
	for _, f := range []string{"throughput-1gbit.svg", "ops-1gbit.svg", "speedup-1gbit.svg"} {
		svg, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("</svg>")) {
			t.Fatalf("%s is not an SVG", f)
		}
	}
}

// TestPairedLocalFraction: the paired fraction of local is the median of
// the per-pair ratios (not a ratio of medians), and results.md shows it
// beside the unpaired one.
func TestPairedLocalFraction(t *testing.T) {
	r := Result{Backend: BEddyNFS, Workload: WSeq, State: StateWarmDropped, Link: Link1G, Status: StatusOK,
		Runs:        []RunFigure{{MBps: 900}, {MBps: 300}, {MBps: 1500}},
		PairedLocal: []RunFigure{{MBps: 1000}, {MBps: 1000}, {MBps: 1500}}}
	r.summarize(Workload{Name: WSeq, HasMBps: true})
	r.summarizePaired()
	if r.LocalFractionPaired != 0.9 {
		t.Fatalf("paired fraction %v, want 0.9 (median of 0.9, 0.3, 1.0)", r.LocalFractionPaired)
	}
	m := Result{Backend: BEddyNFS, Workload: WMeta, Runs: []RunFigure{{OpsPerSec: 50, MBps: 1}}, PairedLocal: []RunFigure{{OpsPerSec: 100, MBps: 1}}}
	m.summarizePaired()
	if m.LocalFractionPaired != 0.5 {
		t.Fatalf("metadata paired fraction %v, want 0.5 (ops/s)", m.LocalFractionPaired)
	}
	local := Result{Backend: BLocal, Workload: WSeq, State: StateWarmDropped, Link: Link1G, Status: StatusOK, MBps: 2000,
		Runs: []RunFigure{{MBps: 2000}}}
	rep := &Report{Versions: map[string]string{}, Parameters: map[string]any{"runs": 3}, Results: []Result{local, r}}
	md := rep.Markdown(nil)
	for _, want := range []string{"| seq-read | warm-dropped | 45% (paired 90%) |", "median of the per-pair ratios"} {
		if !strings.Contains(md, want) {
			t.Fatalf("results.md lacks %q:\n%s", want, md)
		}
	}
	rep.Results[1].LocalFractionPaired = 0
	if md := rep.Markdown(nil); strings.Contains(md, "paired") {
		t.Fatalf("results.md mentions pairing without paired runs:\n%s", md)
	}
}

// syncWriter makes a strings.Builder safe for the progress goroutine.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// A run of some workloads generates only the files they read.
func TestDatasetForWorkloads(t *testing.T) {
	full := DatasetSpec{BigSize: 4 << 30, SharedSize: 1 << 30, SmallCount: 10000, SmallSize: 128 << 10, PerDir: 100}
	for _, tc := range []struct {
		names              []string
		big, shared, small bool
	}{
		{nil, true, true, true},
		{[]string{WEpoch}, false, false, true},
		{[]string{WMeta, WRand}, true, false, true},
		{[]string{"parallel"}, false, true, false},
		{[]string{"parallel-4", WSeq}, true, true, false},
		{[]string{"no-such-workload"}, true, true, true},
	} {
		got := datasetFor(full, tc.names)
		if (got.BigSize != 0) != tc.big || (got.SharedSize != 0) != tc.shared || (got.SmallCount != 0) != tc.small {
			t.Errorf("datasetFor(%v) = %+v; want big %v, shared %v, small %v", tc.names, got, tc.big, tc.shared, tc.small)
		}
	}
}
