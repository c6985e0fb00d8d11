package bench

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

func TestClusterWorkloadDefaults(t *testing.T) {
	saved := clusterEnvPrereqs
	defer func() { clusterEnvPrereqs = saved }()
	base := func() ClusterConfig {
		return ClusterConfig{Out: t.TempDir(), Eddy: "eddy", Progress: &strings.Builder{}}
	}

	clusterEnvPrereqs = func() error { return nil }
	c := base()
	if err := c.setDefaults(); err != nil || !slices.Equal(c.Workloads, []string{WorkloadFile, WorkloadEnv}) || c.EnvSize != 512<<20 {
		t.Fatalf("defaults: %v %v %d", err, c.Workloads, c.EnvSize)
	}
	c = base()
	c.Quick = true
	if err := c.setDefaults(); err != nil || c.EnvSize != 256<<20 {
		t.Fatalf("quick env size: %v %d", err, c.EnvSize)
	}

	// A machine without containers: the file alone, and why.
	clusterEnvPrereqs = func() error { return errors.New("runc not installed") }
	c = base()
	if err := c.setDefaults(); err != nil || !slices.Equal(c.Workloads, []string{WorkloadFile}) {
		t.Fatalf("no containers: %v %v", err, c.Workloads)
	}
	if msg := c.Progress.(*strings.Builder).String(); !strings.Contains(msg, "env workload is skipped: runc not installed") {
		t.Fatalf("no note of the skipped workload: %q", msg)
	}
	// Asked for explicitly, it is an error instead.
	c = base()
	c.Workloads = []string{WorkloadEnv}
	if err := c.setDefaults(); err == nil || !strings.Contains(err.Error(), "runc not installed") {
		t.Fatalf("env asked for without containers: %v", err)
	}
	c = base()
	c.Workloads = []string{"file", "file"}
	if err := c.setDefaults(); err != nil || !slices.Equal(c.Workloads, []string{WorkloadFile}) {
		t.Fatalf("repeated workload: %v %v", err, c.Workloads)
	}
	c = base()
	c.Workloads = []string{"boot"}
	if err := c.setDefaults(); err == nil || !strings.Contains(err.Error(), `unknown workload "boot"`) {
		t.Fatalf("unknown workload: %v", err)
	}
}

func TestEnvFigures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tasks := []envTask{
		{submitted: at(0.01), task: api.Task{Started: at(5.01), EnvStart: &api.EnvStart{ImageS: 3}}},
		{submitted: at(0.02), task: api.Task{Started: at(8.52), EnvStart: &api.EnvStart{ImageS: 6.5}}},
		{submitted: at(0.5), task: api.Task{Started: at(6.5), EnvStart: &api.EnvStart{ImageS: 4}}},
	}
	wall, start, image := envFigures(t0, tasks)
	// The wall time runs from the release to the last start, whoever was submitted first.
	if wall != 8.52 || !slices.Equal(start, []float64{5, 8.5, 6}) || !slices.Equal(image, []float64{3, 6.5, 4}) {
		t.Fatalf("wall %v start %v image %v", wall, start, image)
	}

	r := ClusterRow{Workload: WorkloadEnv, Runs: []ClusterRun{
		{NodeStartS: start, NodeImageS: image},
		{NodeStartS: []float64{4, 5, 9}, NodeImageS: []float64{2, 3, 7}},
	}}
	r.summarizeEnv()
	// Medians over the nodes (6 and 5; 4 and 3), then over the runs.
	if r.SubmitToStartS != 5.5 || r.ImageS != 3.5 {
		t.Fatalf("submit to start %v image %v", r.SubmitToStartS, r.ImageS)
	}
}

