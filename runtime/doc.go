// Package runtime runs one task on this node, as a process in a cgroup or as a containerd
// container: resource limits, GPU assignment, logs, exit status. It knows nothing of placement.
//
// Process tasks are started by a reaper, a re-execution of the daemon's binary that stays
// their parent and records their exit status in a state directory, so that they outlive the
// daemon and a later one adopts them with their true end (see reaper.go).
//
// Process tasks run in <CgroupParent>/<task-id> (cgroup v2 when its root offers cpu and memory,
// else the v1 hierarchies of a hybrid host) from their first instruction: v2 with
// CLONE_INTO_CGROUP, v1 by forking from an OS thread placed in the task's cgroups. They run as
// the task's uid/gid with supplementary groups cleared (uid 0 only with AllowRoot), in a fresh
// environment (never the daemon's), with stdout/stderr appended to LogDir. Kill kills every
// process in the cgroup (the process group where there are no cgroups); the reaper removes the
// cgroup when the task ends, after reading its OOM-kill counter to tell an OOM kill from other
// ends.
//
// Container tasks take a tarball of an environment from the share (package envs): the version
// named in the spec (resolved by the scheduler at submit), else the newest; they import it into
// containerd once per version (image eddy.env/<source>/<env>:<ts>, labelled with
// the file's size and mtime; concurrent starts share one import), unpack it, and run it with
// the task's scopes bind-mounted, the same limits, env, user and logs. Output is
// streamed to the log files and task.Delete waits for the copy, so no line is lost. Finished
// tasks' containers and snapshots are deleted; at New, containers labelled with a task ID are
// re-adopted (running) or collected (finished), and process tasks of an earlier daemon are
// adopted from the state directory, running or ended (see Adopted, Forget).
//
// Every task gets its scopes (see Scopes and Layout): the share's shared data directory, its
// user's directory and its job directory on the share, and a scratch directory on this node's
// disk that is removed when the task ends (a sweep removes those of tasks that ended while no
// runtime watched them). Process tasks find them in EDDY_SHARED_DIR (the share), EDDY_USER_DIR,
// EDDY_JOB_DIR and EDDY_SCRATCH; container tasks see them bind-mounted at /shared, /user, /job
// and /scratch (Layout's mount points).
//
// containerd is the node's (ContainerdSocket) or a private one started under ContainerdDir and
// stopped by Close; with ContainerdLazy it is connected to or started at the first container
// task, so a node without containerd runs process tasks and fails container tasks with an error
// wrapping ErrNoContainerd.
//
// Lock order: Runtime.ctrMu (held while connecting to containerd) before Runtime.mu before
// containerRuntime.mu; the last two are never held across containerd calls.
package runtime
