package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Scopes are the directories a task gets besides its logs, as paths on this node (an empty
// field: the scope is not available, e.g. no share is configured):
//
//   - Shared: the share's shared_data/, permanent, every task's (EDDY_SHARED_DIR is the whole
//     share for a process task, /shared in a container);
//   - User: users/<user>/ on the share, its user's, across their tasks (EDDY_USER_DIR);
//   - Job: jobs/<task-id>/ on the share, this task's, kept after it ends until `eddy gc`
//     removes it (EDDY_JOB_DIR);
//   - Scratch: a directory on this node's own disk, outside the share, removed when the task
//     ends (EDDY_SCRATCH).
type Scopes struct {
	Shared  string `json:"shared,omitempty"`
	User    string `json:"user,omitempty"`
	Job     string `json:"job,omitempty"`
	Scratch string `json:"scratch,omitempty"`
}

// The environment variables that name a task's scopes.
const (
	EnvSharedDir = "EDDY_SHARED_DIR"
	EnvUserDir   = "EDDY_USER_DIR"
	EnvJobDir    = "EDDY_JOB_DIR"
	EnvScratch   = "EDDY_SCRATCH"
)

// scratchSweepInterval is how often scratch directories of tasks that ended while nobody
// watched them (tasks of an earlier daemon) are looked for.
const scratchSweepInterval = 30 * time.Second

// defaultScratchDir is the node-local scratch root when Config.ScratchDir is empty: beside
// the default state directory (never inside StateDir, whose entries are tasks).
func defaultScratchDir(cgroupParent string) string {
	return filepath.Join(os.TempDir(), "eddy-scratch", sanitizeParent(cgroupParent))
}

// UserName is the name of the task user's directory under users/: the user's name on this
// node, or its uid when the node has no passwd entry for it.
func UserName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && validID(u.Username) {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// prepareScopes makes the task's scopes (see Scopes): the share's directories when the
// runtime has a share (Config.ShareRoot), and always its node-local scratch directory.
func (r *Runtime) prepareScopes(spec Spec) (Scopes, error) {
	var sc Scopes
	l := r.cfg.Layout
	if share := r.cfg.ShareRoot; share != "" {
		sc.Shared = l.SharedDataPath(share)
		if err := sharedDataDir(sc.Shared); err != nil {
			return sc, fmt.Errorf("shared data dir: %w", err)
		}
		sc.User = l.UserPath(share, UserName(spec.Uid))
		if err := ownedDir(sc.User, spec.Uid, spec.Gid, l.UserDirMode); err != nil {
			return sc, fmt.Errorf("user dir: %w", err)
		}
		sc.Job = l.JobPath(share, spec.ID)
		if err := ownedDir(sc.Job, spec.Uid, spec.Gid, l.JobDirMode); err != nil {
			return sc, fmt.Errorf("job dir: %w", err)
		}
	}
	if err := traversableRoot(r.cfg.ScratchDir); err != nil {
		return sc, fmt.Errorf("scratch dir: %w", err)
	}
	sc.Scratch = r.scratchPath(spec.ID)
	// A scratch directory is the task's own: a leftover of an earlier run of this ID goes.
	if err := os.RemoveAll(sc.Scratch); err != nil {
		return sc, fmt.Errorf("scratch dir: %w", err)
	}
	if err := ownedDir(sc.Scratch, spec.Uid, spec.Gid, 0o700); err != nil {
		return sc, fmt.Errorf("scratch dir: %w", err)
	}
	return sc, nil
}

func (r *Runtime) scratchPath(id string) string { return filepath.Join(r.cfg.ScratchDir, id) }

// removeScratch removes a task's scratch directory (its task has ended).
func (r *Runtime) removeScratch(id string) {
	if err := os.RemoveAll(r.scratchPath(id)); err != nil {
		r.log.Warn("remove scratch dir", "task", id, "err", err)
	}
}

// sweepScratch removes the scratch directories of tasks that are not running: left by tasks of
// an earlier daemon that ended since, or by a crash.
func (r *Runtime) sweepScratch() {
	ents, err := os.ReadDir(r.cfg.ScratchDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		id := e.Name()
		if !validID(id) {
			continue
		}
		r.mu.Lock()
		active := r.activeLocked(id)
		r.mu.Unlock()
		if !active {
			r.removeScratch(id)
		}
	}
}

// activeLocked reports whether the task with this ID is starting or running (its scratch
// directory is in use).
func (r *Runtime) activeLocked(id string) bool {
	if run, ok := r.running[id]; ok {
		if run == nil {
			return true // being started
		}
		if e, ok := run.(interface{ end() *taskEnd }); !ok || !e.end().ended() {
			return true
		}
	}
	c := r.ctr.Load()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.adoptees[id]; ok && !t.ended() {
		return true
	}
	return false
}

// scratchSweeper sweeps at New and then every scratchSweepInterval until stop is closed.
func (r *Runtime) scratchSweeper(stop <-chan struct{}) {
	r.sweepScratch()
	tk := time.NewTicker(scratchSweepInterval)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			r.sweepScratch()
		}
	}
}

// sharedDataDir makes the share's shared data directory when it is missing: every task's, so
// sticky and writable by all (as /tmp). An existing one is left as it is.
func sharedDataDir(dir string) error {
	if err := traversableDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o777); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return os.Chmod(dir, 0o777|fs.ModeSticky)
}

// traversableRoot makes dir (and missing parents), world-traversable but not listable: the
// per-task directories under it are their users'.
func traversableRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	return nil
}

// ownedDir makes dir, under a traversable parent, owned by uid:gid with mode perm. An existing
// one is kept as it is when its owner is the task's user; one that root made (an administrator
// preparing it) is given to the user; one owned by another user is refused.
func ownedDir(dir string, uid, gid uint32, perm fs.FileMode) error {
	if err := traversableDir(filepath.Dir(dir)); err != nil {
		return err
	}
	made := true
	if err := os.Mkdir(dir, perm); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		made = false
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	euid := os.Geteuid()
	switch {
	case st.Uid == uid:
	case euid == 0 && (made || st.Uid == 0):
		if err := os.Lchown(dir, int(uid), int(gid)); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	case euid != 0 && int(st.Uid) == euid:
		// An unprivileged daemon runs tasks as itself only (see credential).
	default:
		return fmt.Errorf("%s belongs to uid %d, not to the task's user (uid %d)", dir, st.Uid, uid)
	}
	if made {
		return os.Chmod(dir, perm) // not the umask's
	}
	return nil
}
