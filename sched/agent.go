package sched

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
)

// RunSpec is what the agent asks a Runner to run (it mirrors runtime.Spec; the daemon adapts).
type RunSpec struct {
	ID        string
	Command   []string
	Env       []string
	Cores     float64
	MemBytes  int64
	GPUs      []string
	Uid, Gid  uint32
	WorkDir   string
	SharedDir string
	LogDir    string
	// ContainerEnv / Image: container tasks; empty for process tasks. EnvFile is the
	// environment version the scheduler resolved at submit (share-relative tarball path).
	ContainerEnv, Image, EnvFile string
}

// RunResult is how a run ended (mirrors runtime.Result).
type RunResult struct {
	ExitCode  int
	OOMKilled bool
	Signal    string
	Err       string
	Started   time.Time
	Finished  time.Time
	// Unknown: the task ran but its end was not observed (ExitCode means nothing); the agent
	// reports it lost, and the scheduler requeues it while it has retries.
	Unknown bool
}

// Runner starts tasks on this node. Start returns an error wrapping ErrTaskExists when the
// runner already has a task with that ID (it never runs one twice).
type Runner interface {
	Start(ctx context.Context, spec RunSpec) (Run, error)
}

// ErrTaskExists: the node's runner already has a task with this ID.
var ErrTaskExists = errors.New("the node already has this task")

// RecoveredRun is a task the node's runner has from an earlier agent (the daemon restarted or
// crashed): still running, or ended since.
type RecoveredRun struct {
	ID      string
	Run     Run
	Started time.Time // zero when unknown
	GPUs    []string  // the devices it holds, when known
	Ended   bool      // it has ended: Run.Wait returns at once
}

// Recoverer is a Runner whose tasks outlive the agent (the daemon's runtime is one). Without it
// an agent cannot know which tasks an earlier agent on this node started, and a restart may run
// a task twice.
type Recoverer interface {
	// Recover lists the tasks the runner has from an earlier agent, ended or not, until Forget.
	Recover(ctx context.Context) ([]RecoveredRun, error)
	// Forget drops an ended task once the scheduler has recorded its end.
	Forget(id string) error
}

// Run is a started task.
type Run interface {
	Wait(ctx context.Context) (RunResult, error)
	Kill(ctx context.Context) error
}

// EnvStarter is implemented by a Run of a container task: how its environment was made ready.
type EnvStarter interface {
	EnvStart() *EnvStart
}

// ImportedEnvs lists the environment tarballs (share-relative) whose images this node's
// container runtime holds (*runtime.Runtime implements it).
type ImportedEnvs interface {
	ImportedEnvs(ctx context.Context) ([]string, error)
}

// MaxImportedEnvs bounds the imported environments a heartbeat reports.
const MaxImportedEnvs = 256

// NodeCache is what the agent needs of the node's cache (*cache.Store implements it).
type NodeCache interface {
	Warm(ctx context.Context, name string, progress func(cache.Progress)) error
	Pin(ctx context.Context, name string) error
	Unpin(ctx context.Context, name string) error
	InventoryDelta(ctx context.Context, since uint64, max int) (cache.InventoryDelta, error)
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	Node      NodeRecord // name, address, labels; zero Total is detected
	Scheduler Caller
	Cache     NodeCache // nil: no prefetch, empty inventory
	Runner    Runner
	ShareRoot string // the share as this node mounts it
	// PrefetchWait bounds how long a task waits for its inputs to be warm before it starts
	// anyway (reads are correct either way). Default 2 min.
	PrefetchWait time.Duration
	Heartbeat    time.Duration // default: what the scheduler says
	InventoryMax int           // items per heartbeat; default 2000
	// Envs, when set, reports the environments imported on this node in every heartbeat
	// (bounded by MaxImportedEnvs), for placement.
	Envs ImportedEnvs
	// ShareSpace, when set, reports how full the share is in every heartbeat (`eddy nodes`).
	ShareSpace func() *api.ShareSpace
	Logger     *slog.Logger
}

type agentTask struct {
	id     string
	t      *Task // nil for a task recovered from the runner
	report TaskReport
	cancel context.CancelFunc // stops its prefetch and start; nil for a recovered task
	killed bool               // guarded by Agent.mu; the scheduler asked for it to be killed
	run    Run                // guarded by Agent.mu
	gpus   []string
	// envStart: how a container task's environment was made ready (guarded by Agent.mu).
	envStart *EnvStart
}

