package sched

import (
	"fmt"
	"sync"
	"time"
)

// taskResources is what t asks for.
func taskResources(t *Task) Resources {
	return Resources{Cores: t.Cores, MemBytes: t.MemBytes, GPUs: t.GPUs}
}

var idGen struct {
	mu   sync.Mutex
	last uint64
}

// NewTaskID returns an ID that sorts by submit time: "t" + 16 hex digits of
// (milliseconds since the epoch << 16 | sequence), strictly increasing within a process.
func NewTaskID(now time.Time) string {
	idGen.mu.Lock()
	defer idGen.mu.Unlock()
	v := uint64(now.UnixMilli()) << 16
	if v <= idGen.last {
		v = idGen.last + 1
	}
	idGen.last = v
	return fmt.Sprintf("t%016x", v)
}

// noteTaskID keeps IDs increasing across a restart.
func noteTaskID(id string) {
	var v uint64
	if _, err := fmt.Sscanf(id, "t%016x", &v); err != nil {
		return
	}
	idGen.mu.Lock()
	if v > idGen.last {
		idGen.last = v
	}
	idGen.mu.Unlock()
}
