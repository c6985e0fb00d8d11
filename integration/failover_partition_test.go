package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// foNet is the partition test's network: a bridge in the test's namespace (the worker and the
// test's clients are on it) and one network namespace per scheduler, joined to the bridge by a
// veth pair. A scheduler is cut off by blackhole routes, in its own namespace, to the other
// schedulers' addresses: it can no longer reach them nor answer them, while the worker and the
// clients still reach it. Everything is removed by close (registered as a cleanup, so it runs
// on failure too, after the daemons are stopped).
type foNet struct {
	t      *testing.T
	tag    string
	bridge string
	hostIP string   // the bridge's address
	ns     []string // the schedulers' namespaces
	ips    []string // their addresses
	links  []string // host ends of the veth pairs
	wrap   []string // per namespace: a script running the eddy binary in it
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func newFoNet(t *testing.T, n int, dir string) *foNet {
	t.Helper()
	pid := os.Getpid()
	f := &foNet{t: t, tag: fmt.Sprintf("%04x", pid&0xffff)}
	subnet := fmt.Sprintf("10.231.%d", 20+pid%200)
	f.bridge, f.hostIP = "fpbr"+f.tag, subnet+".1"
	t.Cleanup(f.close)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("link", "add", f.bridge, "type", "bridge")
	must("addr", "add", f.hostIP+"/24", "dev", f.bridge)
	must("link", "set", f.bridge, "up")
	for i := range n {
		ns, host, peer, ip := fmt.Sprintf("fp%s-s%d", f.tag, i), fmt.Sprintf("fph%s%d", f.tag, i), fmt.Sprintf("fpn%s%d", f.tag, i), fmt.Sprintf("%s.%d", subnet, 11+i)
		must("netns", "add", ns)
		f.ns = append(f.ns, ns)
		must("link", "add", host, "type", "veth", "peer", "name", peer)
		f.links = append(f.links, host)
		must("link", "set", host, "master", f.bridge)
		must("link", "set", host, "up")
		must("link", "set", peer, "netns", ns)
		must("-n", ns, "addr", "add", ip+"/24", "dev", peer)
		must("-n", ns, "link", "set", peer, "up")
		must("-n", ns, "link", "set", "lo", "up")
		f.ips = append(f.ips, ip)
		// nsenter --net only: the daemon shares the test's mount namespace (its FUSE mount is
		// seen by the test), and exec keeps its PID (the harness stops it by PID).
		w := filepath.Join(dir, fmt.Sprintf("eddy-in-%s", ns))
		script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=/run/netns/%s %s \"$@\"\n", ns, eddyBin)
		if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		f.wrap = append(f.wrap, w)
	}
	return f
}

