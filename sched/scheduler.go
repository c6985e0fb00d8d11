package sched

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

// HeartbeatRequest is a node's periodic report (api.HeartbeatRequest with the cache's own
// InventoryDelta). Inventory is a bounded delta from InventoryBase (the generation the
// scheduler asked for).
type HeartbeatRequest struct {
	Node          string                `json:"node"`
	Tasks         []TaskReport          `json:"tasks,omitempty"`
	Inventory     *cache.InventoryDelta `json:"inventory,omitempty"`
	InventoryBase uint64                `json:"inventory_base"`
	// EnvsImported lists the environment tarballs (share-relative) imported into the node's
	// containerd, at most MaxImportedEnvs; null when the node does not report them.
	EnvsImported []string    `json:"envs_imported"`
	Share        *ShareSpace `json:"share,omitempty"` // how full the share is (nil: not reported)
}

// NodeStatus is `eddy nodes`' view of a node (api.NodeStatus with the scheduler's Resources).
type NodeStatus struct {
	NodeRecord
	Up          bool      `json:"up"`
	Free        Resources `json:"free"`
	LastSeen    time.Time `json:"last_seen"`
	Running     int       `json:"running"`
	CachedFiles int       `json:"cached_files"`
	InvGen      uint64    `json:"inventory_gen"`
	// EnvsImported: environment tarballs imported into the node's containerd.
	EnvsImported []string    `json:"envs_imported,omitempty"`
	Share        *ShareSpace `json:"share,omitempty"` // as the node last reported it
}

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	Store Store
	// Manual: no background loop; timeouts and placement run only when Tick is called (tests
	// that look at a state the loop would move on from, such as a requeued task).
	Manual       bool
	Policy       Policy        // default PolicyEddy
	LocalityWait time.Duration // default DefaultLocalityWait
	NodeTimeout  time.Duration // a node silent this long is down; default 15 s
	Heartbeat    time.Duration // interval nodes are told to use; default 3 s
	// ShareRoot is the share as the scheduler's node sees it: absolute inputs under it are made
	// share-relative, and logs are read from <ShareRoot>/logs. May be empty.
	ShareRoot string
	Logger    *slog.Logger
	Now       func() time.Time // default time.Now
	// RefuseRootTasks: submits of tasks that would run as uid 0 are refused (see
	// checkSubmit); the daemon sets it unless its nodes allow root's tasks.
	RefuseRootTasks bool
	// Replica, when set, replicates the state through raft: the scheduler acts (places, answers
	// writes) only while its member leads the group, from the replicated state; Store must be
	// the store of the Replica's FSM. Without it the same commands are applied to Store directly.
	Replica *Replica
	// ApplyTimeout bounds a command's commit through the Replica (default 10 s).
	ApplyTimeout time.Duration
	// Forward is how a follower reaches the other members' APIs (LeaderRouter, status).
	Forward ForwardConfig
}

type nodeState struct {
	rec      NodeRecord
	cn       *Node
	lastSeen time.Time
	invGen   uint64
	expired  bool        // timed out and its tasks handled; cleared by a heartbeat
	share    *ShareSpace // the share's space, from the last heartbeat that reported it
}

// Scheduler holds the cluster's queue and places tasks.
//
// Lock order: mu only.
type Scheduler struct {
	cfg SchedulerConfig
	log *slog.Logger

	mu    sync.Mutex
	cl    *Cluster              // guarded by mu
	pl    *Placer               // guarded by mu
	nodes map[string]*nodeState // guarded by mu
	tasks map[string]*Task      // guarded by mu; every task
	queue []*Task               // guarded by mu; queued tasks, priority then ID order
	sizes map[string]int64      // guarded by mu; file sizes seen in inventories
	done  bool                  // guarded by mu

	fsm *FSM
	rep *Replica // nil: not replicated
	// leading: the state above is the replicated state's and this scheduler acts on it (always
	// without a Replica). Cleared when leadership is lost or a commit fails: the state is then
	// dropped, and rebuilt from the FSM when this member leads again.
	leading bool      // guarded by mu
	readyAt time.Time // guarded by mu; no placement before (a new leader hears its nodes first)
	regain  chan struct{}

	// The assignments' push (WaitAssignments): pushGen counts committed assignments, from a
	// clock reading when this scheduler last started leading (pushBase); nodeGen is each node's
	// last; pushWait wakes the node's waiting long-poll.
	pushGen  uint64                   // guarded by mu
	pushBase uint64                   // guarded by mu
	nodeGen  map[string]uint64        // guarded by mu
	pushWait map[string]chan struct{} // guarded by mu
	// closing: per http.Server serving this scheduler's routes, closed when it shuts down.
	closing sync.Map

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// Sentinel errors the HTTP layer maps to statuses.
var (
	ErrBadRequest = errors.New("bad request")
	ErrNotFound   = errors.New("not found")
	ErrNeverFits  = errors.New("task can never fit")
	ErrConflict   = errors.New("conflict")
	ErrForbidden  = errors.New("not allowed")
	// ErrNotLeader: this scheduler does not lead its group (now); the call goes to the leader.
	ErrNotLeader = errors.New("not the scheduler group's leader")
)

// NewScheduler loads the state from the store and starts the placement loop.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("new scheduler: no store")
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyEddy
	}
	if cfg.LocalityWait == 0 {
		cfg.LocalityWait = DefaultLocalityWait
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = 15 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	s := &Scheduler{cfg: cfg, log: cfg.Logger, cl: NewCluster(), nodes: map[string]*nodeState{}, tasks: map[string]*Task{},
		sizes: map[string]int64{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), regain: make(chan struct{}, 1),
		nodeGen: map[string]uint64{}, pushWait: map[string]chan struct{}{}}
	s.pushGen = uint64(time.Now().UnixNano())
	s.pushBase = s.pushGen
	s.pl = &Placer{Policy: cfg.Policy, LocalityWait: cfg.LocalityWait, Explain: true}
	if cfg.Replica != nil {
		s.rep, s.fsm = cfg.Replica, cfg.Replica.FSM()
		s.wg.Add(1)
		go s.watchLeadership()
	} else {
		fsm, err := NewFSM(cfg.Store)
		if err != nil {
			return nil, fmt.Errorf("new scheduler: %w", err)
		}
		s.fsm = fsm
		tasks, nodes := fsm.state()
		s.mu.Lock()
		s.resetLocked(nodes, tasks)
		s.leading = true
		s.mu.Unlock()
	}
	if !cfg.Manual {
		s.wg.Add(1)
		go s.loop()
	}
	s.log.Info("scheduler started", "nodes", len(s.nodes), "tasks", len(s.tasks), "queued", len(s.queue), "policy", cfg.Policy,
		"replicated", s.rep != nil)
	return s, nil
}

