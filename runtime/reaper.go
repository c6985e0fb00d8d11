package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process tasks outlive the daemon that started them, and their end is known whatever
// happens to it.
//
// No kernel interface tells anyone but a process's parent how it exited, and the daemon must be
// free to restart or crash while its tasks run. So a process task is started by a reaper: the
// daemon's own binary re-executed (argv[0] reaperArg0, taken over in init below) in a session of
// its own, in no task's cgroup. The reaper starts the task in its cgroup as its user, stays its
// parent, and when the task ends kills what it left, removes its cgroup and records how it ended
// in the task's state directory <StateDir>/<task-id>/exit.json (written to a temporary file,
// fsynced, renamed). It holds an flock on <dir>/lock for as long as it lives, so any daemon can
// tell a live reaper from a dead one without trusting PIDs. It does nothing else: the task
// writes its logs itself, and the reaper's own output goes to <dir>/reaper.log.
//
// The daemon writes <dir>/launch.json (what to run, durably) before it starts the reaper and
// learns from a pipe whether the task started. A new Runtime reads every entry (adoptStates):
//   - exit.json present: the task ended while no daemon was there; Wait returns that result;
//   - lock held: the task runs; Wait returns when its reaper has recorded the end;
//   - neither: the reaper died unrecorded (killed, or the machine rebooted); the end is
//     unknown (Result.Unknown), reported once the task's cgroup is empty.
//
// Entries stay until Forget, so an end survives any number of restarts until whoever asked for
// the task has recorded it.

// reaperArg0 is argv[0] of a reaper process.
const reaperArg0 = "eddy-task-reaper"

// Files of a task's state directory.
const (
	launchFile  = "launch.json"
	startedFile = "started.json"
	exitFile    = "exit.json"
	lockFile    = "lock"
	reaperLog   = "reaper.log"
)

// Descriptors a reaper is handed (exec.Cmd.ExtraFiles, from 3 on).
const (
	fdStatus = 3 + iota // "ok <pid> <start unix ns>\n" or "err <message>\n", then closed
	fdLock              // the state directory's lock, already held
)

func init() {
	if len(os.Args) == 2 && os.Args[0] == reaperArg0 {
		os.Exit(reaperMain(os.Args[1]))
	}
}

// reaperLaunch is what the reaper starts (launch.json).
type reaperLaunch struct {
	ID      string    `json:"id"`
	Path    string    `json:"path"`
	Args    []string  `json:"args"`
	Env     []string  `json:"env"`
	Dir     string    `json:"dir"`
	SetCred bool      `json:"set_cred"` // run as Uid/Gid with no supplementary groups
	Uid     uint32    `json:"uid"`
	Gid     uint32    `json:"gid"`
	Cgroup  cgroupRef `json:"cgroup"`
	GPUs    []string  `json:"gpus,omitempty"`
	LogDir  string    `json:"log_dir"`
	LogUid  uint32    `json:"log_uid"` // owner of the log files the reaper opens in LogDir
	LogGid  uint32    `json:"log_gid"`
}

