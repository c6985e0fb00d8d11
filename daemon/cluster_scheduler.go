package daemon

import (
	"context"
	"fmt"
	"net/http"

	"github.com/eddy-cluster/eddy/sched"
)

// schedulerRoutes are the control API's paths the scheduler serves (the cluster's own calls, and
// the task and node commands).
var schedulerRoutes = []string{"/v1/cluster/", "/v1/tasks", "/v1/tasks/", "/v1/nodes"}

// startScheduler opens the cluster's queue (badger, beside the cache dir), starts the scheduler
// and serves its routes on the control API. It returns the address this node's own agent joins.
func (d *Daemon) startScheduler(m *clusterMember) (addr string, err error) {
	st, err := sched.OpenBadgerStore(m.besideCache("scheduler"))
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	s, err := sched.NewScheduler(sched.SchedulerConfig{Store: st, LocalityWait: m.cfg.LocalityWait, ShareRoot: m.cfg.Mount,
		Logger: m.log.With("role", "scheduler")})
	if err != nil {
		st.Close()
		return "", fmt.Errorf("cluster: %w", err)
	}
	d.OnShutdown(func(context.Context) error { s.Close(); return st.Close() })
	mux := http.NewServeMux()
	s.Routes(mux)
	for _, p := range schedulerRoutes {
		d.Handle(p, mux)
	}
	if m.serveTLS {
		return "https://" + m.cfg.Listen, nil
	}
	return m.cfg.Listen, nil
}