// resetLocked makes the state the given (replicated) state.
func (s *Scheduler) resetLocked(recs []NodeRecord, tasks []*Task) {
	s.cl, s.nodes, s.tasks, s.queue = NewCluster(), map[string]*nodeState{}, map[string]*Task{}, nil
	s.pl = &Placer{Policy: s.cfg.Policy, LocalityWait: s.cfg.LocalityWait, Explain: true}
	now := s.cfg.Now()
	for _, r := range recs {
		// Known but not heard from since the restart: no placements there until they
		// heartbeat; they have the full timeout to do so before their tasks count as lost.
		ns := &nodeState{rec: r, lastSeen: now}
		ns.cn = s.cl.AddNode(Node{Name: r.Name, Total: r.Total, Free: r.Total, Labels: r.Labels, Up: false, LinkBps: r.LinkBps})
		s.nodes[r.Name] = ns
	}
	for _, t := range tasks {
		noteTaskID(t.ID)
		s.tasks[t.ID] = t
		switch t.State {
		case StateQueued:
			s.queue = append(s.queue, t)
		case StateAssigned, StateRunning:
			if ns := s.nodes[t.NodeName]; ns != nil {
				s.cl.Assign(ns.cn, taskResources(t))
				s.cl.Promise(ns.cn, s.request(t).Inputs)
			}
		}
	}
	sortTasks(s.queue)
}

// Close stops the loop. It does not close the store.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	s.wakeAllLocked()
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	return nil
}

func sortTasks(ts []*Task) {
	slices.SortFunc(ts, func(a, b *Task) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) loop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.wake:
		}
		s.mu.Lock()
		if s.leading {
			s.checkNodesLocked()
			s.scheduleLocked()
		}
		s.mu.Unlock()
	}
}

// Tick runs one round of timeouts and placement now (tests and callers that want no delay).
func (s *Scheduler) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return
	}
	s.checkNodesLocked()
	s.scheduleLocked()
}

// persistLocked commits a change of t (OpTask).
func (s *Scheduler) persistLocked(t *Task) {
	if _, err := s.commitLocked(Command{Op: OpTask, Task: t}); err != nil {
		s.log.Error("persist task", "task", t.ID, "err", err)
	}
}

func (s *Scheduler) request(t *Task) *Request {
	r := &Request{Res: taskResources(t), Node: t.Node, Labels: t.Labels, FirstChance: t.FirstChance}
	for i, in := range t.Inputs {
		size := s.sizes[in]
		if i < len(t.InputBytes) {
			size = max(size, t.InputBytes[i])
		}
		r.Inputs = append(r.Inputs, Input{Path: in, Size: size})
	}
	if t.EnvFile != "" {
		r.Inputs = append(r.Inputs, Input{Path: t.EnvFile, Size: t.EnvSize, Env: true})
	}
	switch {
	case t.LocalityWaitMs < 0:
		r.LocalityWait = -1
	case t.LocalityWaitMs > 0:
		r.LocalityWait = time.Duration(t.LocalityWaitMs) * time.Millisecond
	}
	return r
}

