package daemon

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/eddy-cluster/eddy/consistency"
	hk "github.com/eddy-cluster/eddy/housekeeping"
)

// Config is everything `eddy daemon` takes. The command fills it from flags,
// EDDY_* variables and the TOML file, in that precedence.
type Config struct {
	// Origin is the shared directory: a POSIX path, or a URL (contains "://",
	// e.g. nfs://server/export).
	Origin string
	// Mount is the mountpoint of the FUSE view.
	Mount string
	// CacheDir holds the cache's index and data.
	CacheDir string
	// CacheBytes is the cache quota in bytes; when 0, CachePercent of the
	// cache filesystem (when both are 0, the cache's default percent).
	CacheBytes   int64
	CachePercent float64
	// MinFreePercent of the cache filesystem is kept free.
	MinFreePercent float64
	// Revalidate bounds how long an open file goes without revalidation.
	Revalidate time.Duration
	// ChunkSize of cached files, bytes (0: the cache's default).
	ChunkSize int64
	// Include and Exclude are globs selecting cacheable files.
	Include, Exclude []string
	// NoCache serves the origin through the mount with no local cache.
	NoCache bool
	// OfflineGrace: while the origin is unreachable, fully cached files
	// validated within this window are still served read-only (0: off).
	OfflineGrace time.Duration
	// OriginTimeout bounds every origin operation.
	OriginTimeout time.Duration
	// AttrTimeout: how long the kernel may cache names and attributes
	// (0: fusefs's default, 1 s).
	AttrTimeout time.Duration
	// AttrTimeoutMax: entries unchanged for a while are cached longer, up to this (a tenth of
	// their age, as NFS's acregmax); 0 or <= AttrTimeout: AttrTimeout for all.
	AttrTimeoutMax time.Duration
	// PassthroughSettle: a warm file is opened with kernel passthrough only once unchanged for
	// this long (0: fusefs's default; negative: at once).
	PassthroughSettle time.Duration
	// Consistency: per-glob open consistency (--consistency GLOB=ttl:DURATION; first match
	// wins; no rule: strict close-to-open). See docs/consistency.md.
	Consistency consistency.Rules

	// Socket is the unix socket of the local API. Every local user may connect (mode 0666)
	// unless SocketGroup restricts it; each caller is identified by the kernel.
	Socket string
	// SocketGroup, when set (a group name or gid), restricts the socket to that group's
	// members (and root): owner root, group SocketGroup, mode 0660.
	SocketGroup string

	// Metrics selects an OpenTelemetry exporter: "" (off), "stdout" or
	// "prometheus" (served at MetricsAddr/metrics).
	Metrics         string
	MetricsAddr     string
	MetricsInterval time.Duration // stdout export period

	// Cluster mode.
	Scheduler    bool              // this daemon holds the cluster's queue and places tasks
	Join         string            // scheduler address to join
	Listen       string            // TCP address of this daemon's cluster API
	Token        string            // cluster token (EDDY_TOKEN or the config file)
	TokenFile    string            // file holding the cluster token
	TLSCert      string            // TLS certificate for Listen
	TLSKey       string            // TLS key for Listen
	TLSCA        string            // CA certificates (PEM) the scheduler's certificate is verified against
	NodeName     string            // this node's name (default: hostname)
	Labels       map[string]string // node labels
	LocalityWait time.Duration     // how long a task may wait for a warm node
	// The scheduler group (raft): SchedulerPeers ("name=host:port,...", raft addresses) forms a
	// group of several schedulers; RaftListen is this member's raft transport address. Neither:
	// a group of one, this scheduler alone.
	SchedulerPeers string
	RaftListen     string
	// Peer fetch (cluster_peer.go, docs/peer-fetch.md): PeerFetch lets this node fetch missing
	// chunks from other nodes and serve its own to them over the cluster API (needs Listen);
	// PeerUploadSlots bounds the chunks served at once (0: DefaultPeerUploadSlots); PeerWait
	// bounds the wait for a node fetching a chunk under a lease (0: DefaultPeerWait);
	// PeerTimeout bounds one chunk fetch from a node, wait included (0: DefaultPeerTimeout).
	PeerFetch       bool
	PeerUploadSlots int
	PeerWait        time.Duration
	PeerTimeout     time.Duration

	// Container tasks: ContainerdSocket uses the node's running containerd;
	// ContainerdDir starts a private one with root, state and socket under it. With neither,
	// a private containerd under "<cache dir>-containerd" is started at the first container
	// task if containerd is installed (see ContainerdDirFor).
	ContainerdSocket string
	ContainerdDir    string

	// Tasks' scopes (see runtime.Layout and docs/housekeeping.md): the share's directory names
	// (empty: shared_data, users, jobs), the mode of new per-user directories (0: 0700), where
	// container tasks see them (empty: /shared, /user, /job, /scratch), and the node-local
	// directory of tasks' scratch directories (empty: "<cache dir>-scratch").
	SharedDataDir, UsersDir, JobsDir               string
	UserDirMode                                    uint32
	SharedMount, UserMount, JobMount, ScratchMount string
	ScratchDir                                     string
	// AllowRootTasks lets tasks run as uid 0 on this node; the scheduler refuses root's tasks
	// at submit unless its daemon has it too.
	AllowRootTasks bool

	// The status page (package ui): UIListen is its TCP address ("" off); it logs in with the
	// cluster token, or with the read-only viewer token in UIViewerTokenFile; it samples the
	// API for its charts every UISampleInterval (0: the page's default).
	UIListen          string
	UIViewerTokenFile string
	UISampleInterval  time.Duration

	// Housekeeping (server_housekeeping.go): QuotaWalkInterval is how often quota usage is
	// recounted by a walk of the origin (0: DefaultQuotaWalkInterval); ShareFullPercent is the
	// used-space percentage of the share at which it is reported nearly full (0:
	// DefaultShareFullPercent); UsageWorkers is the walks' parallelism (0: usage's default).
	QuotaWalkInterval time.Duration
	ShareFullPercent  float64
	UsageWorkers      int
	// Periodic gc on the scheduler (cluster_gc.go, docs/housekeeping.md): GCEvery > 0 runs
	// `eddy gc --yes` that often on the scheduler group's leader, through this node's mount
	// (0: off; ignored without Scheduler). GCPolicy is what it keeps (nil: `eddy gc`'s
	// defaults, housekeeping.DefaultPolicy; a pointer because a zero retention is a policy).
	GCEvery  time.Duration
	GCPolicy *hk.Policy

	// ShutdownTimeout bounds the unmount at SIGINT/SIGTERM.
	ShutdownTimeout time.Duration

	// Version is reported by /v1/health.
	Version string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Meter, when set, is used instead of the one Metrics would build.
	Meter metric.Meter
}

