package runtime

import (
	"io/fs"
	"path/filepath"

	"github.com/eddy-cluster/eddy/runtime/envs"
)

// The share's layout: the directories eddy gives a meaning to, relative to the share's root,
// named once here so that the runtime, the daemon, `eddy gc` and the benchmarks agree on them.
// An existing KohakuRiver share (kohakuriver-containers/, shared_data/, logs/) is already in
// this layout.
const (
	// LogsDir holds one directory per task, logs/<task-id>, with its stdout.log and stderr.log;
	// every user must be able to traverse it to reach their own tasks' logs.
	LogsDir = "logs"
	// ContainersDir holds the container environments' tarballs; package envs owns it (and
	// searches envs.KohakuDir after it).
	ContainersDir = envs.Dir
	// SharedDataDir is the share's permanent directory every task shares: a container task
	// sees it at /shared (Layout.SharedMount). Layout.SharedData renames it.
	SharedDataDir = "shared_data"
	// UsersDir holds one directory per user, users/<user>, owned by that user, kept across
	// their tasks. Layout.Users renames it.
	UsersDir = "users"
	// JobsDir holds one scratch directory per task on the share, jobs/<task-id>, owned by the
	// task's user; it outlives the task for a retention period (`eddy gc` removes it after).
	// Layout.Jobs renames it.
	JobsDir = "jobs"
)

// Default modes and container mount points of the scopes.
const (
	DefaultUserDirMode  fs.FileMode = 0o700
	DefaultJobDirMode   fs.FileMode = 0o700
	DefaultSharedMount              = "/shared"
	DefaultUserMount                = "/user"
	DefaultJobMount                 = "/job"
	DefaultScratchMount             = "/scratch"
)

// Layout configures a task's scopes: the share's directory names (relative to the share's
// root), the modes new per-user and per-task directories get, and where a container task sees
// each scope. Zero fields take the defaults above (see WithDefaults).
type Layout struct {
	SharedData string `json:"shared_data,omitempty"`
	Users      string `json:"users,omitempty"`
	Jobs       string `json:"jobs,omitempty"`

	UserDirMode fs.FileMode `json:"user_dir_mode,omitempty"`
	JobDirMode  fs.FileMode `json:"job_dir_mode,omitempty"`

	SharedMount  string `json:"shared_mount,omitempty"`
	UserMount    string `json:"user_mount,omitempty"`
	JobMount     string `json:"job_mount,omitempty"`
	ScratchMount string `json:"scratch_mount,omitempty"`
}

// WithDefaults fills the zero fields of l.
func (l Layout) WithDefaults() Layout {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&l.SharedData, SharedDataDir)
	def(&l.Users, UsersDir)
	def(&l.Jobs, JobsDir)
	def(&l.SharedMount, DefaultSharedMount)
	def(&l.UserMount, DefaultUserMount)
	def(&l.JobMount, DefaultJobMount)
	def(&l.ScratchMount, DefaultScratchMount)
	if l.UserDirMode == 0 {
		l.UserDirMode = DefaultUserDirMode
	}
	if l.JobDirMode == 0 {
		l.JobDirMode = DefaultJobDirMode
	}
	l.UserDirMode &= fs.ModePerm
	l.JobDirMode &= fs.ModePerm
	return l
}

// SharedDataPath, UserPath and JobPath are the scopes' directories under the share root.
func (l Layout) SharedDataPath(share string) string {
	return filepath.Join(share, l.WithDefaults().SharedData)
}

// UserPath is <share>/<users>/<user>.
func (l Layout) UserPath(share, user string) string {
	return filepath.Join(share, l.WithDefaults().Users, user)
}

// JobPath is <share>/<jobs>/<task-id>.
func (l Layout) JobPath(share, id string) string {
	return filepath.Join(share, l.WithDefaults().Jobs, id)
}
