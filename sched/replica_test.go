package sched

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// member is one scheduler of an in-process raft group.
type member struct {
	name  string
	st    *MemStore
	fsm   *FSM
	rep   *Replica
	s     *Scheduler
	trans *raft.InmemTransport
}

// newGroup starts n schedulers replicated over in-memory raft transports and stores.
func newGroup(t testing.TB, n int) []*member { return newGroupOn(t, n, false) }

// newGroupOn is newGroup with, when disk is set, the log and snapshots on disk (raft-boltdb,
// fsynced) and raft's default timeouts, as in the daemon.
func newGroupOn(t testing.TB, n int, disk bool) []*member {
	t.Helper()
	var ms []*member
	var peers []Peer
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(name))
		ms = append(ms, &member{name: name, st: NewMemStore(), trans: trans})
		peers = append(peers, Peer{Name: name, Addr: string(addr)})
	}
	for _, a := range ms {
		for _, b := range ms {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	for _, m := range ms {
		var err error
		if m.fsm, err = NewFSM(m.st); err != nil {
			t.Fatal(err)
		}
		rc := ReplicaConfig{Name: m.name, Peers: peers, Transport: m.trans, HeartbeatTimeout: 250 * time.Millisecond, ElectionTimeout: 250 * time.Millisecond}
		if disk {
			rc.Dir, rc.HeartbeatTimeout, rc.ElectionTimeout = t.TempDir(), 0, 0
		} else {
			logs := raft.NewInmemStore()
			rc.LogStore, rc.StableStore, rc.SnapshotStore = logs, logs, raft.NewInmemSnapshotStore()
		}
		m.rep, err = OpenReplica(rc, m.fsm)
		if err != nil {
			t.Fatal(err)
		}
		m.s, err = NewScheduler(SchedulerConfig{Store: m.st, Replica: m.rep, Manual: true, Heartbeat: 100 * time.Millisecond,
			LocalityWait: -1, NodeTimeout: time.Minute, ApplyTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.s.Close(); m.rep.Close() })
	}
	return ms
}

// leaderOf waits for one of ms to act as the leader.
func leaderOf(t testing.TB, ms []*member) *member {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.s.Leading() {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader within 10 s")
	return nil
}

func fsmJSON(t testing.TB, f *FSM) string {
	t.Helper()
	tasks, nodes := f.state()
	b, err := json.Marshal(struct {
		T []*Task
		N []NodeRecord
	}{tasks, nodes})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitConverged waits until every member has applied the leader's last index, and checks that
// their states are the same.
func waitConverged(t testing.TB, ms []*member) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		want := ms[0].rep.Raft().LastIndex()
		ok := true
		for _, m := range ms {
			ok = ok && m.rep.Raft().AppliedIndex() >= want && m.rep.Raft().LastIndex() == want
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("members did not converge")
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := fsmJSON(t, ms[0].fsm)
	for _, m := range ms[1:] {
		if got := fsmJSON(t, m.fsm); got != first {
			t.Fatalf("state of %s differs from %s's:\n%s\n%s", m.name, ms[0].name, got, first)
		}
	}
}

var nodeRec = NodeRecord{Name: "n1", Address: "n1:1", Total: Resources{Cores: 4, MemBytes: 8 << 30}}

// The leader is cut off after it placed some tasks and while it would place more: what it could
// not commit is never handed out, the new leader keeps the old one's (committed) assignments,
// places the rest once each, and all three members end with the same state.
func TestReplicaLeaderChangeMidPlacement(t *testing.T) {
	ms := newGroup(t, 3)
	ctx := context.Background()
	l := leaderOf(t, ms)
	if _, err := l.s.Register(ctx, nodeRec); err != nil {
		t.Fatal(err)
	}
	if _, err := l.s.Heartbeat(ctx, HeartbeatRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 6 {
		tk, err := l.s.Submit(ctx, TaskSpec{Command: []string{"true"}, Cores: 1, MemBytes: 1 << 20, Priority: i % 2})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	time.Sleep(700 * time.Millisecond) // past the new leader's first heartbeat round
	l.s.Tick()
	resp, err := l.s.Heartbeat(ctx, HeartbeatRequest{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Assign) != 4 {
		t.Fatalf("assigned %d, want 4 (the node's cores)", len(resp.Assign))
	}
	first := map[string]bool{}
	var reports []TaskReport
	for _, a := range resp.Assign {
		first[a.ID] = true
		reports = append(reports, TaskReport{ID: a.ID, State: StateRunning, Started: time.Now()})
	}
	// Cut the leader off; two tasks end meanwhile (reported to the old leader: refused).
	l.trans.DisconnectAll()
	for _, m := range ms {
		if m != l {
			m.trans.Disconnect(l.trans.LocalAddr())
		}
	}
	ended := []TaskReport{{ID: reports[0].ID, State: StateCompleted, ExitCode: new(int), Finished: time.Now()},
		{ID: reports[1].ID, State: StateCompleted, ExitCode: new(int), Finished: time.Now()}}
	hb := HeartbeatRequest{Node: "n1", Tasks: append(append([]TaskReport{}, ended...), reports[2:]...)}
	if _, err := l.s.Heartbeat(ctx, hb); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader's heartbeat: %v, want ErrNotLeader", err)
	}
	l.s.Tick() // would place the queued two: it cannot commit, so it must not hand them out
	if _, err := l.s.Heartbeat(ctx, HeartbeatRequest{Node: "n1", Tasks: reports}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader's heartbeat after Tick: %v", err)
	}
	var rest []*member
	for _, m := range ms {
		if m != l {
			rest = append(rest, m)
		}
	}
	l2 := leaderOf(t, rest)
	if r2, err := l2.s.Heartbeat(ctx, hb); err != nil || len(r2.Assign) != 0 {
		t.Fatalf("new leader's first heartbeat: %v, assign %d (nothing before its heartbeat round)", err, len(r2.Assign))
	}
	deadline := time.Now().Add(5 * time.Second)
	var second []*Task
	for len(second) < 2 && time.Now().Before(deadline) {
		l2.s.Tick()
		r2, err := l2.s.Heartbeat(ctx, HeartbeatRequest{Node: "n1", Tasks: append(append([]TaskReport{}, ended...), reports[2:]...)})
		if err != nil {
			t.Fatal(err)
		}
		second = r2.Assign
		time.Sleep(50 * time.Millisecond)
	}
	if len(second) != 2 {
		t.Fatalf("new leader assigned %d, want the 2 queued", len(second))
	}
	for _, a := range second {
		if first[a.ID] {
			t.Fatalf("task %s assigned by the old leader is assigned again", a.ID)
		}
	}
	for _, id := range ids {
		tk, err := l2.s.Task(id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.Attempts != 1 || tk.NodeName != "n1" {
			t.Fatalf("task %s: attempts %d node %q, want one attempt on n1", id, tk.Attempts, tk.NodeName)
		}
	}
	// Heal: the old leader catches up and every member holds the same state.
	for _, a := range ms {
		for _, b := range ms {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	waitConverged(t, ms)
}

// A command proposed twice (a retried submit) is applied once, and answers the first result.
func TestReplicaDuplicateCommandAppliedOnce(t *testing.T) {
	ms := newGroup(t, 3)
	ctx := context.Background()
	l := leaderOf(t, ms)
	if _, err := l.s.Register(ctx, nodeRec); err != nil {
		t.Fatal(err)
	}
	a, err := l.s.SubmitKey(ctx, TaskSpec{Command: []string{"true"}}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.s.SubmitKey(ctx, TaskSpec{Command: []string{"true"}}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Fatalf("retried submit made a second task: %s, %s", a.ID, b.ID)
	}
	// The same raw command twice through the log.
	tk := &Task{TaskSpec: TaskSpec{Command: []string{"x"}}, ID: "t00000000000000ff", State: StateQueued}
	c := Command{ID: "dup-1", Op: OpSubmit, Task: tk}
	res, err := l.rep.apply([]Command{c, c}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Dup || res[0].Err != "" || !res[1].Dup || res[1].TaskID != tk.ID {
		t.Fatalf("results %+v", res)
	}
	waitConverged(t, ms)
	for _, m := range ms {
		if tasks, _ := m.fsm.state(); len(tasks) != 2 {
			t.Fatalf("%s has %d tasks, want 2", m.name, len(tasks))
		}
		if n := len(m.s.Tasks(0)); n < 1 {
			t.Fatalf("%s has %d tasks, want 2", m.name, n)
		}
	}
}

type bufSink struct{ bytes.Buffer }

func (b *bufSink) ID() string    { return "test" }
func (b *bufSink) Cancel() error { return nil }
func (b *bufSink) Close() error  { return nil }

// Snapshot then Restore gives the same state, deduplication included; and a member added after
// the leader compacted its log gets the state from a snapshot.
func TestReplicaSnapshotRestore(t *testing.T) {
	ms := newGroup(t, 3)
	ctx := context.Background()
	l := leaderOf(t, ms)
	if _, err := l.s.Register(ctx, nodeRec); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := l.s.SubmitKey(ctx, TaskSpec{Command: []string{"true"}, Priority: i}, fmt.Sprint("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := l.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	f2, err := NewFSM(NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if a, b := fsmJSON(t, l.fsm), fsmJSON(t, f2); a != b {
		t.Fatalf("restored state differs:\n%s\n%s", b, a)
	}
	if f2.Applied() != l.fsm.Applied() {
		t.Fatalf("applied %d, want %d", f2.Applied(), l.fsm.Applied())
	}
	// A submit already applied before the snapshot is still a duplicate after the restore.
	tasks, _ := l.fsm.state()
	again := f2.apply(f2.Applied()+1, Command{ID: "submit/k0", Op: OpSubmit, Task: &Task{ID: "t0000000000000abc"}})
	if !again.Dup || again.TaskID != tasks[len(tasks)-1].ID && again.TaskID == "" {
		t.Fatalf("after restore: %+v", again)
	}
	// Through raft: snapshot and compact, then a fourth member joins from the snapshot.
	if err := l.rep.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("s3")
	for _, m := range ms {
		m.trans.Connect(addr, trans)
		trans.Connect(m.trans.LocalAddr(), m.trans)
	}
	st := NewMemStore()
	f4, _ := NewFSM(st)
	logs := raft.NewInmemStore()
	rep4, err := OpenReplica(ReplicaConfig{Name: "s3", Peers: []Peer{{Name: "s0", Addr: "s0"}}, Transport: trans, LogStore: logs,
		StableStore: logs, SnapshotStore: raft.NewInmemSnapshotStore(), HeartbeatTimeout: 250 * time.Millisecond, ElectionTimeout: 250 * time.Millisecond}, f4)
	if err != nil {
		t.Fatal(err)
	}
	defer rep4.Close()
	if err := l.rep.Raft().AddVoter("s3", addr, 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, append(ms, &member{name: "s3", fsm: f4, rep: rep4}))
}

// The badger state of a scheduler from before replication carries over: its first start as a
// group of one puts it in the log, and a member added later gets it.
func TestReplicaCarriesOverUnreplicatedStore(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBadgerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := &Task{TaskSpec: TaskSpec{Command: []string{"true"}, Cores: 1, MemBytes: 1 << 20}, ID: NewTaskID(time.Now()), State: StateQueued}
	if err := st.PutTask(old); err != nil {
		t.Fatal(err)
	}
	if err := st.PutNode(nodeRec); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fsm, err := NewFSM(st)
	if err != nil {
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("a")
	logs := raft.NewInmemStore()
	rep, err := OpenReplica(ReplicaConfig{Name: "a", Transport: trans, LogStore: logs, StableStore: logs, SnapshotStore: raft.NewInmemSnapshotStore(),
		HeartbeatTimeout: 250 * time.Millisecond, ElectionTimeout: 250 * time.Millisecond}, fsm)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	s, err := NewScheduler(SchedulerConfig{Store: st, Replica: rep, Manual: true, Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := &member{name: "a", fsm: fsm, rep: rep, s: s}
	leaderOf(t, []*member{a})
	if tk, err := s.Task(old.ID); err != nil || tk.State != StateQueued {
		t.Fatalf("old task: %v %v", tk, err)
	}
	if n, _ := st.Applied(); n == 0 {
		t.Fatal("the store's state is not in the log")
	}
	addrB, transB := raft.NewInmemTransport("b")
	trans.Connect(addrB, transB)
	transB.Connect(addr, trans)
	fb, _ := NewFSM(NewMemStore())
	logsB := raft.NewInmemStore()
	repB, err := OpenReplica(ReplicaConfig{Name: "b", Peers: []Peer{{Name: "a", Addr: "a"}}, Transport: transB, LogStore: logsB, StableStore: logsB,
		SnapshotStore: raft.NewInmemSnapshotStore(), HeartbeatTimeout: 250 * time.Millisecond, ElectionTimeout: 250 * time.Millisecond}, fb)
	if err != nil {
		t.Fatal(err)
	}
	defer repB.Close()
	if err := rep.Raft().AddVoter("b", addrB, 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, []*member{a, {name: "b", fsm: fb, rep: repB}})
	if _, ok := fb.Task(old.ID); !ok {
		t.Fatal("the added member does not have the old task")
	}
}

// Submits through a group of three with the log on disk (fsynced): one after another
// (serial), and from 16 goroutines at once (concurrent), sharing the commits. Reported:
// sustained submits/s and the p99 latency of one acknowledged submit.
func BenchmarkReplicatedSubmit(b *testing.B) {
	for _, par := range []int{1, 16} {
		name := "serial"
		if par > 1 {
			name = fmt.Sprintf("concurrent-%d", par)
		}
		b.Run(name, func(b *testing.B) { benchSubmits(b, par) })
	}
}

func benchSubmits(b *testing.B, par int) {
	ms := newGroupOn(b, 3, true)
	ctx := context.Background()
	l := leaderOf(b, ms)
	if _, err := l.s.Register(ctx, NodeRecord{Name: "n1", Total: Resources{Cores: 1e6, MemBytes: 1 << 50}}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	b.ResetTimer()
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if _, err := l.s.Submit(ctx, TaskSpec{Command: []string{"true"}, Cores: 1, MemBytes: 1 << 20}); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/el.Seconds(), "submits/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// timedRunner records when each task was started.
type timedRunner struct {
	fakeRunner
	mu      sync.Mutex
	started map[string]time.Time
}

func (r *timedRunner) Start(ctx context.Context, spec RunSpec) (Run, error) {
	r.mu.Lock()
	r.started[spec.ID] = time.Now()
	r.mu.Unlock()
	return r.fakeRunner.Start(ctx, spec)
}

// With a 3 s heartbeat, a submitted task starts on its node well before the next heartbeat:
// the assignment is pushed through the node's long-poll. The figures are submit to the
// runner's Start.
func TestAssignmentPushStartsWithoutHeartbeat(t *testing.T) {
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Heartbeat: 3 * time.Second, LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("tok", mux))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rn := &timedRunner{started: map[string]time.Time{}}
	// Cores for every task: the figure is the push alone, not a wait for an earlier task's end.
	ag, err := NewAgent(AgentConfig{Node: NodeRecord{Name: "a", Total: Resources{Cores: 64, MemBytes: 64 << 30}, GPUIDs: []string{}},
		Scheduler: httpCaller{srv.URL, "tok"}, Runner: rn, ShareRoot: "/share"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ag.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	waitFor(t, "the node up", func() bool { n := s.Nodes(); return len(n) == 1 && n[0].Up })
	time.Sleep(200 * time.Millisecond) // the first long-poll is open
	var lat []time.Duration
	for i := range 20 {
		t0 := time.Now()
		tk, err := s.Submit(ctx, TaskSpec{Command: []string{"exit", "0"}, Cores: 1, Uid: 1000, Gid: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		waitFor(t, "task "+tk.ID+" started", func() bool {
			rn.mu.Lock()
			defer rn.mu.Unlock()
			at = rn.started[tk.ID]
			return !at.IsZero()
		})
		lat = append(lat, at.Sub(t0))
		time.Sleep(time.Duration(i%5) * 37 * time.Millisecond) // submit at various points of the interval
	}
	slices.Sort(lat)
	t.Logf("submit to start, 20 tasks, heartbeat 3 s: p50 %v max %v", lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)-1] > 500*time.Millisecond {
		t.Fatalf("submit to start up to %v: the assignment waited for a heartbeat (%v)", lat[len(lat)-1], lat)
	}
}

// Concurrent submits share log entries (OpBatch): each gets its own task, a submit retried
// with the same idempotency key (in the same entry or not) gets the first one's, and every
// member ends with the same state.
func TestReplicaConcurrentSubmitsBatched(t *testing.T) {
	ms := newGroup(t, 3)
	ctx := context.Background()
	l := leaderOf(t, ms)
	if _, err := l.s.Register(ctx, NodeRecord{Name: "n1", Total: Resources{Cores: 1e6, MemBytes: 1 << 50}}); err != nil {
		t.Fatal(err)
	}
	before := l.rep.Raft().LastIndex()
	const n, keyed = 64, 16 // the first keyed submits go in pairs with one key
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := ""
			if i < keyed {
				key = fmt.Sprintf("k%d", i/2)
			}
			tk, err := l.s.SubmitKey(ctx, TaskSpec{Command: []string{"true"}, Cores: 1, MemBytes: 1 << 20}, key)
			if err != nil {
				errs <- err
				return
			}
			ids[i] = tk.ID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < keyed; i += 2 {
		if ids[i] != ids[i+1] {
			t.Fatalf("submits with key k%d made tasks %s and %s", i/2, ids[i], ids[i+1])
		}
	}
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	if want := n - keyed/2; len(distinct) != want {
		t.Fatalf("%d tasks, want %d", len(distinct), want)
	}
	if got := len(l.s.Tasks(0)); got != n-keyed/2 {
		t.Fatalf("the leader holds %d tasks, want %d", got, n-keyed/2)
	}
	t.Logf("%d submits in %d log entries", n, l.rep.Raft().LastIndex()-before)
	waitConverged(t, ms)
	for _, m := range ms {
		tasks, _ := m.fsm.state()
		if len(tasks) != n-keyed/2 {
			t.Fatalf("member %s holds %d tasks, want %d", m.name, len(tasks), n-keyed/2)
		}
	}
}
