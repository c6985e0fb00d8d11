package api

import "time"

// Housekeeping routes: the share's verification across the cluster, its usage and quotas,
// and how full it is.
const (
	VerifyStepPath = "/v1/verify/step" // POST VerifyStepRequest, answered with VerifyStepResponse (root's)
	DuPath         = "/v1/du"          // POST DuRequest, answered with DuEvent lines (ndjson)
	QuotaPath      = "/v1/quota"       // GET: []QuotaStatus
	QuotaSetPath   = "/v1/quota/set"   // POST QuotaSetRequest (root's), answered with QuotaStatus
	QuotaRmPath    = "/v1/quota/rm"    // POST QuotaRmRequest (root's)
	ShareSpacePath = "/v1/share/space" // GET: ShareSpace
	// GCStatusPath: GET answers GCStatus, the scheduler's periodic gc (the leader's; a
	// follower and a joined node forward it).
	GCStatusPath = "/v1/gc/status"
)

// The steps of `eddy verify`, each done by one node through its own mount.
const (
	VerifyWrite   = "write"   // write this node's marker
	VerifyRead    = "read"    // read the Writers' markers back
	VerifyPerm    = "perm"    // a root 0600 file must be refused to nobody
	VerifyMeasure = "measure" // stat latency, read throughput from the origin and the cache
	VerifyCleanup = "cleanup" // remove this node's files (and the run's directory when empty)
)

// VerifyDir is the share's directory the markers go to (one directory per run).
const VerifyDir = ".eddy-verify"

// VerifyStepRequest asks Node to do one step of run Run. The daemon called does it itself when
// Node is its own name (or empty), and otherwise relays it once to Address (Node's cluster
// API) with the cluster token.
type VerifyStepRequest struct {
	Node    string   `json:"node,omitempty"`
	Address string   `json:"address,omitempty"`
	Step    string   `json:"step"`
	Run     string   `json:"run"`
	Writers []string `json:"writers,omitempty"` // VerifyRead: whose markers to read
	Size    int64    `json:"size,omitempty"`    // VerifyMeasure: bytes of the test file (default 16 MiB)
	Relayed bool     `json:"relayed,omitempty"`
}