// Agent is the node side of the cluster: it registers, heartbeats, prefetches and runs tasks.
type Agent struct {
	cfg AgentConfig
	log *slog.Logger

	mu       sync.Mutex
	tasks    map[string]*agentTask // guarded by mu; live and unacknowledged finished tasks
	acked    map[string]bool       // guarded by mu; finished and acknowledged (bounded)
	freeGPUs []string              // guarded by mu
	invSince uint64                // guarded by mu
	wg       sync.WaitGroup
	// soon asks for a heartbeat before the interval is up: a task started or ended (its
	// resources are free for the next one once the scheduler hears of it).
	soon chan struct{}
}

// DetectNode fills in cores, memory and GPUs of this machine.
func DetectNode(rec NodeRecord) NodeRecord {
	if rec.Total.Cores == 0 {
		rec.Total.Cores = float64(runtime.NumCPU())
	}
	if rec.Total.MemBytes == 0 {
		rec.Total.MemBytes = memTotal()
	}
	if rec.GPUIDs == nil {
		rec.GPUIDs = detectGPUs()
	}
	rec.Total.GPUs = len(rec.GPUIDs)
	return rec
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 1 << 30
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 1 << 30
}

// detectGPUs lists GPU indices from nvidia-smi, else /proc/driver/nvidia/gpus, else none.
func detectGPUs() []string {
	if p, err := exec.LookPath("nvidia-smi"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, p, "--query-gpu=index", "--format=csv,noheader").Output()
		if err == nil {
			var ids []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					ids = append(ids, l)
				}
			}
			return ids
		}
	}
	ents, err := os.ReadDir("/proc/driver/nvidia/gpus")
	if err != nil {
		return []string{}
	}
	ids := []string{}
	for i := range ents {
		ids = append(ids, strconv.Itoa(i))
	}
	return ids
}

// NewAgent returns an agent; Run starts it.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Scheduler == nil || cfg.Runner == nil || cfg.Node.Name == "" {
		return nil, fmt.Errorf("new agent: scheduler, runner and node name are required")
	}
	if cfg.PrefetchWait <= 0 {
		cfg.PrefetchWait = 2 * time.Minute
	}
	if cfg.InventoryMax <= 0 {
		cfg.InventoryMax = 2000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Node = DetectNode(cfg.Node)
	a := &Agent{cfg: cfg, log: cfg.Logger, tasks: map[string]*agentTask{}, acked: map[string]bool{},
		freeGPUs: append([]string(nil), cfg.Node.GPUIDs...), soon: make(chan struct{}, 1)}
	return a, nil
}

// Run registers and heartbeats until ctx ends. It first takes over the tasks the runner has
// from an earlier agent (see recover). When ctx ends, tasks still warming their inputs are
// dropped unstarted (the scheduler assigns them again) and running tasks are left running,
// unreported: the next agent on this node recovers them.
func (a *Agent) Run(ctx context.Context) error {
	a.recover(ctx)
	interval := a.cfg.Heartbeat
	registered, polling := false, false
	backoff := 200 * time.Millisecond
	for {
		if !registered {
			var rr RegisterResponse
			if err := a.cfg.Scheduler.Do(ctx, "POST", api.RegisterPath, wireNodeRecord(a.cfg.Node), &rr); err != nil {
				a.log.Warn("register with the scheduler", "err", err)
				if !sleep(ctx, backoff) {
					return a.shutdown()
				}
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			registered, backoff = true, 200*time.Millisecond
			a.mu.Lock()
			a.invSince = rr.InventorySince
			a.mu.Unlock()
			if interval <= 0 {
				interval = time.Duration(rr.HeartbeatMs) * time.Millisecond
			}
			if interval <= 0 {
				interval = 3 * time.Second
			}
			a.log.Info("registered with the scheduler", "node", a.cfg.Node.Name, "heartbeat", interval)
			if !polling {
				polling = true
				a.wg.Add(1)
				go func() { defer a.wg.Done(); a.pollAssignments(ctx) }()
			}
		}
		if err := a.heartbeat(ctx); err != nil {
			if errors.Is(err, errReregister) {
				registered = false
				continue
			}
			if ctx.Err() != nil {
				return a.shutdown()
			}
			a.log.Warn("heartbeat", "err", err)
		}
		if !a.waitHeartbeat(ctx, interval) {
			return a.shutdown()
		}
	}
}

// soonGap is the least time between two heartbeats asked for early (reportSoon): the changes
// of a burst of tasks go in one.
const soonGap = 250 * time.Millisecond

// reportSoon asks for the next heartbeat now rather than at the interval's end.
func (a *Agent) reportSoon() {
	select {
	case a.soon <- struct{}{}:
	default:
	}
}

// waitHeartbeat waits the interval, or less when reportSoon asks (but soonGap at least). It
// returns false when ctx ends.
func (a *Agent) waitHeartbeat(ctx context.Context, interval time.Duration) bool {
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-a.soon:
		return sleep(ctx, min(soonGap, interval))
	}
}

