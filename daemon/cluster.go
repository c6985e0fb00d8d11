package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/eddy-cluster/eddy/api"
)

// startCluster joins or leads the cluster when a cluster flag is set. Without one the daemon is
// a single node and this does nothing.
//
//   - --listen: serve the whole control API on TCP, every call carrying the cluster token.
//   - --scheduler: hold the queue (badger, in <cache dir>-scheduler) and serve the cluster API;
//     this node also runs tasks (its agent joins its own listener).
//   - --join ADDR[,ADDR...]: run tasks for the scheduler at ADDR (or for the scheduler group
//     whose members' API addresses are listed); the task and node commands on the local socket
//     are forwarded there.
//   - --scheduler-peers and --raft-listen: the scheduler is a member of a replicated group
//     (raft, in "<cache dir>-raft"); without them it is a group of one.
//
// Every member runs tasks through package runtime: container tasks with the node's containerd
// (--containerd-socket), a private one (--containerd-dir), or by default a private one under
// "<cache dir>-containerd" started at the first container task.
//
// Each step registers its clean-up with OnShutdown as soon as what it started runs, so when a
// later step fails, start's failure path (runClosers) stops the earlier ones, last started
// first; a step that fails half-way closes what it opened itself.
func (d *Daemon) startCluster(ctx context.Context) error {
	c := d.cfg
	if !c.Scheduler && c.Join == "" && c.Listen == "" {
		return nil
	}
	m, err := newClusterMember(c, d.log.With("part", "cluster"))
	if err != nil {
		return err
	}
	// The routes go in before the listener starts, so that it never serves a call without them.
	schedAddr := c.Join
	switch {
	case c.Scheduler:
		if schedAddr, err = d.startScheduler(ctx, m); err != nil {
			return err
		}
	case c.Join != "":
		if err := d.forwardTasksToScheduler(m); err != nil {
			return err
		}
	}
	d.startPeerFetch(m, schedAddr) // peer fetch's chunk route and source (cluster_peer.go)
	if c.Listen != "" {
		if err := d.serveClusterAPI(m); err != nil {
			return err
		}
	}
	if schedAddr == "" {
		return nil // --listen alone: the API on TCP, no cluster role
	}
	rt, err := d.startTaskRuntime(ctx, m)
	if err != nil {
		return err
	}
	return d.startAgent(m, rt, schedAddr)
}

// clusterMember is what the cluster's start-up steps share, worked out once from the
// configuration: who this node is, the token, and the TLS material.
type clusterMember struct {
	cfg   Config
	name  string // the node's name (--node-name, else the host name)
	token string // the cluster token every cluster call carries
	log   *slog.Logger
	// serveTLS: the cluster listener serves TLS with cert (--tls-cert and --tls-key).
	serveTLS bool
	cert     tls.Certificate
	// clientTLS is what calls to the scheduler use when they go over TLS.
	clientTLS *tls.Config
	// callOpts configure the agent's client of the scheduler.
	callOpts []api.Option
}

// newClusterMember reads the token and the TLS material and refuses configurations that cannot
// form a cluster, before anything is started.
func newClusterMember(c Config, log *slog.Logger) (*clusterMember, error) {
	token, err := clusterToken(c)
	if err != nil {
		return nil, err
	}
	if c.Scheduler && c.Listen == "" {
		return nil, errors.New("--scheduler needs --listen (the address nodes join)")
	}
	if !c.Scheduler && (c.SchedulerPeers != "" || c.RaftListen != "") {
		return nil, errors.New("--scheduler-peers and --raft-listen go with --scheduler")
	}
	if c.SchedulerPeers != "" && c.RaftListen == "" {
		return nil, errors.New("--scheduler-peers needs --raft-listen (this member's raft address)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	m := &clusterMember{cfg: c, name: c.NodeName, token: token, log: log, serveTLS: c.TLSCert != ""}
	if m.name == "" {
		m.name, _ = os.Hostname()
	}
	m.callOpts = append(m.callOpts, api.WithToken(token))
	if m.clientTLS, err = clientTLS(c, log); err != nil {
		return nil, err
	}
	if m.serveTLS || strings.Contains(c.Join, "https://") {
		m.callOpts = append(m.callOpts, api.WithTLS(m.clientTLS))
	}
	if m.serveTLS {
		if m.cert, err = tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return nil, fmt.Errorf("cluster: --tls-cert/--tls-key: %w", err)
		}
	}
	return m, nil
}

// clusterToken is the cluster token: --token (EDDY_TOKEN or the config file), else the content
// of --token-file; surrounding white space never counts.
func clusterToken(c Config) (string, error) {
	token := strings.TrimSpace(c.Token)
	if token == "" && c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("cluster: read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return "", errors.New("cluster mode needs a cluster token (--token-file, EDDY_TOKEN or the config file)")
	}
	return token, nil
}

// besideCache is the directory of this node's own cluster state of one kind (the scheduler's
// queue, the tasks' state): "<cache dir>-<kind>", or beside the socket with --no-cache. It is
// never on the share, and it outlives daemon restarts.
func (m *clusterMember) besideCache(kind string) string {
	if m.cfg.CacheDir == "" {
		return filepath.Join(filepath.Dir(m.cfg.Socket), "eddy-"+kind+"-"+m.name)
	}
	return strings.TrimRight(m.cfg.CacheDir, "/") + "-" + kind
}
