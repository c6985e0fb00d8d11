package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Spec describes one task to run on this node.
type Spec struct {
	ID      string   `json:"id"`
	Command []string `json:"command"`
	Env     []string `json:"env,omitempty"` // KEY=VALUE
	// Cores is the CPU limit in cores (0: unlimited); MemBytes the memory limit (0: unlimited).
	Cores    float64 `json:"cores,omitempty"`
	MemBytes int64   `json:"mem_bytes,omitempty"`
	// GPUs are the device indices handed to the task (CUDA_VISIBLE_DEVICES).
	GPUs []string `json:"gpus,omitempty"`
	// Uid and Gid the task runs as; supplementary groups are cleared. Uid 0 needs Config.AllowRoot.
	Uid uint32 `json:"uid"`
	Gid uint32 `json:"gid"`
	// WorkDir is the working directory (inside the container for container tasks).
	WorkDir string `json:"work_dir,omitempty"`
	// SharedDir is the share as the task sees it (EDDY_SHARED_DIR) for process tasks.
	SharedDir string `json:"shared_dir,omitempty"`
	// LogDir receives stdout.log and stderr.log; created and chowned to Uid/Gid.
	LogDir    string     `json:"log_dir"`
	Container *Container `json:"container,omitempty"`
}

// Container selects a container task: Env names an environment tarball on the share, Image a
// registry reference (exactly one of them).
type Container struct {
	Env   string `json:"env,omitempty"`
	Image string `json:"image,omitempty"`
	// EnvFile, with Env, is the version to run: the tarball's path relative to the share (as in
	// envs.Version.Rel), e.g. resolved by the scheduler at submit. Empty: the newest version.
	EnvFile string `json:"env_file,omitempty"`
	// SharedMount is where DataDir appears inside the container (default /shared).
	SharedMount string `json:"shared_mount,omitempty"`
	// DataDir is the host directory bind-mounted at SharedMount (typically <share>/shared_data).
	DataDir string `json:"data_dir,omitempty"`
}

// StartInfo says how a container task was made ready (see StartInfoer).
type StartInfo struct {
	// EnvFile is the environment tarball (share-relative) a container task runs from.
	EnvFile string `json:"env_file,omitempty"`
	// Imported: the tarball was read and imported into containerd for this start (or a
	// concurrent one it waited for); false: the version was imported already.
	Imported    bool  `json:"imported"`
	ImportBytes int64 `json:"import_bytes,omitempty"`
	// ImageReady is the time from Start to the image being ready (look-up, import or pull,
	// and unpack); Started the time from Start to the container's process running.
	ImageReady time.Duration `json:"image_ready"`
	Started    time.Duration `json:"started"`
}

// StartInfoer is implemented by the Running of a container task started by this runtime.
type StartInfoer interface {
	StartInfo() StartInfo
}

