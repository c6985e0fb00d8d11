package sched

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestScheduler is a scheduler driven by hand: timeouts and placement run only at Tick, on
// the fake clock. With its background loop, a Register, Submit or Heartbeat would wake a pass
// that runs whenever the loop's goroutine gets a CPU, so a test would see placements it did
// not ask for (a task placed on a node the moment it registers, before the test's Tick).
func newTestScheduler(t *testing.T, st Store, clk *clock) *Scheduler {
	t.Helper()
	s, err := NewScheduler(SchedulerConfig{Store: st, Now: clk.Now, NodeTimeout: 10 * time.Second, LocalityWait: -1, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func node(name string, cores float64) NodeRecord {
	return NodeRecord{Name: name, Address: "127.0.0.1:1", Total: Resources{Cores: cores, MemBytes: 8 << 30}}
}

func TestSubmitValidation(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	if _, err := s.Submit(context.Background(), TaskSpec{Command: []string{"true"}}); !errors.Is(err, ErrNeverFits) || !strings.Contains(err.Error(), "no nodes") {
		t.Fatalf("no nodes: %v", err)
	}
	if _, err := s.Register(context.Background(), node("a", 4)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		spec TaskSpec
		want error
		msg  string
	}{
		{"ok", TaskSpec{Command: []string{"true"}}, nil, ""},
		{"no command", TaskSpec{}, ErrBadRequest, "no command"},
		{"too many cores", TaskSpec{Command: []string{"x"}, Cores: 64}, ErrNeverFits, "64 cores"},
		{"gpus", TaskSpec{Command: []string{"x"}, GPUs: 1}, ErrNeverFits, "1 GPUs"},
		{"bad env", TaskSpec{Command: []string{"x"}, Env: []string{"NOEQ"}}, ErrBadRequest, "KEY=VALUE"},
		{"negative", TaskSpec{Command: []string{"x"}, Cores: -1}, ErrBadRequest, "negative"},
		{"input outside", TaskSpec{Command: []string{"x"}, Inputs: []string{"../etc"}}, ErrBadRequest, "outside"},
		{"unknown node", TaskSpec{Command: []string{"x"}, Node: "zz"}, ErrNeverFits, "not registered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Submit(context.Background(), tc.spec)
			if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg)) {
				t.Fatalf("err %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestTaskIDsSortBySubmitTime(t *testing.T) {
	now := time.Unix(5000, 0)
	a, b := NewTaskID(now), NewTaskID(now)
	c := NewTaskID(now.Add(time.Millisecond))
	if !(a < b && b < c) {
		t.Fatalf("%s %s %s", a, b, c)
	}
}

func TestQueuePersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Unix(1000, 0)}
	st, err := OpenBadgerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Manual: the four tasks are placed together at Tick; the loop could place the first before
	// the priority ones are submitted.
	s, err := NewScheduler(SchedulerConfig{Store: st, Now: clk.Now, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(context.Background(), node("a", 2)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 4 {
		tk, err := s.Submit(context.Background(), TaskSpec{Command: []string{"sleep", "1"}, Cores: 1, Priority: i % 2})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	s.Tick()
	states := func(s *Scheduler) map[State]int {
		m := map[State]int{}
		for _, id := range ids {
			tk, err := s.Task(id)
			if err != nil {
				t.Fatal(err)
			}
			m[tk.State]++
		}
		return m
	}
	if m := states(s); m[StateAssigned] != 2 || m[StateQueued] != 2 {
		t.Fatalf("before restart %v", m)
	}
	// Priority first: the two priority-1 tasks were placed.
	for _, id := range []string{ids[1], ids[3]} {
		if tk, _ := s.Task(id); tk.State != StateAssigned {
			t.Fatalf("priority task %s is %s", id, tk.State)
		}
	}
	s.Close()
	st.Close()

	st2, err := OpenBadgerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	s2, err := NewScheduler(SchedulerConfig{Store: st2, Now: clk.Now, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if m := states(s2); m[StateAssigned] != 2 || m[StateQueued] != 2 {
		t.Fatalf("after restart %v", m)
	}
	// The restored node is full (its assignments count): nothing more is placed.
	s2.Tick()
	if m := states(s2); m[StateQueued] != 2 {
		t.Fatalf("after restart and a pass %v", m)
	}
	// The node reports one of them finished: a queued one takes its place.
	code := 0
	resp, err := s2.Heartbeat(context.Background(), HeartbeatRequest{Node: "a", Tasks: []TaskReport{
		{ID: ids[1], State: StateCompleted, ExitCode: &code}, {ID: ids[3], State: StateRunning}}})
	if err != nil || len(resp.Ack) != 1 {
		t.Fatalf("heartbeat %+v %v", resp, err)
	}
	s2.Tick()
	if m := states(s2); m[StateCompleted] != 1 || m[StateRunning] != 1 || m[StateAssigned] != 1 || m[StateQueued] != 1 {
		t.Fatalf("after a completion %v", m)
	}
	// A new ID after the restart still sorts after the old ones.
	if id := NewTaskID(clk.Now()); id <= ids[3] {
		t.Fatalf("id %s after restart sorts before %s", id, ids[3])
	}
}

func TestHeartbeatInventoryDeltas(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	ctx := context.Background()
	s.Register(ctx, node("a", 4))
	hb := func(base uint64, d cache.InventoryDelta) HeartbeatResponse {
		t.Helper()
		r, err := s.Heartbeat(ctx, HeartbeatRequest{Node: "a", InventoryBase: base, Inventory: &d})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := hb(0, cache.InventoryDelta{Gen: 5, Full: true, Items: []cache.InventoryItem{{Path: "d/x", CachedBytes: 100, Size: 100}, {Path: "d/y", CachedBytes: 50, Size: 80}}})
	if r.InventorySince != 5 {
		t.Fatalf("since %d", r.InventorySince)
	}
	cached := func(p string) int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cl.CachedBytes(s.cl.Node("a"), p)
	}
	if cached("d") != 150 {
		t.Fatalf("dir bytes %d", cached("d"))
	}
	r = hb(5, cache.InventoryDelta{Gen: 7, Items: []cache.InventoryItem{{Path: "d/y", CachedBytes: 80, Size: 80}}, Removed: []string{"d/x"}})
	if r.InventorySince != 7 || cached("d") != 80 || cached("d/x") != 0 {
		t.Fatalf("after delta: since %d, d %d", r.InventorySince, cached("d"))
	}
	// A delta from a generation the scheduler does not hold is ignored, and a full one asked for.
	r = hb(3, cache.InventoryDelta{Gen: 9, Items: []cache.InventoryItem{{Path: "d/z", CachedBytes: 1}}})
	if r.InventorySince != 0 || cached("d/z") != 0 {
		t.Fatalf("out of step: since %d", r.InventorySince)
	}
	// An unknown node is told to register.
	if r, _ := s.Heartbeat(ctx, HeartbeatRequest{Node: "ghost"}); !r.Reregister {
		t.Fatal("unknown node not told to register")
	}
}

func TestNodeTimeoutRequeues(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	ctx := context.Background()
	s.Register(ctx, node("a", 4))
	tk, err := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 4, Node: "", Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	later, err := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	s.Tick()
	got, _ := s.Task(tk.ID)
	if got.State != StateAssigned || got.NodeName != "a" {
		t.Fatalf("%+v", got)
	}
	s.Register(ctx, node("b", 4))
	clk.Add(8 * time.Second)
	s.Heartbeat(ctx, HeartbeatRequest{Node: "b"})
	clk.Add(3 * time.Second) // a silent for 11 s, b for 3 s
	s.Tick()
	got, _ = s.Task(tk.ID)
	if got.State != StateAssigned || got.NodeName != "b" || got.Attempts != 2 || !strings.Contains(got.Error, "went silent") {
		t.Fatalf("after a's timeout: %+v", got)
	}
	// The requeued task keeps its place in the queue, ahead of the one submitted after it.
	if got, _ := s.Task(later.ID); got.State != StateQueued {
		t.Fatalf("the later task went ahead of the requeued one: %+v", got)
	}
	nodes := s.Nodes()
	if nodes[0].Name != "a" || nodes[0].Up || !nodes[1].Up {
		t.Fatalf("nodes %+v", nodes)
	}
	// b goes silent too: no retries left, the task is lost for good.
	clk.Add(11 * time.Second)
	s.Tick()
	if got, _ = s.Task(tk.ID); got.State != StateLost {
		t.Fatalf("out of retries: %+v", got)
	}
}

func TestKill(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	ctx := context.Background()
	s.Register(ctx, node("a", 1))
	run, _ := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 1})
	q, _ := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 1})
	s.Tick()
	if k, err := s.Kill(ctx, q.ID); err != nil || k.State != StateKilled {
		t.Fatalf("kill queued: %+v %v", k, err)
	}
	if _, err := s.Kill(ctx, q.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("second kill: %v", err)
	}
	s.Kill(ctx, run.ID)
	r, _ := s.Heartbeat(ctx, HeartbeatRequest{Node: "a", Tasks: []TaskReport{{ID: run.ID, State: StateRunning}}})
	if len(r.Kill) != 1 || r.Kill[0] != run.ID {
		t.Fatalf("kill not sent: %+v", r)
	}
	r, _ = s.Heartbeat(ctx, HeartbeatRequest{Node: "a", Tasks: []TaskReport{{ID: run.ID, State: StateFailed, Signal: "SIGKILL"}}})
	if got, _ := s.Task(run.ID); got.State != StateKilled || len(r.Ack) != 1 {
		t.Fatalf("after kill report: %+v", got)
	}
}

func TestHTTPAuthAndErrors(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("sekrit", mux))
	defer srv.Close()
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		msg                             string
	}{
		{"no token", "GET", "/v1/nodes", "", "", 401, "token"},
		{"wrong token", "GET", "/v1/nodes", "sekrit2", "", 401, "token"},
		{"register without token", "POST", "/v1/cluster/register", "", `{"name":"x"}`, 401, "token"},
		{"ok", "GET", "/v1/nodes", "sekrit", "", 200, ""},
		{"register", "POST", "/v1/cluster/register", "sekrit", `{"name":"a","total":{"cores":2,"mem_bytes":4000000000}}`, 200, "heartbeat_ms"},
		{"malformed", "POST", "/v1/tasks", "sekrit", `{"command":"not a list"}`, 400, "malformed"},
		{"unknown field", "POST", "/v1/tasks", "sekrit", `{"comand":["x"]}`, 400, "unknown field"},
		{"never fits", "POST", "/v1/tasks", "sekrit", `{"command":["x"],"cores":99}`, 422, "99 cores"},
		{"submit", "POST", "/v1/tasks", "sekrit", `{"command":["x"]}`, 201, `"state":"queued"`},
		{"missing task", "GET", "/v1/tasks/t0", "sekrit", "", 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := call(tc.method, tc.path, tc.token, tc.body)
			if st != tc.status || !strings.Contains(body, tc.msg) {
				t.Fatalf("%d %s, want %d with %q", st, body, tc.status, tc.msg)
			}
		})
	}
}

// ---- agent, end to end over HTTP with a fake runner and a fake cache ----

type httpCaller struct {
	url, token string
}

func (h httpCaller) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, h.url+path, body)
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// fakeRun is a task of a fake runner: it ends when end (or Kill) is called, and outlives any
// agent waiting for it, as a real task outlives its daemon.
type fakeRun struct {
	done   chan struct{}
	once   sync.Once
	res    RunResult // set before done is closed
	killed bool      // set before done is closed
}

func newFakeRun() *fakeRun { return &fakeRun{done: make(chan struct{})} }

func (r *fakeRun) end(res RunResult, killed bool) {
	r.once.Do(func() { r.res, r.killed = res, killed; close(r.done) })
}

func (r *fakeRun) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *fakeRun) Wait(ctx context.Context) (RunResult, error) {
	select {
	case <-r.done:
		return r.res, nil
	case <-ctx.Done():
		return RunResult{}, ctx.Err()
	}
}