func (s *Scheduler) scheduleLocked() {
	if len(s.queue) == 0 || !s.leading {
		return
	}
	now := s.cfg.Now()
	if now.Before(s.readyAt) {
		return // a new leader: its nodes report first
	}
	var cmds []Command
	qs := make([]Queued, len(s.queue))
	reqs := make([]*Request, len(s.queue))
	for i, t := range s.queue {
		reqs[i] = s.request(t)
		qs[i] = Queued{Req: reqs[i]}
	}
	placed := map[*Task]bool{}
	s.pl.Schedule(s.cl, now, qs, nil, func(i int, d Decision) {
		t := s.queue[i]
		s.cl.Promise(d.Node, reqs[i].Inputs) // its agent warms them now (Schedule took the resources)
		t.State, t.NodeName, t.Assigned, t.Attempts = StateAssigned, d.Node.Name, now, t.Attempts+1
		t.FirstChance = reqs[i].FirstChance
		t.Placement = &PlacementInfo{Node: d.Node.Name, Reason: d.Reason, Candidates: d.Candidates, At: now}
		placed[t] = true
		cmds = append(cmds, Command{Op: OpAssign, Task: t})
		s.log.Info("task assigned", "task", t.ID, "node", d.Node.Name, "why", d.Reason)
	}, nil)
	for i, t := range s.queue {
		if !placed[t] && !reqs[i].FirstChance.Equal(t.FirstChance) {
			t.FirstChance = reqs[i].FirstChance // the wait counts from here, restarts included
			cmds = append(cmds, Command{Op: OpTask, Task: t})
		}
	}
	// The assignments are committed before any node hears of them (heartbeats wait for mu).
	if len(cmds) > 0 {
		if _, err := s.commitLocked(cmds...); err != nil {
			s.log.Error("commit placements", "err", err)
			return // stepped down (replicated) or the store failed: the state is rebuilt
		}
	}
	if len(placed) > 0 {
		s.queue = slices.DeleteFunc(s.queue, func(t *Task) bool { return placed[t] })
		for t := range placed { // committed: their nodes may hear of them now
			s.pushGen++
			s.nodeGen[t.NodeName] = s.pushGen
			s.wakeNodeLocked(t.NodeName)
		}
	}
}

func (s *Scheduler) checkNodesLocked() {
	now := s.cfg.Now()
	for _, ns := range s.nodes {
		if ns.expired || now.Sub(ns.lastSeen) <= s.cfg.NodeTimeout {
			continue
		}
		ns.expired = true
		s.log.Warn("node down: no heartbeat", "node", ns.rec.Name, "silent", now.Sub(ns.lastSeen).Round(time.Second))
		s.cl.SetUp(ns.cn, false)
		for _, t := range s.tasks {
			if t.NodeName == ns.rec.Name && (t.State == StateAssigned || t.State == StateRunning) {
				s.loseLocked(t, "node "+ns.rec.Name+" went silent")
			}
		}
	}
}

// loseLocked ends t as lost and requeues it while it has retries left.
func (s *Scheduler) loseLocked(t *Task, why string) {
	if ns := s.nodes[t.NodeName]; ns != nil {
		s.cl.Release(ns.cn, taskResources(t))
		s.cl.Unpromise(ns.cn, s.request(t).Inputs)
	}
	if !t.KillAsked && t.Attempts <= t.Retries {
		s.log.Warn("task lost, requeued", "task", t.ID, "why", why, "attempt", t.Attempts, "retries", t.Retries)
		t.State, t.Error, t.FirstChance = StateQueued, why+" (requeued)", time.Time{}
		s.queue = append(s.queue, t)
		sortTasks(s.queue)
	} else {
		s.log.Warn("task lost", "task", t.ID, "why", why)
		t.State, t.Error, t.Finished = StateLost, why, s.cfg.Now()
		if t.KillAsked {
			t.State = StateKilled
		}
	}
	s.persistLocked(t)
	s.kick()
}

