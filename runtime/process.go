package runtime

import (
	"context"
	"errors"
	"fmt"
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

// processTask is a task running as a process group inside its own cgroup.
type processTask struct {
	taskEnd
	cmd *exec.Cmd
	cg  taskCgroup
	log *slog.Logger
}

func (r *Runtime) startProcess(ctx context.Context, spec Spec) (Running, error) {
	op := fmt.Sprintf("runtime: start process %s", spec.ID)
	cred, err := r.credential(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	stdout, stderr, err := openLogs(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer stdout.Close()
	defer stderr.Close()

	env := taskEnv(spec, spec.SharedDir, true)
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
	cmd := &exec.Cmd{
		Path:   path,
		Args:   spec.Command,
		Env:    env,
		Dir:    dir,
		Stdout: stdout,
		Stderr: stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Credential: cred,
		},
	}
	if err := cg.start(cmd); err != nil {
		if rerr := cg.remove(); rerr != nil {
			r.log.Warn("remove cgroup", "task", spec.ID, "err", rerr)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	t := &processTask{taskEnd: newTaskEnd(spec.ID), cmd: cmd, cg: cg, log: r.log}
	t.res.Started = time.Now()
	r.log.Info("process task started", "task", spec.ID, "pid", cmd.Process.Pid, "cgroup", cg.path(),
		"uid", spec.Uid, "cores", spec.Cores, "mem", spec.MemBytes)
	go t.wait()
	return t, nil
}

func (t *processTask) wait() {
	werr := t.cmd.Wait()
	finished := time.Now()
	// Whatever the task left behind in its cgroup goes with it.
	if err := t.cg.killAll(); err != nil {
		t.log.Warn("kill leftover processes", "task", t.id, "err", err)
	}
	oom := t.cg.oomKilled()
	if err := t.cg.remove(); err != nil {
		t.log.Warn("remove cgroup", "task", t.id, "err", err)
	}
	t.mu.Lock()
	t.res.Finished = finished
	t.res.OOMKilled = oom
	if ps := t.cmd.ProcessState; ps != nil {
		ws, _ := ps.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			t.res.Signal = unix.SignalName(ws.Signal())
			t.res.ExitCode = 128 + int(ws.Signal())
		default:
			t.res.ExitCode = ws.ExitStatus()
		}
	} else if werr != nil {
		t.res.Err = werr.Error()
		t.res.ExitCode = -1
	}
	res := t.res
	t.mu.Unlock()
	t.log.Info("process task ended", "task", t.id, "exit_code", res.ExitCode, "signal", res.Signal,
		"oom_killed", res.OOMKilled, "took", finished.Sub(res.Started))
	close(t.done)
}

func (t *processTask) Kill(ctx context.Context) error {
	select {
	case <-t.done:
		return nil
	default:
	}
	if p := t.cmd.Process; p != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL) // the process group
	}
	if err := t.cg.killAll(); err != nil { // and whatever left the group
		select {
		case <-t.done: // ended meanwhile, its cgroup removed
		default:
			return fmt.Errorf("runtime: kill %s: %w", t.id, err)
		}
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runtime: kill %s: %w", t.id, ctx.Err())
	}
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

// openLogs creates LogDir (owned by the task's user, mode 0700: a task's logs are its owner's,
// as the API's logs call is) and opens stdout.log and stderr.log for appending (a retried task
// adds to its logs).
func openLogs(spec Spec) (stdout, stderr *os.File, err error) {
	if err := os.MkdirAll(spec.LogDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("make log dir: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(spec.LogDir, int(spec.Uid), int(spec.Gid)); err != nil {
			return nil, nil, fmt.Errorf("chown log dir: %w", err)
		}
	}
	if err := os.Chmod(spec.LogDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("chmod log dir: %w", err)
	}
	open := func(name string) (*os.File, error) {
		f, err := os.OpenFile(filepath.Join(spec.LogDir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
		if os.Geteuid() == 0 {
			if err := f.Chown(int(spec.Uid), int(spec.Gid)); err != nil {
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

// taskEnv builds the task's environment from scratch (never the daemon's own, which may hold
// the cluster token): PATH and the user's HOME/USER, then spec.Env, then eddy's variables.
func taskEnv(spec Spec, sharedDir string, withBase bool) []string {
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
	if sharedDir != "" {
		set("EDDY_SHARED_DIR", sharedDir)
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

// orphanTask is a process task started by an earlier daemon, found in its cgroup at New. Its
// exit status is lost with that daemon; Wait reports when the cgroup is empty, Kill kills it.
type orphanTask struct {
	taskEnd
	cg taskCgroup
}

// adoptOrphans finds process-task cgroups under the parent left by an earlier daemon: empty
// ones are removed, live ones adopted (see Adopted) so they are never left unaccounted.
func (r *Runtime) adoptOrphans() {
	names, err := r.cg.children()
	if err != nil {
		r.log.Warn("look for orphaned tasks", "err", err)
		return
	}
	for _, name := range names {
		if strings.HasPrefix(name, containerID("")) || !validID(name) {
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
		r.mu.Lock()
		r.running[name] = t
		r.orphans[name] = t
		r.mu.Unlock()
		r.log.Warn("process task of an earlier daemon still running: adopted, exit status will be unknown", "task", name)
		go t.watch()
		go func() {
			<-t.done
			r.mu.Lock()
			if r.running[name] == Running(t) {
				delete(r.running, name)
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
	t.mu.Lock()
	t.res = Result{ExitCode: -1, OOMKilled: oom, Finished: time.Now(),
		Err: "exit status unknown: the task was started by an earlier daemon"}
	t.mu.Unlock()
	close(t.done)
}

func (t *orphanTask) Kill(ctx context.Context) error {
	if err := t.cg.killAll(); err != nil {
		return fmt.Errorf("runtime: kill %s: %w", t.id, err)
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runtime: kill %s: %w", t.id, ctx.Err())
	}
}
