package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
)

// Task cgroups are made, limited, read and removed with github.com/containerd/cgroups/v3
// (cgroup_v2.go, cgroup_v1.go). What is eddy's own here is what that library has no call
// for: starting a process inside a cgroup from its first instruction (v2: CLONE_INTO_CGROUP;
// v1: forking from a thread placed in the cgroup), killing everything in a v1 cgroup and
// waiting until a cgroup is empty, retrying a removal the kernel refuses for a moment, and
// listing the task cgroups under the parent.

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
	// killAll SIGKILLs every process in the cgroup until it is empty (bounded).
	killAll() error
	// remove kills what is left and removes the cgroup.
	remove() error
	// path is a description for logs.
	path() string
	// empty reports whether no process is left in the cgroup.
	empty() bool
}

// The mount points the library knows: the unified hierarchy at /sys/fs/cgroup, or at
// /sys/fs/cgroup/unified next to the v1 hierarchies of a hybrid host.
const (
	cgroupRoot        = "/sys/fs/cgroup"
	cgroupHybridV2Dir = cgroupRoot + "/unified"
)

// cgroupV2Mount is where the unified hierarchy is mounted ("" when it is not).
func cgroupV2Mount() string {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return cgroupRoot
	case cgroups.Hybrid:
		return cgroupHybridV2Dir
	}
	return ""
}

func detectCgroups(parent string, log *slog.Logger) cgroupSystem {
	if cgroups.Mode() == cgroups.Unavailable {
		log.Warn("cgroups unavailable", "err", "no cgroup file system at "+cgroupRoot)
		return noCgroups{reason: "no cgroup file system at " + cgroupRoot}
	}
	if mount := cgroupV2Mount(); mount != "" {
		if s, err := newCgroupV2(mount, parent); err != nil {
			log.Warn("cgroup v2 present but not usable", "err", err)
		} else if s != nil {
			return s
		}
	}
	if cgroups.Mode() != cgroups.Unified {
		if s, err := newCgroupV1(parent); err != nil {
			log.Warn("cgroup v1 present but not usable", "err", err)
		} else if s != nil {
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

// killProcs SIGKILLs the processes procs lists until none remain (bounded). A cgroup that is
// gone (removed while we looked) has none.
func killProcs(desc string, procs func() ([]int, error)) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := procs()
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kill cgroup: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes survive", desc, len(pids))
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deleteRetry calls del until it succeeds or 5 s have passed: the kernel refuses to remove
// a cgroup (EBUSY) for a moment after its last process is gone.
func deleteRetry(desc string, del func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := del()
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", desc, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
