package sched

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/cache"
)

// ---- the scheduler's reconciliation rules (see reconcileLocked), driven by hand ----

func exitCode(n int) *int { return &n }

type reconcileEnv struct {
	t   *testing.T
	s   *Scheduler
	clk *clock
	id  string
}

// newReconcileEnv registers nodes a and b and places one task on a (running unless assigned).
func newReconcileEnv(t *testing.T, retries int, running bool) *reconcileEnv {
	t.Helper()
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk) // the requeued states looked at stay put until Tick
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := s.Register(ctx, node(n, 4)); err != nil {
			t.Fatal(err)
		}
	}
	tk, err := s.Submit(ctx, TaskSpec{Command: []string{"x"}, Cores: 1, Node: "a", Retries: retries})
	if err != nil {
		t.Fatal(err)
	}
	s.Tick()
	e := &reconcileEnv{t: t, s: s, clk: clk, id: tk.ID}
	if running {
		e.hb("a", TaskReport{ID: tk.ID, State: StateRunning, Started: clk.Now()})
	}
	e.want(StateRunning, 1)
	if !running {
		e.want(StateAssigned, 1)
	}
	return e
}

func (e *reconcileEnv) hb(node string, reports ...TaskReport) HeartbeatResponse {
	e.t.Helper()
	r, err := e.s.Heartbeat(context.Background(), HeartbeatRequest{Node: node, Tasks: reports})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *reconcileEnv) task() *Task {
	e.t.Helper()
	tk, err := e.s.Task(e.id)
	if err != nil {
		e.t.Fatal(err)
	}
	return tk
}

// want checks the task's state and attempts (running stands for assigned-or-running on a).
func (e *reconcileEnv) want(st State, attempts int) *Task {
	e.t.Helper()
	tk := e.task()
	ok := tk.State == st || st == StateRunning && tk.State == StateAssigned
	if !ok || tk.Attempts != attempts {
		e.t.Fatalf("task is %s after %d attempts (error %q), want %s after %d", tk.State, tk.Attempts, tk.Error, st, attempts)
	}
	return tk
}

// timeOut makes node a silent past the timeout while b keeps heartbeating.
func (e *reconcileEnv) timeOut() {
	e.clk.Add(6 * time.Second)
	e.hb("b")
	e.clk.Add(6 * time.Second)
	e.hb("b")
	e.s.Tick()
}

func (e *reconcileEnv) free(node string) Resources {
	for _, n := range e.s.Nodes() {
		if n.Name == node {
			return n.Free
		}
	}
	e.t.Fatalf("no node %s", node)
	return Resources{}
}

func (e *reconcileEnv) ended7() TaskReport {
	return TaskReport{ID: e.id, State: StateFailed, ExitCode: exitCode(7), Finished: e.clk.Now()}
}

func has(ids []string, id string) bool { return slices.Contains(ids, id) }

// The daemon of node a restarts (SIGTERM or kill -9) while its task runs: the new agent reports
// the task running, then its end; the task is never lost, requeued or sent again.
func TestReconcileRestartedNodeKeepsItsRunningTask(t *testing.T) {
	e := newReconcileEnv(t, 1, true)
	if _, err := e.s.Register(context.Background(), node("a", 4)); err != nil {
		t.Fatal(err)
	}
	r := e.hb("a", TaskReport{ID: e.id, State: StateRunning})
	if len(r.Kill)+len(r.Assign)+len(r.Ack) != 0 {
		t.Fatalf("first heartbeat after the restart: %+v", r)
	}
	e.clk.Add(5 * time.Second)
	e.s.Tick()
	e.want(StateRunning, 1)
	if f := e.free("a"); f.Cores != 3 {
		t.Fatalf("a's free cores %v with the task running", f.Cores)
	}
	r = e.hb("a", e.ended7())
	tk := e.want(StateFailed, 1)
	if !has(r.Ack, e.id) || tk.ExitCode == nil || *tk.ExitCode != 7 || e.free("a").Cores != 4 {
		t.Fatalf("end after the restart: %+v, task %+v", r, tk)
	}
	e.s.Tick()
	e.want(StateFailed, 1)
}

