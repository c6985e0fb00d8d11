package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/sched"
)

// A node's daemon restarts (SIGTERM, or kill -9) while one of its tasks runs, or the task ends
// while the daemon is away: the task runs exactly once and ends with its own exit status, as
// reported by the restarted node. Each task appends one line to a file in the share, sleeps, and
// exits 7; it has a retry left, so a task wrongly declared lost would run a second time and
// append a second line.
func TestClusterNodeRestartRunsTaskOnce(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // tasks run as nobody
	}
	origin := filepath.Join(base, "rst-origin")
	if err := os.MkdirAll(origin, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	token := filepath.Join(base, "rst-token")
	os.WriteFile(token, []byte("rst-secret\n"), 0o600)

	// After the daemons are gone (cleanups run last first): their tasks' cgroup parents.
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/eddy-rst[01]")
		more, _ := filepath.Glob("/sys/fs/cgroup/*/eddy-rst[01]")
		for _, d := range append(dirs, more...) {
			syscall.Rmdir(d)
		}
	})
	addrs := []string{freeAddr(t, "127.0.0.21"), freeAddr(t, "127.0.0.22")}
	args := func(i int) []string {
		a := []string{"--node-name", fmt.Sprintf("rst%d", i), "--listen", addrs[i], "--token-file", token}
		if i == 0 {
			return append(a, "--scheduler")
		}
		return append(a, "--join", addrs[0])
	}
	var nodes []*node
	for i := range 2 {
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("rst-n%d", i)), origin)
		n.start(args(i)...)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	cl := api.NewTCP(addrs[0], api.WithToken("rst-secret"), api.WithTimeout(10*time.Second))
	logs := func() string {
		return "--- scheduler (rst0) log ---\n" + nodes[0].tail(50) + "\n--- rst1 log ---\n" + nodes[1].tail(50)
	}
	wait := func(t *testing.T, what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, logs)
	}
	get := func(t *testing.T, id string) *sched.Task {
		t.Helper()
		var tk sched.Task
		if err := cl.Do(ctx, "GET", "/v1/tasks/"+id, nil, &tk); err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		return &tk
	}
	wait(t, "both nodes up", 30*time.Second, func() bool {
		var ns []sched.NodeStatus
		if cl.Do(ctx, "GET", "/v1/nodes", nil, &ns) != nil || len(ns) != 2 {
			return false
		}
		return ns[0].Up && ns[1].Up
	})
	lines := func(name string) []string {
		b, _ := os.ReadFile(filepath.Join(origin, name))
		return strings.Fields(string(b))
	}

	// restart stops node i's daemon (SIGTERM, or SIGKILL), waits away seconds, starts it again.
	restart := func(t *testing.T, i int, sig syscall.Signal, away time.Duration) {
		n := nodes[i]
		if exited, err := n.signal(sig, 15*time.Second); !exited || (sig == syscall.SIGTERM && err != nil) {
			t.Fatalf("daemon rst%d after %v: exited %v, %v\n%s", i, sig, exited, err, logs())
		}
		time.Sleep(away)
		if err := n.tryStart(args(i)...); err != nil {
			t.Fatalf("restart rst%d: %v\n%s", i, err, logs())
		}
		wait(t, "the cluster API of the restarted daemon", 30*time.Second, func() bool {
			var ns []sched.NodeStatus
			return api.NewTCP(addrs[i], api.WithToken("rst-secret")).Do(ctx, "GET", "/v1/nodes", nil, &ns) == nil
		})
	}
	cases := []struct {
		name string
		node int // the daemon restarted (and where the task runs); 0 also holds the scheduler
		sig  syscall.Signal
		away time.Duration // how long the daemon stays down
		// adopted is what the restarted daemon's runtime logs about the task.
		adopted string
	}{
		{"sigterm", 1, syscall.SIGTERM, 0, "still running: adopted"},
		{"kill9", 1, syscall.SIGKILL, 0, "still running: adopted"},
		// The task ends (4 s after its line) while no daemon is there to see it.
		{"kill9-ends-while-away", 1, syscall.SIGKILL, 5 * time.Second, "ended while no daemon was there"},
		// The scheduler's own node: scheduler and agent restart together.
		{"sigterm-scheduler-node", 0, syscall.SIGTERM, 0, "still running: adopted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := "rst-" + tc.name + ".txt"
			spec := sched.TaskSpec{Name: tc.name, Command: []string{"/bin/sh", "-c", "echo \"$EDDY_TASK_ID\" >> " + out + "; sleep 4; exit 7"},
				Cores: 1, MemBytes: 64 << 20, Node: fmt.Sprintf("rst%d", tc.node), Retries: 1, Uid: 65534, Gid: 65534}
			var tk sched.Task
			if err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk); err != nil {
				t.Fatalf("submit: %v", err)
			}
			wait(t, "the task running with its line written", 30*time.Second, func() bool {
				return get(t, tk.ID).State == sched.StateRunning && len(lines(out)) == 1
			})
			restart(t, tc.node, tc.sig, tc.away)
			wait(t, "the task to end", 60*time.Second, func() bool { return get(t, tk.ID).State.Terminal() })
			got := get(t, tk.ID)
			if got.State != sched.StateFailed || got.ExitCode == nil || *got.ExitCode != 7 || got.Attempts != 1 || got.NodeName != spec.Node {
				t.Fatalf("task ended as %s exit %v attempts %d on %s (error %q), want failed with exit 7 after one attempt on %s\n%s",
					got.State, fmtExit(got.ExitCode), got.Attempts, got.NodeName, got.Error, spec.Node, logs())
			}
			b, _ := os.ReadFile(nodes[tc.node].LogFile)
			found := false
			for _, l := range strings.Split(string(b), "\n") {
				found = found || strings.Contains(l, tc.adopted) && strings.Contains(l, tk.ID)
			}
			if !found {
				t.Errorf("the restarted daemon did not log %q for %s", tc.adopted, tk.ID)
			}
			// Had the task been requeued, its second run would have appended by now.
			time.Sleep(time.Second)
			if l := lines(out); len(l) != 1 || l[0] != tk.ID {
				t.Fatalf("the task ran %d times: %q\n%s", len(l), l, logs())
			}
		})
	}
}

func fmtExit(p *int) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}