func TestCheckEnvTask(t *testing.T) {
	ok := api.Task{ID: "t1", State: api.StateCompleted, NodeName: "node1", Started: time.Now(), EnvStart: &api.EnvStart{Imported: true}}
	if err := checkEnvTask(ok, "node1"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		mod  func(*api.Task)
		want string
	}{
		"failed":       {func(t *api.Task) { t.State, t.Error = api.StateFailed, "no image" }, "failed (no image)"},
		"no start":     {func(t *api.Task) { t.EnvStart = nil }, "no container start"},
		"elsewhere":    {func(t *api.Task) { t.NodeName = "node0" }, `ran on "node0"`},
		"not imported": {func(t *api.Task) { t.EnvStart = &api.EnvStart{} }, "imported on node1 already"},
	} {
		x := ok
		c.mod(&x)
		if err := checkEnvTask(x, "node1"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestClusterNodeFlagsEnv(t *testing.T) {
	ce := &clusterEnv{work: "/w", token: "/w/token", gen: 3, file: clusterFile{Size: 1 << 30}, env: envs.Version{Size: 2 << 30},
		sw: &topo.Switch{NodeAddrs: []string{"10.81.0.10", "10.81.0.11"}}}
	has := func(f []string, kv ...string) bool {
		i := slices.Index(f, kv[0])
		return i >= 0 && (len(kv) == 1 || (i+1 < len(f) && f[i+1] == kv[1]))
	}
	// nfs reading the file: independent daemons; starting containers needs a scheduler.
	if f := ce.nodeFlags(ClusterNFS, WorkloadFile, 1); has(f, "--join") || has(f, "--containerd-dir") {
		t.Fatalf("nfs file flags %v", f)
	}
	f := ce.nodeFlags(ClusterNFS, WorkloadEnv, 1)
	if !has(f, "--join", "10.81.0.10:7461") || !has(f, "--node-name", "node1") || has(f, "--cache-size") ||
		!has(f, "--containerd-dir", "/w/node1/containerd-3") {
		t.Fatalf("nfs env flags %v", f)
	}
	// The cache has room for the larger of the file and the tarball.
	f = ce.nodeFlags(ClusterEddyPeers, WorkloadEnv, 0)
	if !has(f, "--scheduler") || !has(f, "--peer-fetch") || !has(f, "--cache-size", "4160M") || !has(f, "--containerd-dir", "/w/node0/containerd-3") {
		t.Fatalf("eddy-peers env flags %v", f)
	}
	if !clustered(ClusterNFS, WorkloadEnv) || clustered(ClusterNFS, WorkloadFile) || !clustered(ClusterEddy, WorkloadFile) {
		t.Fatal("clustered")
	}
}

func TestClusterReportWriteEnv(t *testing.T) {
	dir := t.TempDir()
	rep := &ClusterReport{Parameters: map[string]any{"file_bytes": int64(1 << 30), "runs": 1, "server_link": "1gbit", "node_link": "1gbit",
		"bound": "b", "env_workload": "env: one task per node", "env_payload_bytes": int64(256 << 20)}, RunInfo: RunInfo{Machine: Machine{CPUs: 2}}}
	rep.Results = []ClusterRow{
		{Workload: WorkloadEnv, Backend: ClusterEddy, Nodes: 1, FileBytes: 258 << 20, Status: StatusOK, WallS: 9.5, SubmitToStartS: 9.25,
			ImageS: 5.1, OriginRatio: 1.01, Bound: BoundOther, Runs: []ClusterRun{{WallS: 9.5}}},
		{Workload: WorkloadEnv, Backend: ClusterEddyPeers, Nodes: 4, FileBytes: 258 << 20, Status: StatusOK, WallS: 20, SubmitToStartS: 17.5,
			OriginRatio: 1.02, Bound: BoundCPU, Runs: []ClusterRun{{WallS: 20}}},
		{Workload: WorkloadEnv, Backend: ClusterEddyPeers, Nodes: 8, Status: StatusFailed, Error: "node 3: containerd"},
	}
	rep.evaluate()
	for _, tg := range rep.Targets {
		if tg.Status != TargetNotMeasured {
			t.Errorf("env rows count toward the file targets: %+v", tg)
		}
	}
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"env-start-time.svg", "env-origin-bytes.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "wall-time.svg")); err == nil {
		t.Error("a file workload plot without file rows")
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"## N nodes start a container from one tarball at once", "| eddy | 1 | 9.50 | 9.25 | 5.10 |",
		"256.0 MiB of random payload", "env eddy-peers N=8: node 3: containerd", "env eddy-peers N=4 (cpu busy", "![env-start-time](env-start-time.svg)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(string(md), "## N nodes read one file") {
		t.Errorf("results.md has a file section without file rows:\n%s", md)
	}
}