// The task ended while a's daemon was down: the first heartbeat of the new agent carries the
// end, recorded as it happened.
func TestReconcileEndedWhileNodeWasDown(t *testing.T) {
	e := newReconcileEnv(t, 1, true)
	e.s.Register(context.Background(), node("a", 4))
	r := e.hb("a", e.ended7())
	if tk := e.want(StateFailed, 1); !has(r.Ack, e.id) || *tk.ExitCode != 7 {
		t.Fatalf("%+v %+v", r, tk)
	}
}

// A task only assigned (inputs warming, not started) when a's daemon went: the new agent does
// not have it, so it is sent again, and its start there is its first.
func TestReconcileAssignedTaskIsSentAgain(t *testing.T) {
	e := newReconcileEnv(t, 0, false)
	e.s.Register(context.Background(), node("a", 4))
	r := e.hb("a")
	if len(r.Assign) != 1 || r.Assign[0].ID != e.id {
		t.Fatalf("assigned task not sent again: %+v", r)
	}
	e.want(StateAssigned, 1)
	e.hb("a", TaskReport{ID: e.id, State: StateRunning})
	e.want(StateRunning, 1)
}

// A running task the restarted node does not have (its runtime lost it) is lost: requeued while
// it has retries.
func TestReconcileUnreportedRunningTaskIsLost(t *testing.T) {
	e := newReconcileEnv(t, 1, true)
	e.s.Register(context.Background(), node("a", 4))
	e.hb("a")
	if tk := e.want(StateQueued, 1); !strings.Contains(tk.Error, "no longer reports it") {
		t.Fatalf("%+v", tk)
	}
	e.s.Tick()
	e.want(StateAssigned, 2)
}

// The node saw the task run but not how it ended (its reaper died): lost, requeued while it has
// retries.
func TestReconcileUnobservedEndIsLost(t *testing.T) {
	for _, retries := range []int{0, 1} {
		t.Run(fmt.Sprint("retries", retries), func(t *testing.T) {
			e := newReconcileEnv(t, retries, true)
			r := e.hb("a", TaskReport{ID: e.id, State: StateLost, Error: "exit status unknown"})
			want := StateLost
			if retries > 0 {
				want = StateQueued
			}
			if tk := e.want(want, 1); !has(r.Ack, e.id) || !strings.Contains(tk.Error, "lost track of it: exit status unknown") {
				t.Fatalf("%+v %+v", r, tk)
			}
		})
	}
}

// a stayed silent past the timeout (a slow restart): its task was declared lost (requeued, but
// not placed again since a is down, or out of retries). No other attempt started, so a's later
// report is the truth: the task runs on, or ended as a says.
func TestReconcileLostTaskReportedByItsNode(t *testing.T) {
	cases := []struct {
		name    string
		retries int
		lostAs  State
		report  State
	}{
		{"out of retries, still running", 0, StateLost, StateRunning},
		{"out of retries, ended", 0, StateLost, StateFailed},
		{"requeued, still running", 1, StateQueued, StateRunning},
		{"requeued, ended", 1, StateQueued, StateFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newReconcileEnv(t, tc.retries, true)
			e.timeOut()
			e.want(tc.lostAs, 1)
			e.s.Register(context.Background(), node("a", 4))
			if tc.report == StateRunning {
				r := e.hb("a", TaskReport{ID: e.id, State: StateRunning})
				if len(r.Kill)+len(r.Assign) != 0 {
					t.Fatalf("%+v", r)
				}
				if tk := e.want(StateRunning, 1); tk.State != StateRunning || tk.Error != "" || e.free("a").Cores != 3 {
					t.Fatalf("taken back: %+v, a free %+v", tk, e.free("a"))
				}
				e.s.Tick() // not placed a second time
				e.want(StateRunning, 1)
			}
			r := e.hb("a", e.ended7())
			if tk := e.want(StateFailed, 1); !has(r.Ack, e.id) || *tk.ExitCode != 7 || e.free("a").Cores != 4 {
				t.Fatalf("end: %+v %+v, a free %+v", r, tk, e.free("a"))
			}
			e.s.Tick()
			e.want(StateFailed, 1)
		})
	}
}