var errReregister = errors.New("scheduler asks to register again")

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// shutdown waits for the task goroutines, which end with Run's context.
func (a *Agent) shutdown() error {
	a.wg.Wait()
	return nil
}

// recover takes over the tasks the runner has from an earlier agent on this node (the daemon
// restarted or crashed while they were assigned or running). They are in the task map before
// the first heartbeat, which reports them, running or with their end; an Assign for one of them
// is never started again. The scheduler's side of these rules is in Scheduler.Heartbeat.
func (a *Agent) recover(ctx context.Context) {
	rec, ok := a.cfg.Runner.(Recoverer)
	if !ok {
		a.log.Warn("the runner cannot list the tasks of an earlier agent: after a restart they count as lost")
		return
	}
	runs, err := rec.Recover(ctx)
	if err != nil {
		a.log.Warn("list the tasks of an earlier agent", "err", err)
	}
	for _, x := range runs {
		at := &agentTask{id: x.ID, run: x.Run, report: TaskReport{ID: x.ID, State: StateRunning, Started: x.Started}}
		a.mu.Lock()
		at.gpus = a.takeGPUsLocked(x.GPUs)
		a.tasks[x.ID] = at
		a.mu.Unlock()
		a.log.Info("task of an earlier agent", "task", x.ID, "ended", x.Ended)
		follow := func() {
			if a.follow(ctx, at, x.Run) {
				a.mu.Lock()
				a.freeGPUs = append(a.freeGPUs, at.gpus...)
				a.mu.Unlock()
			}
		}
		if x.Ended {
			follow() // at once: the first heartbeat carries its end
			continue
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); follow() }()
	}
}

// takeGPUsLocked removes ids from the free GPUs and returns those it removed.
func (a *Agent) takeGPUsLocked(ids []string) []string {
	var taken []string
	for _, id := range ids {
		if i := slices.Index(a.freeGPUs, id); i >= 0 {
			a.freeGPUs = slices.Delete(a.freeGPUs, i, i+1)
			taken = append(taken, id)
		}
	}
	return taken
}

