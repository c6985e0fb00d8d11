package api

import "time"

// The node <-> scheduler protocol: a node registers, then heartbeats; both calls are root's
// (cluster daemons hold the token and name nobody).
const (
	RegisterPath  = "/v1/cluster/register"  // POST NodeRecord, answered with RegisterResponse
	HeartbeatPath = "/v1/cluster/heartbeat" // POST HeartbeatRequest, answered with HeartbeatResponse
)

// Resources are cores, memory and GPUs: a node's total or free share, or a task's ask.
type Resources struct {
	Cores    float64 `json:"cores"`
	MemBytes int64   `json:"mem_bytes"`
	GPUs     int     `json:"gpus"`
}

// NodeRecord is what a node tells the scheduler about itself when it registers.
type NodeRecord struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Total   Resources         `json:"total"`
	GPUIDs  []string          `json:"gpu_ids,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	LinkBps float64           `json:"link_bps,omitempty"`
}

// NodeStatus is `eddy nodes`' view of a node (an element of the GET /v1/nodes answer).
type NodeStatus struct {
	NodeRecord
	Up          bool      `json:"up"`
	Free        Resources `json:"free"`
	LastSeen    time.Time `json:"last_seen"`
	Running     int       `json:"running"`
	CachedFiles int       `json:"cached_files"`
	InvGen      uint64    `json:"inventory_gen"`
	// EnvsImported: environment tarballs imported into the node's containerd.
	EnvsImported []string `json:"envs_imported,omitempty"`
	// Share: how full the share is as the node last reported it (nil: not reported).
	Share *ShareSpace `json:"share,omitempty"`
}

// RegisterResponse answers a node's registration.
type RegisterResponse struct {
	HeartbeatMs    int64  `json:"heartbeat_ms"`
	InventorySince uint64 `json:"inventory_since"` // generation to send the next inventory delta from (0: full)
}

// TaskReport is a node's view of one of its tasks.
type TaskReport struct {
	ID        string    `json:"id"`
	State     State     `json:"state"` // assigned, running or an end state
	ExitCode  *int      `json:"exit_code,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	Signal    string    `json:"signal,omitempty"`
	Error     string    `json:"error,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	EnvStart  *EnvStart `json:"env_start,omitempty"`
}

// HeartbeatRequest is a node's periodic report. Inventory is a bounded delta from
// InventoryBase (the generation the scheduler asked for).
type HeartbeatRequest struct {
	Node          string          `json:"node"`
	Tasks         []TaskReport    `json:"tasks,omitempty"`
	Inventory     *InventoryDelta `json:"inventory,omitempty"`
	InventoryBase uint64          `json:"inventory_base"`
	// EnvsImported lists the environment tarballs (share-relative) imported into the node's
	// containerd, a bounded number; null when the node does not report them.
	EnvsImported []string `json:"envs_imported"`
	// Share: how full the share is, as the node's own check last saw it (nil: not checked).
	Share *ShareSpace `json:"share,omitempty"`
}

// HeartbeatResponse tells the node what to do.
type HeartbeatResponse struct {
	Assign         []*Task  `json:"assign,omitempty"` // tasks to start (re-sent until the node reports them)
	Kill           []string `json:"kill,omitempty"`
	Ack            []string `json:"ack,omitempty"` // end reports recorded: stop sending them
	InventorySince uint64   `json:"inventory_since"`
	Reregister     bool     `json:"reregister,omitempty"` // unknown node: register again
}

// InventoryDelta is the change in a node's cache inventory since a generation, so heartbeats
// stay bounded as caches grow.
type InventoryDelta struct {
	Gen     uint64          `json:"gen"`            // generation this delta brings the reader to
	Full    bool            `json:"full,omitempty"` // Items is the whole inventory (the reader's generation was too old, or 0)
	Items   []InventoryItem `json:"items,omitempty"`
	Removed []string        `json:"removed,omitempty"`
	More    bool            `json:"more,omitempty"` // truncated at the caller's max; ask again from Gen
}

// InventoryItem is what the scheduler learns about one cached file.
type InventoryItem struct {
	Path        string      `json:"path"`
	Fingerprint Fingerprint `json:"fingerprint"`
	CachedBytes int64       `json:"cached_bytes"`
	Size        int64       `json:"size"`
}
