package bench

// One run of the cluster benchmark: fresh daemons, every node reading the file at once, and
// the counters around it (the server's interface, the daemons' cache stats, CPU time).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

// runOnce starts n daemons of the backend on empty caches for the workload, has every node
// read the file or start its container at once, and stops them again.
func (ce *clusterEnv) runOnce(ctx context.Context, workload, backend string, n, run int) (r ClusterRun, err error) {
	ce.prog.Begin(fmt.Sprintf("%s %s N=%d run %d/%d: starting %d daemons", workload, backend, n, run+1, ce.cfg.Runs, n))
	if err := ce.startNodes(ctx, backend, workload, n); err != nil {
		return r, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w; %s", err, ce.diagnostics())
		}
		if serr := ce.stopNodes(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if workload == WorkloadEnv {
		return ce.startEnvs(ctx, backend, n, run)
	}
	return ce.readFile(ctx, backend, n, run)
}

// readFile has each of the n running nodes read the file at once.
func (ce *clusterEnv) readFile(ctx context.Context, backend string, n, run int) (r ClusterRun, err error) {
	tx0, err := ce.sw.ServerTx(ctx)
	if err != nil {
		return r, err
	}
	cpu0 := sampleCPU(ce.daemonPIDs(), ce.ganeshaPID())
	r.Load1Before = load1()

	ce.prog.Begin(fmt.Sprintf("%s N=%d run %d/%d: %d nodes reading %s each", backend, n, run+1, ce.cfg.Runs, n,
		units.FormatBytesUpToGiB(ce.file.Size)))
	durs := make([]time.Duration, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range ce.daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			durs[i], errs[i] = readVerify(ctx, filepath.Join(d.mnt, ce.file.Name), ce.file, ce.prog)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	r.WallS = time.Since(t0).Seconds()
	cpu1 := sampleCPU(ce.daemonPIDs(), ce.ganeshaPID())
	r.Load1After = load1()
	for i, e := range errs {
		if e != nil {
			return r, fmt.Errorf("node %d: %w", i, e)
		}
	}
	tx1, err := ce.sw.ServerTx(ctx)
	if err != nil {
		return r, err
	}
	r.OriginBytes = tx1 - tx0
	for _, d := range durs {
		r.NodeSeconds = append(r.NodeSeconds, d.Seconds())
		r.NodeMBps = append(r.NodeMBps, float64(ce.file.Size)/1e6/d.Seconds())
	}
	r.CPUBusy, r.DaemonsCPUS, r.GaneshaCPUS, r.ReadersCPUS = cpu1.since(cpu0)
	if backend != ClusterNFS {
		if err := ce.addCacheStats(ctx, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// addCacheStats adds every daemon's cache stats (peer, served, miss bytes) to r.
func (ce *clusterEnv) addCacheStats(ctx context.Context, r *ClusterRun) error {
	for i, d := range ce.daemons {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := api.NewUnix(d.socket).CacheStats(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("node %d: cache stats: %w", i, err)
		}
		r.PeerBytes += st.PeerBytes
		r.ServedBytes += st.ServedBytes
		r.MissBytes += st.MissBytes
		r.NodeMissBytes = append(r.NodeMissBytes, st.MissBytes)
		r.NodeServedBytes = append(r.NodeServedBytes, st.ServedBytes)
	}
	return nil
}

func (ce *clusterEnv) daemonPIDs() []int {
	var pids []int
	for _, d := range ce.daemons {
		if d.cmd != nil && d.cmd.Process != nil {
			pids = append(pids, d.cmd.Process.Pid)
		}
	}
	return pids
}

// ganeshaPID is the running ganesha.nfsd's PID from its newest pid file (0: unknown).
func (ce *clusterEnv) ganeshaPID() int {
	files, _ := filepath.Glob(filepath.Join(ce.nfs.Dir, "ganesha.*.pid"))
	if len(files) == 0 {
		return 0
	}
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// cpuSample is the machine's CPU time and that of the suite's processes at one moment.
type cpuSample struct {
	busy, total float64 // machine-wide, clock ticks (all CPUs)
	daemons     float64 // the node daemons, seconds
	ganesha     float64 // seconds
	self        float64 // this process (the readers' hashing), seconds
}

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on every Linux port in use).
const clockTick = 100.0

func sampleCPU(daemons []int, ganesha int) cpuSample {
	var s cpuSample
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		s.busy, s.total = parseProcStatCPU(line)
	}
	for _, pid := range daemons {
		s.daemons += pidCPUSeconds(pid)
	}
	if ganesha > 0 {
		s.ganesha = pidCPUSeconds(ganesha)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return s
}

// since returns the machine's busy fraction between s0 and s, and the CPU seconds the
// daemons, ganesha and this process used.
func (s cpuSample) since(s0 cpuSample) (busy, daemons, ganesha, self float64) {
	if dt := s.total - s0.total; dt > 0 {
		busy = (s.busy - s0.busy) / dt
	}
	return busy, s.daemons - s0.daemons, s.ganesha - s0.ganesha, s.self - s0.self
}

// parseProcStatCPU parses /proc/stat's first line ("cpu user nice system idle iowait irq
// softirq steal ...") into busy and total ticks; idle and iowait are not busy.
func parseProcStatCPU(line string) (busy, total float64) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		v, _ := strconv.ParseFloat(x, 64)
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}

// pidCPUSeconds is a process's user+system time and that of its waited-for children.
func pidCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields are counted after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
	if len(f) < 15 {
		return 0
	}
	var sum float64
	for _, x := range f[11:15] {
		v, _ := strconv.ParseFloat(x, 64)
		sum += v
	}
	return sum / clockTick
}

// load1 is the 1-minute load average.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