// Register adds or refreshes a node.
func (s *Scheduler) Register(ctx context.Context, rec NodeRecord) (RegisterResponse, error) {
	if rec.Name == "" || rec.Total.Cores <= 0 || rec.Total.MemBytes <= 0 {
		return RegisterResponse{}, fmt.Errorf("register: %w: name, cores and memory are required", ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return RegisterResponse{}, fmt.Errorf("register: %w", ErrNotLeader)
	}
	if _, err := s.commitLocked(Command{Op: OpNode, Node: &rec}); err != nil {
		return RegisterResponse{}, fmt.Errorf("register %s: %w", rec.Name, err)
	}
	ns := s.nodes[rec.Name]
	if ns == nil {
		ns = &nodeState{}
		s.nodes[rec.Name] = ns
	}
	ns.rec, ns.lastSeen, ns.invGen, ns.expired = rec, s.cfg.Now(), 0, false
	used := Resources{}
	for _, t := range s.tasks {
		if t.NodeName == rec.Name && (t.State == StateAssigned || t.State == StateRunning) {
			used = used.Add(taskResources(t))
		}
	}
	ns.cn = s.cl.AddNode(Node{Name: rec.Name, Total: rec.Total, Free: rec.Total.Sub(used), Labels: rec.Labels, Up: true, LinkBps: rec.LinkBps})
	s.cl.ClearCached(ns.cn) // a full inventory follows
	s.log.Info("node registered", "node", rec.Name, "address", rec.Address, "cores", rec.Total.Cores, "gpus", rec.Total.GPUs)
	s.kick()
	return RegisterResponse{HeartbeatMs: s.cfg.Heartbeat.Milliseconds()}, nil
}

// Heartbeat records a node's report and answers with its work. Replicated, assignments are
// handed out only once this member has confirmed it still leads (raft.VerifyLeader).
func (s *Scheduler) Heartbeat(ctx context.Context, hb HeartbeatRequest) (HeartbeatResponse, error) {
	resp, err := s.heartbeat(hb)
	if err == nil && s.rep != nil && len(resp.Assign) > 0 {
		if err := s.rep.r.VerifyLeader().Error(); err != nil {
			return HeartbeatResponse{}, fmt.Errorf("heartbeat: %w: %v", ErrNotLeader, err)
		}
	}
	return resp, err
}

func (s *Scheduler) heartbeat(hb HeartbeatRequest) (HeartbeatResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return HeartbeatResponse{}, fmt.Errorf("heartbeat: %w", ErrNotLeader)
	}
	ns := s.nodes[hb.Node]
	if ns == nil {
		return HeartbeatResponse{Reregister: true}, nil
	}
	now := s.cfg.Now()
	ns.lastSeen, ns.expired = now, false
	if !ns.cn.Up {
		s.log.Info("node back", "node", hb.Node)
		s.cl.SetUp(ns.cn, true)
	}
	var resp HeartbeatResponse
	// Inventory: apply a delta only on top of the generation it was computed from.
	if inv := hb.Inventory; inv != nil {
		if inv.Full || hb.InventoryBase == ns.invGen {
			if inv.Full {
				s.cl.ClearCached(ns.cn)
			}
			for _, it := range inv.Items {
				s.cl.SetCached(ns.cn, it.Path, it.CachedBytes)
				if it.Size > 0 {
					s.sizes[it.Path] = it.Size
				}
			}
			for _, p := range inv.Removed {
				s.cl.SetCached(ns.cn, p, 0)
			}
			ns.invGen = inv.Gen
		} else {
			ns.invGen = 0 // out of step: ask for everything
		}
	}
	resp.InventorySince = ns.invGen
	if hb.Share != nil {
		ns.share = hb.Share
	}
	if hb.EnvsImported != nil {
		s.cl.SetImported(ns.cn, hb.EnvsImported[:min(len(hb.EnvsImported), MaxImportedEnvs)])
	}
	reported := map[string]bool{}
	for _, r := range hb.Tasks {
		reported[r.ID] = true
		kill, ack := s.reconcileLocked(ns, r)
		if kill {
			resp.Kill = append(resp.Kill, r.ID)
		}
		if ack {
			resp.Ack = append(resp.Ack, r.ID)
		}
	}
	for _, t := range s.tasks {
		if t.NodeName != hb.Node || reported[t.ID] {
			continue
		}
		switch t.State {
		case StateAssigned:
			if t.KillAsked {
				s.endLocked(t, TaskReport{State: StateKilled, Error: "killed before it started", Finished: now})
				continue
			}
			resp.Assign = append(resp.Assign, t)
		case StateRunning:
			s.loseLocked(t, "node "+hb.Node+" no longer reports it")
		}
	}
	if !s.leading {
		return HeartbeatResponse{}, fmt.Errorf("heartbeat: %w", ErrNotLeader) // a commit failed
	}
	return resp, nil
}

