package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// cgroupV2 makes task cgroups <mount>/<parent>/<name> on the unified hierarchy.
type cgroupV2 struct {
	mount, parent string
}

// newCgroupV2 returns the v2 system when the hierarchy's root offers cpu and memory (nil
// when it does not: a hybrid host keeps them on v1), after preparing the parent.
func newCgroupV2(mount, parent string) (*cgroupV2, error) {
	s := &cgroupV2{mount: mount, parent: filepath.Clean(parent)}
	root, err := cgroup2.Load("/", cgroup2.WithMountpoint(mount))
	if err != nil {
		return nil, err
	}
	have, err := root.RootControllers()
	if err != nil || !contains(have, "cpu") || !contains(have, "memory") {
		return nil, nil
	}
	if err := s.prepare(have); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *cgroupV2) mode() string { return "v2" }

// group is the library's name of a cgroup below the mount: an absolute path.
func (s *cgroupV2) group(name string) string { return "/" + filepath.Join(s.parent, name) }

func (s *cgroupV2) manager(group string) (*cgroup2.Manager, error) {
	return cgroup2.Load(group, cgroup2.WithMountpoint(s.mount))
}

func (s *cgroupV2) children() ([]string, error) { return subdirs(filepath.Join(s.mount, s.parent)) }

func (s *cgroupV2) open(name string) taskCgroup {
	return loadV2Cgroup(s.mount, s.group(name))
}

func (s *cgroupV2) oomKilledAt(rel string) bool {
	return loadV2Cgroup(s.mount, filepath.Join("/", rel)).oomKilled()
}

// prepare makes the parent and enables cpu, memory and pids (when the root has it) for the
// children of every cgroup from the root down to the parent, the parent included.
func (s *cgroupV2) prepare(rootControllers []string) error {
	dir := filepath.Join(s.mount, s.parent)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	ctrl := []string{"cpu", "memory"}
	if contains(rootControllers, "pids") {
		ctrl = append(ctrl, "pids")
	}
	// ToggleControllers writes the subtree_control of every ancestor of a cgroup (which need
	// not exist): those of a task cgroup are the root, each level down and the parent.
	task, err := s.manager(s.group("task"))
	if err != nil {
		return err
	}
	if err := task.ToggleControllers(ctrl, cgroup2.Enable); err != nil {
		return fmt.Errorf("cgroup %s: cannot enable cpu and memory controllers: %w", dir, err)
	}
	return nil
}

func (s *cgroupV2) create(name string, cores float64, mem int64) (taskCgroup, error) {
	dir := filepath.Join(s.mount, s.parent, name)
	// Mkdir, not the library's MkdirAll: an existing cgroup of that name is not ours to reuse.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup %s: %w", dir, err)
	}
	cg := loadV2Cgroup(s.mount, s.group(name))
	if cg.m == nil {
		_ = cg.remove()
		return nil, fmt.Errorf("make cgroup %s: %w", dir, cg.err)
	}
	var res cgroup2.Resources
	if cores > 0 {
		const period uint64 = 100000
		quota := int64(cores * float64(period))
		res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, new(period))}
	}
	if mem > 0 {
		res.Memory = &cgroup2.Memory{Max: new(mem)}
		// No swap for the task, where swap is accounted at all.
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			res.Memory.Swap = new(int64(0))
		}
	}
	if err := cg.m.Update(&res); err != nil {
		_ = cg.remove()
		return nil, fmt.Errorf("limit cgroup %s (cores %v, memory %d): %w", dir, cores, mem, err)
	}
	return cg, nil
}

// v2Cgroup is one task cgroup on the unified hierarchy.
type v2Cgroup struct {
	dir string
	m   *cgroup2.Manager // nil when the group name was refused (err)
	err error
}

func loadV2Cgroup(mount, group string) *v2Cgroup {
	m, err := cgroup2.Load(group, cgroup2.WithMountpoint(mount))
	return &v2Cgroup{dir: filepath.Join(mount, group), m: m, err: err}
}

// openV2Dir returns the task cgroup at dir (as recorded in a cgroupRef).
func openV2Dir(dir string) *v2Cgroup {
	mount := cgroupV2Mount()
	rel, err := filepath.Rel(mount, dir)
	if mount == "" || err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return &v2Cgroup{dir: dir, err: fmt.Errorf("cgroup %s is not under the unified hierarchy %q", dir, mount)}
	}
	return loadV2Cgroup(mount, filepath.Join("/", rel))
}

func (c *v2Cgroup) path() string { return c.dir }

// start starts cmd with CLONE_INTO_CGROUP, which the library has no call for.
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

// pids lists the processes of the cgroup and of any below it.
func (c *v2Cgroup) pids() ([]int, error) {
	if c.m == nil {
		return nil, c.err
	}
	procs, err := c.m.Procs(true)
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, int(p))
	}
	return out, err
}

func (c *v2Cgroup) empty() bool {
	pids, err := c.pids()
	return err != nil || len(pids) == 0
}

func (c *v2Cgroup) oomKilled() bool {
	if c.m == nil {
		return false
	}
	st, err := c.m.StatFiltered(cgroup2.StatMemoryEvents)
	return err == nil && st.MemoryEvents != nil && st.MemoryEvents.OomKill > 0
}

// killAll kills through cgroup.kill (the library), waits until the cgroup is empty, and
// falls back to killing process by process.
func (c *v2Cgroup) killAll() error {
	if _, err := os.Stat(c.dir); errors.Is(err, os.ErrNotExist) {
		return nil // gone already (the library would log its fallback for nothing)
	}
	if c.m != nil && c.m.Kill() == nil {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if c.empty() {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return killProcs(c.dir, c.pids)
}

func (c *v2Cgroup) remove() error {
	_ = c.killAll()
	if c.m == nil {
		return fmt.Errorf("remove cgroup %s: %w", c.dir, c.err)
	}
	return deleteRetry(c.dir, c.m.Delete)
}
