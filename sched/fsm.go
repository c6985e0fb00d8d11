package sched

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// Every change of the scheduler's persistent state is a Command, applied by the state machine
// (FSM) to the Store: through the raft log in a replicated group (Replica), directly when the
// scheduler runs without one. The leader's Scheduler computes the change in memory and commits
// the command before it acts on it (answers a submit, hands an assignment to a node).
const (
	OpSubmit = "submit" // a new task; refused when its ID exists
	OpAssign = "assign" // a queued task placed on a node; refused unless the task is queued
	OpTask   = "task"   // any other change of a task: start, end, requeue, kill, first chance
	OpNode   = "node"   // a node registered (its record: address, resources, labels)
	OpLoad   = "load"   // the whole state of a store written before it was replicated
	// OpBatch: several submits in one log entry (Cmds), applied in one store write; its
	// answer is one ApplyResult per command. Only the Replica's submit queue makes them.
	OpBatch = "batch"
)

// Command is one change of the replicated state. ID is unique per change: a command seen
// twice (a retried submit, a re-sent proposal) is applied once, and the second answer is the
// first one's.
type Command struct {
	ID    string       `json:"id"`
	Op    string       `json:"op"`
	Task  *Task        `json:"task,omitempty"`
	Node  *NodeRecord  `json:"node,omitempty"`
	Tasks []*Task      `json:"tasks,omitempty"` // OpLoad
	Nodes []NodeRecord `json:"nodes,omitempty"` // OpLoad
	Cmds  []Command    `json:"cmds,omitempty"`  // OpBatch
}

// ApplyResult is the state machine's answer to a command.
type ApplyResult struct {
	TaskID string // the task the command made or changed (a duplicate submit: the first one's)
	Dup    bool   // the command's ID was applied before: nothing changed
	Err    string // refused (an assign of a task that is no longer queued, say): nothing changed
}

// newCommandID is a random command ID.
func newCommandID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// maxSeenCommands bounds the command IDs the state machine remembers for deduplication.
const maxSeenCommands = 1 << 16

// FSM is the scheduler's replicated state machine (a raft.FSM) over a Store. Besides writing
// the store it keeps the state in memory: a follower answers reads from it, and a new leader's
// Scheduler starts from it.
type FSM struct {
	store Store

	mu      sync.Mutex
	tasks   map[string]*Task      // guarded by mu
	nodes   map[string]NodeRecord // guarded by mu
	applied uint64                // guarded by mu; index of the last command applied (0: none yet)
	seen    map[string]ApplyResult
	order   []string // seen IDs, oldest first
	// legacy: the store holds state written before it was replicated (no applied index): the
	// first leader of a group of one puts it in the log (OpLoad).
	legacy bool
}

// NewFSM loads the state machine from st.
func NewFSM(st Store) (*FSM, error) {
	f := &FSM{store: st, tasks: map[string]*Task{}, nodes: map[string]NodeRecord{}, seen: map[string]ApplyResult{}}
	tasks, err := st.Tasks()
	if err != nil {
		return nil, fmt.Errorf("state machine: %w", err)
	}
	nodes, err := st.Nodes()
	if err != nil {
		return nil, fmt.Errorf("state machine: %w", err)
	}
	if f.applied, err = st.Applied(); err != nil {
		return nil, fmt.Errorf("state machine: %w", err)
	}
	for _, t := range tasks {
		f.tasks[t.ID] = t
	}
	for _, n := range nodes {
		f.nodes[n.Name] = n
	}
	f.legacy = f.applied == 0 && (len(tasks) > 0 || len(nodes) > 0)
	return f, nil
}

// Apply applies one raft log entry (raft.FSM).
func (f *FSM) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return ApplyResult{Err: "undecodable command: " + err.Error()}
	}
	if c.Op == OpBatch {
		return f.applyBatch(l.Index, c.Cmds)
	}
	return f.apply(l.Index, c)
}