// Reconciliation: what the scheduler makes of a node's task reports. The rules live here and
// in Agent.recover; they are what keeps a task to at most one start per placement when a node's
// daemon restarts.
//
// A node reports every task its agent has: assigned (warming its inputs), running, or ended and
// not yet acknowledged. The agent's runtime keeps its tasks across daemon restarts: a process
// task is started by a reaper that outlives the daemon and records the exit status in the
// node's task state directory; a container lives on in containerd. A new agent lists them
// before it registers (Agent.recover) and its first heartbeat reports each, running or with its
// true end; it never starts a task its runtime already has. So, for a task placed on node N:
//
//   - Daemon stopped (SIGTERM) and restarted while the task runs: the old agent leaves it
//     running, unreported; the new one reports it running and then its end. The scheduler keeps
//     it running throughout (the node is down only after NodeTimeout of silence).
//   - Daemon killed (kill -9) while the task runs: the same; the reaper is not the daemon's to
//     take down.
//   - The task ended while the daemon was down: its exit status is in the state directory; the
//     first heartbeat reports the end, recorded as if the daemon had never gone.
//   - The task was still assigned (warming its inputs) when the daemon went: it never started,
//     the new agent does not report it, and the scheduler assigns it to N again (below); N
//     starting it then is its first start, not a second one.
//   - The end could not be observed (the reaper was killed, or the machine rebooted): the node
//     reports it lost, and it is requeued while it has retries (loseLocked), like a task of a
//     node that went silent.
//
// Per report of task t from node N:
//
//	report \ t         on N, assigned/running   on N, requeued/lost *   elsewhere, unknown, over
//	running            running                  running again **        kill
//	ended              record the end, ack      record the end, ack     ack
//	lost (unobserved)  lose: requeue or lost    ack                     ack
//
//	*  lost while N was silent (requeued and not yet placed again, or out of retries): no
//	   other attempt started, so N's report is the truth about the task.
//	** taken back from the queue, or out of the lost state, with N's resources.
//
// Tasks on N that N does not report: assigned ones are sent again (Assign); running ones N no
// longer has: they are lost (requeued while they have retries).
func (s *Scheduler) reconcileLocked(ns *nodeState, r TaskReport) (kill, ack bool) {
	node := ns.rec.Name
	t := s.tasks[r.ID]
	ended := r.State.Terminal()
	if t == nil || t.NodeName != node {
		return !ended, ended // unknown here, or placed elsewhere since: drop an end, stop a run
	}
	// requeued or lost while N was silent, and no other attempt started since
	back := t.State == StateQueued || t.State == StateLost
	switch {
	case ended && r.State == StateLost:
		if t.State == StateAssigned || t.State == StateRunning {
			why := "node " + node + " lost track of it"
			if r.Error != "" {
				why += ": " + r.Error
			}
			s.loseLocked(t, why)
		}
		return false, true
	case ended:
		if !t.State.Terminal() || t.State == StateLost {
			if t.State == StateQueued {
				s.queue = slices.DeleteFunc(s.queue, func(q *Task) bool { return q == t })
			}
			s.endLocked(t, r)
		}
		return false, true
	case back && !t.KillAsked:
		if t.State == StateQueued {
			s.queue = slices.DeleteFunc(s.queue, func(q *Task) bool { return q == t })
		}
		s.log.Info("task runs on its node after all", "task", t.ID, "node", node, "was", t.State)
		s.cl.Assign(ns.cn, taskResources(t))
		s.cl.Promise(ns.cn, s.request(t).Inputs)
		t.State, t.Error, t.Finished = StateRunning, "", time.Time{}
		if !r.Started.IsZero() {
			t.Started = r.Started
		}
		s.persistLocked(t)
	case t.State.Terminal():
		return true, false // over (killed, say): stop it
	case r.State == StateRunning && t.State == StateAssigned:
		t.State, t.Started = StateRunning, r.Started
		if r.EnvStart != nil {
			t.EnvStart = r.EnvStart
		}
		s.persistLocked(t)
	}
	return t.KillAsked && !t.State.Terminal(), false
}

func (s *Scheduler) endLocked(t *Task, r TaskReport) {
	if ns := s.nodes[t.NodeName]; ns != nil && (t.State == StateAssigned || t.State == StateRunning) {
		s.cl.Release(ns.cn, taskResources(t))
		s.cl.Unpromise(ns.cn, s.request(t).Inputs)
	}
	t.State, t.ExitCode, t.OOMKilled, t.Signal, t.Error = r.State, r.ExitCode, r.OOMKilled, r.Signal, r.Error
	if !r.Started.IsZero() {
		t.Started = r.Started
	}
	if r.EnvStart != nil {
		t.EnvStart = r.EnvStart
	}
	t.Finished = r.Finished
	if t.Finished.IsZero() {
		t.Finished = s.cfg.Now()
	}
	if t.KillAsked && t.State != StateCompleted {
		t.State = StateKilled
	}
	s.persistLocked(t)
	exit := "none"
	if r.ExitCode != nil {
		exit = fmt.Sprint(*r.ExitCode)
	}
	s.log.Info("task ended", "task", t.ID, "state", t.State, "exit", exit, "oom", r.OOMKilled)
	s.kick()
}

// Submit validates and queues a task. A task that can never fit any registered node is
// rejected (ErrNeverFits) with the reason.
func (s *Scheduler) Submit(ctx context.Context, spec TaskSpec) (*Task, error) {
	return s.SubmitKey(ctx, spec, "")
}

