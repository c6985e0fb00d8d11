package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroupV1 makes task cgroups <hierarchy>/<parent>/<name> in the memory, cpu and (when
// mounted) pids hierarchies of a v1 or hybrid host.
type cgroupV1 struct {
	parent     string
	subsystems []cgroup1.Subsystem // memory first
	memRoot    string              // the memory hierarchy's root directory
	swap       bool                // memory.memsw.* exist: swap is accounted and can be limited
	// oomCounter: memory.oom_control has an oom_kill line (Linux 4.13 on). The library
	// reads a missing line as 0, so without this a hit limit could not stand in for it.
	oomCounter bool
}

// pather is the part of a library subsystem that knows its directories.
type pather interface{ Path(string) string }

// newCgroupV1 returns the v1 system when the memory and cpu hierarchies are mounted (nil when
// they are not), after making the parent in each.
func newCgroupV1(parent string) (*cgroupV1, error) {
	s, err := findCgroupV1(parent)
	if s == nil || err != nil {
		return nil, err
	}
	if _, err := cgroup1.New(cgroup1.StaticPath(s.parent), &specs.LinuxResources{}, s.hierarchy()); err != nil {
		return nil, fmt.Errorf("make cgroup %s in %s: %w", s.parent, s.hierarchyNames(), err)
	}
	return s, nil
}

// findCgroupV1 finds the hierarchies (nil when memory or cpu is not mounted).
func findCgroupV1(parent string) (*cgroupV1, error) {
	all, err := cgroup1.Default()
	if errors.Is(err, cgroup1.ErrMountPointNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	byName := map[cgroup1.Name]cgroup1.Subsystem{}
	for _, ss := range all {
		byName[ss.Name()] = ss
	}
	mem, okm := byName[cgroup1.Memory]
	cpu, okc := byName[cgroup1.Cpu]
	if !okm || !okc {
		return nil, nil
	}
	s := &cgroupV1{parent: filepath.Join("/", parent), subsystems: []cgroup1.Subsystem{mem, cpu}}
	if pids, ok := byName[cgroup1.Pids]; ok {
		s.subsystems = append(s.subsystems, pids)
	}
	s.memRoot = mem.(pather).Path("/")
	_, err = os.Stat(filepath.Join(s.memRoot, "memory.memsw.limit_in_bytes"))
	s.swap = err == nil
	if b, err := os.ReadFile(filepath.Join(s.memRoot, "memory.oom_control")); err == nil {
		s.oomCounter = strings.Contains("\n"+string(b), "\noom_kill ")
	}
	return s, nil
}

func (s *cgroupV1) mode() string { return "v1" }

func (s *cgroupV1) hierarchy() cgroup1.InitOpts {
	return cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return s.subsystems, nil })
}

func (s *cgroupV1) hierarchyNames() string {
	var names []string
	for _, ss := range s.subsystems {
		names = append(names, string(ss.Name()))
	}
	return strings.Join(names, ",")
}

func (s *cgroupV1) children() ([]string, error) {
	return subdirs(filepath.Join(s.memRoot, s.parent))
}

func (s *cgroupV1) open(name string) taskCgroup { return s.load(filepath.Join(s.parent, name)) }

func (s *cgroupV1) oomKilledAt(rel string) bool {
	return s.load(filepath.Join("/", rel)).oomKilled()
}

// load returns the cgroup at rel in the hierarchies where it exists.
func (s *cgroupV1) load(rel string) *v1Cgroup {
	c := &v1Cgroup{sys: s, rel: rel, mem: filepath.Join(s.memRoot, rel)}
	c.cg, c.err = cgroup1.Load(cgroup1.StaticPath(rel), s.hierarchy())
	if c.err == nil {
		c.dirs = dirsOf(c.cg.Subsystems(), rel)
	}
	return c
}

func (s *cgroupV1) create(name string, cores float64, mem int64) (taskCgroup, error) {
	rel := filepath.Join(s.parent, name)
	c := &v1Cgroup{sys: s, rel: rel, mem: filepath.Join(s.memRoot, rel)}
	// Mkdir, not the library's MkdirAll: an existing cgroup of that name is not ours to reuse.
	if err := os.Mkdir(c.mem, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup %s: %w", c.mem, err)
	}
	var res specs.LinuxResources
	if cores > 0 {
		const period uint64 = 100000
		res.CPU = &specs.LinuxCPU{Period: new(period), Quota: new(int64(cores * float64(period)))}
	}
	if mem > 0 {
		res.Memory = &specs.LinuxMemory{Limit: new(mem)}
		// Without swap accounting the limit would let the task swap instead of being killed.
		if s.swap {
			res.Memory.Swap = new(mem)
		}
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(rel), &res, s.hierarchy())
	if err != nil {
		_ = s.load(rel).remove()
		return nil, fmt.Errorf("make cgroup %s in %s (cores %v, memory %d): %w", rel, s.hierarchyNames(), cores, mem, err)
	}
	c.cg, c.dirs = cg, dirsOf(cg.Subsystems(), rel)
	return c, nil
}

