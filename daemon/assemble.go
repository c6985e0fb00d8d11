package daemon

// This file is the one place that names the constructors of the origin, the
// cache and the FUSE view, so the rest of the daemon depends only on the
// small interfaces below.

import (
	"context"
	"errors"
	"fmt"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/cache/origin"
)

// Store is what the daemon needs of the node's cache (*cache.Store).
type Store interface {
	CacheControl
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

// openOrigin opens the origin an --origin value names: a directory, or a URL.
func openOrigin(ctx context.Context, cfg *Config) (origin.FS, error) {
	if isURL(cfg.Origin) {
		// Extension point: URL origins (nfs://...) open through origin.Open
		// once cache/origin/url.go provides it.
		return nil, fmt.Errorf("origin %s: URL origins are not supported by this build yet", cfg.Origin)
	}
	org, err := origin.NewPath(cfg.Origin)
	if err != nil {
		return nil, err
	}
	return org, nil
}

// openCache opens the node's cache over the origin.
var openCache = func(ctx context.Context, org origin.FS, cfg cache.Config) (Store, error) {
	return nil, errors.New("the cache is not available in this build yet")
}

// mountFS mounts the FUSE view of org (and st, nil with --no-cache) on dir.
var mountFS = func(ctx context.Context, dir string, org origin.FS, st Store, d *Daemon) (Mounted, error) {
	return nil, errors.New("the FUSE view is not available in this build yet")
}