// SubmitKey is Submit with an idempotency key (api.IdempotencyHeader): a submit retried with the
// same key makes no second task and answers the first one.
func (s *Scheduler) SubmitKey(ctx context.Context, spec TaskSpec, key string) (*Task, error) {
	if len(spec.Command) == 0 && spec.ContainerEnv == "" && spec.Image == "" {
		return nil, fmt.Errorf("submit: %w: no command (give it after --)", ErrBadRequest)
	}
	if spec.Cores < 0 || spec.MemBytes < 0 || spec.GPUs < 0 || spec.Retries < 0 {
		return nil, fmt.Errorf("submit: %w: cores, memory, GPUs and retries must not be negative", ErrBadRequest)
	}
	if spec.Cores == 0 {
		spec.Cores = 1
	}
	if spec.MemBytes == 0 {
		spec.MemBytes = 1 << 30
	}
	for _, e := range spec.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("submit: %w: env %q is not KEY=VALUE", ErrBadRequest, e)
		}
	}
	for i, in := range spec.Inputs {
		p, err := s.sharePath(in, spec.Cwd)
		if err != nil {
			return nil, fmt.Errorf("submit: %w: input %q: %v", ErrBadRequest, in, err)
		}
		spec.Inputs[i] = p
	}
	spec.InputBytes = nil
	if s.cfg.ShareRoot != "" && len(spec.Inputs) > 0 {
		spec.InputBytes = make([]int64, len(spec.Inputs))
		for i, in := range spec.Inputs {
			n, err := inputSize(ctx, filepath.Join(s.cfg.ShareRoot, filepath.FromSlash(in)))
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("submit: %w: input %q does not exist in the share", ErrBadRequest, in)
			}
			if err != nil {
				s.log.Warn("input size unknown", "input", in, "err", err)
			}
			spec.InputBytes[i] = n
		}
	}
	if spec.WorkDir != "" {
		p, err := s.sharePath(spec.WorkDir, spec.Cwd)
		if err != nil {
			return nil, fmt.Errorf("submit: %w: work dir %q: %v", ErrBadRequest, spec.WorkDir, err)
		}
		spec.WorkDir = p
	}
	env, err := s.resolveEnv(spec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return nil, fmt.Errorf("submit: %w", ErrNotLeader)
	}
	now := s.cfg.Now()
	t := &Task{TaskSpec: spec, State: StateQueued, Submitted: now, EnvFile: env.Rel, EnvSize: env.Size}
	if why := s.cl.CanEverFit(s.request(t)); why != "" {
		return nil, fmt.Errorf("submit: %w: %s", ErrNeverFits, why)
	}
	if err := s.checkSubmit(spec); err != nil {
		return nil, err
	}
	t.ID = NewTaskID(now)
	t.LogDir = path.Join("logs", t.ID)
	cmd := Command{Op: OpSubmit, Task: t}
	if key != "" {
		cmd.ID = "submit/" + key
	}
	var res []ApplyResult
	if s.rep == nil {
		res, err = s.commitLocked(cmd)
	} else {
		res, err = s.commitSubmitUnlocked(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	if res[0].Dup {
		first := s.tasks[res[0].TaskID]
		if first == nil {
			first, _ = s.fsm.Task(res[0].TaskID) // committed; its submit is not back yet
		}
		if first == nil {
			return nil, fmt.Errorf("submit: %w: a submit with this key was refused before", ErrConflict)
		}
		c := *first
		return &c, nil
	}
	c := *t
	if !s.leading || s.tasks[t.ID] != nil {
		// Committed, but the state was dropped or rebuilt (from the FSM, which has it) while
		// this submit waited: it is the replicated state's already.
		return &c, nil
	}
	s.tasks[t.ID] = t
	s.insertQueuedLocked(t)
	s.log.Info("task submitted", "task", t.ID, "name", t.Name, "cores", t.Cores, "gpus", t.GPUs, "inputs", len(t.Inputs))
	s.kick()
	return &c, nil
}

// commitSubmitUnlocked commits a submit through the Replica with mu released while it waits
// for the commit, so that concurrent submits share a commit: the Replica's submit queue puts
// the submits waiting meanwhile in one log entry, and raft pipelines the entries. Called and returning with mu held. The new task
// is not in the in-memory state until its caller adds it, so nothing acts on it before it is
// committed; nothing else of the state is changed by a submit.
func (s *Scheduler) commitSubmitUnlocked(cmd Command) ([]ApplyResult, error) {
	if cmd.ID == "" {
		cmd.ID = newCommandID()
	}
	wait := s.rep.proposeSubmit(cmd, s.cfg.ApplyTimeout)
	s.mu.Unlock()
	r, err := wait()
	s.mu.Lock()
	res := []ApplyResult{r}
	if err == nil && res[0].Err != "" && !res[0].Dup {
		s.log.Error("scheduler: command refused by the state machine", "op", cmd.Op, "err", res[0].Err)
		err = fmt.Errorf("%w: %s", ErrNotLeader, res[0].Err)
	}
	if err != nil {
		if s.leading {
			s.stepDownLocked("commit: " + err.Error())
		}
		return res, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return res, nil
}

// insertQueuedLocked puts t in the queue at its place (priority, then ID: submit time).
func (s *Scheduler) insertQueuedLocked(t *Task) {
	i, _ := slices.BinarySearchFunc(s.queue, t, func(a, b *Task) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		return strings.Compare(a.ID, b.ID)
	})
	s.queue = slices.Insert(s.queue, i, t)
}

// inputSize is the size of a file, or of the files under a directory (a bounded walk: at most
// maxInputWalk entries or 2 s, then a lower bound), as placement's measure of an input.
func inputSize(ctx context.Context, p string) (int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return fi.Size(), nil
	}
	var total int64
	seen := 0
	deadline := time.Now().Add(2 * time.Second)
	errStop := errors.New("stop")
	err = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable corner: count what can be read
		}
		if seen++; seen > maxInputWalk || ctx.Err() != nil || (seen%256 == 0 && time.Now().After(deadline)) {
			return errStop
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return total, err
	}
	return total, nil
}

