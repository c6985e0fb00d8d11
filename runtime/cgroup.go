package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupSystem makes one cgroup per task, on cgroup v2 when its root has the cpu and memory
// controllers, else on the v1 hierarchies (hybrid hosts), else none (no limits possible).
type cgroupSystem interface {
	mode() string
	// create makes the task's cgroup with the given limits (0 = unlimited).
	create(name string, cores float64, mem int64) (taskCgroup, error)
	// oomKilledAt reads the OOM-kill counter of a cgroup made by someone else (runc), given
	// its path relative to the hierarchy roots.
	oomKilledAt(rel string) bool
	// children lists the task cgroups under the parent (left by an earlier daemon, say).
	children() ([]string, error)
	// open returns an existing task cgroup.
	open(name string) taskCgroup
}

// taskCgroup is one task's cgroup.
type taskCgroup interface {
	// start starts cmd with the child inside the cgroup from its first instruction (no window
	// in which it could fork outside the limits).
	start(cmd *exec.Cmd) error
	// oomKilled reports whether the kernel OOM-killed a process of this cgroup.
	oomKilled() bool
	// killAll SIGKILLs every process in the cgroup until it is empty or ctx time runs out.
	killAll() error
	// remove kills what is left and removes the cgroup.
	remove() error
	// path is a description for logs.
	path() string
	// empty reports whether no process is left in the cgroup.
	empty() bool
}

type cgMount struct {
	dir  string // mount point
	root string // root of the hierarchy as seen in mountinfo (for cgroup namespaces)
	opts string // super options (v1 controllers)
}

// mountinfo lists cgroup mounts: v2 (at most one) and v1 by controller.
func cgroupMounts() (v2 *cgMount, v1 map[string]cgMount, err error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, fmt.Errorf("read mountinfo: %w", err)
	}
	v1 = map[string]cgMount{}
	for _, line := range strings.Split(string(data), "\n") {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := cgMount{dir: unescapeMount(f[4]), root: unescapeMount(f[3]), opts: g[2]}
		switch g[0] {
		case "cgroup2":
			if v2 == nil {
				mm := m
				v2 = &mm
			}
		case "cgroup":
			for _, o := range strings.Split(g[2], ",") {
				switch o {
				case "cpu", "memory", "pids", "cpuacct", "freezer":
					if _, dup := v1[o]; !dup {
						v1[o] = m
					}
				}
			}
		}
	}
	return v2, v1, nil
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func detectCgroups(parent string, log *slog.Logger) cgroupSystem {
	v2, v1, err := cgroupMounts()
	if err != nil {
		log.Warn("cgroups unavailable", "err", err)
		return noCgroups{reason: err.Error()}
	}
	if v2 != nil {
		ctrl, _ := os.ReadFile(filepath.Join(v2.dir, "cgroup.controllers"))
		have := strings.Fields(string(ctrl))
		if contains(have, "cpu") && contains(have, "memory") {
			s := &cgroupV2{mount: v2.dir, parent: parent}
			if err := s.prepare(); err != nil {
				log.Warn("cgroup v2 present but not usable", "err", err)
			} else {
				return s
			}
		}
	}
	cpu, okc := v1["cpu"]
	mem, okm := v1["memory"]
	if okc && okm {
		s := &cgroupV1{parent: parent, ctrl: map[string]string{"cpu": cpu.dir, "memory": mem.dir}}
		if p, ok := v1["pids"]; ok {
			s.ctrl["pids"] = p.dir
		}
		if err := s.prepare(); err != nil {
			log.Warn("cgroup v1 present but not usable", "err", err)
		} else {
			return s
		}
	}
	log.Warn("no usable cgroups: tasks with cpu or memory limits will be refused")
	return noCgroups{reason: "no cgroup v2 with cpu+memory and no v1 cpu+memory hierarchies usable"}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("write %s=%q: %w", path, val, err)
	}
	return nil
}

