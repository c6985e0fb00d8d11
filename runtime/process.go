package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// processTask is a task running as a process group inside its own cgroup, started and waited
// for by its reaper (see reaper.go).
type processTask struct {
	taskEnd
	dir    string // its state directory
	cg     taskCgroup
	pid    int // the task's process (and process group) ID; 0 when unknown
	gpus   []string
	reaper *exec.Cmd // nil when an earlier daemon started it
	log    *slog.Logger
}

func (r *Runtime) startProcess(ctx context.Context, spec Spec, sc Scopes) (Running, error) {
	op := fmt.Sprintf("runtime: start process %s", spec.ID)
	cred, err := r.credential(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	// The reaper opens the log files, not the daemon: see launch.
	if err := makeLogDir(spec); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}

	env := taskEnv(spec, Scopes{Shared: spec.SharedDir, User: sc.User, Job: sc.Job, Scratch: sc.Scratch}, true)
	path, err := lookPath(spec.Command[0], env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	dir := spec.WorkDir
	if dir == "" {
		dir = spec.SharedDir
	}
	if dir == "" {
		dir = "/"
	}
	cg, err := r.cg.create(spec.ID, spec.Cores, spec.MemBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	l := reaperLaunch{ID: spec.ID, Path: path, Args: spec.Command, Env: env, Dir: dir, Cgroup: refOf(cg),
		GPUs: spec.GPUs, LogDir: spec.LogDir, LogUid: spec.Uid, LogGid: spec.Gid}
	if cred != nil {
		l.SetCred, l.Uid, l.Gid = true, cred.Uid, cred.Gid
	}
	t, err := r.launch(l, cg)
	if err != nil {
		if rerr := cg.remove(); rerr != nil {
			r.log.Warn("remove cgroup", "task", spec.ID, "err", rerr)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	r.log.Info("process task started", "task", spec.ID, "pid", t.pid, "reaper", t.reaper.Process.Pid, "cgroup", cg.path(),
		"uid", spec.Uid, "cores", spec.Cores, "mem", spec.MemBytes)
	go func() { t.collect(t.reaper.Wait()) }()
	return t, nil
}

// launch records l in a fresh state directory and starts its reaper, which starts the task.
//
// The daemon holds no file of its own mount while it forks: Go forks with vfork, and the parent
// thread keeps its P, in a raw system call, until the child has exec'd. At exec the child
// closes its copies of the daemon's close-on-exec descriptors, and closing a file of a FUSE
// mount sends FLUSH and waits for the answer, which the daemon itself must give. A stop-the-world
// pause (a garbage collection) starting in that window can never complete, as that P never
// stops: the daemon froze, every task's file operation on the mount with it. So the task's logs
// on the share are opened by the reaper, a process of its own, after its exec.
func (r *Runtime) launch(l reaperLaunch, cg taskCgroup) (*processTask, error) {
	dir := r.taskStateDir(l.ID)
	// An earlier run of this ID by this Runtime (Start refuses IDs of an earlier daemon's tasks).
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear task state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("task state: %w", err)
	}
	drop := func() {
		if err := os.RemoveAll(dir); err != nil {
			r.log.Warn("remove task state", "task", l.ID, "err", err)
		}
	}
	if err := syncDir(r.cfg.StateDir); err != nil {
		drop()
		return nil, err
	}
	if err := writeJSONDurable(filepath.Join(dir, launchFile), l); err != nil {
		drop()
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		drop()
		return nil, fmt.Errorf("task state: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		drop()
		return nil, fmt.Errorf("lock task state: %w", err)
	}
	rlog, err := os.OpenFile(filepath.Join(dir, reaperLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		lock.Close()
		drop()
		return nil, fmt.Errorf("task state: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		lock.Close()
		rlog.Close()
		drop()
		return nil, fmt.Errorf("reaper pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{reaperArg0, dir},
		Env:         []string{"GOMAXPROCS=1"}, // not the daemon's (it may hold the cluster token)
		Dir:         "/",
		Stdout:      rlog,
		Stderr:      rlog,
		ExtraFiles:  []*os.File{pw, lock}, // fdStatus, fdLock
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	closeOnExecAll()
	err = cmd.Start()
	// The reaper holds the lock now; the daemon keeps none of these.
	pw.Close()
	lock.Close()
	rlog.Close()
	if err != nil {
		pr.Close()
		drop()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	line, rerr := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	if rest, ok := strings.CutPrefix(line, "ok "); ok {
		var pid int
		var ns int64
		if _, err := fmt.Sscanf(rest, "%d %d", &pid, &ns); err == nil {
			t := &processTask{taskEnd: newTaskEnd(l.ID), dir: dir, cg: cg, pid: pid, gpus: l.GPUs, reaper: cmd, log: r.log}
			t.res.Started = time.Unix(0, ns)
			return t, nil
		}
	}
	werr := cmd.Wait()
	var err2 error
	if msg, ok := strings.CutPrefix(line, "err "); ok {
		err2 = errors.New(strings.TrimSpace(msg))
	} else {
		out, _ := os.ReadFile(filepath.Join(dir, reaperLog))
		err2 = fmt.Errorf("the task's reaper ended before starting it (%v, %v): %s", werr, rerr, strings.TrimSpace(string(out)))
	}
	drop()
	return nil, err2
}

// collect reads how the task ended from its exit record. Without one (its reaper died first)
// the end is unknown; it is reported once nothing is left in the task's cgroup.
func (t *processTask) collect(reaperErr error) {
	var res Result
	if err := readJSON(filepath.Join(t.dir, exitFile), &res); err != nil {
		for !t.cg.empty() {
			time.Sleep(500 * time.Millisecond)
		}
		oom := t.cg.oomKilled()
		if err := t.cg.remove(); err != nil {
			t.log.Warn("remove cgroup", "task", t.id, "err", err)
		}
		why := "exit status unknown: the task's reaper ended without recording it"
		if reaperErr != nil {
			why += " (" + reaperErr.Error() + ")"
		}
		res = Result{ExitCode: -1, OOMKilled: oom, Unknown: true, Err: why, Finished: time.Now()}
	}
	t.publish(res)
	t.log.Info("process task ended", "task", t.id, "exit_code", res.ExitCode, "signal", res.Signal,
		"oom_killed", res.OOMKilled, "unknown", res.Unknown, "err", res.Err)
}

// waitLock waits for the reaper of an adopted task (holding lock) to end, then collects.
func (t *processTask) waitLock(lock *os.File) {
	err := flockWait(lock)
	lock.Close()
	if err != nil {
		t.log.Warn("wait for the task's reaper", "task", t.id, "err", err)
	}
	t.collect(nil)
}

func (t *processTask) Kill(ctx context.Context) error {
	if t.ended() {
		return nil
	}
	if _, none := t.cg.(plainStart); none && t.pid > 0 {
		_ = syscall.Kill(-t.pid, syscall.SIGKILL) // no cgroup: the process group
	}
	if err := t.cg.killAll(); err != nil && !t.ended() {
		return fmt.Errorf("runtime: kill %s: %w", t.id, err)
	}
	return t.waitKilled(ctx)
}

// adoptState takes over the task recorded in the state directory entry id (see reaper.go).
// It returns nil for an entry that never got as far as starting anything.
func (r *Runtime) adoptState(id string) *processTask {
	dir := r.taskStateDir(id)
	var l reaperLaunch
	if err := readJSON(filepath.Join(dir, launchFile), &l); err != nil {
		// launch.json is durable before a reaper starts: without it nothing ran.
		r.log.Warn("dropping a task state entry that never started", "task", id, "err", err)
		if err := os.RemoveAll(dir); err != nil {
			r.log.Warn("remove task state", "task", id, "err", err)
		}
		return nil
	}
	t := &processTask{taskEnd: newTaskEnd(id), dir: dir, cg: l.Cgroup.open(), gpus: l.GPUs, log: r.log}
	var st startedRecord
	if readJSON(filepath.Join(dir, startedFile), &st) == nil {
		t.pid, t.res.Started = st.Pid, st.Started
	}
	var res Result
	if readJSON(filepath.Join(dir, exitFile), &res) == nil {
		if err := t.cg.remove(); err != nil { // normally gone with the task
			r.log.Warn("remove cgroup", "task", id, "err", err)
		}
		t.publish(res)
		r.log.Info("process task of an earlier daemon ended while no daemon was there", "task", id,
			"exit_code", res.ExitCode, "signal", res.Signal, "err", res.Err)
		return t
	}
	if lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR, 0); err == nil {
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
			r.log.Info("process task of an earlier daemon still running: adopted", "task", id, "pid", t.pid)
			go t.waitLock(lock)
			return t
		}
		lock.Close()
	}
	r.log.Warn("process task of an earlier daemon lost its reaper: its exit status will be unknown", "task", id)
	go t.collect(nil)
	return t
}

// credential decides who the task runs as. As root: spec.Uid/Gid with supplementary groups
// cleared. As another user: only as that same user.
func (r *Runtime) credential(spec Spec) (*syscall.Credential, error) {
	if spec.Uid == 0 && !r.cfg.AllowRoot {
		return nil, ErrRootRefused
	}
	euid := os.Geteuid()
	if euid != 0 {
		if int(spec.Uid) != euid {
			return nil, fmt.Errorf("daemon runs as uid %d and cannot run a task as uid %d", euid, spec.Uid)
		}
		return nil, nil
	}
	return &syscall.Credential{Uid: spec.Uid, Gid: spec.Gid, Groups: []uint32{}}, nil
}

// openLogs creates LogDir (makeLogDir) and opens its log files (openLogFiles).
func openLogs(spec Spec) (stdout, stderr *os.File, err error) {
	if err := makeLogDir(spec); err != nil {
		return nil, nil, err
	}
	return openLogFiles(spec.LogDir, spec.Uid, spec.Gid)
}

// makeLogDir creates LogDir (owned by the task's user, mode 0700: a task's logs are its owner's,
// as the API's logs call is). The directory above it (the share's logs/) is a layout directory
// every user must be able to traverse to reach their own task's logs through the share.
func makeLogDir(spec Spec) error {
	if err := traversableDir(filepath.Dir(spec.LogDir)); err != nil {
		return fmt.Errorf("make log dir: %w", err)
	}
	if err := os.Mkdir(spec.LogDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make log dir: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(spec.LogDir, int(spec.Uid), int(spec.Gid)); err != nil {
			return fmt.Errorf("chown log dir: %w", err)
		}
	}
	if err := os.Chmod(spec.LogDir, 0o700); err != nil {
		return fmt.Errorf("chmod log dir: %w", err)
	}
	return nil
}

// openLogFiles opens dir's stdout.log and stderr.log for appending (a retried task adds to its
// logs), owned by uid and gid when run as root.
func openLogFiles(dir string, uid, gid uint32) (stdout, stderr *os.File, err error) {
	open := func(name string) (*os.File, error) {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
		if os.Geteuid() == 0 {
			if err := f.Chown(int(uid), int(gid)); err != nil {
				f.Close()
				return nil, fmt.Errorf("chown %s: %w", name, err)
			}
		}
		return f, nil
	}
	if stdout, err = open("stdout.log"); err != nil {
		return nil, nil, err
	}
	if stderr, err = open("stderr.log"); err != nil {
		stdout.Close()
		return nil, nil, err
	}
	return stdout, stderr, nil
}

// traversableDir makes dir (and missing parents) with mode 0755, and opens a directory that an
// earlier version made 0700 to traversal and listing by others; a directory someone gave
// another mode on purpose is left as it is.
func traversableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() == 0o700 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Geteuid() {
			return os.Chmod(dir, 0o755)
		}
	}
	return nil
}

// taskEnv builds the task's environment from scratch (never the daemon's own, which may hold
// the cluster token): PATH and the user's HOME/USER, then spec.Env, then eddy's variables,
// among them the scopes of sc as the task sees them.
func taskEnv(spec Spec, sc Scopes, withBase bool) []string {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	if withBase {
		set("PATH", defaultPath)
		if u, err := user.LookupId(strconv.FormatUint(uint64(spec.Uid), 10)); err == nil {
			set("HOME", u.HomeDir)
			set("USER", u.Username)
			set("LOGNAME", u.Username)
		} else {
			set("HOME", "/")
		}
	}
	for _, kv := range spec.Env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" {
			set(k, v)
		}
	}
	set("EDDY_TASK_ID", spec.ID)
	for _, v := range [...]struct{ k, v string }{{EnvSharedDir, sc.Shared}, {EnvUserDir, sc.User}, {EnvJobDir, sc.Job}, {EnvScratch, sc.Scratch}} {
		if v.v != "" {
			set(v.k, v.v)
		}
	}
	// An empty list hides every GPU from a task that asked for none.
	set("CUDA_VISIBLE_DEVICES", strings.Join(spec.GPUs, ","))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out
}

// lookPath resolves name against the task's PATH (not the daemon's).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q: %w", name, errors.Join(exec.ErrNotFound, os.ErrNotExist))
}

// orphanTask is a process task found in its cgroup at New with no state entry (its daemon kept
// none). Its exit status is unknown; Wait reports when the cgroup is empty, Kill kills it.
type orphanTask struct {
	taskEnd
	cg taskCgroup
}

// adoptOrphans takes over the process tasks an earlier daemon left: those recorded in the state
// directory (see reaper.go), then any task cgroup under the parent with no record: empty ones
// are removed, live ones adopted with an unknown exit status, so none is left unaccounted.
func (r *Runtime) adoptOrphans() {
	recorded := r.adoptStates()
	names, err := r.cg.children()
	if err != nil {
		r.log.Warn("look for orphaned tasks", "err", err)
		return
	}
	for _, name := range names {
		if recorded[name] || strings.HasPrefix(name, containerID("")) || !validID(name) {
			continue // containers' cgroups belong to runc
		}
		cg := r.cg.open(name)
		if cg.empty() {
			if err := cg.remove(); err != nil {
				r.log.Warn("remove stale cgroup", "cgroup", cg.path(), "err", err)
			}
			continue
		}
		t := &orphanTask{taskEnd: newTaskEnd(name), cg: cg}
		r.adopt(name, t, &t.taskEnd)
		r.log.Warn("process task of an earlier daemon still running: adopted, exit status will be unknown", "task", name)
		go t.watch()
	}
}

// adoptStates adopts the tasks of the state directory's entries and returns their IDs.
func (r *Runtime) adoptStates() map[string]bool {
	seen := map[string]bool{}
	ents, err := os.ReadDir(r.cfg.StateDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("read task states", "dir", r.cfg.StateDir, "err", err)
		}
		return seen
	}
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() || !validID(id) {
			continue
		}
		seen[id] = true
		if t := r.adoptState(id); t != nil {
			r.adopt(id, t, &t.taskEnd)
		}
	}
	return seen
}

// adopt lists t (ended or not) among the tasks of an earlier daemon, and among the running
// ones while it runs.
func (r *Runtime) adopt(id string, t Running, end *taskEnd) {
	r.mu.Lock()
	r.orphans[id] = t
	running := !end.ended()
	if running {
		r.running[id] = t
	}
	r.mu.Unlock()
	if running {
		go func() {
			<-end.done
			r.mu.Lock()
			if r.running[id] == t {
				delete(r.running, id)
			}
			r.mu.Unlock()
		}()
	}
}

func (t *orphanTask) watch() {
	for !t.cg.empty() {
		time.Sleep(500 * time.Millisecond)
	}
	oom := t.cg.oomKilled()
	if err := t.cg.remove(); err != nil {
		slog.Warn("remove cgroup", "task", t.id, "err", err)
	}
	t.publish(Result{ExitCode: -1, OOMKilled: oom, Finished: time.Now(), Unknown: true,
		Err: "exit status unknown: the task was started by an earlier daemon"})
}

func (t *orphanTask) Kill(ctx context.Context) error {
	if err := t.cg.killAll(); err != nil {
		return fmt.Errorf("runtime: kill %s: %w", t.id, err)
	}
	return t.waitKilled(ctx)
}