// maxInputWalk bounds the entries inputSize visits under one directory input.
const maxInputWalk = 100_000

// resolveEnv checks a container task's environment and returns its newest version on the
// share (zero without an environment, or when the scheduler has no view of the share: the
// node then takes the newest version when it starts the task).
func (s *Scheduler) resolveEnv(spec TaskSpec) (envs.Version, error) {
	name := spec.ContainerEnv
	switch {
	case name != "" && spec.Image != "":
		return envs.Version{}, fmt.Errorf("submit: %w: give a container environment or an image, not both", ErrBadRequest)
	case name == "":
		return envs.Version{}, nil
	case !envs.ValidName(name):
		return envs.Version{}, fmt.Errorf("submit: %w: container environment %q: not a valid name (letters, digits, '.', '_', '-')", ErrBadRequest, name)
	case s.cfg.ShareRoot == "":
		return envs.Version{}, nil
	}
	v, err := envs.Newest(s.cfg.ShareRoot, name)
	if errors.Is(err, envs.ErrNotFound) {
		return v, fmt.Errorf("submit: %w: container environment %q not found on the share (no %s/%s/%s_<unix-ts>.tar, nor under %s/); add one with: eddy env import %s FILE",
			ErrBadRequest, name, envs.Dir, name, name, envs.KohakuDir, name)
	}
	if err != nil {
		return v, fmt.Errorf("submit: container environment %q: %w", name, err)
	}
	return v, nil
}

// sharePath turns an input into a clean share-relative name.
func (s *Scheduler) sharePath(p, cwd string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty path")
	}
	root := s.cfg.ShareRoot
	if !filepath.IsAbs(p) && cwd != "" && root != "" && (cwd == root || strings.HasPrefix(cwd, root+"/")) {
		p = filepath.Join(cwd, p)
	}
	if filepath.IsAbs(p) {
		if root == "" {
			return "", fmt.Errorf("absolute path but the scheduler does not know the share's mountpoint; give a share-relative path")
		}
		rel, err := filepath.Rel(root, filepath.Clean(p))
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return "", fmt.Errorf("not inside the share %s", root)
		}
		p = rel
	}
	p = path.Clean(filepath.ToSlash(p))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("outside the share")
	}
	return p, nil
}

// Task returns a copy of one task (a follower's: of the replicated state, as far as it has it).
func (s *Scheduler) Task(id string) (*Task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		t, ok := s.fsm.Task(id)
		if !ok {
			return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
		}
		return t, nil
	}
	t := s.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	c := *t
	return &c, nil
}

// Tasks returns copies of every task, newest first, bounded by limit (0: all).
func (s *Scheduler) Tasks(limit int) []*Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Task, 0, len(s.tasks))
	if !s.leading { // a follower: the replicated state
		out, _ = s.fsm.state()
		for _, t := range out {
			t.Placement = nil
		}
	}
	for _, t := range s.tasks {
		c := *t
		c.Placement = nil
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *Task) int { return strings.Compare(b.ID, a.ID) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Kill ends a queued task at once, or asks its node to kill it.
func (s *Scheduler) Kill(ctx context.Context, id string) (*Task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return nil, fmt.Errorf("kill %s: %w", id, ErrNotLeader)
	}
	t := s.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("kill %s: %w", id, ErrNotFound)
	}
	if t.State.Terminal() {
		return nil, fmt.Errorf("kill %s: %w: already %s", id, ErrConflict, t.State)
	}
	t.KillAsked = true
	if t.State == StateQueued {
		s.queue = slices.DeleteFunc(s.queue, func(q *Task) bool { return q == t })
		t.State, t.Finished = StateKilled, s.cfg.Now()
	}
	if _, err := s.commitLocked(Command{Op: OpTask, Task: t}); err != nil {
		return nil, fmt.Errorf("kill %s: %w", id, err)
	}
	c := *t
	return &c, nil
}

