package runtime

import "github.com/eddy-cluster/eddy/runtime/envs"

// The share's layout: the directories eddy gives a meaning to, relative to the share's root,
// named once here so that the runtime, the daemon and the benchmarks agree on them.
const (
	// LogsDir holds one directory per task, logs/<task-id>, with its stdout.log and stderr.log;
	// every user must be able to traverse it to reach their own tasks' logs.
	LogsDir = "logs"
	// ContainersDir holds the container environments' tarballs; package envs owns it (and
	// searches envs.KohakuDir after it).
	ContainersDir = envs.Dir
	// SharedDataDir is the share's directory a container task sees at its
	// Container.SharedMount (/shared by default).
	SharedDataDir = "shared_data"
)
