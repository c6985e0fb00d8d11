package cache

// This file is the cache's public contract, used by fusefs, daemon and sched.
// Change it only together with its callers.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/eddy-cluster/eddy/origin"
	"go.opentelemetry.io/otel/metric"
)

// Sentinel errors callers branch on.
var (
	// ErrNotCached: the operation needs cached content that is not there.
	ErrNotCached = errors.New("not cached")
	// ErrNotCacheable: the path is excluded by the include/exclude globs, or not a regular file.
	ErrNotCacheable = errors.New("not cacheable")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("cache closed")
	// ErrPinned: the file is pinned and cannot be evicted.
	ErrPinned = errors.New("pinned; unpin it first")
)

// Config configures a Store. Zero values take the defaults noted.
type Config struct {
	Dir            string        // cache directory (index and data); required
	ChunkSize      int64         // bytes per chunk; default DefaultChunkSize
	MaxBytes       int64         // byte quota for cached data; 0 with MaxPercent 0: DefaultMaxPercent of the cache filesystem
	MaxPercent     float64       // quota as percent of the cache filesystem's size (used when MaxBytes is 0)
	MinFreePercent float64       // keep this much of the cache filesystem free; default DefaultMinFreePercent
	Revalidate     time.Duration // revalidate open files at least this often; default DefaultRevalidate
	Include        []string      // globs (path.Match on the origin name, and on its base name); empty: everything
	Exclude        []string      // globs excluded even when included
	ReadAhead      int           // chunks fetched ahead of a sequential reader; default DefaultReadAhead
	FetchWorkers   int           // parallel origin fetches; default DefaultFetchWorkers
	// IdleFiles: closed files kept open (index record and data file in
	// memory, one descriptor each) so that reopening one skips the index
	// read and the open of its data file. 0: half the descriptor limit, at
	// most 32,768; negative: none.
	IdleFiles int
	Logger    *slog.Logger // default slog.Default()
	Meter     metric.Meter // OpenTelemetry meter; nil: a no-op meter
}

// Defaults.
const (
	DefaultChunkSize      = 8 << 20
	DefaultMaxPercent     = 80
	DefaultMinFreePercent = 10
	DefaultRevalidate     = 30 * time.Second
	DefaultReadAhead      = 4
	DefaultFetchWorkers   = 8
)

// Stats are the node cache's counters; the JSON names are part of the CLI's
// contract (`eddy cache stats --json`).
type Stats struct {
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
	// PassthroughBytes: the sizes of the files those opens served from the
	// cache (the kernel reads them without the daemon; not in HitBytes).
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

// FileInfo describes one cached file (`eddy cache ls`).
type FileInfo struct {
	Path        string             `json:"path"`
	Size        int64              `json:"size"`
	CachedBytes int64              `json:"cached_bytes"`
	Percent     float64            `json:"percent"`
	Pinned      bool               `json:"pinned"`
	LastAccess  time.Time          `json:"last_access"`
	Fingerprint origin.Fingerprint `json:"fingerprint"`
}

// Progress reports warm-up progress.
type Progress struct {
	Path       string `json:"path"` // file being fetched
	Files      int    `json:"files"`
	FilesDone  int    `json:"files_done"`
	Bytes      int64  `json:"bytes"`      // total bytes to have cached
	BytesDone  int64  `json:"bytes_done"` // bytes cached so far (already cached ones included)
	BytesFetch int64  `json:"bytes_fetched"`
}

// InventoryItem is what the scheduler learns about one cached file.
type InventoryItem struct {
	Path        string             `json:"path"`
	Fingerprint origin.Fingerprint `json:"fingerprint"`
	CachedBytes int64              `json:"cached_bytes"`
	Size        int64              `json:"size"`
}

// OpenResult tells fusefs what happened at open.
type OpenResult struct {
	// Changed: the origin's fingerprint differed from the cached one and the
	// cached content was dropped; the kernel's page cache must be dropped too.
	Changed bool
}

// Handle is one open, read-only view of a cached file. Reads are served from
// local chunks, fetching missing ones from the origin; a Handle keeps working
// if its file is evicted or the cache breaks (it then reads the origin).
// Safe for concurrent use.
type Handle interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	// PassthroughFile returns a file holding the complete, checksum-verified
	// content that was valid at open, or nil when the file is not fully
	// cached. It is the store's data file, to be read only: valid until
	// Close, which must not be called on it by the caller.
	PassthroughFile() *os.File
	Close() error
}

// InventoryDelta is the change in a node's cache inventory since a
// generation, so heartbeats stay bounded as caches grow.
type InventoryDelta struct {
	Gen     uint64          `json:"gen"`            // generation this delta brings the reader to
	Full    bool            `json:"full,omitempty"` // Items is the whole inventory (the reader's generation was too old, or 0)
	Items   []InventoryItem `json:"items,omitempty"`
	Removed []string        `json:"removed,omitempty"`
	More    bool            `json:"more,omitempty"` // truncated at the caller's max; ask again from Gen
}
