package api

// CacheWherePath is the scheduler's cluster-wide view of the nodes' caches, from the inventories
// the nodes send with their heartbeats: GET ?path=P (share-relative; "" or "." for the whole
// share) answers CacheWhere; GET ?top=N answers CacheTop (root only: it names files). On a
// follower of the scheduler group it is forwarded to the leader, which holds the inventories.
//
// The inventory holds, per node, each cached file's cached byte count and its size: not which
// byte ranges are cached. That is what these answers report.
const CacheWherePath = "/v1/cache/where"

// MaxCacheTop bounds CacheWherePath's top=N.
const MaxCacheTop = 1000

// CacheWhere is which nodes cache a file, or the files under a directory, and how much of them.
type CacheWhere struct {
	Path string `json:"path"` // share-relative, cleaned ("." is the whole share)
	// Files is how many files under Path (Path itself for a file) some node caches; SizeBytes
	// their total size. Files that no node caches are unknown to the scheduler and not counted.
	Files     int   `json:"files"`
	SizeBytes int64 `json:"size_bytes"`
	// Dir: Path is a directory of cached files (not a cached file itself).
	Dir bool `json:"dir"`
	// Nodes: every node the scheduler knows, most cached bytes first (then by name); a node
	// that caches nothing of Path has zeros.
	Nodes []WhereNode `json:"nodes"`
}

// WhereNode is one node's share of a path.
type WhereNode struct {
	Node string `json:"node"`
	Up   bool   `json:"up"`
	// Files: files of the path it caches some of; WholeFiles: those it caches in full.
	Files      int `json:"files"`
	WholeFiles int `json:"whole_files"`
	// CachedBytes of SizeBytes: SizeBytes is the total size of the files it caches some of.
	CachedBytes int64 `json:"cached_bytes"`
	SizeBytes   int64 `json:"size_bytes"`
}

// CacheTop is the largest files cached anywhere in the cluster, largest first (then by path).
type CacheTop struct {
	Files []TopFile `json:"files"`
}

// TopFile is one cached file and the nodes that cache it (most cached bytes first).
type TopFile struct {
	Path      string       `json:"path"`
	SizeBytes int64        `json:"size_bytes"`
	Nodes     []FileHolder `json:"nodes"`
}

// FileHolder is one node's cached bytes of a file.
type FileHolder struct {
	Node        string `json:"node"`
	Up          bool   `json:"up"`
	CachedBytes int64  `json:"cached_bytes"`
}