func (r *fakeRun) Kill(ctx context.Context) error {
	r.end(RunResult{ExitCode: -1, Signal: "SIGKILL", Finished: time.Now()}, true)
	return nil
}

type fakeRunner struct {
	mu    sync.Mutex
	specs []RunSpec
	runs  map[string]*fakeRun
}

func (f *fakeRunner) Start(ctx context.Context, spec RunSpec) (Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runs == nil {
		f.runs = map[string]*fakeRun{}
	}
	if f.runs[spec.ID] != nil {
		return nil, fmt.Errorf("start %s: %w", spec.ID, ErrTaskExists)
	}
	f.specs = append(f.specs, spec)
	r := newFakeRun()
	f.runs[spec.ID] = r
	if len(spec.Command) > 0 && spec.Command[0] == "exit" {
		code := 0
		fmt.Sscan(spec.Command[1], &code)
		r.end(RunResult{ExitCode: code, Started: time.Now(), Finished: time.Now()}, false)
	}
	return r, nil
}

type fakeCache struct {
	mu     sync.Mutex
	items  map[string]int64
	gen    uint64
	warmed []string
	pins   map[string]int
}

func (c *fakeCache) Warm(ctx context.Context, name string, _ func(cache.Progress)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warmed = append(c.warmed, name)
	c.items[name] = 1000
	c.gen++
	return nil
}
func (c *fakeCache) Pin(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pins[name]++
	return nil
}
func (c *fakeCache) Unpin(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pins[name]--
	return nil
}
func (c *fakeCache) InventoryDelta(ctx context.Context, since uint64, max int) (cache.InventoryDelta, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := cache.InventoryDelta{Gen: c.gen, Full: true}
	for p, b := range c.items {
		d.Items = append(d.Items, cache.InventoryItem{Path: p, CachedBytes: b, Size: 1000})
	}
	return d, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentsRunTasksWhereTheDataIs(t *testing.T) {
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Heartbeat: 50 * time.Millisecond})
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
	runners := map[string]*fakeRunner{}
	caches := map[string]*fakeCache{}
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c"} {
		runners[name] = &fakeRunner{}
		caches[name] = &fakeCache{items: map[string]int64{}, pins: map[string]int{}}
		if name == "b" {
			caches[name].items["data/ds1"] = 1000
			caches[name].gen = 1
		}
		ag, err := NewAgent(AgentConfig{Node: NodeRecord{Name: name, Total: Resources{Cores: 4, MemBytes: 4 << 30}, GPUIDs: []string{"0", "1"}},
			Scheduler: httpCaller{srv.URL, "tok"}, Cache: caches[name], Runner: runners[name], ShareRoot: "/share"})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); ag.Run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	waitFor(t, "three nodes with inventories", func() bool {
		n := s.Nodes()
		return len(n) == 3 && n[1].CachedFiles == 1
	})
	var ids []string
	for range 2 {
		tk, err := s.Submit(ctx, TaskSpec{Command: []string{"exit", "3"}, Cores: 1, GPUs: 1, Inputs: []string{"data/ds1"}, Uid: 1000, Gid: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	for _, id := range ids {
		waitFor(t, "task "+id+" to end", func() bool { tk, _ := s.Task(id); return tk.State.Terminal() })
		tk, _ := s.Task(id)
		if tk.NodeName != "b" || tk.State != StateFailed || tk.ExitCode == nil || *tk.ExitCode != 3 {
			t.Fatalf("task %+v", tk)
		}
		if tk.Placement == nil || len(tk.Placement.Candidates) == 0 || tk.Placement.Candidates[0].WarmBytes != 1000 {
			t.Fatalf("placement %+v", tk.Placement)
		}
	}
	rb := runners["b"]
	rb.mu.Lock()
	spec := rb.specs[0]
	rb.mu.Unlock()
	if spec.Uid != 1000 || len(spec.GPUs) != 1 || spec.LogDir != "/share/logs/"+spec.ID || !strings.Contains(strings.Join(spec.Env, " "), "EDDY_TASK_ID="+spec.ID) {
		t.Fatalf("spec %+v", spec)
	}
	cb := caches["b"]
	waitFor(t, "inputs unpinned", func() bool {
		cb.mu.Lock()
		defer cb.mu.Unlock()
		return cb.pins["data/ds1"] == 0 && len(cb.warmed) == 2
	})

	// A task with a cold input on c only (target node), killed while running.
	tk, err := s.Submit(ctx, TaskSpec{Command: []string{"sleep"}, Cores: 1, Node: "c", Inputs: []string{"data/ds9"}, Uid: 1000})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "running on c", func() bool { t2, _ := s.Task(tk.ID); return t2.State == StateRunning })
	cc := caches["c"]
	cc.mu.Lock()
	if len(cc.warmed) != 1 || cc.warmed[0] != "data/ds9" || cc.pins["data/ds9"] != 1 {
		t.Fatalf("prefetch on assign: warmed %v pins %v", cc.warmed, cc.pins)
	}
	cc.mu.Unlock()
	if _, err := s.Kill(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "killed", func() bool { t2, _ := s.Task(tk.ID); return t2.State == StateKilled })
}

// The target node survives the store's JSON (it once collided with the placed node's name).
func TestTaskJSONKeepsTargetNode(t *testing.T) {
	st := NewMemStore()
	in := &Task{ID: "t1", TaskSpec: TaskSpec{Node: "want"}, NodeName: "placed"}
	st.PutTask(in)
	out, _ := st.Tasks()
	if out[0].Node != "want" || out[0].NodeName != "placed" {
		t.Fatalf("%+v", out[0])
	}
}

// The scheduler sizes inputs at submit (a directory's files summed), refuses a missing input,
// and a placed task promises its inputs to its node until it ends, so the next task of the same
// data follows it before any inventory arrives.
func TestInputsSizedAndPromised(t *testing.T) {
	share := t.TempDir()
	if err := os.MkdirAll(filepath.Join(share, "data/ds"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{3 << 20, 1 << 20} {
		if err := os.WriteFile(filepath.Join(share, "data/ds", fmt.Sprint(i)), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{t: time.Unix(1000, 0)}
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Now: clk.Now, NodeTimeout: 10 * time.Second, LocalityWait: time.Minute, ShareRoot: share, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d"} {
		s.Register(ctx, node(n, 2))
	}
	if _, err := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Inputs: []string{"data/nope"}}); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing input: %v", err)
	}
	first, err := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 2, Inputs: []string{"data/ds"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.InputBytes) != 1 || first.InputBytes[0] != 4<<20 {
		t.Fatalf("input bytes %v, want [%d]", first.InputBytes, 4<<20)
	}
	s.Tick()
	got, _ := s.Task(first.ID)
	if got.State != StateAssigned {
		t.Fatalf("first not placed: %+v", got)
	}
	home := got.NodeName
	// Its node is full; the next task of the same data waits for it instead of going cold.
	second, _ := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 1, Inputs: []string{"data/ds"}})
	s.Tick()
	if got, _ := s.Task(second.ID); got.State != StateQueued {
		t.Fatalf("second task went to %s (%s), want it to wait for %s", got.NodeName, got.Error, home)
	}
	// The first ends: its node is free and the second goes there.
	s.Heartbeat(ctx, HeartbeatRequest{Node: home, Tasks: []TaskReport{{ID: first.ID, State: StateCompleted, ExitCode: new(int)}}})
	s.Tick()
	if got, _ := s.Task(second.ID); got.State != StateAssigned || got.NodeName != home {
		t.Fatalf("second: %+v, want assigned to %s", got, home)
	}
	s.mu.Lock()
	n := s.cl.Promised(s.cl.Node(home), "data/ds")
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("promises on %s: %d, want 1 (the second task's)", home, n)
	}
}