// Nodes returns the status of every known node.
func (s *Scheduler) Nodes() []NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []NodeStatus
	if !s.leading { // records only: liveness is the leader's
		_, recs := s.fsm.state()
		for _, r := range recs {
			out = append(out, NodeStatus{NodeRecord: r})
		}
		return out
	}
	for _, ns := range s.nodes {
		st := NodeStatus{NodeRecord: ns.rec, Up: ns.cn.Up, Free: ns.cn.Free, LastSeen: ns.lastSeen,
			CachedFiles: s.cl.CachedFiles(ns.cn), InvGen: ns.invGen, EnvsImported: s.cl.Imported(ns.cn), Share: ns.share}
		for _, t := range s.tasks {
			if t.NodeName == ns.rec.Name && (t.State == StateRunning || t.State == StateAssigned) {
				st.Running++
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LogPath is the file holding a task's stdout or stderr on the scheduler's view of the share.
func (s *Scheduler) LogPath(id, stream string) (string, error) {
	if stream != "stdout" && stream != "stderr" {
		return "", fmt.Errorf("logs: %w: stream must be stdout or stderr", ErrBadRequest)
	}
	t, err := s.Task(id)
	if err != nil {
		return "", err
	}
	if s.cfg.ShareRoot == "" {
		return "", fmt.Errorf("logs %s: %w: the scheduler has no view of the share", id, ErrNotFound)
	}
	return filepath.Join(s.cfg.ShareRoot, filepath.FromSlash(t.LogDir), stream+".log"), nil
}

// AssignmentsPath is a node's long-poll for its assignments: GET ?node=NAME&after=GEN is
// answered (AssignmentsResponse) as soon as an assignment to the node is committed after GEN,
// or after AssignmentsWait with none. The heartbeat carries the same assignments; this call
// only makes a node hear of them at once instead of at its next heartbeat.
const AssignmentsPath = "/v1/cluster/assignments"

// AssignmentsWait bounds how long an assignments long-poll is held open.
const AssignmentsWait = 25 * time.Second

// AssignmentsResponse answers AssignmentsPath: the generation to wait from next, and the
// node's tasks that are assigned and not yet started as far as the scheduler knows (the node
// starts those it does not have; it never starts one twice).
type AssignmentsResponse struct {
	Gen    uint64  `json:"gen"`
	Assign []*Task `json:"assign,omitempty"`
}

// wakeNodeLocked answers node's waiting long-poll.
func (s *Scheduler) wakeNodeLocked(node string) {
	if ch := s.pushWait[node]; ch != nil {
		close(ch)
		delete(s.pushWait, node)
	}
}

// wakeAllLocked answers every waiting long-poll (this scheduler steps down, or stops).
func (s *Scheduler) wakeAllLocked() {
	for n, ch := range s.pushWait {
		close(ch)
		delete(s.pushWait, n)
	}
}

// WaitAssignments answers node's long-poll: at once when an assignment to it was committed
// after gen (or gen is not of this leader: the node polled another one, or none yet), else
// when one is, or after wait with none. Replicated, assignments are handed out only once this
// member has confirmed it still leads, as for a heartbeat.
func (s *Scheduler) WaitAssignments(ctx context.Context, node string, after uint64, wait time.Duration) (AssignmentsResponse, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if !s.leading || s.done {
			s.mu.Unlock()
			return AssignmentsResponse{}, fmt.Errorf("assignments: %w", ErrNotLeader)
		}
		if after < s.pushBase || after > s.pushGen || s.nodeGen[node] > after {
			resp := AssignmentsResponse{Gen: s.pushGen}
			for _, t := range s.tasks {
				if t.NodeName == node && t.State == StateAssigned && !t.KillAsked {
					c := *t
					resp.Assign = append(resp.Assign, &c)
				}
			}
			s.mu.Unlock()
			if s.rep != nil && len(resp.Assign) > 0 {
				if err := s.rep.r.VerifyLeader().Error(); err != nil {
					return AssignmentsResponse{}, fmt.Errorf("assignments: %w: %v", ErrNotLeader, err)
				}
			}
			return resp, nil
		}
		ch := s.pushWait[node]
		if ch == nil {
			ch = make(chan struct{})
			s.pushWait[node] = ch
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			s.mu.Lock()
			gen := s.pushGen
			s.mu.Unlock()
			return AssignmentsResponse{Gen: max(gen, after)}, nil
		case <-ctx.Done():
			return AssignmentsResponse{}, ctx.Err()
		}
	}
}

// assignmentRoutes registers AssignmentsPath (root's, like the other node calls).
func (s *Scheduler) assignmentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+AssignmentsPath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "assignments") {
			return
		}
		q := r.URL.Query()
		node := q.Get("node")
		after, err := strconv.ParseUint(q.Get("after"), 10, 64)
		if q.Get("after") == "" {
			after, err = 0, nil
		}
		if node == "" || err != nil {
			reply(w, nil, fmt.Errorf("assignments: %w: want node=NAME&after=GEN", ErrBadRequest))
			return
		}
		ctx, cancel := s.untilServerCloses(r)
		defer cancel()
		resp, err := s.WaitAssignments(ctx, node, after, AssignmentsWait)
		if err != nil && ctx.Err() != nil && r.Context().Err() == nil {
			err = fmt.Errorf("assignments: %w: this scheduler is shutting down", ErrNotLeader)
		}
		reply(w, resp, err)
	})
}

// untilServerCloses is r's context, also ended when the http.Server serving r begins to shut
// down: a long-poll (or a call forwarded to the leader) must not hold the server's Shutdown,
// which waits for the calls in progress.
func (s *Scheduler) untilServerCloses(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return ctx, cancel
	}
	ch := make(chan struct{})
	if got, loaded := s.closing.LoadOrStore(srv, ch); loaded {
		ch = got.(chan struct{})
	} else {
		srv.RegisterOnShutdown(func() { close(ch) })
	}
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