// cut isolates scheduler i from the other schedulers (heal undoes it).
func (f *foNet) cut(i int) error {
	for j, ip := range f.ips {
		if j != i {
			if err := ipCmd("-n", f.ns[i], "route", "add", "blackhole", ip+"/32"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *foNet) heal(i int) error {
	var errs []error
	for j, ip := range f.ips {
		if j != i {
			if err := ipCmd("-n", f.ns[i], "route", "del", "blackhole", ip+"/32"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (f *foNet) close() {
	for _, l := range f.links {
		_ = ipCmd("link", "del", l)
	}
	for _, ns := range f.ns {
		if err := ipCmd("netns", "del", ns); err != nil {
			f.t.Logf("cleanup: %v", err)
		}
	}
	if err := ipCmd("link", "del", f.bridge); err != nil {
		f.t.Logf("cleanup: %v", err)
	}
}

// startIn starts n's daemon in namespace wrap (a foNet script; "" for the test's own).
// The harness starts the daemon from eddyBin; it is pointed at the script for this start only.
var startInMu sync.Mutex

func startIn(n *node, wrap string, args ...string) {
	n.t.Helper()
	startInMu.Lock()
	defer startInMu.Unlock()
	if wrap != "" {
		orig := eddyBin
		eddyBin = wrap
		defer func() { eddyBin = orig }()
	}
	n.start(args...)
}

// The three schedulers each in a network namespace, a worker on the bridge. The leader is cut
// off from the other two while a client keeps submitting to it: it stops leading, its submits
// fail (none is acknowledged unless committed), nothing runs that was not assigned by a
// committed entry, the other two elect a leader and work on; after the heal the old leader
// rejoins and all three members hold the same state.
func TestFailoverPartitionedLeader(t *testing.T) {
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	origin := filepath.Join(base, "fp-origin")
	if err := os.MkdirAll(filepath.Join(origin, "runs"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	os.Chmod(filepath.Join(origin, "runs"), 0o777)
	token := filepath.Join(base, "fp-token")
	os.WriteFile(token, []byte("fp-secret\n"), 0o600)

	const nSched = 3
	nw := newFoNet(t, nSched, base) // before the nodes: its cleanup runs after theirs
	var apiAddrs, raftAddrs, peers []string
	for i := range nSched {
		apiAddrs = append(apiAddrs, nw.ips[i]+":7201")
		raftAddrs = append(raftAddrs, nw.ips[i]+":7202")
		peers = append(peers, fmt.Sprintf("fp%d=%s", i, raftAddrs[i]))
	}
	workerAPI := freeAddr(t, nw.hostIP)
	join := strings.Join(apiAddrs, ",")
	args := func(i int) []string {
		a := []string{"--node-name", fmt.Sprintf("fp%d", i), "--token-file", token}
		if i < nSched {
			return append(a, "--listen", apiAddrs[i], "--scheduler", "--raft-listen", raftAddrs[i], "--scheduler-peers", strings.Join(peers, ","))
		}
		return append(a, "--listen", workerAPI, "--join", join)
	}
	var nodes []*node
	for i := range nSched + 1 {
		nodes = append(nodes, newNodeAt(t, filepath.Join(base, fmt.Sprintf("fp-n%d", i)), origin))
	}
	for i := range nSched {
		startIn(nodes[i], nw.wrap[i], args(i)...)
	}
	startIn(nodes[nSched], "", args(nSched)...)
	ctx := context.Background()
	client := func(addrs ...string) *api.Client {
		return api.NewTCP(strings.Join(addrs, ","), api.WithToken("fp-secret"), api.WithTimeout(20*time.Second))
	}
	cl := client(apiAddrs...)
	logs := func() string {
		var b strings.Builder
		for i, n := range nodes {
			fmt.Fprintf(&b, "--- fp%d ---\n%s\n", i, n.tail(40))
		}
		return b.String()
	}
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, logs)
	}
	local := func(i int) (api.RaftMember, error) {
		var m api.RaftMember
		c := api.NewTCP(apiAddrs[i], api.WithToken("fp-secret"), api.WithTimeout(3*time.Second))
		err := c.Do(ctx, "GET", api.RaftPath+"?local=1", nil, &m)
		return m, err
	}
	status := func(i int) (api.RaftStatus, error) {
		var st api.RaftStatus
		c := api.NewTCP(apiAddrs[i], api.WithToken("fp-secret"), api.WithTimeout(5*time.Second))
		err := c.Do(ctx, "GET", api.RaftPath, nil, &st)
		return st, err
	}
	wait("a healthy group and four nodes up", 90*time.Second, func() bool {
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
		}
		return up == nSched+1
	})
	h := newFoHistory()
	var seqMu sync.Mutex
	seq := 0
	submit := func(c *api.Client) (api.Task, error) {
		seqMu.Lock()
		i := seq
		seq++
		seqMu.Unlock()
		spec := api.TaskSpec{Command: []string{"/bin/sh", "-c", `echo "$EDDY_TASK_ID" >> "$EDDY_TASK_ID.run"`},
			Cores: 0.05, MemBytes: 32 << 20, WorkDir: "runs", Uid: 65534, Gid: 65534}
		var tk api.Task
		err := c.Do(ctx, "POST", "/v1/tasks", spec, &tk)
		h.submitted(i, tk.ID, err)
		return tk, err
	}
	for range 10 {
		if _, err := submit(cl); err != nil {
			t.Fatalf("submit before the cut: %v\n%s", err, logs())
		}
	}
	st, err := status(0)
	if err != nil || st.Leader == "" {
		t.Fatalf("no leader: %v %+v", err, st)
	}
	var li int
	fmt.Sscanf(st.Leader, "fp%d", &li)
	var rest []string
	for i := range nSched {
		if i != li {
			rest = append(rest, apiAddrs[i])
		}
	}
	t.Logf("leader fp%d: cutting it off", li)
	if err := nw.cut(li); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	healed := false
	defer func() {
		if !healed {
			nw.heal(li)
		}
	}()

	// Clients keep submitting: one to the old leader only, one to the other two.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var oldAcked []string
	oldFailed, newAcked := 0, 0
	wg.Add(2)
	go func() {
		defer wg.Done()
		c := client(apiAddrs[li])
		for {
			select {
			case <-stop:
				return
			default:
			}
			tk, err := submit(c)
			if err == nil {
				oldAcked = append(oldAcked, tk.ID)
			} else {
				oldFailed++
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		c := client(rest...)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := submit(c); err != nil {
				t.Logf("submit to the majority: %v", err)
			} else {
				newAcked++
			}
		}
	}()
	wait("the old leader to step down", 20*time.Second, func() bool {
		m, err := local(li)
		return err == nil && m.State != "leader"
	})
	stepped := time.Since(cutAt)
	var newLeader string
	wait("a new leader among the other two", 30*time.Second, func() bool {
		st, err := status(func() int {
			for i := range nSched {
				if i != li {
					return i
				}
			}
			return 0
		}())
		newLeader = st.Leader
		return err == nil && st.Leader != "" && st.Leader != fmt.Sprintf("fp%d", li)
	})
	t.Logf("old leader stepped down %v after the cut; new leader %s", stepped.Round(time.Millisecond), newLeader)
	time.Sleep(5 * time.Second) // the old leader, cut off, keeps being asked
	close(stop)
	wg.Wait()
	t.Logf("submits while the old leader is cut off: to it %d acknowledged, %d failed; to the other two %d acknowledged",
		len(oldAcked), oldFailed, newAcked)
	if oldFailed == 0 {
		t.Fatalf("every submit to the cut-off leader was acknowledged\n%s", logs())
	}
	if newAcked < 3 {
		t.Fatalf("the other two members acknowledged %d submits while the old leader was cut off\n%s", newAcked, logs())
	}

	if err := nw.heal(li); err != nil {
		t.Fatal(err)
	}
	healed = true
	allTasks := func(c *api.Client) map[string]api.Task {
		var ts []api.Task
		if err := c.Do(ctx, "GET", "/v1/tasks", nil, &ts); err != nil {
			return nil
		}
		out := map[string]api.Task{}
		for _, tk := range ts {
			out[tk.ID] = tk
		}
		return out
	}
	wait("every task to end", 3*time.Minute, func() bool {
		ts := allTasks(cl)
		for _, tk := range ts {
			h.observe(tk)
			if !tk.State.Terminal() {
				return false
			}
		}
		return ts != nil
	})
	// Converged: every member has applied the same index and holds the same tasks in the same
	// states (a follower answers from its copy of the replicated state).
	summary := func(i int) map[string]string {
		ts := allTasks(client(apiAddrs[i]))
		if ts == nil {
			return nil
		}
		out := map[string]string{}
		for id, tk := range ts {
			out[id] = fmt.Sprintf("%s@%s", tk.State, tk.NodeName)
		}
		return out
	}
	var states []map[string]string
	wait("the three members to converge", 60*time.Second, func() bool {
		var idx []uint64
		for i := range nSched {
			m, err := local(i)
			if err != nil {
				return false
			}
			idx = append(idx, m.AppliedIndex)
		}
		if idx[0] != idx[1] || idx[1] != idx[2] {
			return false
		}
		states = states[:0]
		for i := range nSched {
			s := summary(i)
			if s == nil {
				return false
			}
			states = append(states, s)
		}
		return maps.Equal(states[0], states[1]) && maps.Equal(states[1], states[2])
	})
	for _, id := range oldAcked {
		if _, ok := states[0][id]; !ok {
			t.Errorf("task %s was acknowledged by the cut-off leader but is not in the converged state", id)
		}
	}
	runs := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(origin, "runs", "*.run"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		runs[strings.TrimSuffix(filepath.Base(f), ".run")] = strings.Count(string(b), "\n")
	}
	t.Logf("history: %s; %d run files; %d tasks in the converged state", h, len(files), len(states[0]))
	if bad := h.check(runs); len(bad) > 0 {
		t.Fatalf("history violations:\n%s", strings.Join(bad, "\n"))
	}
}