// Reports of tasks a no longer holds: an end is acknowledged and dropped, a run is stopped.
func TestReconcileStaleReports(t *testing.T) {
	e := newReconcileEnv(t, 0, true)
	r := e.hb("a", TaskReport{ID: e.id, State: StateRunning}, TaskReport{ID: "t-unknown", State: StateRunning},
		TaskReport{ID: "t-unknown2", State: StateCompleted, ExitCode: exitCode(0)})
	if !has(r.Kill, "t-unknown") || !has(r.Ack, "t-unknown2") || has(r.Kill, "t-unknown2") {
		t.Fatalf("unknown tasks: %+v", r)
	}
	// The task moves to b (as after a's timeout); a's reports of it no longer count.
	e.s.mu.Lock()
	e.s.tasks[e.id].NodeName = "b"
	e.s.mu.Unlock()
	r = e.hb("a", TaskReport{ID: e.id, State: StateRunning})
	if !has(r.Kill, e.id) {
		t.Fatalf("run placed elsewhere not stopped: %+v", r)
	}
	r = e.hb("a", e.ended7())
	if !has(r.Ack, e.id) || e.task().State != StateRunning {
		t.Fatalf("end of a run placed elsewhere: %+v %+v", r, e.task())
	}
	// A killed task reported running (its node was away when the kill was asked) is stopped.
	k := newReconcileEnv(t, 0, true)
	k.s.Kill(context.Background(), k.id)
	k.s.Register(context.Background(), node("a", 4))
	if r := k.hb("a", TaskReport{ID: k.id, State: StateRunning}); !has(r.Kill, k.id) {
		t.Fatalf("kill not sent after the restart: %+v", r)
	}
	r = k.hb("a", TaskReport{ID: k.id, State: StateFailed, Signal: "SIGKILL", ExitCode: exitCode(137)})
	if tk := k.want(StateKilled, 1); !has(r.Ack, k.id) {
		t.Fatalf("%+v %+v", r, tk)
	}
}

// ---- the agent across a restart, over HTTP, with a runner whose tasks outlive agents ----

// recoveringRunner is a fakeRunner that keeps its tasks across agents, as the runtime does.
type recoveringRunner struct {
	*fakeRunner
	gpus      map[string][]string // guarded by fakeRunner.mu
	forgotten []string            // guarded by fakeRunner.mu
	hideOnce  bool                // guarded by fakeRunner.mu; the next Recover lists nothing
}

func newRecoveringRunner() *recoveringRunner {
	return &recoveringRunner{fakeRunner: &fakeRunner{runs: map[string]*fakeRun{}}, gpus: map[string][]string{}}
}

func (r *recoveringRunner) Recover(ctx context.Context) ([]RecoveredRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hideOnce {
		r.hideOnce = false
		return nil, nil
	}
	var out []RecoveredRun
	for id, run := range r.runs {
		out = append(out, RecoveredRun{ID: id, Run: run, Ended: run.ended(), GPUs: r.gpus[id]})
	}
	return out, nil
}

func (r *recoveringRunner) Forget(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.runs, id)
	r.forgotten = append(r.forgotten, id)
	return nil
}

func (r *recoveringRunner) starts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.specs {
		if s.ID == id {
			n++
		}
	}
	return n
}

func (r *recoveringRunner) run(id string) *fakeRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

// blockingCache's Warm waits until its context ends (inputs that take forever to warm).
type blockingCache struct{ *fakeCache }

func (c blockingCache) Warm(ctx context.Context, name string, p func(cache.Progress)) error {
	c.fakeCache.Warm(ctx, name, p)
	<-ctx.Done()
	return ctx.Err()
}

type agentEnv struct {
	t   *testing.T
	s   *Scheduler
	url string
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("tok", mux))
	t.Cleanup(srv.Close)
	return &agentEnv{t: t, s: s, url: srv.URL}
}

