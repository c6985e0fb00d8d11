package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
	"go.opentelemetry.io/otel/metric"
)

// Daemon is one running node: origin, cache, FUSE mount and control API.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	meter   metric.Meter
	origin  origin.FS
	cache   Store   // nil with --no-cache
	mnt     Mounted // the FUSE server
	api     *apiServer
	house   *housekeeping // verify, du, quotas, share space (server_housekeeping.go)
	gc      *periodicGC   // the scheduler's periodic gc (cluster_gc.go); nil when off
	started time.Time
	// mounted is closed when the FUSE server has stopped (unmounted).
	mounted chan struct{}
	// closers run at shutdown, last added first.
	closers []func(context.Context) error
}

// Handle registers an extra API route on the daemon's control API (local
// socket, and the cluster listener), e.g. from startCluster. h finds the
// caller's api.Identity in the request context and must authorize the call
// itself: local users of every uid reach it.
func (d *Daemon) Handle(pattern string, h http.Handler) { d.api.mux.Handle(pattern, h) }

// APIHandler is the control API's handler, for the cluster's TCP listener.
func (d *Daemon) APIHandler() http.Handler { return d.api }

// Config returns the daemon's configuration (defaults applied, paths absolute).
func (d *Daemon) Config() Config { return d.cfg }

// Cache returns the node's cache, nil with --no-cache.
func (d *Daemon) Cache() Store { return d.cache }

// Origin returns the origin.
func (d *Daemon) Origin() origin.FS { return d.origin }

// OnShutdown runs fn when the daemon stops (after the mount is gone, in
// reverse order of registration).
func (d *Daemon) OnShutdown(fn func(context.Context) error) { d.closers = append(d.closers, fn) }

// Run checks the configuration and the machine, mounts the cached view of
// the origin, serves the control API, and blocks until ctx ends (SIGINT or
// SIGTERM in `eddy daemon`) or the mount goes away; it then unmounts (bounded
// by ShutdownTimeout) and returns.
func Run(ctx context.Context, cfg Config) (err error) {
	d, err := start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "reason", context.Cause(ctx))
	case <-d.mounted:
		d.log.Warn("the mount went away (unmounted from outside); shutting down", "mount", d.cfg.Mount)
	}
	return d.stop()
}

func start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if err := absPaths(&cfg); err != nil {
		return nil, err
	}
	if err := checkFuse(); err != nil {
		return nil, err
	}
	originDir := ""
	if !isURL(cfg.Origin) {
		if err := checkOriginDir(cfg.Origin); err != nil {
			return nil, err
		}
		if originDir, err = resolvePath(cfg.Origin); err != nil {
			return nil, fmt.Errorf("origin %s: %w", cfg.Origin, err)
		}
	}
	if err := prepareMountpoint(cfg.Mount, log.Info); err != nil {
		return nil, err
	}
	mountReal, err := resolvePath(cfg.Mount)
	if err != nil {
		return nil, fmt.Errorf("mountpoint %s: %w", cfg.Mount, err)
	}
	cacheReal := ""
	if !cfg.NoCache {
		if cacheReal, err = resolvePath(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("cache dir %s: %w", cfg.CacheDir, err)
		}
	}
	if err := checkLayout(originDir, mountReal, cacheReal); err != nil {
		return nil, err
	}

	d := &Daemon{cfg: cfg, log: log, started: time.Now(), mounted: make(chan struct{})}
	defer func() {
		if err != nil {
			d.runClosers()
		}
	}()

	meter := cfg.Meter
	if meter == nil {
		m, shutdown, err := metricsSetup(ctx, &d.cfg, log)
		if err != nil {
			return nil, err
		}
		meter = m
		d.OnShutdown(shutdown)
	}
	d.meter = meter

	octx, cancel := context.WithTimeout(ctx, cfg.OriginTimeout)
	org, err := openOrigin(octx, &d.cfg)
	cancel()
	if err != nil {
		return nil, err
	}
	// Every origin call is bounded by --origin-timeout, trouble is retried
	// (never absence), and the origin's health is tracked for the stats.
	guarded := origin.Guard(org, origin.GuardOptions{
		Timeout: cfg.OriginTimeout,
		Logger:  log.With("part", "origin"),
	})
	d.origin = guarded
	d.OnShutdown(func(context.Context) error { return d.origin.Close() })

	if !cfg.NoCache {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("cache dir %s: %w", cfg.CacheDir, err)
		}
		st, err := openCache(ctx, d.origin, cache.Config{
			Dir:            cfg.CacheDir,
			ChunkSize:      cfg.ChunkSize,
			MaxBytes:       cfg.CacheBytes,
			MaxPercent:     cfg.CachePercent,
			MinFreePercent: cfg.MinFreePercent,
			Revalidate:     cfg.Revalidate,
			Include:        cfg.Include,
			Exclude:        cfg.Exclude,
			Logger:         log.With("part", "cache"),
			Meter:          meter,
		})
		if err != nil {
			return nil, fmt.Errorf("open cache %s: %w", cfg.CacheDir, err)
		}
		d.cache = st
		d.OnShutdown(func(context.Context) error { return st.Close() })
	}

	var cc CacheControl
	if d.cache != nil {
		cc = d.cache
	}
	d.api = newAPIServer(cc, cfg.Mount, d.origin.String(), d.health, log.With("part", "api"))
	d.api.originHealth = guarded.Health
	ka := &kernelAccess{root: cfg.Mount}
	if d.cache != nil {
		ka.cacheable = d.cache.Cacheable
	}
	d.api.access = ka
	d.startHousekeeping(ctx)

	mnt, err := mountFS(ctx, cfg.Mount, d.origin, d.cache, d)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.Mount, err)
	}
	d.mnt = mnt
	go func() { mnt.Wait(); close(d.mounted) }()
	mountedOK := false
	defer func() {
		if !mountedOK {
			d.unmount()
		}
	}()

	// The socket is bound now (a daemon already on it is refused before anything else starts)
	// and served once every route is in place: the cluster's task and node routes are added by
	// startCluster, and a caller that finds the socket answering (a script, a test waiting for
	// start-up) must never meet a 404 for a route this daemon serves.
	l, err := listenUnix(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		return nil, err
	}
	served := false
	defer func() {
		if !served {
			_ = l.Close()
			_ = os.Remove(cfg.Socket)
		}
	}()

	if err := d.startCluster(ctx); err != nil {
		return nil, err
	}
	if cfg.GCEvery > 0 && !cfg.Scheduler {
		// Not an error: one configuration file is often shared by every node.
		log.Warn("gc: --gc-every is ignored: periodic gc runs on the scheduler (--scheduler)", "gc_every", cfg.GCEvery)
	}
	if err := d.startUI(); err != nil {
		return nil, err
	}
	srv := serveHTTP(l, d.api, log.With("part", "api"))
	served = true
	d.OnShutdown(func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		_ = os.Remove(cfg.Socket)
		return err
	})
	mountedOK = true
	mode := "cached"
	if cfg.NoCache {
		mode = "no cache"
	}
	log.Info("eddy ready", "origin", d.origin.String(), "mount", cfg.Mount, "cache", cfg.CacheDir, "mode", mode, "socket", cfg.Socket, "pid", os.Getpid())
	return d, nil
}

