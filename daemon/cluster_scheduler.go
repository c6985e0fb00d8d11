package daemon

import (
	"context"
	"fmt"
	"net/http"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/sched"
)

// schedulerRoutes are the control API's paths the scheduler serves (the cluster's own calls, the
// task and node commands, and the periodic gc's status).
var schedulerRoutes = []string{"/v1/cluster/", "/v1/tasks", "/v1/tasks/", "/v1/nodes", "/v1/cache/where", api.GCStatusPath}

// startScheduler opens the cluster's queue (badger, beside the cache dir) under its raft
// group member (log, stable store and snapshots in "<cache dir>-raft"), starts the scheduler
// and serves its routes on the control API (a follower forwards writes to the leader). It
// returns the address this node's own agent joins.
//
// Without --scheduler-peers the group is this scheduler alone, bootstrapped on first start
// (the badger state of an earlier, unreplicated scheduler is carried into the log).
func (d *Daemon) startScheduler(ctx context.Context, m *clusterMember) (addr string, err error) {
	peers, err := sched.ParsePeers(m.cfg.SchedulerPeers)
	if err != nil {
		return "", fmt.Errorf("cluster: --scheduler-peers: %w", err)
	}
	st, err := sched.OpenBadgerStore(m.besideCache("scheduler"))
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	fsm, err := sched.NewFSM(st)
	if err != nil {
		st.Close()
		return "", fmt.Errorf("cluster: %w", err)
	}
	rcfg := sched.ReplicaConfig{Name: m.name, Dir: m.besideCache("raft"), Listen: m.cfg.RaftListen, Peers: peers, Token: m.token,
		Logger: m.log.With("role", "scheduler-group")}
	fwd := sched.ForwardConfig{Token: m.token}
	if m.serveTLS {
		rcfg.ServerTLS, rcfg.ClientTLS, fwd.TLS = serverTLS(m.cert), m.clientTLS, m.clientTLS
	}
	rep, err := sched.OpenReplica(rcfg, fsm)
	if err != nil {
		st.Close()
		return "", fmt.Errorf("cluster: %w", err)
	}
	s, err := sched.NewScheduler(sched.SchedulerConfig{Store: st, LocalityWait: m.cfg.LocalityWait, ShareRoot: m.cfg.Mount,
		Logger: m.log.With("role", "scheduler"), RefuseRootTasks: !m.cfg.AllowRootTasks, Replica: rep, Forward: fwd})
	if err != nil {
		rep.Close()
		st.Close()
		return "", fmt.Errorf("cluster: %w", err)
	}
	d.OnShutdown(func(context.Context) error {
		s.Close()
		if err := rep.Close(); err != nil {
			m.log.Warn("scheduler group: shutdown", "err", err)
		}
		return st.Close()
	})
	mux := http.NewServeMux()
	s.Routes(mux)
	if err := d.startPeriodicGC(ctx, s, mux); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	h := s.LeaderRouter(mux)
	for _, p := range schedulerRoutes {
		d.Handle(p, h)
	}
	if m.serveTLS {
		return "https://" + m.cfg.Listen, nil
	}
	return m.cfg.Listen, nil
}
