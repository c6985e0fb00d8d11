package daemon

// A task takes four shapes on its way to a node: what the user submits (sched.TaskSpec), the
// scheduler's record of it (sched.Task, which embeds the TaskSpec), what the agent asks a runner
// to run (sched.RunSpec), and what the runtime runs (runtime.Spec); results and recovered runs
// come back the same way. The daemon converts only between the sched and the runtime shapes,
// here, one function per pair; task_shapes_test.go proves every field is carried.

import (
	"path/filepath"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// runtimeSpec is the runtime's shape of a task the agent runs. A container task (ContainerEnv or
// Image set) gets the share's shared_data directory as its data directory.
func runtimeSpec(s sched.RunSpec) runtime.Spec {
	spec := runtime.Spec{
		ID:        s.ID,
		Command:   s.Command,
		Env:       s.Env,
		Cores:     s.Cores,
		MemBytes:  s.MemBytes,
		GPUs:      s.GPUs,
		Uid:       s.Uid,
		Gid:       s.Gid,
		WorkDir:   s.WorkDir,
		SharedDir: s.SharedDir,
		LogDir:    s.LogDir,
	}
	if s.ContainerEnv != "" || s.Image != "" {
		spec.Container = &runtime.Container{
			Env:     s.ContainerEnv,
			EnvFile: s.EnvFile,
			Image:   s.Image,
			DataDir: filepath.Join(s.SharedDir, runtime.SharedDataDir),
			// SharedMount: the runtime's default (/shared).
		}
	}
	return spec
}

// runResult is the agent's shape of how a run ended.
func runResult(r runtime.Result) sched.RunResult {
	return sched.RunResult{
		ExitCode:  r.ExitCode,
		OOMKilled: r.OOMKilled,
		Signal:    r.Signal,
		Err:       r.Err,
		Started:   r.Started,
		Finished:  r.Finished,
		Unknown:   r.Unknown,
	}
}

// envStart is the scheduler's shape of how a container task's environment was made ready: nil
// when the run has no environment tarball (an image task).
func envStart(i runtime.StartInfo) *sched.EnvStart {
	if i.EnvFile == "" {
		return nil
	}
	return &sched.EnvStart{
		File:        i.EnvFile,
		Imported:    i.Imported,
		ImportBytes: i.ImportBytes,
		ImageS:      i.ImageReady.Seconds(),
		StartS:      i.Started.Seconds(),
	}
}

// recoveredRun is the agent's shape of a task the runtime has from an earlier daemon.
func recoveredRun(a runtime.Adoptee) sched.RecoveredRun {
	return sched.RecoveredRun{
		ID:      a.ID,
		Run:     runtimeRun{a.Run},
		Started: a.Started,
		GPUs:    a.GPUs,
		Ended:   a.Ended,
	}
}