// stop unmounts (bounded) and closes everything.
func (d *Daemon) stop() error {
	if d.gc != nil {
		// A gc run works through the mount: it ends before the unmount, not under it.
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		if err := d.gc.stop(ctx); err != nil {
			d.log.Warn("shutdown", "err", err)
		}
		cancel()
	}
	d.unmount()
	return d.runClosers()
}

func (d *Daemon) runClosers() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	d.closers = nil
	return errors.Join(errs...)
}

// unmount unmounts the FUSE view within ShutdownTimeout (the view detaches
// lazily and aborts its connection when a plain unmount cannot finish); if
// the FUSE server still has not stopped, the daemon goes on exiting, which
// closes /dev/fuse.
func (d *Daemon) unmount() {
	if d.mnt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	select {
	case <-d.mounted:
	default:
		if err := d.mnt.Unmount(ctx); err != nil {
			d.log.Warn("unmount", "mount", d.cfg.Mount, "err", err)
		}
	}
	select {
	case <-d.mounted:
		d.log.Info("unmounted", "mount", d.cfg.Mount)
	case <-time.After(time.Second + time.Until(deadlineOf(ctx))):
		d.log.Warn("the FUSE server did not stop in time; exiting anyway", "mount", d.cfg.Mount, "timeout", d.cfg.ShutdownTimeout)
	}
	d.mnt = nil
}

func deadlineOf(ctx context.Context) time.Time {
	dl, _ := ctx.Deadline()
	return dl
}

func (d *Daemon) health() api.Health {
	h := api.Health{
		Status:    "ok",
		Version:   d.cfg.Version,
		Node:      d.cfg.NodeName,
		Origin:    d.origin.String(),
		Mount:     d.cfg.Mount,
		CacheDir:  d.cfg.CacheDir,
		NoCache:   d.cfg.NoCache,
		StartedAt: d.started,
		PID:       os.Getpid(),
	}
	if d.cache != nil && d.cache.Stats().Degraded {
		h.Status = "degraded"
	}
	return h
}

func absPaths(cfg *Config) error {
	var err error
	abs := func(p *string) {
		if err != nil || *p == "" {
			return
		}
		var a string
		a, err = filepath.Abs(*p)
		*p = a
	}
	if !isURL(cfg.Origin) {
		abs(&cfg.Origin)
	}
	abs(&cfg.Mount)
	abs(&cfg.CacheDir)
	abs(&cfg.Socket)
	abs(&cfg.ContainerdDir)
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	return err
}