// startedRecord is started.json.
type startedRecord struct {
	Pid     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// cgroupRef names a task cgroup so that another process can use it.
type cgroupRef struct {
	Mode string   `json:"mode"` // v2, v1 or none
	Dirs []string `json:"dirs,omitempty"`
	Mem  string   `json:"mem,omitempty"` // v1: the memory controller's dir
}

func refOf(cg taskCgroup) cgroupRef {
	switch c := cg.(type) {
	case *v2Cgroup:
		return cgroupRef{Mode: "v2", Dirs: []string{c.dir}}
	case *v1Cgroup:
		return cgroupRef{Mode: "v1", Dirs: c.dirs, Mem: c.mem}
	}
	return cgroupRef{Mode: "none"}
}

func (c cgroupRef) open() taskCgroup {
	switch {
	case c.Mode == "v2" && len(c.Dirs) == 1:
		return openV2Dir(c.Dirs[0])
	case c.Mode == "v1":
		return openV1Dir(c.Mem)
	}
	return plainStart{}
}

// reaperMain is the reaper process (see above). It returns its exit code.
func reaperMain(dir string) int {
	// Only SIGKILL ends a reaper: signals meant for the daemon or a terminal are not for it.
	// They are caught, not ignored: an ignored signal would stay ignored in the task.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	// None of the reaper's descriptors goes to the task beyond its stdout and stderr; the lock
	// stays open (not wrapped in an os.File, whose finalizer would close it) until exit.
	for _, fd := range []int{fdStatus, fdLock} {
		syscall.CloseOnExec(fd)
	}
	status := os.NewFile(fdStatus, "status")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "%s: %v\n", reaperArg0, err)
		res := Result{ExitCode: -1, Err: "start: " + err.Error(), Finished: time.Now()}
		if werr := writeJSONDurable(filepath.Join(dir, exitFile), res); werr != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", reaperArg0, werr)
		}
		fmt.Fprintf(status, "err %s\n", oneLine(err.Error()))
		status.Close()
		return 1
	}
	var l reaperLaunch
	if err := readJSON(filepath.Join(dir, launchFile), &l); err != nil {
		return fail(err)
	}
	stdout, stderr, err := openLogFiles(l.LogDir, l.LogUid, l.LogGid)
	if err != nil {
		return fail(err)
	}
	cmd := &exec.Cmd{Path: l.Path, Args: l.Args, Env: l.Env, Dir: l.Dir, Stdout: stdout, Stderr: stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if l.SetCred {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: l.Uid, Gid: l.Gid, Groups: []uint32{}}
	}
	cg := l.Cgroup.open()
	if err := cg.start(cmd); err != nil {
		return fail(err)
	}
	started := time.Now()
	stdout.Close()
	stderr.Close()
	if err := writeJSONDurable(filepath.Join(dir, startedFile), startedRecord{Pid: cmd.Process.Pid, Started: started}); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", reaperArg0, err)
	}
	fmt.Fprintf(status, "ok %d %d\n", cmd.Process.Pid, started.UnixNano())
	status.Close()

	werr := cmd.Wait()
	res := Result{Started: started, Finished: time.Now()}
	// Whatever the task left behind in its cgroup goes with it.
	if err := cg.killAll(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: kill leftover processes: %v\n", reaperArg0, err)
	}
	res.OOMKilled = cg.oomKilled()
	if err := cg.remove(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", reaperArg0, err)
	}
	exitStatus(&res, cmd.ProcessState, werr)
	if err := writeJSONDurable(filepath.Join(dir, exitFile), res); err != nil {
		fmt.Fprintf(os.Stderr, "%s: record the exit status: %v\n", reaperArg0, err)
		return 1
	}
	return 0
}

// exitStatus fills in the exit code and signal of a waited-for process.
func exitStatus(res *Result, ps *os.ProcessState, werr error) {
	if ps == nil {
		res.ExitCode = -1
		if werr != nil {
			res.Err = werr.Error()
		}
		return
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.Signal = unix.SignalName(ws.Signal())
		res.ExitCode = 128 + int(ws.Signal())
		return
	}
	res.ExitCode = ws.ExitStatus()
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSONDurable replaces path with v's JSON: a temporary file, fsynced, renamed over it,
// and the directory fsynced, so a crash leaves the old content or the new, never a mix.
func writeJSONDurable(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// closeOnExecAll marks every descriptor of this process above stderr close-on-exec before a
// reaper is started. Some are opened without it (go-fuse opens /dev/fuse that way; others are
// inherited from whoever started the daemon), and a task holding the FUSE device would keep a
// dead daemon's mount connected: every access to the share, its exit's close of a log file
// included, would then wait forever for an answer that never comes, and the next daemon could
// not clear the stale mount.
func closeOnExecAll() {
	const closeRangeCloexec = 1 << 2 // CLOSE_RANGE_CLOEXEC, Linux 5.11
	if err := unix.CloseRange(3, ^uint(0), closeRangeCloexec); err == nil {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// flockWait takes an exclusive lock on f, waiting for it.
func flockWait(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
