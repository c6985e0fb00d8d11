package bench

// The cluster benchmark's second workload: N nodes start a container from one environment
// tarball at once. One container task is pinned to each node, all submitted together; each
// node's daemon has a private containerd of its own with nothing imported, so every node reads
// the tarball (through its mount: from the server, its cache or its peers) and imports it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/runtime/envs"
	"github.com/eddy-cluster/eddy/units"
)

// Workloads of the cluster benchmark (results.json "workload").
const (
	// WorkloadFile: every node reads one large file at once.
	WorkloadFile = "file"
	// WorkloadEnv: every node starts a container from one environment tarball at once.
	WorkloadEnv = "env"
)

// ClusterWorkloads lists the cluster benchmark's workloads in the order it runs them.
func ClusterWorkloads() []string { return []string{WorkloadFile, WorkloadEnv} }

// clusterEnvPrereqs reports what the env workload needs and this machine lacks (nil: nothing);
// a variable so that tests can stand in for the machine.
var clusterEnvPrereqs = func() error {
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not installed (scripts/deps.sh containers)", bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return errors.New("/bin/busybox not installed (busybox-static, scripts/deps.sh containers)")
	}
	return nil
}

// clusterEnvTimeout bounds the wait for every container of an env run to have started and
// exited.
const clusterEnvTimeout = 10 * time.Minute

// writeEnv writes the environment every node starts (busybox and a random payload of
// cfg.EnvSize bytes, as `eddy bench env` builds it) into the export, beside shared_data, the
// directory container tasks get as their data directory.
func (ce *clusterEnv) writeEnv(ctx context.Context) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("bench cluster: busybox-static not installed (scripts/deps.sh containers): %w", err)
	}
	data := filepath.Join(ce.export, "shared_data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("bench cluster: %w", err)
	}
	os.Chmod(data, 0o755)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeEnvImage(ctx, pw, ce.work, bb, ce.cfg.EnvSize, 1, ce.prog)) }()
	v, err := envs.ImportReader(ctx, ce.export, envBenchName, pr, time.Now())
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("bench cluster: write the environment: %w", err)
	}
	ce.env = v
	return nil
}

// envTask is one node's container task of an env run, as measured.
type envTask struct {
	submitted time.Time
	task      api.Task
}

