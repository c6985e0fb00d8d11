package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// startCluster joins or leads the cluster when a cluster flag is set (issue 5). Without one the
// daemon is a single node and this does nothing.
//
//   - --listen: serve the whole control API on TCP, every call carrying the cluster token.
//   - --scheduler: hold the queue (badger, in <cache dir>-scheduler) and serve the cluster API;
//     this node also runs tasks (its agent joins its own listener).
//   - --join ADDR: run tasks for the scheduler at ADDR; the task and node commands on the local
//     socket are forwarded there.
//
// Every member runs tasks through package runtime: container tasks with the node's containerd
// (--containerd-socket), a private one (--containerd-dir), or by default a private one under
// "<cache dir>-containerd" started at the first container task.
func (d *Daemon) startCluster(ctx context.Context) error {
	c := d.cfg
	if !c.Scheduler && c.Join == "" && c.Listen == "" {
		return nil
	}
	token := strings.TrimSpace(c.Token)
	if token == "" && c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return fmt.Errorf("cluster: read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return errors.New("cluster mode needs a cluster token (--token-file, EDDY_TOKEN or the config file)")
	}
	if c.Scheduler && c.Listen == "" {
		return errors.New("--scheduler needs --listen (the address nodes join)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	name := c.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	log := d.log.With("part", "cluster")
	useTLS := c.TLSCert != ""

	var opts []api.Option
	opts = append(opts, api.WithToken(token))
	if useTLS || strings.HasPrefix(c.Join, "https://") {
		// Nodes trust the cluster token, not the certificate chain, when the cert is
		// self-signed; operators who want verification put a CA-signed certificate in place.
		opts = append(opts, api.WithTLS(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec
	}
	schedAddr := c.Join
	if c.Scheduler {
		dir := strings.TrimRight(c.CacheDir, "/") + "-scheduler"
		if c.CacheDir == "" {
			dir = filepath.Join(filepath.Dir(c.Socket), "eddy-scheduler-"+name)
		}
		st, err := sched.OpenBadgerStore(dir)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		s, err := sched.NewScheduler(sched.SchedulerConfig{Store: st, LocalityWait: c.LocalityWait, ShareRoot: c.Mount, Logger: log.With("role", "scheduler")})
		if err != nil {
			st.Close()
			return fmt.Errorf("cluster: %w", err)
		}
		d.OnShutdown(func(context.Context) error { s.Close(); return st.Close() })
		mux := http.NewServeMux()
		s.Routes(mux)
		for _, p := range []string{"/v1/cluster/", "/v1/tasks", "/v1/tasks/", "/v1/nodes"} {
			d.Handle(p, mux)
		}
		schedAddr = c.Listen
		if useTLS {
			schedAddr = "https://" + c.Listen
		}
	} else if c.Join != "" {
		// Forward the task commands of the local socket to the scheduler.
		target, err := url.Parse(c.Join)
		if err != nil || target.Host == "" {
			target, err = url.Parse("http://" + c.Join)
		}
		if err != nil {
			return fmt.Errorf("cluster: --join %q: %w", c.Join, err)
		}
		rp := httputil.NewSingleHostReverseProxy(target)
		if target.Scheme == "https" {
			rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
		}
		fwd := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+token)
			rp.ServeHTTP(w, r)
		})
		for _, p := range []string{"/v1/tasks", "/v1/tasks/", "/v1/nodes"} {
			d.Handle(p, fwd)
		}
	}
	// The cluster listener (after the routes are in place): the whole API behind the token.
	if c.Listen != "" {
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("cluster: listen %s: %w", c.Listen, err)
		}
		srv := &http.Server{Handler: sched.Authorize(token, d.APIHandler()), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			var err error
			if useTLS {
				err = srv.ServeTLS(l, c.TLSCert, c.TLSKey)
			} else {
				err = srv.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("cluster API server", "err", err)
			}
		}()
		d.OnShutdown(func(ctx context.Context) error { return srv.Shutdown(ctx) })
		log.Info("cluster API listening", "addr", c.Listen, "tls", useTLS)
	}

	if schedAddr == "" {
		return nil // --listen alone: the API on TCP, no cluster role
	}

	rcfg := runtime.Config{ShareRoot: c.Mount, CgroupParent: "eddy-" + name, Logger: log.With("part", "runtime"),
		ContainerdSocket: c.ContainerdSocket, ContainerdDir: c.ContainerdDir}
	if rcfg.ContainerdSocket == "" && rcfg.ContainerdDir == "" {
		// Default: a private containerd, started at the first container task when installed.
		rcfg.ContainerdDir, rcfg.ContainerdLazy = ContainerdDirFor(c.CacheDir, c.Socket, name), true
	}
	rt, err := runtime.New(ctx, rcfg)
	if err != nil {
		return fmt.Errorf("cluster: runtime: %w", err)
	}
	d.OnShutdown(func(context.Context) error { return rt.Close() }) // stops a private containerd
	var nc sched.NodeCache
	if d.cache != nil {
		if x, ok := d.cache.(sched.NodeCache); ok {
			nc = x
		}
	}
	adopted := map[string]sched.Run{}
	for id, run := range rt.Adopted() {
		adopted[id] = runtimeRun{run}
	}
	ag, err := sched.NewAgent(sched.AgentConfig{
		Node:      sched.NodeRecord{Name: name, Address: c.Listen, Labels: c.Labels},
		Scheduler: api.NewTCP(schedAddr, opts...),
		Cache:     nc,
		Runner:    runtimeRunner{rt},
		ShareRoot: c.Mount,
		Envs:      rt,
		Adopted:   adopted,
		Logger:    log.With("role", "agent"),
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
	log.Info("cluster member", "node", name, "scheduler", schedAddr, "leader", c.Scheduler)
	return nil
}

// runtimeRunner adapts *runtime.Runtime to sched.Runner.
type runtimeRunner struct{ rt *runtime.Runtime }

func (r runtimeRunner) Start(ctx context.Context, s sched.RunSpec) (sched.Run, error) {
	spec := runtime.Spec{ID: s.ID, Command: s.Command, Env: s.Env, Cores: s.Cores, MemBytes: s.MemBytes, GPUs: s.GPUs,
		Uid: s.Uid, Gid: s.Gid, WorkDir: s.WorkDir, SharedDir: s.SharedDir, LogDir: s.LogDir}
	if s.ContainerEnv != "" || s.Image != "" {
		spec.Container = &runtime.Container{Env: s.ContainerEnv, EnvFile: s.EnvFile, Image: s.Image, DataDir: filepath.Join(s.SharedDir, "shared_data")}
	}
	run, err := r.rt.Start(ctx, spec)
	if errors.Is(err, runtime.ErrNoContainerd) {
		return nil, fmt.Errorf("%w (install containerd and runc on this node: scripts/deps.sh containers; "+
			"or give the daemon a running containerd: --containerd-socket PATH)", err)
	}
	if err != nil {
		return nil, err
	}
	return runtimeRun{run}, nil
}

type runtimeRun struct{ r runtime.Running }

func (r runtimeRun) Wait(ctx context.Context) (sched.RunResult, error) {
	res, err := r.r.Wait(ctx)
	return sched.RunResult{ExitCode: res.ExitCode, OOMKilled: res.OOMKilled, Signal: res.Signal, Err: res.Err, Started: res.Started, Finished: res.Finished}, err
}

func (r runtimeRun) Kill(ctx context.Context) error { return r.r.Kill(ctx) }

// EnvStart reports how a container task's environment was made ready (nil for other tasks).
func (r runtimeRun) EnvStart() *sched.EnvStart {
	si, ok := r.r.(runtime.StartInfoer)
	if !ok {
		return nil
	}
	i := si.StartInfo()
	if i.EnvFile == "" {
		return nil
	}
	return &sched.EnvStart{File: i.EnvFile, Imported: i.Imported, ImportBytes: i.ImportBytes,
		ImageS: i.ImageReady.Seconds(), StartS: i.Started.Seconds()}
}