// start runs an agent for node "a" until the returned stop is called (a daemon's SIGTERM, or
// its death: either way the agent just goes; its tasks are the runner's).
func (e *agentEnv) start(r Runner, c NodeCache) (stop func()) {
	e.t.Helper()
	ag, err := NewAgent(AgentConfig{Node: NodeRecord{Name: "a", Total: Resources{Cores: 4, MemBytes: 4 << 30}, GPUIDs: []string{"0", "1"}},
		Scheduler: httpCaller{e.url, "tok"}, Cache: c, Runner: r, ShareRoot: "/share", PrefetchWait: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ag.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *agentEnv) task(id string) *Task {
	tk, err := e.s.Task(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return tk
}

func TestAgentRestartRunsTaskOnce(t *testing.T) {
	cases := []struct {
		name string
		// assigned: the first agent only warms the inputs (it never starts the task).
		assigned bool
		// endAway: the task ends while no agent runs.
		endAway bool
		// hide: the new agent's first look at the runner misses the task (Start then finds it).
		hide bool
	}{
		{name: "running across the restart"},
		{name: "ended while away", endAway: true},
		{name: "assigned when the agent stopped", assigned: true},
		{name: "runner refuses a second start", hide: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newAgentEnv(t)
			rr := newRecoveringRunner()
			fc := &fakeCache{items: map[string]int64{}, pins: map[string]int{}}
			var c1 NodeCache = fc
			if tc.assigned {
				c1 = blockingCache{fc}
			}
			stop := e.start(rr, c1)
			waitFor(t, "node a", func() bool { return len(e.s.Nodes()) == 1 && e.s.Nodes()[0].Up })
			spec := TaskSpec{Command: []string{"sleep"}, Cores: 1, Node: "a", Retries: 1, Uid: 1000, GPUs: 1, Inputs: []string{"data/in"}}
			tk, err := e.s.Submit(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			id := tk.ID
			if tc.assigned {
				waitFor(t, "the inputs warming", func() bool { fc.mu.Lock(); defer fc.mu.Unlock(); return len(fc.warmed) == 1 })
			} else {
				waitFor(t, "the task running", func() bool { return e.task(id).State == StateRunning })
			}
			stop()
			if tc.assigned {
				if n := rr.starts(id); n != 0 {
					t.Fatalf("started %d times while warming its inputs", n)
				}
			} else if run := rr.run(id); run == nil || run.ended() {
				t.Fatal("the stopping agent ended its running task")
			}
			rr.mu.Lock()
			rr.gpus[id] = []string{"1"}
			rr.hideOnce = tc.hide
			rr.mu.Unlock()
			if tc.endAway {
				rr.run(id).end(RunResult{ExitCode: 7, Started: time.Now(), Finished: time.Now()}, false)
			}
			e.start(rr, fc)
			if !tc.endAway {
				waitFor(t, "the task running on the new agent", func() bool { return rr.run(id) != nil && e.task(id).State == StateRunning })
				time.Sleep(100 * time.Millisecond) // a few heartbeats: nothing changes
				if got := e.task(id); got.State != StateRunning {
					t.Fatalf("after the restart the task is %s (%s)", got.State, got.Error)
				}
				rr.run(id).end(RunResult{ExitCode: 7, Started: time.Now(), Finished: time.Now()}, false)
			}
			waitFor(t, "the task's end", func() bool { return e.task(id).State.Terminal() })
			got := e.task(id)
			wantAttempts := 1
			if tc.hide {
				wantAttempts = 2 // lost by the blind agent's first heartbeat, placed again, found by Start
			}
			if got.State != StateFailed || got.ExitCode == nil || *got.ExitCode != 7 || got.Attempts != wantAttempts {
				t.Fatalf("task %s exit %v attempts %d (%s)", got.State, got.ExitCode, got.Attempts, got.Error)
			}
			if n := rr.starts(id); n != 1 {
				t.Fatalf("started %d times", n)
			}
			waitFor(t, "the runner told to forget the task", func() bool {
				rr.mu.Lock()
				defer rr.mu.Unlock()
				return slices.Contains(rr.forgotten, id)
			})
		})
	}
}

// A recovered task keeps the GPUs it was given until it ends.
func TestAgentRecoveredTaskHoldsItsGPUs(t *testing.T) {
	rr := newRecoveringRunner()
	run := newFakeRun()
	rr.runs["t1"], rr.gpus["t1"] = run, []string{"1"}
	ag, err := NewAgent(AgentConfig{Node: NodeRecord{Name: "a", GPUIDs: []string{"0", "1"}}, Scheduler: httpCaller{}, Runner: rr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ag.recover(ctx)
	free := func() []string { ag.mu.Lock(); defer ag.mu.Unlock(); return slices.Sorted(slices.Values(ag.freeGPUs)) }
	if f := free(); !slices.Equal(f, []string{"0"}) {
		t.Fatalf("free GPUs with the task running: %v", f)
	}
	run.end(RunResult{ExitCode: 0}, false)
	waitFor(t, "the GPU back", func() bool { return slices.Equal(free(), []string{"0", "1"}) })
	ag.mu.Lock()
	rep := ag.tasks["t1"].report
	ag.mu.Unlock()
	if rep.State != StateCompleted {
		t.Fatalf("report %+v", rep)
	}
	cancel()
	ag.shutdown()
}
