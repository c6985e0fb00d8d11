package daemon

// The scheduler's periodic gc (--gc-every): `eddy gc --yes` run by the scheduler group's
// leader every so often, with the scheduler's own tasks, and its status on GET
// api.GCStatusPath.

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eddy-cluster/eddy/api"
	hk "github.com/eddy-cluster/eddy/housekeeping"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// periodicGC is the scheduler's periodic gc while it runs.
type periodicGC struct {
	p      *hk.Periodic // nil when --gc-every is off
	node   string
	sched  *sched.Scheduler
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned
	once   sync.Once
}

// gcPolicy is what the periodic gc keeps: the configured policy, else `eddy gc`'s defaults.
func (c *Config) gcPolicy() hk.Policy {
	if c.GCPolicy != nil {
		return *c.GCPolicy
	}
	return hk.DefaultPolicy()
}

// startPeriodicGC registers the gc status route on mux (the scheduler's routes, which a
// follower forwards to the leader) and, with --gc-every, starts the loop. The loop works
// through this node's mount, as `eddy gc` run here would; it ends with ctx (the daemon's
// shutdown signal), or at stopGC.
func (d *Daemon) startPeriodicGC(ctx context.Context, s *sched.Scheduler, mux *http.ServeMux) error {
	g := &periodicGC{node: d.cfg.NodeName, sched: s, done: make(chan struct{})}
	mux.HandleFunc("GET "+api.GCStatusPath, g.handleStatus)
	if d.cfg.GCEvery <= 0 {
		close(g.done)
		return nil
	}
	log := d.log.With("part", "gc")
	p, err := hk.NewPeriodic(hk.PeriodicConfig{
		Every:   d.cfg.GCEvery,
		Options: hk.Options{Share: d.cfg.Mount, Layout: runtime.Layout{Jobs: d.cfg.JobsDir}, Policy: d.cfg.gcPolicy()},
		Tasks:   g.tasks,
		Leading: s.Leading,
		Observe: d.gcMetrics(log),
		Logger:  log,
	})
	if err != nil {
		return err
	}
	g.p = p
	ctx, g.cancel = context.WithCancel(ctx)
	d.gc = g
	d.OnShutdown(func(ctx context.Context) error { return g.stop(ctx) })
	go func() {
		defer close(g.done)
		p.Loop(ctx)
	}()
	pol := d.cfg.gcPolicy()
	log.Info("gc: periodic gc on (the scheduler group's leader runs it)", "every", d.cfg.GCEvery,
		"job_retention", pol.JobRetention, "log_retention", pol.LogRetention, "keep_envs", pol.KeepEnvs, "first_run_in", min(d.cfg.GCEvery, hk.FirstRunDelay))
	return nil
}

// stop cancels a run under way and waits, bounded by ctx, for the loop to end.
func (g *periodicGC) stop(ctx context.Context) error {
	g.once.Do(func() {
		if g.cancel != nil {
			g.cancel()
		}
	})
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
		return errors.New("gc: the periodic run did not stop in time")
	}
}

// tasks are every task the scheduler knows, as `eddy gc` gets them from GET /v1/tasks.
func (g *periodicGC) tasks(context.Context) ([]api.Task, error) {
	if !g.sched.Leading() {
		return nil, hk.ErrNotLeading
	}
	ts := g.sched.Tasks(0)
	out := make([]api.Task, len(ts))
	for i, t := range ts {
		out[i] = *t
	}
	return out, nil
}

func (g *periodicGC) handleStatus(w http.ResponseWriter, r *http.Request) {
	if _, ok := api.IdentityFrom(r.Context()); !ok {
		writeError(w, http.StatusForbidden, errors.New("the daemon cannot tell who is calling; refused"))
		return
	}
	api.WriteJSON(w, http.StatusOK, g.status())
}

// status is the wire form of the loop's state.
func (g *periodicGC) status() api.GCStatus {
	st := api.GCStatus{Scheduler: g.node, Leading: g.sched.Leading()}
	if g.p == nil {
		return st
	}
	ps := g.p.Status()
	st.EverySec = ps.Every.Seconds()
	st.JobRetentionSec, st.LogRetentionSec = retentionSec(ps.Policy.JobRetention), retentionSec(ps.Policy.LogRetention)
	st.KeepEnvs, st.EnvGraceSec = ps.Policy.KeepEnvs, ps.Policy.EnvGrace.Seconds()
	st.Running, st.Next = ps.Running, ps.Next
	if l := ps.Last; l != nil {
		run := &api.GCRun{Started: l.Started, Finished: l.Finished, Removed: make([]api.GCItem, 0, len(l.Removed)),
			RemovedCount: l.RemovedCount, KeptCount: l.KeptCount, FreedBytes: l.Freed, Errors: l.Errors, ErrorCount: l.ErrorCount}
		for _, it := range l.Removed {
			run.Removed = append(run.Removed, api.GCItem{Kind: it.Kind, Rel: it.Rel, Task: it.Task, Bytes: it.Bytes, Reason: it.Reason})
		}
		if l.Err != nil {
			run.Error = l.Err.Error()
		}
		st.Last = run
	}
	return st
}

// retentionSec is a retention on the wire: seconds, or -1 for never.
func retentionSec(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

// gcMetrics counts the periodic runs (by result), the items they removed (by kind) and the
// bytes they freed; nil without a meter.
func (d *Daemon) gcMetrics(log *slog.Logger) func(hk.LastRun) {
	m := d.meter
	if m == nil {
		return nil
	}
	runs, err1 := m.Int64Counter("eddy.gc.runs", metric.WithDescription("Periodic gc runs on the scheduler, by result (ok, item_errors, failed)"))
	removed, err2 := m.Int64Counter("eddy.gc.removed", metric.WithDescription("Directories and environment versions the periodic gc removed, by kind"))
	freed, err3 := m.Int64Counter("eddy.gc.freed", metric.WithDescription("Bytes the periodic gc freed"), metric.WithUnit("By"))
	if err := errors.Join(err1, err2, err3); err != nil {
		log.Warn("gc metrics", "err", err)
		return nil
	}
	return func(r hk.LastRun) {
		ctx := context.Background()
		result := "ok"
		switch {
		case r.Err != nil:
			result = "failed"
		case r.ErrorCount > 0:
			result = "item_errors"
		}
		runs.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
		for k, n := range r.RemovedByKind {
			removed.Add(ctx, int64(n), metric.WithAttributes(attribute.String("kind", k)))
		}
		freed.Add(ctx, r.Freed)
	}
}
