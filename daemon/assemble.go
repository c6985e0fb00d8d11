package daemon

// This file is the one place that names the constructors of the origin, the
// cache and the FUSE view, so the rest of the daemon depends only on the
// small interfaces below.

import (
	"context"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/fusefs"
	"github.com/eddy-cluster/eddy/origin"
	_ "github.com/eddy-cluster/eddy/origin/nfs" // nfs:// origins
	_ "github.com/eddy-cluster/eddy/origin/s3"  // s3:// origins
	"github.com/eddy-cluster/eddy/sched"
)

// Store is what the daemon needs of the node's cache (*cache.Store): the control API's calls,
// the FUSE view's, and the agent's (prefetch, pins, inventory). Because the agent's needs are
// part of it, a cache that stopped serving them fails the build instead of quietly turning
// prefetch off.
type Store interface {
	CacheControl
	fusefs.Cache
	sched.NodeCache
	Close() error
}

// Mounted is a live FUSE view (*fusefs.View).
type Mounted interface {
	// Unmount unmounts within ctx's deadline (lazily and by aborting the
	// connection when a plain unmount cannot finish).
	Unmount(ctx context.Context) error
	// Wait blocks until the FUSE server has stopped.
	Wait()
}

// openOrigin opens the origin an --origin value names: a directory, or a
// URL (nfs://server/export, file:///path).
func openOrigin(ctx context.Context, cfg *Config) (origin.FS, error) {
	return origin.Open(ctx, cfg.Origin, origin.OpenOptions{
		Timeout: cfg.OriginTimeout,
		Logger:  cfg.Logger.With("part", "origin"),
	})
}

// openCache opens the node's cache over the origin.
func openCache(ctx context.Context, org origin.FS, cfg cache.Config) (Store, error) {
	st, err := cache.Open(ctx, org, cfg)
	if err != nil {
		return nil, err
	}
	return st, nil
}

var _ Store = (*cache.Store)(nil)

// mountFS mounts the FUSE view of org (and st, nil with --no-cache) on dir.
func mountFS(ctx context.Context, dir string, org origin.FS, st Store, d *Daemon) (Mounted, error) {
	var c fusefs.Cache
	if st != nil {
		c = st
	}
	return fusefs.Mount(ctx, dir, org, c, fusefs.Options{
		EntryTimeout:      d.cfg.AttrTimeout,
		AttrTimeout:       d.cfg.AttrTimeout,
		AttrTimeoutMax:    d.cfg.AttrTimeoutMax,
		PassthroughSettle: d.cfg.PassthroughSettle,
		Consistency:       d.cfg.Consistency,
		OfflineGrace:      d.cfg.OfflineGrace,
		OriginTimeout:     d.cfg.OriginTimeout,
		Logger:            d.log.With("part", "fusefs"),
		Quota:             d.quotaHook(),
	})
}