// Submit resolves a container environment to its newest version on the share, or rejects it.
func TestSubmitResolvesEnvironment(t *testing.T) {
	share := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: 2})
	tw.Write([]byte("{}"))
	tw.Close()
	for _, ts := range []int64{100, 200} {
		if _, err := envs.ImportReader(context.Background(), share, "torch", bytes.NewReader(buf.Bytes()), time.Unix(ts, 0)); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{t: time.Unix(1000, 0)}
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Now: clk.Now, LocalityWait: -1, ShareRoot: share, Manual: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := s.Register(ctx, node(n, 4)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Heartbeat(ctx, HeartbeatRequest{Node: "b", EnvsImported: []string{"containers/torch/torch_200.tar"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(ctx, HeartbeatRequest{Node: "a", EnvsImported: []string{}}); err != nil {
		t.Fatal(err)
	}
	tk, err := s.Submit(ctx, TaskSpec{Command: []string{"true"}, ContainerEnv: "torch"})
	if err != nil {
		t.Fatal(err)
	}
	if tk.EnvFile != "containers/torch/torch_200.tar" || tk.EnvSize != int64(buf.Len()) {
		t.Fatalf("resolved %q (%d bytes), want the newest version", tk.EnvFile, tk.EnvSize)
	}
	// No command: the image's own.
	if _, err := s.Submit(ctx, TaskSpec{ContainerEnv: "torch"}); err != nil {
		t.Fatalf("container task without a command: %v", err)
	}
	for _, tc := range []struct {
		name string
		spec TaskSpec
		msg  string
	}{
		{"unknown", TaskSpec{Command: []string{"x"}, ContainerEnv: "nosuchenv"}, `"nosuchenv" not found on the share`},
		{"invalid", TaskSpec{Command: []string{"x"}, ContainerEnv: "../etc"}, "not a valid name"},
		{"env and image", TaskSpec{Command: []string{"x"}, ContainerEnv: "torch", Image: "busybox"}, "not both"},
	} {
		if _, err := s.Submit(ctx, tc.spec); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want a bad request saying %q", tc.name, err, tc.msg)
		}
	}

	// Node b reported the version imported (before the submit): the task went there, saying why.
	s.Tick()
	got, _ := s.Task(tk.ID)
	if got.State != StateAssigned || got.NodeName != "b" || got.Placement == nil || !strings.Contains(got.Placement.Reason, "already imported there") {
		t.Fatalf("placed %+v (placement %+v)", got, got.Placement)
	}
	for _, n := range s.Nodes() {
		if want := n.Name == "b"; (len(n.EnvsImported) == 1) != want {
			t.Errorf("node %s reports imported %v", n.Name, n.EnvsImported)
		}
	}
	// A heartbeat without the list (null) leaves it; an empty list clears it.
	s.Heartbeat(ctx, HeartbeatRequest{Node: "b"})
	if n := s.Nodes(); len(n[1].EnvsImported) != 1 {
		t.Fatalf("a heartbeat without the list cleared it: %+v", n[1])
	}
	s.Heartbeat(ctx, HeartbeatRequest{Node: "b", EnvsImported: []string{}})
	if n := s.Nodes(); len(n[1].EnvsImported) != 0 {
		t.Fatalf("an empty list did not clear it: %+v", n[1])
	}

	// Without a view of the share the node resolves the version itself.
	s2, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.Register(ctx, node("a", 4))
	if tk, err := s2.Submit(ctx, TaskSpec{Command: []string{"x"}, ContainerEnv: "nosuchenv"}); err != nil || tk.EnvFile != "" {
		t.Fatalf("without a share root: %+v %v", tk, err)
	}
}

type envRun struct {
	*fakeRun
	es *EnvStart
}

func (r envRun) EnvStart() *EnvStart { return r.es }

type envRunner struct{ fakeRunner }

func (f *envRunner) Start(ctx context.Context, spec RunSpec) (Run, error) {
	r, err := f.fakeRunner.Start(ctx, spec)
	return envRun{r.(*fakeRun), &EnvStart{File: spec.EnvFile, Imported: true, ImageS: 1.5}}, err
}

type fakeEnvs []string

func (f fakeEnvs) ImportedEnvs(context.Context) ([]string, error) { return f, nil }

// The agent reports the environments imported on its node, and how a container task's
// environment was made ready. (Tasks an earlier agent left running: reconcile_test.go.)
func TestAgentReportsEnvironments(t *testing.T) {
	st := NewMemStore()
	st.PutNode(NodeRecord{Name: "a", Total: Resources{Cores: 4, MemBytes: 4 << 30}})
	s, err := NewScheduler(SchedulerConfig{Store: st, Heartbeat: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("tok", mux))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	runner := &envRunner{}
	ag, err := NewAgent(AgentConfig{Node: NodeRecord{Name: "a", Total: Resources{Cores: 4, MemBytes: 4 << 30}, GPUIDs: []string{}},
		Scheduler: httpCaller{srv.URL, "tok"}, Runner: runner, ShareRoot: "/share",
		Envs: fakeEnvs{"containers/x/x_1.tar"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); ag.Run(ctx) }()
	defer func() {
		cancel()
		runner.mu.Lock()
		for _, r := range runner.runs {
			r.Kill(ctx)
		}
		runner.mu.Unlock()
		<-done
	}()
	waitFor(t, "imported environments in the node's status", func() bool {
		n := s.Nodes()
		return len(n) == 1 && n[0].Up && len(n[0].EnvsImported) == 1
	})

	tk, err := s.Submit(ctx, TaskSpec{Command: []string{"exit", "0"}, ContainerEnv: "x", Uid: 1000})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the container task to end", func() bool { t2, _ := s.Task(tk.ID); return t2.State.Terminal() })
	if t2, _ := s.Task(tk.ID); t2.State != StateCompleted || t2.EnvStart == nil || !t2.EnvStart.Imported || t2.EnvStart.ImageS != 1.5 {
		t.Fatalf("container task %+v env start %+v", t2, t2.EnvStart)
	}
}
