package api

import "time"

// DefaultSocket is where the daemon serves its local API unless told otherwise.
const DefaultSocket = "/run/eddy/eddy.sock"

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

// CacheStats is the answer to GET /v1/cache/stats: the cache's counters (their JSON names are
// the CLI's contract) plus where they come from.
type CacheStats struct {
	CacheCounters
	Origin  string `json:"origin"`
	Mount   string `json:"mount"`
	NoCache bool   `json:"no_cache,omitempty"` // the daemon runs with --no-cache
	// PeerRejected: chunks other nodes sent that failed their checksum, each fetched from
	// another holder or the origin instead. Peer fetch counts it, not the cache (which never
	// sees those bytes), so it sits beside the cache's counters rather than among them.
	PeerRejected int64 `json:"peer_rejected,omitempty"`
	// OriginHealth: whether the origin answers, since when, its last error.
	OriginHealth *OriginHealth `json:"origin_health,omitempty"`
	// Share: how full the share is (statfs of the origin), with the nearly-full warning.
	Share *ShareSpace `json:"share,omitempty"`
}

// CacheCounters are the node cache's counters. The daemon converts the cache's own Stats into
// it with a plain type conversion, so the two must keep the same fields in the same order.
type CacheCounters struct {
	HitBytes         int64 `json:"hit_bytes"`    // bytes served from the local cache
	MissBytes        int64 `json:"miss_bytes"`   // bytes fetched from the origin
	DirectBytes      int64 `json:"direct_bytes"` // of those, read for a random reader and not stored
	PeerBytes        int64 `json:"peer_bytes"`   // chunk bytes fetched from other nodes instead of the origin
	ServedBytes      int64 `json:"served_bytes"` // chunk bytes served to other nodes
	Hits             int64 `json:"hits"`         // chunk reads served locally
	Misses           int64 `json:"misses"`       // chunk fetches from the origin
	CachedBytes      int64 `json:"cached_bytes"`
	Files            int64 `json:"files"`
	PinnedFiles      int64 `json:"pinned_files"`
	Evictions        int64 `json:"evictions"` // files evicted
	EvictedBytes     int64 `json:"evicted_bytes"`
	PassthroughOpens int64 `json:"passthrough_opens"`
	// PassthroughBytes: the sizes of the files those opens served from the cache (the kernel
	// reads them without the daemon; not in HitBytes).
	PassthroughBytes int64     `json:"passthrough_bytes"`
	IdleFiles        int64     `json:"idle_files"`   // closed files kept open for a quick reopen
	FillBacklog      int64     `json:"fill_backlog"` // files read through once, waiting to be completed in the background
	Revalidations    int64     `json:"revalidations"`
	Invalidations    int64     `json:"invalidations"` // cached content dropped because the origin changed
	ChecksumFailures int64     `json:"checksum_failures"`
	Errors           int64     `json:"errors"` // cache-side errors (disk full, I/O); reads fell back to the origin
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	QuotaBytes       int64     `json:"quota_bytes"`
	DiskFreeBytes    int64     `json:"disk_free_bytes"`
	ChunkSize        int64     `json:"chunk_size"`
	Degraded         bool      `json:"degraded"` // the cache is not usable right now; reads go to the origin
}

// OriginHealth says whether the origin answers, since when, and its last error.
type OriginHealth struct {
	Up          bool      `json:"up"`
	Since       time.Time `json:"since"`
	LastError   string    `json:"last_error"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// FileInfo describes one cached file (an element of the GET /v1/cache/ls answer).
type FileInfo struct {
	Path        string      `json:"path"`
	Size        int64       `json:"size"`
	CachedBytes int64       `json:"cached_bytes"`
	Percent     float64     `json:"percent"`
	Pinned      bool        `json:"pinned"`
	LastAccess  time.Time   `json:"last_access"`
	Fingerprint Fingerprint `json:"fingerprint"`
}

// Fingerprint identifies a version of a file on the origin: when any field changes, the cached
// content is stale.
type Fingerprint struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	Ino     uint64 `json:"ino"`
	Dev     uint64 `json:"dev"`
	Change  uint64 `json:"change,omitempty"`
	Gen     uint64 `json:"gen,omitempty"` // tells a file from a later one given its inode number
}

// PathsRequest names paths for warm, pin, unpin and evict. Each path is either share-relative
// ("data/x") or absolute under the mountpoint ("/mnt/share/data/x"); a relative path is first
// resolved against Cwd when Cwd lies under the mountpoint (the CLI sends the user's working
// directory).
type PathsRequest struct {
	Paths []string `json:"paths"`
	Cwd   string   `json:"cwd,omitempty"`
}

// PathResult is the outcome for one path of a PathsRequest.
type PathResult struct {
	Path  string    `json:"path"`            // as given
	Name  string    `json:"name,omitempty"`  // share-relative name it resolved to
	Error string    `json:"error,omitempty"` // empty on success
	Code  ErrorCode `json:"code,omitempty"`  // with Error: what kind of failure (CodePinned, ...)
}

// PathsResponse answers pin, unpin and evict.
type PathsResponse struct {
	Results []PathResult `json:"results"`
}

// Progress reports a warm-up's progress.
type Progress struct {
	Path       string `json:"path"` // file being fetched
	Files      int    `json:"files"`
	FilesDone  int    `json:"files_done"`
	Bytes      int64  `json:"bytes"`      // total bytes to have cached
	BytesDone  int64  `json:"bytes_done"` // bytes cached so far (already cached ones included)
	BytesFetch int64  `json:"bytes_fetched"`
}

// WarmEvent is one JSON line of the POST /v1/cache/warm stream. Progress lines carry the
// cache's Progress for the path being warmed; each path ends with a line whose Done is true
// (and Error set when it failed).
type WarmEvent struct {
	Arg  string `json:"arg"`            // the path as given
	Name string `json:"name,omitempty"` // share-relative name
	Progress
	Done    bool    `json:"done,omitempty"`
	Error   string  `json:"error,omitempty"`
	Elapsed float64 `json:"elapsed_s"` // seconds since this path's warm-up started
}