func (a *Agent) heartbeat(ctx context.Context) error {
	a.mu.Lock()
	hb := HeartbeatRequest{Node: a.cfg.Node.Name, InventoryBase: a.invSince}
	if a.cfg.ShareSpace != nil {
		hb.Share = a.cfg.ShareSpace()
	}
	for _, at := range a.tasks {
		hb.Tasks = append(hb.Tasks, at.report)
	}
	since := a.invSince
	a.mu.Unlock()
	if a.cfg.Envs != nil {
		envs, err := a.cfg.Envs.ImportedEnvs(ctx)
		if err != nil {
			a.log.Warn("list imported environments", "err", err)
		} else {
			slices.Sort(envs)
			hb.EnvsImported = append(make([]string, 0, len(envs)), envs[:min(len(envs), MaxImportedEnvs)]...)
		}
	}
	if a.cfg.Cache != nil {
		d, err := a.cfg.Cache.InventoryDelta(ctx, since, a.cfg.InventoryMax)
		if err != nil {
			a.log.Warn("inventory", "err", err)
		} else {
			hb.Inventory = &d
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp HeartbeatResponse
	if err := a.cfg.Scheduler.Do(hctx, "POST", api.HeartbeatPath, wireHeartbeat(hb), &resp); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if resp.Reregister {
		return errReregister
	}
	var forget []string
	defer func() { // after the unlock below
		if rec, ok := a.cfg.Runner.(Recoverer); ok {
			for _, id := range forget {
				if err := rec.Forget(id); err != nil {
					a.log.Warn("forget an ended task", "task", id, "err", err)
				}
			}
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invSince = resp.InventorySince
	for _, id := range resp.Ack {
		if at := a.tasks[id]; at != nil && at.report.State.Terminal() {
			delete(a.tasks, id)
			if len(a.acked) > 10000 {
				clear(a.acked)
			}
			a.acked[id] = true
			forget = append(forget, id) // the end is recorded: the runner may drop it
		}
	}
	for _, id := range resp.Kill {
		if at := a.tasks[id]; at != nil && !at.report.State.Terminal() {
			a.log.Info("killing task", "task", id)
			at.killed = true
			if at.cancel != nil {
				at.cancel()
			}
			if at.run != nil {
				go func(r Run) { _ = r.Kill(context.Background()) }(at.run)
			}
		}
	}
	for _, t := range resp.Assign {
		if a.tasks[t.ID] != nil || a.acked[t.ID] {
			continue
		}
		a.startLocked(ctx, t)
	}
	return nil
}

// pollAssignments keeps a long-poll for this node's assignments open (AssignmentsPath) and
// starts each assigned task it answers at once, so that a task does not wait for the next
// heartbeat. The heartbeat still carries every assignment: this is only the fast path, and a
// scheduler without the call (404) is asked again after a minute.
func (a *Agent) pollAssignments(ctx context.Context) {
	var gen uint64
	fails := 0
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, AssignmentsWait+15*time.Second)
		var resp AssignmentsResponse
		q := url.Values{"node": {a.cfg.Node.Name}, "after": {strconv.FormatUint(gen, 10)}}
		err := a.cfg.Scheduler.Do(pctx, "GET", AssignmentsPath+"?"+q.Encode(), nil, &resp)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			d := min(time.Duration(fails)*250*time.Millisecond, 5*time.Second)
			var ae *api.Error
			if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
				d = time.Minute
			} else if fails > 1 {
				a.log.Debug("assignments long-poll", "err", err)
			}
			sleep(ctx, d)
			continue
		}
		fails, gen = 0, resp.Gen
		a.mu.Lock()
		for _, t := range resp.Assign {
			if t == nil || a.tasks[t.ID] != nil || a.acked[t.ID] {
				continue
			}
			a.startLocked(ctx, t)
		}
		a.mu.Unlock()
	}
}

func (a *Agent) startLocked(ctx context.Context, t *Task) {
	tctx, cancel := context.WithCancel(ctx)
	at := &agentTask{id: t.ID, t: t, cancel: cancel, report: TaskReport{ID: t.ID, State: StateAssigned}}
	if t.GPUs > len(a.freeGPUs) {
		at.report = TaskReport{ID: t.ID, State: StateFailed, Error: fmt.Sprintf("needs %d GPUs, %d free on this node", t.GPUs, len(a.freeGPUs)), Finished: time.Now()}
		a.tasks[t.ID] = at
		cancel()
		return
	}
	at.gpus = append([]string(nil), a.freeGPUs[:t.GPUs]...)
	a.freeGPUs = a.freeGPUs[t.GPUs:]
	a.tasks[t.ID] = at
	a.wg.Add(1)
	go a.runTask(ctx, tctx, at)
}

func (a *Agent) setReport(at *agentTask, r TaskReport) {
	a.mu.Lock()
	at.report = r
	a.mu.Unlock()
	a.reportSoon()
}

