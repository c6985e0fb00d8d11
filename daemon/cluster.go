package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
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
	tlsCfg, err := clientTLS(c, log)
	if err != nil {
		return err
	}
	if useTLS || strings.HasPrefix(c.Join, "https://") {
		opts = append(opts, api.WithTLS(tlsCfg))
	}
	var cert tls.Certificate
	if useTLS {
		if cert, err = tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fmt.Errorf("cluster: --tls-cert/--tls-key: %w", err)
		}
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
		fwd := forwarder(target, token, tlsCfg)
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
		if useTLS {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		go func() {
			var err error
			if useTLS {
				err = srv.ServeTLS(l, "", "")
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

	// Process tasks' state (and the exit status of those that end while the daemon is away)
	// lives beside the cache, like the scheduler's queue.
	stateDir := strings.TrimRight(c.CacheDir, "/") + "-tasks"
	if c.CacheDir == "" {
		stateDir = filepath.Join(filepath.Dir(c.Socket), "eddy-tasks-"+name)
	}
	rcfg := runtime.Config{ShareRoot: c.Mount, CgroupParent: "eddy-" + name, StateDir: stateDir, Logger: log.With("part", "runtime"),
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
	ag, err := sched.NewAgent(sched.AgentConfig{
		Node:      sched.NodeRecord{Name: name, Address: c.Listen, Labels: c.Labels},
		Scheduler: api.NewTCP(schedAddr, opts...),
		Cache:     nc,
		Runner:    runtimeRunner{rt},
		ShareRoot: c.Mount,
		Envs:      rt,
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

// forwarder sends calls to the scheduler at target with the cluster token. The scheduler acts for
// the caller this daemon saw (the local socket's peer from the kernel, or what this daemon's own
// token-checked listener accepted): the identity header is set from it, whatever the client sent.
func forwarder(target *url.URL, token string, tlsCfg *tls.Config) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target)
	if target.Scheme == "https" {
		rp.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := api.IdentityFrom(r.Context())
		if !ok {
			writeError(w, http.StatusForbidden, errors.New("the daemon cannot tell who is calling; refused"))
			return
		}
		r.Header.Set(api.IdentityHeader, id.String())
		r.Header.Set("Authorization", "Bearer "+token)
		rp.ServeHTTP(w, r)
	})
}

// clientTLS is the TLS configuration this daemon's calls to the scheduler use: verified against
// --tls-ca when given; else the certificate is not verified (the cluster token still guards every
// call, but a man in the middle could read it), said once in the log.
func clientTLS(c Config, log *slog.Logger) (*tls.Config, error) {
	if c.TLSCA == "" {
		if c.TLSCert != "" || strings.HasPrefix(c.Join, "https://") {
			log.Warn("cluster TLS: the scheduler's certificate is NOT verified; give --tls-ca to verify it")
		}
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // warned above
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("cluster: --tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster: --tls-ca %s: no PEM certificate in it", c.TLSCA)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
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
		out = append(out, sched.RecoveredRun{ID: a.ID, Run: runtimeRun{a.Run}, Started: a.Started, GPUs: a.GPUs, Ended: a.Ended})
	}
	return out, nil
}

// Forget drops an ended task whose end the scheduler has recorded (sched.Recoverer).
func (r runtimeRunner) Forget(id string) error { return r.rt.Forget(id) }

type runtimeRun struct{ r runtime.Running }

func (r runtimeRun) Wait(ctx context.Context) (sched.RunResult, error) {
	res, err := r.r.Wait(ctx)
	return sched.RunResult{ExitCode: res.ExitCode, OOMKilled: res.OOMKilled, Signal: res.Signal, Err: res.Err, Started: res.Started,
		Finished: res.Finished, Unknown: res.Unknown}, err
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
