package api

import "time"

// State is a task's state.
type State string

// Task states.
const (
	StateQueued    State = "queued"
	StateAssigned  State = "assigned" // placed; its node is warming the inputs
	StateRunning   State = "running"
	StateCompleted State = "completed"
	StateFailed    State = "failed"
	StateKilled    State = "killed"
	StateLost      State = "lost" // its node went silent or forgot it; requeued while retries remain
)

// Terminal reports whether s is an end state.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateKilled || s == StateLost
}

// TaskSpec is what a user submits (POST /v1/tasks).
type TaskSpec struct {
	Name     string   `json:"name,omitempty"`
	Command  []string `json:"command"`
	Env      []string `json:"env,omitempty"` // KEY=VALUE
	Cores    float64  `json:"cores,omitempty"`
	MemBytes int64    `json:"mem_bytes,omitempty"`
	GPUs     int      `json:"gpus,omitempty"`
	Inputs   []string `json:"inputs,omitempty"` // share-relative (or absolute under the share, with Cwd)
	// InputBytes: each input's size as the scheduler measured it at submit (a directory's
	// files summed, bounded); set by the scheduler, 0 where unknown.
	InputBytes []int64           `json:"input_bytes,omitempty"`
	Node       string            `json:"target_node,omitempty"` // run only on this node
	Labels     map[string]string `json:"labels,omitempty"`      // run only on nodes with these labels
	Retries    int               `json:"retries,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	Uid        uint32            `json:"uid"`
	Gid        uint32            `json:"gid"`
	WorkDir    string            `json:"work_dir,omitempty"` // share-relative; default the share's root
	Cwd        string            `json:"cwd,omitempty"`      // the submitter's directory, to resolve relative inputs
	// LocalityWaitMs overrides the scheduler's delay-scheduling bound (ms; <0: never wait).
	LocalityWaitMs int64 `json:"locality_wait_ms,omitempty"`
	// ContainerEnv or Image run the task in a container.
	ContainerEnv string `json:"container_env,omitempty"`
	Image        string `json:"image,omitempty"`
	// KeepJobDir: `eddy gc` never removes the task's job directory on the share
	// (jobs/<task-id>); without it the directory goes once the job retention has passed
	// after the task ended.
	KeepJobDir bool `json:"keep_job_dir,omitempty"`
}

// Task is one submitted task and its history.
type Task struct {
	ID string `json:"id"`
	TaskSpec
	State       State          `json:"state"`
	NodeName    string         `json:"node,omitempty"` // where it is or was last placed
	Attempts    int            `json:"attempts"`       // placements so far
	ExitCode    *int           `json:"exit_code"`
	OOMKilled   bool           `json:"oom_killed,omitempty"`
	Signal      string         `json:"signal,omitempty"`
	Error       string         `json:"error,omitempty"`
	Placement   *PlacementInfo `json:"placement,omitempty"`
	Submitted   time.Time      `json:"submitted"`
	FirstChance time.Time      `json:"first_chance,omitzero"`
	Assigned    time.Time      `json:"assigned,omitzero"`
	Started     time.Time      `json:"started,omitzero"`
	Finished    time.Time      `json:"finished,omitzero"`
	KillAsked   bool           `json:"kill_asked,omitempty"`
	LogDir      string         `json:"log_dir,omitempty"` // share-relative: logs/<id>
	// EnvFile is the version of ContainerEnv resolved at submit (the newest then): its
	// tarball's path relative to the share; the node runs exactly this version. EnvSize is
	// its size. Both empty when the scheduler has no view of the share.
	EnvFile string `json:"env_file,omitempty"`
	EnvSize int64  `json:"env_size,omitempty"`
	// EnvStart says how the node made the environment ready (reported when it started).
	EnvStart *EnvStart `json:"env_start,omitempty"`
}

// PlacementInfo explains where a task went and why.
type PlacementInfo struct {
	Node       string      `json:"node"`
	Reason     string      `json:"reason"`
	Candidates []Candidate `json:"candidates,omitempty"`
	At         time.Time   `json:"at"`
}

// Candidate explains one node considered for a task: whether it fits, what it has warm and
// what it would fetch.
type Candidate struct {
	Node         string  `json:"node"`
	Fits         bool    `json:"fits"`
	WarmBytes    int64   `json:"warm_bytes"`
	MissingBytes int64   `json:"missing_bytes"`
	FetchSeconds float64 `json:"fetch_s"`
	// EnvImported: the task's container environment is imported on the node (its tarball
	// then counts as warm); EnvCached: the node caches all of the tarball.
	EnvImported bool `json:"env_imported,omitempty"`
	EnvCached   bool `json:"env_cached,omitempty"`
}

// EnvStart says how a container task's environment was made ready on its node.
type EnvStart struct {
	File string `json:"file,omitempty"` // the tarball, share-relative
	// Imported: the node read the tarball and imported it for this task; false: the image
	// was imported there already.
	Imported    bool    `json:"imported"`
	ImportBytes int64   `json:"import_bytes,omitempty"`
	ImageS      float64 `json:"image_s"` // seconds until the image was ready
	StartS      float64 `json:"start_s"` // seconds until the container's process ran
}

// LogChunk is a piece of a task's log file (GET /v1/tasks/{id}/logs?stream=&offset=).
type LogChunk struct {
	Data   []byte `json:"data"`
	Offset int64  `json:"offset"` // offset after Data: ask from here next
	State  State  `json:"state"`  // the task's state, so a follower knows when to stop
}

// MaxLogChunk bounds one logs answer: a chunk this long means more is there already.
const MaxLogChunk = 1 << 20
