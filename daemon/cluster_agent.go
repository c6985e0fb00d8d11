package daemon

import (
	"context"
	"fmt"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// startTaskRuntime starts the runtime that runs this node's tasks. Process tasks' state (and
// the exit status of those that end while the daemon is away) lives beside the cache, like the
// scheduler's queue. Close stops a private containerd.
func (d *Daemon) startTaskRuntime(ctx context.Context, m *clusterMember) (*runtime.Runtime, error) {
	c := m.cfg
	rcfg := runtime.Config{ShareRoot: c.Mount, CgroupParent: "eddy-" + m.name, StateDir: m.besideCache("tasks"),
		Logger: m.log.With("part", "runtime"), ContainerdSocket: c.ContainerdSocket, ContainerdDir: c.ContainerdDir}
	if rcfg.ContainerdSocket == "" && rcfg.ContainerdDir == "" {
		// Default: a private containerd, started at the first container task when installed.
		rcfg.ContainerdDir, rcfg.ContainerdLazy = ContainerdDirFor(c.CacheDir, c.Socket, m.name), true
	}
	c.taskScopes(&rcfg, m.besideCache("scratch"))
	rt, err := runtime.New(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: runtime: %w", err)
	}
	d.OnShutdown(func(context.Context) error { return rt.Close() })
	return rt, nil
}

// startAgent runs this node's agent: it registers with the scheduler at schedAddr, heartbeats,
// prefetches tasks' inputs into the cache and runs tasks with rt. At shutdown it is stopped, and
// waited for within the shutdown's deadline.
func (d *Daemon) startAgent(m *clusterMember, rt *runtime.Runtime, schedAddr string) error {
	var nc sched.NodeCache // nil with --no-cache: no prefetch, empty inventory
	if d.cache != nil {
		nc = d.cache
	}
	ag, err := sched.NewAgent(sched.AgentConfig{
		Node:       sched.NodeRecord{Name: m.name, Address: m.cfg.Listen, Labels: m.cfg.Labels},
		Scheduler:  api.NewTCP(schedAddr, m.callOpts...),
		Cache:      nc,
		Runner:     runtimeRunner{rt},
		ShareRoot:  m.cfg.Mount,
		Envs:       rt,
		ShareSpace: d.api.shareSpace,
		Logger:     m.log.With("role", "agent"),
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(actx) }()
	d.OnShutdown(func(ctx context.Context) error {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
		}
		return nil
	})
	m.log.Info("cluster member", "node", m.name, "scheduler", schedAddr, "leader", m.cfg.Scheduler)
	return nil
}