// dirsOf lists the directories of the cgroup at rel, one per hierarchy (comounted
// controllers share one).
func dirsOf(subsystems []cgroup1.Subsystem, rel string) []string {
	var out []string
	for _, ss := range subsystems {
		if p, ok := ss.(pather); ok && !contains(out, p.Path(rel)) {
			out = append(out, p.Path(rel))
		}
	}
	return out
}

// v1Cgroup is one task cgroup in the v1 hierarchies.
type v1Cgroup struct {
	sys  *cgroupV1
	rel  string         // path below each hierarchy's root
	cg   cgroup1.Cgroup // nil when it could not be loaded (err)
	err  error
	dirs []string // one per hierarchy
	mem  string   // the memory controller's dir
}

// openV1Dir returns the task cgroup recorded in a cgroupRef by its memory directory.
func openV1Dir(memDir string) *v1Cgroup {
	s, err := findCgroupV1("")
	if s == nil {
		if err == nil {
			err = errors.New("no v1 memory and cpu hierarchies")
		}
		return &v1Cgroup{mem: memDir, err: err}
	}
	rel, err := filepath.Rel(s.memRoot, memDir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return &v1Cgroup{mem: memDir, err: fmt.Errorf("cgroup %s is not under the memory hierarchy %s", memDir, s.memRoot)}
	}
	return s.load(filepath.Join("/", rel))
}

func (c *v1Cgroup) path() string { return c.mem }

// start places the calling OS thread into the task's cgroups, forks the child from it (the
// child inherits the thread's cgroups), then moves the thread back. If moving back fails the
// thread is left locked, so the Go runtime retires it when the goroutine ends.
func (c *v1Cgroup) start(cmd *exec.Cmd) error {
	if c.cg == nil {
		return fmt.Errorf("cgroup %s: %w", c.mem, c.err)
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		thread := cgroup1.Process{Pid: unix.Gettid()}
		// Where the thread is now, read before it moves (PidPath reads /proc/<tid>/cgroup).
		orig, err := cgroup1.Load(cgroup1.PidPath(thread.Pid), c.sys.hierarchy())
		if err != nil {
			errc <- fmt.Errorf("thread cgroups: %w", err)
			return // thread stays locked and is retired
		}
		serr := c.cg.AddTask(thread)
		if serr == nil {
			serr = cmd.Start()
		}
		if err := orig.AddTask(thread); err == nil {
			goruntime.UnlockOSThread()
		}
		errc <- serr
	}()
	return <-errc
}

// pids lists the processes in the cgroup, in every hierarchy.
func (c *v1Cgroup) pids() ([]int, error) {
	if c.cg == nil {
		if errors.Is(c.err, cgroup1.ErrCgroupDeleted) {
			return nil, os.ErrNotExist
		}
		return nil, c.err
	}
	var out []int
	for _, ss := range c.cg.Subsystems() {
		procs, err := c.cg.Processes(ss.Name(), false)
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, os.ErrNotExist
		}
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, p := range procs {
			if !containsPid(out, p.Pid) {
				out = append(out, p.Pid)
			}
		}
	}
	return out, nil
}

func containsPid(list []int, pid int) bool {
	for _, p := range list {
		if p == pid {
			return true
		}
	}
	return false
}

func (c *v1Cgroup) empty() bool {
	pids, err := c.pids()
	return err != nil || len(pids) == 0
}

func (c *v1Cgroup) oomKilled() bool {
	if c.sys == nil {
		return false
	}
	mem, err := cgroup1.Load(cgroup1.StaticPath(c.rel), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		// Only the counters OOM needs: the swap and kernel memory files may be missing.
		return []cgroup1.Subsystem{cgroup1.NewMemory(filepath.Dir(c.sys.memRoot), cgroup1.IgnoreModules("memsw", "kmem", "kmem.tcp"))}, nil
	}))
	if err != nil {
		return false
	}
	st, err := mem.Stat(cgroup1.IgnoreNotExist)
	if err != nil || st.MemoryOomControl == nil {
		return false
	}
	if c.sys.oomCounter {
		return st.MemoryOomControl.OomKill > 0
	}
	// Kernels before 4.13 have no oom_kill counter: a hit limit is the best evidence.
	return st.Memory != nil && st.Memory.Usage != nil && st.Memory.Usage.Failcnt > 0
}

// killAll kills process by process: the library has no kill for v1.
func (c *v1Cgroup) killAll() error { return killProcs(c.mem, c.pids) }

func (c *v1Cgroup) remove() error {
	_ = c.killAll()
	if c.cg == nil {
		if errors.Is(c.err, cgroup1.ErrCgroupDeleted) {
			return nil // in no hierarchy any more
		}
		return fmt.Errorf("remove cgroup %s: %w", c.mem, c.err)
	}
	return deleteRetry(c.mem, func() error {
		if err := c.cg.Delete(); !errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return err
		}
		return nil
	})
}