// Defaults of Config (and of `eddy daemon`'s flags).
const (
	DefaultSocket          = "/run/eddy/eddy.sock"
	DefaultMetricsAddr     = "127.0.0.1:9464"
	DefaultMetricsInterval = 30 * time.Second
	DefaultOriginTimeout   = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultLocalityWait    = 5 * time.Second
	DefaultPeerUploadSlots = 4
	DefaultPeerWait        = 10 * time.Second
	DefaultPeerTimeout     = 30 * time.Second
)

func (c *Config) setDefaults() {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.MetricsInterval <= 0 {
		c.MetricsInterval = DefaultMetricsInterval
	}
	if c.OriginTimeout <= 0 {
		c.OriginTimeout = DefaultOriginTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.LocalityWait <= 0 {
		c.LocalityWait = DefaultLocalityWait
	}
	if c.PeerUploadSlots <= 0 {
		c.PeerUploadSlots = DefaultPeerUploadSlots
	}
	if c.PeerWait <= 0 {
		c.PeerWait = DefaultPeerWait
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// validate reports the first problem with the configuration itself (before
// anything on disk is looked at).
func (c *Config) validate() error {
	switch {
	case c.Origin == "":
		return fmt.Errorf("--origin is required (a directory, or a URL such as nfs://server/export)")
	case c.Mount == "":
		return fmt.Errorf("--mount is required (the directory to mount the share on)")
	case c.CacheDir == "" && !c.NoCache:
		return fmt.Errorf("--cache-dir is required (or --no-cache)")
	case c.CacheBytes < 0:
		return fmt.Errorf("--cache-size must not be negative")
	case c.CachePercent < 0 || c.CachePercent > 100:
		return fmt.Errorf("--cache-size %g%%: a percentage must be within 0-100", c.CachePercent)
	case c.MinFreePercent < 0 || c.MinFreePercent >= 100:
		return fmt.Errorf("--min-free %g%%: must be within 0-99", c.MinFreePercent)
	case c.Revalidate < 0:
		return fmt.Errorf("--revalidate must not be negative")
	case c.ChunkSize < 0 || (c.ChunkSize > 0 && (c.ChunkSize < 64<<10 || c.ChunkSize > 256<<20)):
		return fmt.Errorf("--chunk-size %d: must be between 64KiB and 256MiB", c.ChunkSize)
	case c.ChunkSize > 0 && c.ChunkSize&(4096-1) != 0:
		return fmt.Errorf("--chunk-size %d: must be a multiple of 4KiB", c.ChunkSize)
	case c.GCEvery < 0:
		return fmt.Errorf("--gc-every must not be negative (0: off)")
	case c.ContainerdSocket != "" && c.ContainerdDir != "":
		return fmt.Errorf("--containerd-socket and --containerd-dir exclude each other (the node's containerd, or a private one)")
	}
	switch c.Metrics {
	case "", "off", "none", "stdout", "prometheus":
	default:
		return fmt.Errorf("--metrics %q: want stdout or prometheus (default off)", c.Metrics)
	}
	for _, g := range append(append([]string{}, c.Include...), c.Exclude...) {
		if err := checkGlob(g); err != nil {
			return err
		}
	}
	return nil
}

// ContainerdDirFor is the default directory of the private containerd: beside the cache dir
// ("<cache dir>-containerd", like the scheduler's "<cache dir>-scheduler"), or beside the
// socket without a cache dir.
func ContainerdDirFor(cacheDir, socket, node string) string {
	if cacheDir != "" {
		return strings.TrimRight(cacheDir, "/") + "-containerd"
	}
	return filepath.Join(filepath.Dir(socket), "eddy-containerd-"+node)
}

// ParseLabels parses k=v pairs.
func ParseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}
