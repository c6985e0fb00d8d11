package daemon

import (
	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// The API server's boundary: the cache's and the origin's own types become package api's wire
// types here. Where both have the same fields in the same order a type conversion does it, so
// that a field added on one side only fails to compile here rather than vanishing from the
// wire; the others are copied field by field (wire_test.go checks that none is lost).

func wireCounters(st cache.Stats) api.CacheCounters { return api.CacheCounters(st) }

func wireOriginHealth(h origin.OriginHealth) api.OriginHealth { return api.OriginHealth(h) }

func wireProgress(p cache.Progress) api.Progress { return api.Progress(p) }

func wireFileInfo(f cache.FileInfo) api.FileInfo {
	return api.FileInfo{Path: f.Path, Size: f.Size, CachedBytes: f.CachedBytes, Percent: f.Percent, Pinned: f.Pinned,
		LastAccess: f.LastAccess, Fingerprint: api.Fingerprint(f.Fingerprint)}
}

// wireFiles converts a listing; it is never nil, so that an empty one is [] on the wire.
func wireFiles(files []cache.FileInfo) []api.FileInfo {
	out := make([]api.FileInfo, len(files))
	for i, f := range files {
		out[i] = wireFileInfo(f)
	}
	return out
}
