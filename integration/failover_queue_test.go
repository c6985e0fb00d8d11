package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// Three schedulers and one worker on 127.0.0.4x. Tasks that cannot start yet (the worker's
// cores are held by a blocker) queue with mixed priorities; the leader is killed; the new
// leader has them all queued, and once the blocker is killed they start one at a time in
// priority order, then submit order. Then, with the queue empty, the submit-to-start time of
// process tasks through the group (the assignment is pushed to the node, not carried by its
// next heartbeat).
func TestFailoverQueueOrder(t *testing.T) {
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	origin := filepath.Join(base, "fq-origin")
	if err := os.MkdirAll(origin, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	token := filepath.Join(base, "fq-token")
	os.WriteFile(token, []byte("fq-secret\n"), 0o600)

	const nSched, nWork = 3, 1
	const worker = "fq3"
	g := newLoopbackGroup(t, "fq", 41, nSched, nWork, token)
	apiAddrs, join, args := g.api, g.join, g.args
	var nodes []*node
	for i := range nSched + nWork {
		nodes = append(nodes, newNodeAt(t, filepath.Join(base, fmt.Sprintf("fq-n%d", i)), origin))
	}
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nodes[i].start(args(i)...) }()
	}
	wg.Wait()
	ctx := context.Background()
	cl := api.NewTCP(join, api.WithToken("fq-secret"), api.WithTimeout(10*time.Second))
	logs := func() string {
		var b strings.Builder
		for i, n := range nodes {
			fmt.Fprintf(&b, "--- fq%d ---\n%s\n", i, n.tail(30))
		}
		return b.String()
	}
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, logs)
	}
	status := func(i int) (api.RaftStatus, error) {
		var st api.RaftStatus
		c := api.NewTCP(apiAddrs[i], api.WithToken("fq-secret"), api.WithTimeout(5*time.Second))
		err := c.Do(ctx, "GET", api.RaftPath, nil, &st)
		return st, err
	}
	var cores float64
	wait("a healthy group and four nodes up", 60*time.Second, func() bool {
		st, err := status(0)
		if err != nil || !st.Healthy || len(st.Members) != nSched {
			return false
		}
		var ns []api.NodeStatus
		if err := cl.Do(ctx, "GET", "/v1/nodes", nil, &ns); err != nil {
			return false
		}
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
			if n.Name == worker {
				cores = n.Total.Cores
			}
		}
		return up == nSched+nWork && cores > 0
	})
	submit := func(spec api.TaskSpec) api.Task {
		t.Helper()
		spec.Node, spec.Cores, spec.MemBytes, spec.Uid, spec.Gid = worker, cores, 32<<20, 65534, 65534
		var tk api.Task
		if err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk); err != nil {
			t.Fatalf("submit: %v\n%s", err, logs())
		}
		return tk
	}
	task := func(id string) api.Task {
		var tk api.Task
		if err := cl.Do(ctx, "GET", "/v1/tasks/"+id, nil, &tk); err != nil {
			return api.Task{}
		}
		return tk
	}
	blocker := submit(api.TaskSpec{Name: "blocker", Command: []string{"sleep", "600"}})
	wait("the blocker running", 30*time.Second, func() bool { return task(blocker.ID).State == api.StateRunning })

	prios := []int{0, 2, 1, 2, 0, 1, 2, 0}
	var queued []api.Task
	for i, p := range prios {
		queued = append(queued, submit(api.TaskSpec{Name: fmt.Sprintf("q%d", i), Command: []string{"sleep", "0.3"}, Priority: p}))
	}
	want := slices.Clone(queued)
	slices.SortStableFunc(want, func(a, b api.Task) int { return b.Priority - a.Priority }) // then submit order
	time.Sleep(500 * time.Millisecond)
	for _, q := range queued {
		if s := task(q.ID).State; s != api.StateQueued {
			t.Fatalf("task %s is %s before the failover, want queued", q.ID, s)
		}
	}

	st, err := status(0)
	if err != nil || st.Leader == "" {
		t.Fatalf("no leader: %v %+v", err, st)
	}
	var oi int
	fmt.Sscanf(st.Leader, "fq%d", &oi)
	nodes[oi].kill9()
	var other int
	for i := range nSched {
		if i != oi {
			other = i
			break
		}
	}
	wait("a new leader", 30*time.Second, func() bool {
		st, err := status(other)
		return err == nil && st.Leader != "" && st.Leader != fmt.Sprintf("fq%d", oi)
	})
	cl = api.NewTCP(strings.Join(slices.Delete(slices.Clone(apiAddrs[:nSched]), oi, oi+1), ","), api.WithToken("fq-secret"), api.WithTimeout(10*time.Second))
	wait("the new leader to report the queue", 30*time.Second, func() bool {
		for _, q := range queued {
			tk := task(q.ID)
			if tk.State != api.StateQueued || tk.Priority != q.Priority || !tk.Submitted.Equal(q.Submitted) {
				return false
			}
		}
		return true
	})
	if err := cl.Do(ctx, "POST", "/v1/tasks/"+blocker.ID+"/kill", nil, nil); err != nil {
		t.Fatalf("kill the blocker: %v\n%s", err, logs())
	}
	var got []api.Task
	wait("the queued tasks to end", 2*time.Minute, func() bool {
		got = got[:0]
		for _, q := range queued {
			tk := task(q.ID)
			if !tk.State.Terminal() {
				return false
			}
			got = append(got, tk)
		}
		return true
	})
	slices.SortFunc(got, func(a, b api.Task) int { return a.Started.Compare(b.Started) })
	var gotNames, wantNames []string
	for i := range got {
		gotNames, wantNames = append(gotNames, fmt.Sprintf("%s/p%d", got[i].Name, got[i].Priority)), append(wantNames, fmt.Sprintf("%s/p%d", want[i].Name, want[i].Priority))
		if got[i].State != api.StateCompleted {
			t.Errorf("task %s (%s): %s %s", got[i].ID, got[i].Name, got[i].State, got[i].Error)
		}
	}
	t.Logf("start order after the failover: %v", gotNames)
	if !slices.Equal(gotNames, wantNames) {
		t.Fatalf("start order %v, want %v\n%s", gotNames, wantNames, logs())
	}

	// Submit to start through the group, for process tasks on an idle node.
	var lat []time.Duration
	for i := range 10 {
		t0 := time.Now()
		tk := submit(api.TaskSpec{Name: fmt.Sprintf("s%d", i), Command: []string{"true"}})
		wait("task "+tk.ID+" to end", 30*time.Second, func() bool { return task(tk.ID).State.Terminal() })
		tk = task(tk.ID)
		if tk.State != api.StateCompleted || tk.Started.IsZero() {
			t.Fatalf("task %s: %s %s", tk.ID, tk.State, tk.Error)
		}
		lat = append(lat, tk.Started.Sub(t0))
		time.Sleep(time.Duration(i) * 173 * time.Millisecond) // at various points of the heartbeat interval
	}
	slices.Sort(lat)
	t.Logf("process task submit to start through the group (10 tasks): p50 %v max %v", lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if lat[len(lat)/2] > time.Second {
		t.Errorf("submit to start p50 %v: the assignment waits for a heartbeat", lat[len(lat)/2])
	}
}