// runTask prefetches and pins the inputs, runs the task and records how it ended. life is the
// agent's context, ctx the task's (ended by a kill too).
func (a *Agent) runTask(life, ctx context.Context, at *agentTask) {
	defer a.wg.Done()
	t := at.t
	log := a.log.With("task", t.ID)
	var pinned []string
	if a.cfg.Cache != nil && len(t.Inputs) > 0 {
		for _, in := range t.Inputs {
			if err := a.cfg.Cache.Pin(ctx, in); err != nil {
				log.Warn("pin input", "input", in, "err", err)
			} else {
				pinned = append(pinned, in)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, a.cfg.PrefetchWait)
		var wg sync.WaitGroup
		for _, in := range t.Inputs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := a.cfg.Cache.Warm(wctx, in, nil); err != nil {
					log.Info("prefetch incomplete; the task reads the rest through the mount", "input", in, "err", err)
				}
			}()
		}
		wg.Wait()
		cancel()
	}
	defer func() {
		for _, in := range pinned {
			if err := a.cfg.Cache.Unpin(context.Background(), in); err != nil {
				log.Warn("unpin input", "input", in, "err", err)
			}
		}
		a.mu.Lock()
		a.freeGPUs = append(a.freeGPUs, at.gpus...)
		a.mu.Unlock()
	}()
	if ctx.Err() != nil {
		if life.Err() != nil {
			return // the agent stops: never started, the scheduler assigns it again
		}
		a.setReport(at, TaskReport{ID: t.ID, State: StateKilled, Error: "killed before it started", Finished: time.Now()})
		return
	}
	spec := RunSpec{ID: t.ID, Command: t.Command, Cores: t.Cores, MemBytes: t.MemBytes, GPUs: at.gpus, Uid: t.Uid, Gid: t.Gid,
		SharedDir: a.cfg.ShareRoot, ContainerEnv: t.ContainerEnv, Image: t.Image, EnvFile: t.EnvFile,
		WorkDir: filepath.Join(a.cfg.ShareRoot, filepath.FromSlash(t.WorkDir)),
		LogDir:  filepath.Join(a.cfg.ShareRoot, filepath.FromSlash(t.LogDir))}
	spec.Env = append(append([]string(nil), t.Env...), "EDDY_TASK_ID="+t.ID, "EDDY_SHARED_DIR="+a.cfg.ShareRoot)
	run, err := a.cfg.Runner.Start(ctx, spec)
	if errors.Is(err, ErrTaskExists) {
		// The runner has it from an earlier agent that recover did not see: follow that run.
		if x := a.recovered(ctx, t.ID); x != nil {
			log.Warn("the node already has this task: following it instead of starting it again")
			run, err = x.Run, nil
		}
	}
	if err != nil {
		if life.Err() != nil {
			return
		}
		log.Warn("task failed to start", "err", err)
		a.mu.Lock()
		st := StateFailed
		if at.killed {
			st = StateKilled
		}
		a.mu.Unlock()
		a.setReport(at, TaskReport{ID: t.ID, State: st, Error: err.Error(), Finished: time.Now()})
		return
	}
	var es *EnvStart
	if x, ok := run.(EnvStarter); ok {
		es = x.EnvStart()
	}
	a.mu.Lock()
	at.run = run
	at.report = TaskReport{ID: t.ID, State: StateRunning, Started: time.Now(), EnvStart: es}
	at.envStart = es
	killed := at.killed
	a.mu.Unlock()
	if killed {
		_ = run.Kill(context.Background())
	}
	log.Info("task running", "command", t.Command)
	a.reportSoon()
	a.follow(life, at, run)
}

// recovered returns the runner's task with this ID from an earlier agent, if any.
func (a *Agent) recovered(ctx context.Context, id string) *RecoveredRun {
	rec, ok := a.cfg.Runner.(Recoverer)
	if !ok {
		return nil
	}
	runs, _ := rec.Recover(ctx)
	for i := range runs {
		if runs[i].ID == id {
			return &runs[i]
		}
	}
	return nil
}

// follow waits for run to end and records how it ended. If the agent stops first (life ends)
// it returns false with no report and the task left running: the next agent recovers it.
func (a *Agent) follow(life context.Context, at *agentTask, run Run) bool {
	res, err := run.Wait(life)
	if err != nil && life.Err() != nil {
		return false
	}
	a.mu.Lock()
	killed, started, es := at.killed, at.report.Started, at.envStart
	a.mu.Unlock()
	r := TaskReport{ID: at.id, Started: res.Started, Finished: res.Finished, OOMKilled: res.OOMKilled, Signal: res.Signal, Error: res.Err, EnvStart: es}
	if r.Started.IsZero() {
		r.Started = started
	}
	if r.Finished.IsZero() {
		r.Finished = time.Now()
	}
	code := res.ExitCode
	r.ExitCode = &code
	switch {
	case err != nil:
		r.State, r.Error, r.ExitCode = StateFailed, err.Error(), nil
	case res.Unknown:
		r.State, r.ExitCode = StateLost, nil
	case killed:
		r.State = StateKilled
	case code == 0 && res.Err == "" && !res.OOMKilled:
		r.State = StateCompleted
	default:
		r.State = StateFailed
	}
	a.log.Info("task ended", "task", at.id, "state", r.State, "exit", code, "oom", res.OOMKilled)
	a.setReport(at, r)
	return true
}