// VerifyStepResponse is what a node found.
type VerifyStepResponse struct {
	Node   string `json:"node"`
	Origin string `json:"origin"`
	Mount  string `json:"mount"`
	// Markers (VerifyRead): writer -> "ok", "missing", "wrong content" or "error: ...".
	Markers map[string]string `json:"markers,omitempty"`
	Perm    *VerifyPermResult `json:"perm,omitempty"`
	Measure *VerifyMeasures   `json:"measure,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// VerifyPermResult: a root 0600 file read as nobody through the node's mount.
type VerifyPermResult struct {
	SecretRefused  bool   `json:"secret_refused"`  // the 0600 file was refused (as it must)
	PublicReadable bool   `json:"public_readable"` // a 0644 file was readable (so the refusal means something)
	Detail         string `json:"detail,omitempty"`
}

// VerifyMeasures are one node's measurements.
type VerifyMeasures struct {
	OriginStatMs  float64 `json:"origin_stat_ms"`  // median stat round trip to the origin
	MountStatMs   float64 `json:"mount_stat_ms"`   // median lookup through the mount (uncached name)
	OriginReadBps float64 `json:"origin_read_bps"` // sequential read from the origin
	CacheReadBps  float64 `json:"cache_read_bps"`  // the same file read through the mount once warm (0: no cache)
	Bytes         int64   `json:"bytes"`
	Note          string  `json:"note,omitempty"`
}

// VerifyReport is `eddy verify --json`'s output.
type VerifyReport struct {
	Run   string   `json:"run"`
	Nodes []string `json:"nodes"`
	// Matrix[writer][reader] is what reader found of writer's marker.
	Matrix   map[string]map[string]string `json:"matrix"`
	Origins  map[string]string            `json:"origins"`
	Perm     map[string]VerifyPermResult  `json:"perm"`
	Measure  map[string]VerifyMeasures    `json:"measure"`
	Problems []string                     `json:"problems"`
	OK       bool                         `json:"ok"`
}

// DuRequest asks for the usage of Path (share-relative, or under the mount, resolved against
// Cwd), grouped By "scope" (default), "user" or "dir".
type DuRequest struct {
	Path    string `json:"path"`
	Cwd     string `json:"cwd,omitempty"`
	By      string `json:"by,omitempty"`
	Workers int    `json:"workers,omitempty"`
}

// WalkProgress counts what a walk of the origin has seen.
type WalkProgress struct {
	Files  int64 `json:"files"`
	Dirs   int64 `json:"dirs"`
	Bytes  int64 `json:"bytes"`
	Errors int64 `json:"errors"`
}

// DuSum is the usage of one group.
type DuSum struct {
	Key   string `json:"key"`
	Files int64  `json:"files"`
	Dirs  int64  `json:"dirs"`
	Bytes int64  `json:"bytes"` // apparent sizes
	Disk  int64  `json:"disk"`  // allocated (st_blocks*512)
}

// DuReport is the usage of a tree.
type DuReport struct {
	Path    string       `json:"path"`
	By      string       `json:"by"`
	Groups  []DuSum      `json:"groups"`
	Total   DuSum        `json:"total"`
	Walk    WalkProgress `json:"walk"`
	Workers int          `json:"workers"`
	Elapsed float64      `json:"elapsed_s"`
}

// DuEvent is one line of the du stream: progress, then the report (Done).
type DuEvent struct {
	Progress *WalkProgress `json:"progress,omitempty"`
	Elapsed  float64       `json:"elapsed_s"`
	Done     bool          `json:"done,omitempty"`
	Report   *DuReport     `json:"report,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// QuotaSetRequest sets a quota on Target: a directory of the share (as for DuRequest) or
// "user:NAME". Sizes in bytes; 0 is no limit.
type QuotaSetRequest struct {
	Target string `json:"target"`
	Cwd    string `json:"cwd,omitempty"`
	Hard   int64  `json:"hard"`
	Soft   int64  `json:"soft,omitempty"`
}

// QuotaRmRequest removes Target's quota.
type QuotaRmRequest struct {
	Target string `json:"target"`
	Cwd    string `json:"cwd,omitempty"`
}

// QuotaStatus is one quota and the usage this node checks it against.
type QuotaStatus struct {
	Target   string    `json:"target"`
	Uid      *uint32   `json:"uid,omitempty"`
	Hard     int64     `json:"hard,omitempty"`
	Soft     int64     `json:"soft,omitempty"`
	Used     int64     `json:"used"`
	Files    int64     `json:"files"`
	Counted  bool      `json:"counted"` // a walk has counted it (else: only this node's writes since it was set)
	WalkedAt time.Time `json:"walked_at,omitzero"`
	OverSoft bool      `json:"over_soft,omitempty"`
	OverHard bool      `json:"over_hard,omitempty"`
}

// ShareSpace is how full the share's filesystem is (statfs of the origin).
type ShareSpace struct {
	TotalBytes  int64     `json:"total_bytes"`
	AvailBytes  int64     `json:"avail_bytes"`
	UsedPercent float64   `json:"used_percent"`
	Threshold   float64   `json:"threshold_percent"`
	NearlyFull  bool      `json:"nearly_full"`
	CheckedAt   time.Time `json:"checked_at"`
	Error       string    `json:"error,omitempty"`
}

// GCStatus is the scheduler's periodic gc (`eddy daemon --gc-every`): its settings, and what
// its last run did (`eddy gc --status`).
type GCStatus struct {
	Scheduler string  `json:"scheduler"` // the scheduler that answered (the group's leader)
	Leading   bool    `json:"leading"`   // it leads the group: only the leader runs gc
	EverySec  float64 `json:"every_s"`   // seconds between runs; 0: periodic gc is off
	// Retentions in seconds (-1: never removed) and the environment versions kept (-1: none
	// pruned), as `eddy gc`'s flags.
	JobRetentionSec float64   `json:"job_retention_s"`
	LogRetentionSec float64   `json:"log_retention_s"`
	KeepEnvs        int       `json:"keep_envs"`
	EnvGraceSec     float64   `json:"env_grace_s"`
	Running         bool      `json:"running"`
	Next            time.Time `json:"next,omitzero"` // when the next run is due
	// Last is the last run on this scheduler since it started (nil: none yet).
	Last *GCRun `json:"last,omitempty"`
}

// GCRun is one periodic run: what it removed (the first 100 listed, the count complete), the
// bytes freed, the items it could not remove, and Error when the run as a whole failed or was
// cancelled.
type GCRun struct {
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	Removed      []GCItem  `json:"removed"`
	RemovedCount int       `json:"removed_count"`
	KeptCount    int       `json:"kept_count"`
	FreedBytes   int64     `json:"freed_bytes"`
	Errors       []string  `json:"errors,omitempty"`
	ErrorCount   int       `json:"error_count,omitempty"`
	Error        string    `json:"error,omitempty"`
}

// GCItem is a directory a run removed (Rel relative to the share).
type GCItem struct {
	Kind   string `json:"kind"` // job, log or env
	Rel    string `json:"rel"`
	Task   string `json:"task,omitempty"`
	Bytes  int64  `json:"bytes"`
	Reason string `json:"reason"`
}