// startEnvs submits one container task pinned to each of the n running nodes at once (their
// containerds empty) and waits until every one has run.
func (ce *clusterEnv) startEnvs(ctx context.Context, backend string, n, run int) (r ClusterRun, err error) {
	cl := api.NewUnix(ce.daemons[0].socket, api.WithTimeout(time.Minute))
	tx0, err := ce.sw.ServerTx(ctx)
	if err != nil {
		return r, err
	}
	cpu0 := sampleCPU(ce.daemonPIDs(), ce.ganeshaPID())
	r.Load1Before = load1()

	ce.prog.Begin(fmt.Sprintf("env %s N=%d run %d/%d: %d containers from one %s tarball", backend, n, run+1, ce.cfg.Runs, n,
		units.FormatBytesUpToGiB(ce.env.Size)))
	tasks := make([]envTask, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			spec := api.TaskSpec{Name: fmt.Sprintf("bench-cluster env node%d", i), ContainerEnv: envBenchName,
				Command: []string{"true"}, Node: clusterNodeName(i), Cores: 1, MemBytes: 256 << 20, Uid: envBenchUID, Gid: envBenchUID}
			tasks[i].submitted = time.Now()
			t, err := cl.SubmitTask(ctx, spec)
			if err != nil {
				errs[i] = fmt.Errorf("submit: %w", err)
				return
			}
			tasks[i].task, errs[i] = waitTask(ctx, cl, t)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	cpu1 := sampleCPU(ce.daemonPIDs(), ce.ganeshaPID())
	r.Load1After = load1()
	for i, e := range errs {
		if e != nil {
			return r, fmt.Errorf("node %d: %w", i, e)
		}
		if err := checkEnvTask(tasks[i].task, clusterNodeName(i)); err != nil {
			return r, fmt.Errorf("node %d: %w", i, err)
		}
	}
	tx1, err := ce.sw.ServerTx(ctx)
	if err != nil {
		return r, err
	}
	r.OriginBytes = tx1 - tx0
	r.WallS, r.NodeStartS, r.NodeImageS = envFigures(t0, tasks)
	r.CPUBusy, r.DaemonsCPUS, r.GaneshaCPUS, r.ReadersCPUS = cpu1.since(cpu0)
	if backend != ClusterNFS {
		if err := ce.addCacheStats(ctx, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

func clusterNodeName(i int) string { return fmt.Sprintf("node%d", i) }

// waitTask polls the task until it has ended.
func waitTask(ctx context.Context, cl *api.Client, t api.Task) (api.Task, error) {
	deadline := time.Now().Add(clusterEnvTimeout)
	for !t.State.Terminal() {
		if time.Now().After(deadline) {
			return t, fmt.Errorf("task %s still %s after %s", t.ID, t.State, clusterEnvTimeout)
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		var err error
		if t, err = cl.Task(ctx, t.ID); err != nil {
			return t, err
		}
	}
	return t, nil
}

// checkEnvTask says what is wrong with an ended task of an env run: it must have completed
// on its node, having imported the environment there (every node's containerd starts empty).
func checkEnvTask(t api.Task, node string) error {
	switch {
	case t.State != api.StateCompleted:
		return fmt.Errorf("task %s: %s (%s)", t.ID, t.State, t.Error)
	case t.EnvStart == nil || t.Started.IsZero():
		return fmt.Errorf("task %s: no container start reported", t.ID)
	case t.NodeName != node:
		return fmt.Errorf("task %s ran on %q, want %s", t.ID, t.NodeName, node)
	case !t.EnvStart.Imported:
		return fmt.Errorf("task %s: the environment was imported on %s already (its containerd should be empty)", t.ID, node)
	}
	return nil
}

// envFigures are an env run's figures from its ended tasks, released for submission at t0:
// the wall time until the last container started, and each node's submit-to-start and
// image-ready times (node 0 first). The scheduler stamps Started on this machine's clock.
func envFigures(t0 time.Time, tasks []envTask) (wall float64, start, image []float64) {
	var last time.Time
	for _, t := range tasks {
		if t.task.Started.After(last) {
			last = t.task.Started
		}
		start = append(start, round2(t.task.Started.Sub(t.submitted).Seconds()))
		img := 0.0
		if t.task.EnvStart != nil {
			img = round2(t.task.EnvStart.ImageS)
		}
		image = append(image, img)
	}
	if !last.IsZero() {
		wall = round2(last.Sub(t0).Seconds())
	}
	return wall, start, image
}

// summarizeEnv sets an env row's own medians: a node's submit-to-start and image-ready time
// (the median over the nodes of each run, then over the runs).
func (r *ClusterRow) summarizeEnv() {
	var start, image []float64
	for _, x := range r.Runs {
		if len(x.NodeStartS) > 0 {
			start = append(start, median(x.NodeStartS))
			image = append(image, median(x.NodeImageS))
		}
	}
	r.SubmitToStartS, r.ImageS = round2(median(start)), round2(median(image))
}

// rowsOf are the rows of one workload (rows without one are the file workload's).
func rowsOf(rows []ClusterRow, workload string) []ClusterRow {
	var out []ClusterRow
	for _, r := range rows {
		if r.workload() == workload {
			out = append(out, r)
		}
	}
	return out
}

func (r ClusterRow) workload() string {
	if r.Workload == "" {
		return WorkloadFile
	}
	return r.Workload
}

// defaultWorkloads are the workloads to run when none are asked for: both, or the file alone
// when the machine cannot run containers (why goes in note).
func defaultWorkloads() (workloads []string, note string) {
	if err := clusterEnvPrereqs(); err != nil {
		return []string{WorkloadFile}, fmt.Sprintf("bench cluster: the env workload is skipped: %v; measuring the file workload only", err)
	}
	return ClusterWorkloads(), ""
}

// checkWorkloads validates the asked-for workloads (each known, none twice).
func checkWorkloads(ws []string) ([]string, error) {
	var out []string
	for _, w := range ws {
		if !slices.Contains(ClusterWorkloads(), w) {
			return nil, fmt.Errorf("bench cluster: unknown workload %q (want file, env)", w)
		}
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out, nil
}