// readProcs lists the PIDs in a cgroup.procs file.
func readProcs(file string) ([]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// killProcs SIGKILLs the processes listed in procsFile until none remain (bounded).
func killProcs(procsFile string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := readProcs(procsFile)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
			return nil // the cgroup is gone (removed while we looked)
		}
		if err != nil {
			return fmt.Errorf("kill cgroup: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes survive", procsFile, len(pids))
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rmdirRetry(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keyValue reads "key N" lines (memory.events, memory.oom_control) and returns key's value.
func keyValue(file, key string) (int64, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// --- none ---

type noCgroups struct{ reason string }

func (noCgroups) mode() string                { return "none" }
func (noCgroups) oomKilledAt(string) bool     { return false }
func (noCgroups) children() ([]string, error) { return nil, nil }
func (noCgroups) open(string) taskCgroup      { return plainStart{} }
func (n noCgroups) create(name string, cores float64, mem int64) (taskCgroup, error) {
	if cores > 0 || mem > 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoCgroups, n.reason)
	}
	return plainStart{}, nil
}

type plainStart struct{}

func (plainStart) start(cmd *exec.Cmd) error { return cmd.Start() }
func (plainStart) oomKilled() bool           { return false }
func (plainStart) killAll() error            { return nil }
func (plainStart) remove() error             { return nil }
func (plainStart) path() string              { return "" }
func (plainStart) empty() bool               { return true }

// --- v2 ---

type cgroupV2 struct {
	mount, parent string
}

func (s *cgroupV2) mode() string { return "v2" }

func (s *cgroupV2) children() ([]string, error) { return subdirs(filepath.Join(s.mount, s.parent)) }
func (s *cgroupV2) open(name string) taskCgroup {
	return &v2Cgroup{dir: filepath.Join(s.mount, s.parent, name)}
}

func (s *cgroupV2) oomKilledAt(rel string) bool {
	return (&v2Cgroup{dir: filepath.Join(s.mount, rel)}).oomKilled()
}

// prepare makes the parent and enables cpu, memory and pids for children along the way.
func (s *cgroupV2) prepare() error {
	dir := s.mount
	for _, part := range append([]string{""}, strings.Split(filepath.Clean(s.parent), "/")...) {
		if part != "" {
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("make cgroup %s: %w", dir, err)
			}
		}
		for _, c := range []string{"cpu", "memory", "pids"} {
			_ = writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c)
		}
	}
	ctl, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("read subtree_control: %w", err)
	}
	if have := strings.Fields(string(ctl)); !contains(have, "cpu") || !contains(have, "memory") {
		return fmt.Errorf("cgroup %s: cannot enable cpu and memory controllers (have %q)", dir, have)
	}
	return nil
}

