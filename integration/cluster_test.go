package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/sched"
)

func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Three daemons on 127.0.0.x (each its own mount, cache and API address) over one origin:
// tasks go to the warm node, a dead node's task is requeued and completes elsewhere, the queue
// survives a scheduler restart, calls without the token are refused, malformed submits explained.
func TestClusterPlacesOnWarmNodeAndRecovers(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	// Tasks run as nobody (the runtime refuses root): let it reach the mounts.
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	origin := filepath.Join(base, "esc-origin")
	if err := os.MkdirAll(filepath.Join(origin, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	writeRandom(t, filepath.Join(origin, "data", "ds1.bin"), 8<<20, 1)
	token := filepath.Join(base, "esc-token")
	os.WriteFile(token, []byte("esc-secret\n"), 0o600)

	addrs := []string{freeAddr(t, "127.0.0.21"), freeAddr(t, "127.0.0.22"), freeAddr(t, "127.0.0.23")}
	var nodes []*node
	args := func(i int) []string {
		a := []string{"--node-name", fmt.Sprintf("esc%d", i), "--listen", addrs[i], "--token-file", token}
		if i == 0 {
			return append(a, "--scheduler")
		}
		return append(a, "--join", addrs[0])
	}
	for i := range 3 {
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("esc-n%d", i)), origin)
		os.MkdirAll(n.Mount, 0o755)
		n.start(args(i)...)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	cl := api.NewTCP(addrs[0], api.WithToken("esc-secret"), api.WithTimeout(10*time.Second))
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, func() string { return "--- scheduler log ---\n" + nodes[0].tail(60) })
	}
	nodeStatus := func() map[string]sched.NodeStatus {
		var ns []sched.NodeStatus
		if err := cl.Do(ctx, "GET", "/v1/nodes", nil, &ns); err != nil {
			t.Fatal(err)
		}
		m := map[string]sched.NodeStatus{}
		for _, n := range ns {
			m[n.Name] = n
		}
		return m
	}
	wait("three nodes up", 30*time.Second, func() bool {
		m := nodeStatus()
		return len(m) == 3 && m["esc0"].Up && m["esc1"].Up && m["esc2"].Up
	})

	// No token, wrong token: refused.
	for _, tok := range []string{"", "Bearer nope"} {
		req, _ := http.NewRequest("GET", "http://"+addrs[1]+"/v1/nodes", nil)
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: status %d", tok, resp.StatusCode)
		}
	}
	// Malformed submits: clear errors, through the CLI and the API.
	if _, err := nodes[1].eddy("submit", "--cores", "999", "--", "true"); err == nil || !strings.Contains(err.Error(), "can never fit") || !strings.Contains(err.Error(), "999 cores") {
		t.Fatalf("oversized submit: %v", err)
	}
	if _, err := nodes[1].eddy("submit", "--mem", "lots", "--", "true"); err == nil || !strings.Contains(err.Error(), "--mem") {
		t.Fatalf("bad --mem: %v", err)
	}
	if err := cl.Do(ctx, "POST", "/v1/tasks", map[string]any{"command": "echo"}, nil); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed body: %v", err)
	}

	// Warm the input on esc2 and wait for its inventory to reach the scheduler.
	if out, err := nodes[2].eddy("cache", "warm", nodes[2].mnt("data/ds1.bin")); err != nil {
		t.Fatalf("warm: %v %s", err, out)
	}
	wait("esc2's inventory", 20*time.Second, func() bool { return nodeStatus()["esc2"].CachedFiles >= 1 })

	submit := func(spec sched.TaskSpec) *sched.Task {
		t.Helper()
		spec.Uid, spec.Gid = 65534, 65534
		var tk sched.Task
		if err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk); err != nil {
			t.Fatalf("submit: %v", err)
		}
		return &tk
	}
	get := func(id string) *sched.Task {
		t.Helper()
		var tk sched.Task
		if err := cl.Do(ctx, "GET", "/v1/tasks/"+id, nil, &tk); err != nil {
			t.Fatal(err)
		}
		return &tk
	}
	var ids []string
	for range 2 {
		ids = append(ids, submit(sched.TaskSpec{Command: []string{"/bin/sh", "-c", "echo hello-$EDDY_TASK_ID"}, Cores: 1, MemBytes: 64 << 20, Inputs: []string{"data/ds1.bin"}}).ID)
	}
	for _, id := range ids {
		wait("task "+id+" to end", 60*time.Second, func() bool { return get(id).State.Terminal() })
		tk := get(id)
		if tk.NodeName != "esc2" || tk.State != sched.StateCompleted || tk.ExitCode == nil || *tk.ExitCode != 0 {
			t.Fatalf("task %+v (placement %+v)\n--- esc2 log ---\n%s", tk, tk.Placement, nodes[2].tail(40))
		}
		out, err := nodes[1].eddy("tasks", "logs", id)
		if err != nil || strings.TrimSpace(out) != "hello-"+id {
			t.Fatalf("logs of %s: %q %v", id, out, err)
		}
		js, err := nodes[1].eddy("tasks", "show", "--json", id)
		var shown map[string]any
		if err != nil || json.Unmarshal([]byte(js), &shown) != nil || shown["id"] != id || shown["state"] != "completed" || shown["node"] != "esc2" || shown["placement"] == nil {
			t.Fatalf("tasks show --json: %v %s", err, js)
		}
	}

	// Kill esc2 while its task runs: the task is requeued and completes elsewhere.
	long := submit(sched.TaskSpec{Command: []string{"/bin/sh", "-c", "sleep 6; echo done"}, Cores: 1, MemBytes: 64 << 20, Inputs: []string{"data/ds1.bin"}, Retries: 1})
	wait("the long task running", 30*time.Second, func() bool { return get(long.ID).State == sched.StateRunning })
	if n := get(long.ID).NodeName; n != "esc2" {
		t.Fatalf("long task on %s, want esc2", n)
	}
	nodes[2].kill9()
	wait("the long task to complete elsewhere", 90*time.Second, func() bool { return get(long.ID).State == sched.StateCompleted })
	if tk := get(long.ID); tk.NodeName == "esc2" || tk.Attempts != 2 {
		t.Fatalf("requeued task %+v", tk)
	}

	// A task for the dead node stays queued; the scheduler restarts; the queue is intact.
	queued := submit(sched.TaskSpec{Command: []string{"true"}, Node: "esc2"})
	time.Sleep(1500 * time.Millisecond)
	if st := get(queued.ID).State; st != sched.StateQueued {
		t.Fatalf("task for a dead node is %s", st)
	}
	nodes[0].stop()
	nodes[0].start(args(0)...)
	wait("the restarted scheduler's API", 30*time.Second, func() bool {
		var ns []sched.NodeStatus
		return cl.Do(ctx, "GET", "/v1/nodes", nil, &ns) == nil
	})
	if st := get(queued.ID).State; st != sched.StateQueued {
		t.Fatalf("after the restart the queued task is %s", st)
	}
	for _, id := range append(ids, long.ID) {
		if st := get(id).State; st != sched.StateCompleted {
			t.Fatalf("after the restart %s is %s", id, st)
		}
	}
	out, err := nodes[1].eddy("tasks", "ls")
	if err != nil || !strings.Contains(out, queued.ID) {
		t.Fatalf("tasks ls via a joined node: %v\n%s", err, out)
	}
}