// Result is how a task ended.
type Result struct {
	ExitCode  int    `json:"exit_code"`
	OOMKilled bool   `json:"oom_killed"`
	Signal    string `json:"signal,omitempty"` // e.g. "SIGKILL" when killed by a signal
	Err       string `json:"err,omitempty"`    // set when the task could not run or its end is unknown
	// Unknown: the task ran but how it ended was not observed (its reaper, or the daemon that
	// started it without one, went away first); ExitCode is then -1.
	Unknown  bool      `json:"unknown,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// Runner starts tasks.
type Runner interface {
	Start(ctx context.Context, spec Spec) (Running, error)
}

// Running is a started task.
type Running interface {
	// Wait blocks until the task ended (or ctx is done, which does not stop the task).
	Wait(ctx context.Context) (Result, error)
	// Kill stops the task and everything it started.
	Kill(ctx context.Context) error
}

// Sentinel errors callers branch on.
var (
	ErrRootRefused = errors.New("refusing to run a task as uid 0 (root): tasks run as a user (submit with --uid USER); " +
		"root's tasks run only on nodes whose daemon allows them (--allow-root-tasks)")
	ErrNoContainerd  = errors.New("containerd is not available for container tasks")
	ErrNoCgroups     = errors.New("no usable cgroup controllers for cpu/memory limits")
	ErrEnvNotFound   = errors.New("environment not found on the share")
	ErrInvalidSpec   = errors.New("invalid task spec")
	ErrAlreadyExists = errors.New("a task with this id is already running, or ended and not yet forgotten")
	ErrStillRunning  = errors.New("the task is still running")
)

// Config configures a Runtime.
type Config struct {
	// CgroupParent is the cgroup (relative to each hierarchy's root) under which task cgroups
	// are made: <parent>/<task-id>. Default "eddy".
	CgroupParent string
	// ShareRoot is the share as this node sees it (the FUSE mount); environment tarballs are
	// read from it.
	ShareRoot string
	// ContainerdSocket: use the node's running containerd at this address.
	ContainerdSocket string
	// ContainerdDir: when ContainerdSocket is empty and this is set, start a private containerd
	// with root, state and socket under this directory (stopped by Close).
	ContainerdDir string
	// ContainerdLazy defers connecting to (or starting) containerd from New to the first
	// container task, whose error it then is; process tasks are unaffected either way. New
	// still starts a private containerd whose directory holds state of an earlier run, so
	// that containers left running are re-adopted and imported images are known.
	ContainerdLazy bool
	// ContainerdNamespace (default "eddy") and Snapshotter (default "overlayfs").
	ContainerdNamespace string
	Snapshotter         string
	// StateDir keeps one small directory per process task (see reaper.go): how to start it and,
	// once it ended, how it ended, so that a later daemon adopts it or learns its exit status.
	// Default: <os.TempDir()>/eddy-tasks/<CgroupParent with / as _>. It must outlive daemon
	// restarts, and it is the node's own (never on the share).
	StateDir string
	// AllowRoot permits tasks with Uid 0.
	AllowRoot bool
	// Layout names the task scopes' directories on the share (under ShareRoot), their modes
	// and their mount points in containers (see Scopes); zero fields take the defaults.
	Layout Layout
	// ScratchDir is the node-local directory under which each task gets its scratch
	// directory, <ScratchDir>/<task-id>, removed when the task ends. It must be on the node's
	// own disk, outside the share and outside StateDir. Default:
	// <os.TempDir()>/eddy-scratch/<CgroupParent with / as _>.
	ScratchDir string
	Logger     *slog.Logger
}

// Option adjusts a Runtime.
type Option func(*Runtime)

// WithLogger sets the logger (overrides Config.Logger).
func WithLogger(l *slog.Logger) Option { return func(r *Runtime) { r.log = l } }

// WithImportLease makes the runtime write a lease file next to a tarball while it imports it,
// so that `eddy env prune` on any node leaves it alone (default on).
func WithImportLease(on bool) Option { return func(r *Runtime) { r.lease = on } }

// Runtime runs process and container tasks on this node. It implements Runner.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	cg    cgroupSystem
	lease bool

	closeOnce sync.Once
	stop      chan struct{} // closed by Close: stops the scratch sweeper

	ctrMu     sync.Mutex                       // serializes connecting to containerd, and Close
	ctrClosed bool                             // guarded by ctrMu
	ctr       atomic.Pointer[containerRuntime] // nil until connected (or when not configured)

	mu      sync.Mutex
	running map[string]Running // guarded by mu; by task ID
	orphans map[string]Running // guarded by mu; process tasks of an earlier daemon, until Forget
}

var _ Runner = (*Runtime)(nil)

// New builds a Runtime: it detects cgroups and, when configured, connects to (or starts)
// containerd and reconciles containers left by an earlier daemon (see Adopted).
func New(ctx context.Context, cfg Config, opts ...Option) (*Runtime, error) {
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "eddy"
	}
	if cfg.ContainerdNamespace == "" {
		cfg.ContainerdNamespace = "eddy"
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = "overlayfs"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(os.TempDir(), "eddy-tasks", sanitizeParent(cfg.CgroupParent))
	}
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = defaultScratchDir(cfg.CgroupParent)
	}
	cfg.Layout = cfg.Layout.WithDefaults()
	r := &Runtime{cfg: cfg, log: cfg.Logger, lease: true, running: map[string]Running{}, orphans: map[string]Running{},
		stop: make(chan struct{})}
	for _, o := range opts {
		o(r)
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "runtime")
	r.cg = detectCgroups(cfg.CgroupParent, r.log)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: task state dir: %w", err)
	}
	r.adoptOrphans()
	switch {
	case !r.containersConfigured():
	case !cfg.ContainerdLazy:
		if _, err := r.containers(ctx); err != nil {
			return nil, err
		}
	case cfg.ContainerdSocket == "" && privateStateExists(cfg.ContainerdDir):
		// Used before: containers of an earlier daemon may still run.
		if _, err := r.containers(ctx); err != nil {
			r.log.Warn("containerd not started; container tasks will try again", "err", err)
		}
	}
	go r.scratchSweeper(r.stop)
	return r, nil
}

func sanitizeParent(p string) string { return strings.ReplaceAll(p, "/", "_") }

func (r *Runtime) containersConfigured() bool {
	return r.cfg.ContainerdSocket != "" || r.cfg.ContainerdDir != ""
}

// containers returns the containerd side of the runtime, connecting to (or starting)
// containerd on first use. Errors wrap ErrNoContainerd when containers are not configured or
// containerd is not installed.
func (r *Runtime) containers(ctx context.Context) (*containerRuntime, error) {
	if c := r.ctr.Load(); c != nil {
		return c, nil
	}
	if !r.containersConfigured() {
		return nil, fmt.Errorf("%w: no containerd configured", ErrNoContainerd)
	}
	r.ctrMu.Lock()
	defer r.ctrMu.Unlock()
	if c := r.ctr.Load(); c != nil {
		return c, nil
	}
	if r.ctrClosed {
		return nil, errors.New("runtime: containerd: the runtime is closed")
	}
	c, err := newContainerRuntime(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("runtime: containerd: %w", err)
	}
	r.ctr.Store(c)
	if c.priv != nil {
		r.log.Info("private containerd started", "dir", c.priv.dir, "socket", c.priv.sock, "pid", c.priv.cmd.Process.Pid, "adopted", c.adopted.Load())
	} else {
		r.log.Info("connected to containerd", "socket", r.cfg.ContainerdSocket, "adopted", c.adopted.Load())
	}
	return c, nil
}

// Close releases the containerd connection and stops a private containerd. Running container
// tasks keep running (their shims outlive containerd) and are re-adopted by the next New.
func (r *Runtime) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.stop)
		os.Remove(r.cfg.ScratchDir) // only when empty: no task has a scratch directory
		r.ctrMu.Lock()
		defer r.ctrMu.Unlock()
		r.ctrClosed = true
		if c := r.ctr.Load(); c != nil {
			err = c.close()
		}
	})
	return err
}

// Config returns the configuration in effect (defaults filled in).
func (r *Runtime) Config() Config { return r.cfg }

// CgroupMode reports "v2", "v1" or "none".
func (r *Runtime) CgroupMode() string { return r.cg.mode() }

// Start runs spec as a process, or as a container when spec.Container is set.
func (r *Runtime) Start(ctx context.Context, spec Spec) (Running, error) {
	if err := r.validate(spec); err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.knownLocked(spec.ID) {
		r.mu.Unlock()
		return nil, fmt.Errorf("runtime: start %s: %w", spec.ID, ErrAlreadyExists)
	}
	r.running[spec.ID] = nil // reserve
	r.mu.Unlock()

	var (
		run Running
		err error
	)
	sc, err := r.prepareScopes(spec)
	switch {
	case err != nil:
		err = fmt.Errorf("runtime: start %s: %w", spec.ID, err)
	case spec.Container != nil:
		var c *containerRuntime
		if c, err = r.containers(ctx); err != nil {
			err = fmt.Errorf("runtime: start %s: %w", spec.ID, err)
		} else {
			run, err = c.start(ctx, spec, sc)
		}
	default:
		run, err = r.startProcess(ctx, spec, sc)
	}
	if err != nil {
		r.removeScratch(spec.ID)
	}
	r.mu.Lock()
	if err != nil {
		delete(r.running, spec.ID)
	} else {
		r.running[spec.ID] = run
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go func() {
		_, _ = run.Wait(context.Background())
		r.removeScratch(spec.ID)
		r.mu.Lock()
		if r.running[spec.ID] == run {
			delete(r.running, spec.ID)
		}
		r.mu.Unlock()
	}()
	return run, nil
}

// knownLocked reports whether a task with this ID runs, or is a task of an earlier daemon not
// yet forgotten (running or not): starting it again would run it twice.
func (r *Runtime) knownLocked(id string) bool {
	if _, ok := r.running[id]; ok {
		return true
	}
	if _, ok := r.orphans[id]; ok {
		return true
	}
	c := r.ctr.Load()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.adoptees[id]
	return ok
}

// Adoptee is a task of an earlier daemon (see Adopted).
type Adoptee struct {
	ID  string
	Run Running
	// Started is when it started (zero when unknown); GPUs the devices it was given, when known.
	Started time.Time
	GPUs    []string
	// Ended: it had ended when listed; Run.Wait returns its final result at once.
	Ended bool
}

// Adoptees lists the tasks of Adopted, by ID, with what is known of each.
func (r *Runtime) Adoptees() []Adoptee {
	var out []Adoptee
	for id, run := range r.Adopted() {
		a := Adoptee{ID: id, Run: run}
		if e, ok := run.(interface{ end() *taskEnd }); ok {
			a.Ended = e.end().ended()
			a.Started = e.end().startedAt()
		}
		switch t := run.(type) {
		case *processTask:
			a.GPUs = t.gpus
		case *containerTask:
			a.GPUs = t.gpus
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Adoptee) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Forget drops what the runtime keeps of an ended task: its state entry (process tasks) and its
// place in Adopted. Until then its end survives daemon restarts and its ID cannot be started
// again if an earlier daemon ran it; the cluster agent forgets a task once the scheduler has
// recorded its end. Forgetting an unknown task does nothing; a running one is refused
// (ErrStillRunning).
func (r *Runtime) Forget(id string) error {
	if !validID(id) {
		return fmt.Errorf("runtime: forget %q: %w: bad task id", id, ErrInvalidSpec)
	}
	r.mu.Lock()
	if run, ok := r.running[id]; ok {
		e, isEnd := run.(interface{ end() *taskEnd })
		if !isEnd || !e.end().ended() {
			r.mu.Unlock()
			return fmt.Errorf("runtime: forget %s: %w", id, ErrStillRunning)
		}
	}
	delete(r.orphans, id)
	if c := r.ctr.Load(); c != nil {
		c.mu.Lock()
		if t, ok := c.adoptees[id]; ok && t.ended() {
			delete(c.adoptees, id)
		}
		c.mu.Unlock()
	}
	r.mu.Unlock()
	if err := os.RemoveAll(r.taskStateDir(id)); err != nil {
		return fmt.Errorf("runtime: forget %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) taskStateDir(id string) string { return filepath.Join(r.cfg.StateDir, id) }

// Running returns the running task with this ID, if any.
func (r *Runtime) Running(id string) (Running, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	run, ok := r.running[id]
	return run, ok && run != nil
}

func (r *Runtime) validate(spec Spec) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("runtime: start %q: %w: %s", spec.ID, ErrInvalidSpec, fmt.Sprintf(format, a...))
	}
	if spec.ID == "" || !validID(spec.ID) {
		return bad("task id must be non-empty and use only [A-Za-z0-9_.-]")
	}
	if spec.Container == nil && len(spec.Command) == 0 {
		return bad("empty command")
	}
	if spec.Cores < 0 || spec.MemBytes < 0 {
		return bad("negative cores or memory")
	}
	if spec.LogDir == "" {
		return bad("no log dir")
	}
	if spec.Container != nil && (spec.Container.Env == "") == (spec.Container.Image == "") {
		return bad("container needs exactly one of env or image")
	}
	if spec.Uid == 0 && !r.cfg.AllowRoot {
		return fmt.Errorf("runtime: start %q: %w", spec.ID, ErrRootRefused)
	}
	return nil
}

func validID(s string) bool {
	if s == "." || s == ".." || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// taskEnd is what every kind of running task shares: its ID and its final
// Result, published once by closing done. Embedded by the process,
// container and adopted-orphan tasks, which implement Kill themselves.
type taskEnd struct {
	id   string
	done chan struct{}

	mu  sync.Mutex
	res Result // guarded by mu; final once done is closed
}

func newTaskEnd(id string) taskEnd { return taskEnd{id: id, done: make(chan struct{})} }

func (t *taskEnd) end() *taskEnd { return t }

// ended reports whether the final result is published.
func (t *taskEnd) ended() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *taskEnd) startedAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.res.Started
}

// publish makes res the final result (keeping a start time known before) and wakes Wait.
func (t *taskEnd) publish(res Result) {
	t.mu.Lock()
	if res.Started.IsZero() {
		res.Started = t.res.Started
	}
	t.res = res
	t.mu.Unlock()
	close(t.done)
}

// waitKilled is how every Kill ends, once the kill is sent: nil when the task has ended, an
// error when ctx is done first (the task may still end: its Result is published then).
func (t *taskEnd) waitKilled(ctx context.Context) error {
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runtime: kill %s: %w", t.id, ctx.Err())
	}
}

// Wait returns the task's Result once it has ended.
func (t *taskEnd) Wait(ctx context.Context) (Result, error) {
	select {
	case <-t.done:
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.res, nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("runtime: wait %s: %w", t.id, ctx.Err())
	}
}
