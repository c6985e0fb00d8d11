package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// runtimeRunner adapts *runtime.Runtime to sched.Runner.
type runtimeRunner struct{ rt *runtime.Runtime }

// The agent finds these by run-time type assertions, which would quietly fail if the adapters
// stopped matching (no recovery after a restart, no environment report): the build fails instead.
var (
	_ sched.Runner     = runtimeRunner{}
	_ sched.Recoverer  = runtimeRunner{}
	_ sched.EnvStarter = runtimeRun{}
)

func (r runtimeRunner) Start(ctx context.Context, s sched.RunSpec) (sched.Run, error) {
	run, err := r.rt.Start(ctx, runtimeSpec(s))
	if errors.Is(err, runtime.ErrAlreadyExists) {
		return nil, fmt.Errorf("%w: %w", sched.ErrTaskExists, err)
	}
	if errors.Is(err, runtime.ErrNoContainerd) {
		return nil, fmt.Errorf("%w (install containerd and runc on this node: scripts/deps.sh containers; "+
			"or give the daemon a running containerd: --containerd-socket PATH)", err)
	}
	if err != nil {
		return nil, err
	}
	return runtimeRun{run}, nil
}

// Recover lists the runtime's tasks of an earlier daemon (sched.Recoverer).
func (r runtimeRunner) Recover(context.Context) ([]sched.RecoveredRun, error) {
	var out []sched.RecoveredRun
	for _, a := range r.rt.Adoptees() {
		out = append(out, recoveredRun(a))
	}
	return out, nil
}

// Forget drops an ended task whose end the scheduler has recorded (sched.Recoverer).
func (r runtimeRunner) Forget(id string) error { return r.rt.Forget(id) }

// runtimeRun adapts a runtime.Running to sched.Run.
type runtimeRun struct{ r runtime.Running }

func (r runtimeRun) Wait(ctx context.Context) (sched.RunResult, error) {
	res, err := r.r.Wait(ctx)
	return runResult(res), err
}

func (r runtimeRun) Kill(ctx context.Context) error { return r.r.Kill(ctx) }

// EnvStart reports how a container task's environment was made ready (nil for other tasks).
// Only the runs of container tasks are runtime.StartInfoers, so this check stays at run time.
func (r runtimeRun) EnvStart() *sched.EnvStart {
	si, ok := r.r.(runtime.StartInfoer)
	if !ok {
		return nil
	}
	return envStart(si.StartInfo())
}
