package api

import (
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/cache/origin"
)

// DefaultSocket is where the daemon serves its local API unless told otherwise.
const DefaultSocket = "/run/eddy/eddy.sock"

// MaxRequestBody bounds every request body the server accepts.
const MaxRequestBody = 1 << 20

// Health is the answer to GET /v1/health.
type Health struct {
	Status    string    `json:"status"` // "ok" or "degraded"
	Version   string    `json:"version,omitempty"`
	Node      string    `json:"node,omitempty"`
	Origin    string    `json:"origin"`
	Mount     string    `json:"mount"`
	CacheDir  string    `json:"cache_dir,omitempty"`
	NoCache   bool      `json:"no_cache,omitempty"`
	StartedAt time.Time `json:"started_at"`
	PID       int       `json:"pid"`
}

// CacheStats is the answer to GET /v1/cache/stats: the cache's counters
// (their JSON names are the CLI's contract) plus where they come from.
type CacheStats struct {
	cache.Stats
	Origin  string `json:"origin"`
	Mount   string `json:"mount"`
	NoCache bool   `json:"no_cache,omitempty"` // the daemon runs with --no-cache
	// OriginHealth: whether the origin answers, since when, its last error.
	OriginHealth *origin.OriginHealth `json:"origin_health,omitempty"`
}

// PathsRequest names paths for warm, pin, unpin and evict. Each path is
// either share-relative ("data/x") or absolute under the mountpoint
// ("/mnt/share/data/x"); a relative path is first resolved against Cwd when
// Cwd lies under the mountpoint (the CLI sends the user's working directory).
type PathsRequest struct {
	Paths []string `json:"paths"`
	Cwd   string   `json:"cwd,omitempty"`
}

// PathResult is the outcome for one path of a PathsRequest.
type PathResult struct {
	Path  string `json:"path"`            // as given
	Name  string `json:"name,omitempty"`  // share-relative name it resolved to
	Error string `json:"error,omitempty"` // empty on success
}

// PathsResponse answers pin, unpin and evict.
type PathsResponse struct {
	Results []PathResult `json:"results"`
}

// WarmEvent is one JSON line of the POST /v1/cache/warm stream. Progress
// lines carry the cache's Progress for the path being warmed; each path ends
// with a line whose Done is true (and Error set when it failed).
type WarmEvent struct {
	Arg  string `json:"arg"`            // the path as given
	Name string `json:"name,omitempty"` // share-relative name
	cache.Progress
	Done    bool    `json:"done,omitempty"`
	Error   string  `json:"error,omitempty"`
	Elapsed float64 `json:"elapsed_s"` // seconds since this path's warm-up started
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
}