func (s *cgroupV2) create(name string, cores float64, mem int64) (taskCgroup, error) {
	dir := filepath.Join(s.mount, s.parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	cg := &v2Cgroup{dir: dir}
	fail := func(err error) (taskCgroup, error) { _ = cg.remove(); return nil, err }
	if cores > 0 {
		const period = 100000
		if err := writeFile(filepath.Join(dir, "cpu.max"), fmt.Sprintf("%d %d", int64(cores*period), period)); err != nil {
			return fail(err)
		}
	}
	if mem > 0 {
		if err := writeFile(filepath.Join(dir, "memory.max"), strconv.FormatInt(mem, 10)); err != nil {
			return fail(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0")
		}
	}
	return cg, nil
}

type v2Cgroup struct{ dir string }

func (c *v2Cgroup) path() string { return c.dir }

func (c *v2Cgroup) start(cmd *exec.Cmd) error {
	fd, err := unix.Open(c.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", c.dir, err)
	}
	defer unix.Close(fd)
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	return cmd.Start()
}

func (c *v2Cgroup) empty() bool {
	n, ok := keyValue(filepath.Join(c.dir, "cgroup.events"), "populated")
	return !ok || n == 0
}

func (c *v2Cgroup) oomKilled() bool {
	n, _ := keyValue(filepath.Join(c.dir, "memory.events"), "oom_kill")
	return n > 0
}

func (c *v2Cgroup) killAll() error {
	if err := writeFile(filepath.Join(c.dir, "cgroup.kill"), "1"); err == nil {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if n, ok := keyValue(filepath.Join(c.dir, "cgroup.events"), "populated"); !ok || n == 0 {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return killProcs(filepath.Join(c.dir, "cgroup.procs"))
}

func (c *v2Cgroup) remove() error {
	_ = c.killAll()
	return rmdirRetry(c.dir)
}

// --- v1 ---

type cgroupV1 struct {
	parent string
	ctrl   map[string]string // controller -> mount dir (comounted controllers share a dir)
}

func (s *cgroupV1) mode() string { return "v1" }

func (s *cgroupV1) children() ([]string, error) {
	return subdirs(filepath.Join(s.ctrl["memory"], s.parent))
}

func (s *cgroupV1) open(name string) taskCgroup {
	cg := &v1Cgroup{mem: filepath.Join(s.ctrl["memory"], s.parent, name)}
	for _, d := range s.dirs(name) {
		if _, err := os.Stat(d); err == nil {
			cg.dirs = append(cg.dirs, d)
		}
	}
	return cg
}

func (s *cgroupV1) oomKilledAt(rel string) bool {
	return (&v1Cgroup{mem: filepath.Join(s.ctrl["memory"], rel)}).oomKilled()
}

func (s *cgroupV1) dirs(name string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range []string{"memory", "cpu", "pids"} {
		m, ok := s.ctrl[c]
		if !ok || seen[m] {
			continue
		}
		seen[m] = true
		out = append(out, filepath.Join(m, s.parent, name))
	}
	return out
}

func (s *cgroupV1) prepare() error {
	for _, d := range s.dirs("") {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
	}
	return nil
}

func (s *cgroupV1) create(name string, cores float64, mem int64) (taskCgroup, error) {
	cg := &v1Cgroup{mem: filepath.Join(s.ctrl["memory"], s.parent, name)}
	for _, d := range s.dirs(name) {
		if err := os.Mkdir(d, 0o755); err != nil {
			_ = cg.remove()
			return nil, fmt.Errorf("make cgroup %s: %w", d, err)
		}
		cg.dirs = append(cg.dirs, d)
	}
	fail := func(err error) (taskCgroup, error) { _ = cg.remove(); return nil, err }
	if cores > 0 {
		cpu := filepath.Join(s.ctrl["cpu"], s.parent, name)
		const period = 100000
		if err := writeFile(filepath.Join(cpu, "cpu.cfs_period_us"), strconv.Itoa(period)); err != nil {
			return fail(err)
		}
		if err := writeFile(filepath.Join(cpu, "cpu.cfs_quota_us"), strconv.FormatInt(int64(cores*period), 10)); err != nil {
			return fail(err)
		}
	}
	if mem > 0 {
		if err := writeFile(filepath.Join(cg.mem, "memory.limit_in_bytes"), strconv.FormatInt(mem, 10)); err != nil {
			return fail(err)
		}
		// Without swap accounting the limit would let the task swap instead of being killed.
		if _, err := os.Stat(filepath.Join(cg.mem, "memory.memsw.limit_in_bytes")); err == nil {
			if err := writeFile(filepath.Join(cg.mem, "memory.memsw.limit_in_bytes"), strconv.FormatInt(mem, 10)); err != nil {
				return fail(err)
			}
		}
	}
	return cg, nil
}

type v1Cgroup struct {
	dirs []string // one per hierarchy
	mem  string   // the memory controller's dir
}

func (c *v1Cgroup) path() string { return c.mem }

// start places the calling OS thread into the task's cgroups, forks the child from it (the
// child inherits the thread's cgroups), then moves the thread back. If moving back fails the
// thread is left locked, so the Go runtime retires it when the goroutine ends.
func (c *v1Cgroup) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		tid := strconv.Itoa(unix.Gettid())
		orig, err := threadCgroupDirs(c.dirs)
		if err != nil {
			errc <- err
			return // thread stays locked and is retired
		}
		var moved []int
		var serr error
		for i, d := range c.dirs {
			if serr = writeFile(filepath.Join(d, "tasks"), tid); serr != nil {
				break
			}
			moved = append(moved, i)
		}
		if serr == nil {
			serr = cmd.Start()
		}
		back := true
		for _, i := range moved {
			if err := writeFile(filepath.Join(orig[i], "tasks"), tid); err != nil {
				back = false
			}
		}
		if back {
			goruntime.UnlockOSThread()
		}
		errc <- serr
	}()
	return <-errc
}

// threadCgroupDirs returns, for each task cgroup dir, the dir of the same hierarchy the
// calling thread is in now.
func threadCgroupDirs(taskDirs []string) ([]string, error) {
	data, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read thread cgroups: %w", err)
	}
	_, v1, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(taskDirs))
	for i, td := range taskDirs {
		for _, line := range strings.Split(string(data), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 || parts[1] == "" {
				continue
			}
			for _, ctl := range strings.Split(parts[1], ",") {
				m, ok := v1[ctl]
				if !ok || !strings.HasPrefix(td, m.dir+"/") {
					continue
				}
				rel := strings.TrimPrefix(parts[2], m.root)
				out[i] = filepath.Join(m.dir, rel)
			}
		}
		if out[i] == "" {
			return nil, fmt.Errorf("thread cgroup for %s not found", td)
		}
	}
	return out, nil
}

func (c *v1Cgroup) empty() bool {
	for _, d := range c.dirs {
		if pids, err := readProcs(filepath.Join(d, "cgroup.procs")); err == nil && len(pids) > 0 {
			return false
		}
	}
	return true
}

func (c *v1Cgroup) oomKilled() bool {
	if n, ok := keyValue(filepath.Join(c.mem, "memory.oom_control"), "oom_kill"); ok {
		return n > 0
	}
	// Kernels before 4.13 have no oom_kill counter: a hit limit is the best evidence.
	data, err := os.ReadFile(filepath.Join(c.mem, "memory.failcnt"))
	if err != nil {
		return false
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n > 0
}

func (c *v1Cgroup) killAll() error {
	var first error
	for _, d := range c.dirs {
		if err := killProcs(filepath.Join(d, "cgroup.procs")); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (c *v1Cgroup) remove() error {
	_ = c.killAll()
	var first error
	for _, d := range c.dirs {
		if err := rmdirRetry(d); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cgroups in %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