// applyBatch applies the submits of one OpBatch entry at index, in one store write, and
// answers each (a duplicate ID: the first answer; a refused one: its error).
func (f *FSM) applyBatch(index uint64, cmds []Command) []ApplyResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ApplyResult, len(cmds))
	if index != 0 && index <= f.applied {
		for i, c := range cmds {
			f.noteLocked(c.ID, ApplyResult{Dup: true})
			out[i] = ApplyResult{Dup: true}
		}
		return out
	}
	var tasks []*Task
	fresh := map[string]bool{}
	ids := map[string]int{} // command ID -> its first place in the batch
	for i, c := range cmds {
		if r, ok := f.seen[c.ID]; ok && c.ID != "" {
			r.Dup = true
			out[i] = r
			continue
		}
		if j, ok := ids[c.ID]; ok && c.ID != "" {
			out[i] = out[j]
			out[i].Dup = true
			continue
		}
		ids[c.ID] = i
		switch {
		case c.Op != OpSubmit:
			out[i].Err = "a batch holds submits only, not " + c.Op
		case c.Task == nil || c.Task.ID == "":
			out[i].Err = "submit without a task"
		case f.tasks[c.Task.ID] != nil || fresh[c.Task.ID]:
			out[i].Err = "task " + c.Task.ID + " exists"
		default:
			out[i].TaskID = c.Task.ID
			fresh[c.Task.ID] = true
			tasks = append(tasks, c.Task)
		}
	}
	if len(tasks) == 0 {
		f.advanceLocked(index)
	} else {
		// As apply: a store failure leaves the index where it was (a restart replays the entry).
		err := f.store.Write(index, tasks, nil)
		for _, t := range tasks {
			f.tasks[t.ID] = t
		}
		switch {
		case err != nil:
			for i := range out {
				if fresh[out[i].TaskID] && out[i].Err == "" && !out[i].Dup {
					out[i].Err = "store: " + err.Error()
				}
			}
		case index != 0:
			f.applied, f.legacy = index, false
		}
	}
	for i, c := range cmds {
		if !out[i].Dup {
			f.noteLocked(c.ID, out[i])
		}
	}
	return out
}

// apply applies c as the command at index (0: not replicated; the store's index stays).
func (f *FSM) apply(index uint64, c Command) ApplyResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index != 0 && index <= f.applied {
		// Already in the store (raft replays the log after the last snapshot on a restart):
		// remember its ID only.
		f.noteLocked(c.ID, ApplyResult{Dup: true})
		return ApplyResult{Dup: true}
	}
	if r, ok := f.seen[c.ID]; ok && c.ID != "" {
		r.Dup = true
		f.advanceLocked(index)
		return r
	}
	var res ApplyResult
	var tasks []*Task
	var nodes []NodeRecord
	switch c.Op {
	case OpSubmit:
		if c.Task == nil || c.Task.ID == "" {
			res.Err = "submit without a task"
			break
		}
		if _, ok := f.tasks[c.Task.ID]; ok {
			res.Err = "task " + c.Task.ID + " exists"
			break
		}
		tasks, res.TaskID = []*Task{c.Task}, c.Task.ID
	case OpAssign, OpTask:
		if c.Task == nil {
			res.Err = c.Op + " without a task"
			break
		}
		old := f.tasks[c.Task.ID]
		switch {
		case old == nil:
			res.Err = "task " + c.Task.ID + " unknown"
		case c.Op == OpAssign && old.State != StateQueued:
			res.Err = fmt.Sprintf("task %s is %s, not queued: not assigned again", c.Task.ID, old.State)
		default:
			tasks, res.TaskID = []*Task{c.Task}, c.Task.ID
		}
	case OpNode:
		if c.Node == nil || c.Node.Name == "" {
			res.Err = "node without a name"
			break
		}
		nodes = []NodeRecord{*c.Node}
	case OpLoad:
		if err := f.store.Reset(); err != nil {
			res.Err = err.Error()
			break
		}
		clear(f.tasks)
		clear(f.nodes)
		tasks, nodes = c.Tasks, c.Nodes
		f.legacy = false
	default:
		res.Err = "unknown command " + c.Op
	}
	if res.Err != "" {
		f.noteLocked(c.ID, res)
		f.advanceLocked(index)
		return res
	}
	if err := f.store.Write(index, tasks, nodes); err != nil {
		// The store is the node's own copy; the log still holds the command, and a restart
		// replays it (the index did not move).
		res.Err = "store: " + err.Error()
	}
	for _, t := range tasks {
		f.tasks[t.ID] = t
	}
	for _, n := range nodes {
		f.nodes[n.Name] = n
	}
	if index != 0 && res.Err == "" {
		f.applied, f.legacy = index, false
	}
	f.noteLocked(c.ID, res)
	return res
}

