package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// Three schedulers in a raft group and two workers on 127.0.0.3x, one share. The leader is
// killed with SIGKILL during a burst of submits: a new leader is elected within 5 s, every
// acknowledged submit ends once, no task runs twice (each appends its ID to its own file on the
// share); a restart of all three keeps the state; a member is removed and added again.
func TestFailoverSchedulerGroup(t *testing.T) {
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	origin := filepath.Join(base, "fo-origin")
	if err := os.MkdirAll(filepath.Join(origin, "runs"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	os.Chmod(filepath.Join(origin, "runs"), 0o777)
	token := filepath.Join(base, "fo-token")
	os.WriteFile(token, []byte("fo-secret\n"), 0o600)

	const nSched, nWork = 3, 2
	g := newLoopbackGroup(t, "fo", 31, nSched, nWork, token)
	apiAddrs, raftAddrs, join, args := g.api, g.raft, g.join, g.args
	var nodes []*node
	for i := range nSched + nWork {
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("fo-n%d", i)), origin)
		nodes = append(nodes, n) // its cleanup (stop by PID, unmount) is registered by newNodeAt
	}
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nodes[i].start(args(i)...) }()
	}
	wg.Wait()
	ctx := context.Background()
	cl := api.NewTCP(join, api.WithToken("fo-secret"), api.WithTimeout(10*time.Second))
	logs := func() string {
		var b strings.Builder
		for i, n := range nodes[:nSched] {
			fmt.Fprintf(&b, "--- fo%d ---\n%s\n", i, n.tail(40))
		}
		return b.String()
	}
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, logs)
	}
	status := func(i int) (api.RaftStatus, error) {
		var st api.RaftStatus
		c := api.NewTCP(apiAddrs[i], api.WithToken("fo-secret"), api.WithTimeout(5*time.Second))
		err := c.Do(ctx, "GET", api.RaftPath, nil, &st)
		return st, err
	}
	upNodes := func() int {
		var ns []api.NodeStatus
		if err := cl.Do(ctx, "GET", "/v1/nodes", nil, &ns); err != nil {
			return 0
		}
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
		}
		return up
	}
	wait("a healthy group and five nodes up", 60*time.Second, func() bool {
		st, err := status(0)
		return err == nil && st.Healthy && len(st.Members) == nSched && upNodes() == nSched+nWork
	})

	// The burst, and the leader killed in its middle.
	h := newFoHistory()
	const burst, killAt = 150, 50
	killNow := make(chan struct{})
	burstDone := make(chan struct{})
	go func() {
		defer close(burstDone)
		for i := range burst {
			if i == killAt {
				close(killNow)
			}
			spec := api.TaskSpec{Command: []string{"/bin/sh", "-c", `echo "$EDDY_TASK_ID" >> "$EDDY_TASK_ID.run"`},
				Cores: 0.05, MemBytes: 32 << 20, WorkDir: "runs", Priority: i % 3}
			spec.Uid, spec.Gid = 65534, 65534
			var tk api.Task
			err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk)
			if err != nil {
				t.Logf("submit %d: %v", i, err)
			}
			h.submitted(i, tk.ID, err)
		}
	}()
	<-killNow
	st, err := status(0)
	if err != nil || st.Leader == "" {
		t.Fatalf("no leader before the kill: %v %+v", err, st)
	}
	old := st.Leader
	var oi int
	fmt.Sscanf(old, "fo%d", &oi)
	killed := time.Now()
	nodes[oi].kill9()
	var elected time.Duration
	for time.Since(killed) < 10*time.Second && elected == 0 {
		for i := range nSched {
			if i == oi {
				continue
			}
			if st, err := status(i); err == nil && st.Leader != "" && st.Leader != old {
				elected = time.Since(killed)
				t.Logf("new leader %s %v after the kill (term %d)", st.Leader, elected.Round(time.Millisecond), st.Term)
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if elected == 0 || elected > 5*time.Second {
		t.Fatalf("no new leader within 5 s of the kill (%v)\n%s", elected, logs())
	}
	nodes[oi].start(args(oi)...) // back as a follower (its agent recovers its tasks)
	<-burstDone

	allTasks := func() []api.Task {
		var ts []api.Task
		if err := cl.Do(ctx, "GET", "/v1/tasks", nil, &ts); err != nil {
			t.Logf("list tasks: %v", err)
			return nil
		}
		return ts
	}
	ended := func() bool {
		ts := allTasks()
		left := 0
		for _, tk := range ts {
			h.observe(tk)
			if !tk.State.Terminal() {
				left++
			}
		}
		return ts != nil && left == 0
	}
	wait("every task to end", 3*time.Minute, ended)
	runs := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(origin, "runs", "*.run"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		id := strings.TrimSuffix(filepath.Base(f), ".run")
		runs[id] = strings.Count(string(b), "\n")
	}
	t.Logf("history: %s; %d run files", h, len(files))
	if bad := h.check(runs); len(bad) > 0 {
		t.Fatalf("history violations:\n%s", strings.Join(bad, "\n"))
	}
	if len(h.acked) < burst-5 {
		t.Fatalf("only %d of %d submits acknowledged", len(h.acked), burst)
	}

	// Restart all three: the state is intact.
	before := map[string]api.State{}
	for _, tk := range allTasks() {
		before[tk.ID] = tk.State
	}
	for i := range nSched {
		nodes[i].stop()
	}
	for i := range nSched {
		wg.Add(1)
		go func() { defer wg.Done(); nodes[i].start(args(i)...) }()
	}
	wg.Wait()
	wait("a leader after the restart", 30*time.Second, func() bool { st, err := status(1); return err == nil && st.Healthy })
	after := map[string]api.State{}
	for _, tk := range allTasks() {
		after[tk.ID] = tk.State
	}
	if len(after) != len(before) {
		t.Fatalf("after the restart %d tasks, before %d", len(after), len(before))
	}
	for id, s := range before {
		if after[id] != s {
			t.Fatalf("task %s: %s before the restart, %s after", id, s, after[id])
		}
	}

	// Remove a follower and add it back, through the CLI of a worker.
	st, _ = status(0)
	follower := -1
	for i := range nSched {
		if fmt.Sprintf("fo%d", i) != st.Leader {
			follower = i
			break
		}
	}
	name := fmt.Sprintf("fo%d", follower)
	cli := func(args ...string) api.RaftStatus {
		t.Helper()
		out, err := nodes[nSched].eddy(append([]string{"scheduler"}, args...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, logs())
		}
		var st api.RaftStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("eddy scheduler %v: %v: %s", args, err, out)
		}
		return st
	}
	if st := cli("remove", "--json", name); len(st.Members) != nSched-1 {
		t.Fatalf("after remove: %+v", st.Members)
	}
	if st := cli("add", "--json", name, raftAddrs[follower]); len(st.Members) != nSched {
		t.Fatalf("after add: %+v", st.Members)
	}
	var tk api.Task
	spec := api.TaskSpec{Command: []string{"true"}, Cores: 0.05, MemBytes: 32 << 20, Uid: 65534, Gid: 65534}
	if err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk); err != nil {
		t.Fatal(err)
	}
	wait("the re-added member to catch up", 30*time.Second, func() bool {
		st, err := status(follower)
		if err != nil || st.State != "follower" {
			return false
		}
		lst, err := status((follower + 1) % nSched)
		return err == nil && lst.Healthy && st.AppliedIndex >= lst.CommitIndex-1
	})
	if out, err := nodes[nSched].eddy("scheduler", "status"); err != nil || !strings.Contains(out, "healthy") {
		t.Fatalf("status: %v\n%s", err, out)
	} else {
		t.Logf("eddy scheduler status:\n%s", out)
	}
}