// advanceLocked records index as applied for a command that changed nothing.
func (f *FSM) advanceLocked(index uint64) {
	if index == 0 || index <= f.applied {
		return
	}
	if err := f.store.Write(index, nil, nil); err == nil {
		f.applied, f.legacy = index, false
	}
}

func (f *FSM) noteLocked(id string, r ApplyResult) {
	if id == "" {
		return
	}
	if _, ok := f.seen[id]; ok {
		return
	}
	f.seen[id] = r
	f.order = append(f.order, id)
	if len(f.order) > maxSeenCommands {
		drop := len(f.order) - maxSeenCommands
		for _, old := range f.order[:drop] {
			delete(f.seen, old)
		}
		f.order = slices.Delete(f.order, 0, drop)
	}
}

// fsmState is a snapshot's content.
type fsmState struct {
	Applied uint64                 `json:"applied"`
	Tasks   []*Task                `json:"tasks"`
	Nodes   []NodeRecord           `json:"nodes"`
	Seen    []string               `json:"seen"`
	Results map[string]ApplyResult `json:"results,omitempty"`
}

// state copies the state (Snapshot, and a new leader's start).
func (f *FSM) state() ([]*Task, []NodeRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stateLocked()
}

func (f *FSM) stateLocked() ([]*Task, []NodeRecord) {
	tasks := make([]*Task, 0, len(f.tasks))
	for _, t := range f.tasks {
		c := *t
		tasks = append(tasks, &c)
	}
	sortTasks(tasks)
	nodes := make([]NodeRecord, 0, len(f.nodes))
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b NodeRecord) int { return strings.Compare(a.Name, b.Name) })
	return tasks, nodes
}

// Snapshot captures the whole state (raft.FSM). The copy is taken here; it is written out by
// Persist, concurrently with further commands.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tasks, nodes := f.stateLocked()
	st := &fsmState{Applied: f.applied, Tasks: tasks, Nodes: nodes, Seen: slices.Clone(f.order), Results: map[string]ApplyResult{}}
	for id, r := range f.seen {
		if r.TaskID != "" || r.Err != "" {
			st.Results[id] = r
		}
	}
	return st, nil
}

// Persist writes the snapshot (raft.FSMSnapshot).
func (st *fsmState) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(st); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing (raft.FSMSnapshot).
func (st *fsmState) Release() {}

// Restore replaces the whole state with a snapshot's (raft.FSM).
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st fsmState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.store.Reset(); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if err := f.store.Write(st.Applied, st.Tasks, st.Nodes); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	clear(f.tasks)
	clear(f.nodes)
	for _, t := range st.Tasks {
		f.tasks[t.ID] = t
	}
	for _, n := range st.Nodes {
		f.nodes[n.Name] = n
	}
	clear(f.seen)
	f.order = f.order[:0]
	for _, id := range st.Seen {
		f.noteLocked(id, st.Results[id])
	}
	f.applied, f.legacy = st.Applied, false
	return nil
}

// Task returns a copy of one task of the replicated state.
func (f *FSM) Task(id string) (*Task, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return nil, false
	}
	c := *t
	return &c, true
}

// Node returns the record of one node of the replicated state.
func (f *FSM) Node(name string) (NodeRecord, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	return n, ok
}

// Applied is the index of the last command applied.
func (f *FSM) Applied() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

func (f *FSM) isLegacy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.legacy
}
