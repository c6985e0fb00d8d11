package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/runtime/envs"
	"github.com/eddy-cluster/eddy/sched"
)

// ctrCluster is one daemon in cluster mode (scheduler and worker) whose share holds a busybox
// environment, with a CLI binary that other users can run.
type ctrCluster struct {
	t      *testing.T
	n      *node
	base   string
	addr   string
	token  string
	cli    string // a copy of the eddy binary that nobody may execute
	ctdDir string // the daemon's default private containerd dir
}

const ctrClusterToken = "ecd-secret"

// newCtrCluster prepares (does not start) a node under a fresh temp dir with the env "busy"
// (one version, an hour old) in its origin, and shared_data writable by everyone.
func newCtrCluster(t *testing.T) *ctrCluster {
	t.Helper()
	needFUSE(t)
	base := t.TempDir()
	// Tasks run as nobody: let them (and the CLI run as nobody) reach the mounts and binary.
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	origin := filepath.Join(base, "ecd-origin")
	data := filepath.Join(origin, "shared_data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	os.Chmod(data, 0o777)
	token := filepath.Join(base, "ecd-token")
	os.WriteFile(token, []byte(ctrClusterToken+"\n"), 0o600)
	cli := filepath.Join(base, "eddy")
	bin, err := os.ReadFile(eddyBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cli, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &ctrCluster{t: t, base: base, token: token, cli: cli, addr: freeAddr(t, "127.0.0.21")}
	c.afterDaemon() // registered before the node: runs after its cleanup has stopped the daemon
	c.n = newNodeAt(t, filepath.Join(base, "ecd-n0"), origin)
	c.ctdDir = c.n.CacheDir + "-containerd"
	t.Cleanup(c.killLeftovers) // runs before the node's cleanup stops the daemon
	return c
}

func (c *ctrCluster) args() []string {
	return []string{"--node-name", "ecd0", "--scheduler", "--listen", c.addr, "--token-file", c.token}
}

// addEnv writes a busybox image into the origin as a version of env.
func (c *ctrCluster) addEnv(env string, at time.Time) envs.Version {
	c.t.Helper()
	v, err := envs.ImportReader(context.Background(), c.n.Origin, env, bytes.NewReader(busyboxImage(c.t, false)), at)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

// asUser runs the eddy CLI as nobody against the cluster API (tasks run as their submitter,
// and the daemon refuses root). It returns stdout, stderr and the exit code.
func (c *ctrCluster) asUser(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(c.cli, args...)
	cmd.Dir = c.base
	cmd.Env = []string{"PATH=/usr/bin:/bin", "EDDY_ADDR=" + c.addr, "EDDY_TOKEN=" + ctrClusterToken}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("eddy %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (c *ctrCluster) task(id string) sched.Task {
	c.t.Helper()
	out, err := c.n.eddy("tasks", "show", "--json", id)
	if err != nil {
		c.t.Fatal(err)
	}
	var tk sched.Task
	if err := json.Unmarshal([]byte(out), &tk); err != nil {
		c.t.Fatalf("tasks show --json: %v: %s", err, out)
	}
	return tk
}

func (c *ctrCluster) waitTask(id string, d time.Duration, what string, cond func(sched.Task) bool) sched.Task {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		tk := c.task(id)
		if cond(tk) {
			return tk
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s: %s not within %v; it is %s (%s)\n--- daemon log ---\n%s", id, what, d, tk.State, tk.Error, c.n.tail(60))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *ctrCluster) logOf(id, stream string) string {
	c.t.Helper()
	args := []string{"tasks", "logs", id}
	if stream == "stderr" {
		args = []string{"tasks", "logs", "--stderr", id}
	}
	out, err := c.n.eddy(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *ctrCluster) waitNodeUp() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.n.eddy("nodes", "--json")
		var ns []sched.NodeStatus
		if err == nil && json.Unmarshal([]byte(out), &ns) == nil && len(ns) == 1 && ns[0].Up {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node not up: %v %s\n%s", err, out, c.n.tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containerdPID is the PID of the daemon's private containerd (0 when none runs).
func (c *ctrCluster) containerdPID() int { return containerdPIDIn(c.ctdDir) }

func (c *ctrCluster) ctr(args ...string) string {
	c.t.Helper()
	return ctrAt(c.t, runtime.PrivateContainerdSocket(c.ctdDir), "eddy", args...)
}

// afterDaemon checks, once the daemon has stopped, that it stopped its private containerd (and
// stops one left behind), and removes runc's and the cgroups' empty directories.
func (c *ctrCluster) afterDaemon() {
	c.t.Cleanup(func() {
		if pid := c.containerdPID(); pid != 0 {
			c.t.Errorf("the daemon left its private containerd (pid %d) running; stopping it", pid)
			syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		os.Remove("/run/containerd/runc/eddy") // runc's per-namespace dir, when empty
		for _, d := range []string{"/sys/fs/cgroup/eddy-ecd0"} {
			syscall.Rmdir(d)
		}
		if ds, _ := filepath.Glob("/sys/fs/cgroup/*/eddy-ecd0"); len(ds) > 0 {
			for _, d := range ds {
				syscall.Rmdir(d)
			}
		}
	})
}

// killLeftovers kills the tasks a failed test left in the private containerd, before the
// daemon stops (so that the daemon collects them and no shim outlives the test).
func (c *ctrCluster) killLeftovers() {
	if c.containerdPID() != 0 {
		killContainerTasks(runtime.PrivateContainerdSocket(c.ctdDir), "eddy")
	}
}

// A container task submitted through the daemon: lazily started private containerd, exit code,
// output in the share, logs, no second import, unknown env rejected at submit, kill, and a
// container left running across a daemon restart re-adopted and reported.
func TestContainerEnvThroughDaemon(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		c := newCtrCluster(t)
		v := c.addEnv("busy", time.Now().Add(-time.Hour))
		c.n.start(c.args()...)
		c.waitNodeUp()
		if _, err := os.Stat(c.ctdDir); err == nil {
			t.Fatalf("private containerd dir %s made before any container task (should start lazily)", c.ctdDir)
		}

		// First task: the node imports the environment, the task writes into /shared and exits 3.
		script := `echo out-line; echo err-line >&2; echo "$EDDY_TASK_ID $EDDY_SHARED_DIR $(id -u)" > /shared/ecd-out.txt; exit 3`
		out, errOut, code := c.asUser("submit", "--container", "busy", "--wait", "--", "sh", "-c", script)
		id := strings.TrimSpace(strings.SplitN(errOut, "\n", 2)[0])
		if code != 3 || !strings.HasPrefix(id, "t") {
			t.Fatalf("submit --wait: exit %d, stdout %q, stderr %q\n%s", code, out, errOut, c.n.tail(60))
		}
		tk := c.task(id)
		if tk.State != sched.StateFailed || tk.ExitCode == nil || *tk.ExitCode != 3 || tk.Uid != nobody {
			t.Fatalf("task %+v", tk)
		}
		if tk.EnvFile != v.Rel || tk.EnvSize != v.Size {
			t.Fatalf("resolved env %q (%d bytes), want %s (%d)", tk.EnvFile, tk.EnvSize, v.Rel, v.Size)
		}
		if es := tk.EnvStart; es == nil || !es.Imported || es.File != v.Rel || es.ImportBytes != v.Size {
			t.Fatalf("first task's env start %+v: want an import of %s", tk.EnvStart, v.Rel)
		}
		if tk.Placement == nil || !strings.Contains(tk.Placement.Reason, "to fetch and import") {
			t.Fatalf("placement %+v", tk.Placement)
		}
		b, err := os.ReadFile(c.n.org("shared_data/ecd-out.txt"))
		if want := id + " /shared 65534\n"; err != nil || string(b) != want {
			t.Fatalf("output in the share: %q %v, want %q", b, err, want)
		}
		if got := c.logOf(id, "stdout"); got != "out-line\n" {
			t.Errorf("stdout log %q", got)
		}
		if got := c.logOf(id, "stderr"); got != "err-line\n" {
			t.Errorf("stderr log %q", got)
		}
		if c.containerdPID() == 0 {
			t.Fatal("no private containerd running after the first container task")
		}
		assertContainerdBinary(t, c.ctdDir, d.bins(t))
		var ns []sched.NodeStatus
		if out, err := c.n.eddy("nodes", "--json"); err != nil || json.Unmarshal([]byte(out), &ns) != nil || len(ns) != 1 ||
			len(ns[0].EnvsImported) != 1 || ns[0].EnvsImported[0] != v.Rel {
			t.Fatalf("nodes --json: envs imported %+v %v", ns, err)
		}

		// Second task, same version: no import, and placement says the image is there.
		if _, errOut, code = c.asUser("submit", "--container", "busy", "--wait", "--", "sh", "-c", "echo again"); code != 0 {
			t.Fatalf("second task: exit %d %s", code, errOut)
		}
		id2 := strings.TrimSpace(strings.SplitN(errOut, "\n", 2)[0])
		tk = c.task(id2)
		if es := tk.EnvStart; tk.State != sched.StateCompleted || es == nil || es.Imported || es.File != v.Rel {
			t.Fatalf("second task %s, env start %+v: want no import", tk.State, tk.EnvStart)
		}
		if !strings.Contains(tk.Placement.Reason, "already imported there") || len(tk.Placement.Candidates) == 0 || !tk.Placement.Candidates[0].EnvImported {
			t.Fatalf("second placement %+v", tk.Placement)
		}
		if out, err := c.n.eddy("tasks", "show", id2); err != nil || !strings.Contains(out, "already imported on the node") {
			t.Fatalf("tasks show: %v\n%s", err, out)
		}
		if got := c.logOf(id2, "stdout"); got != "again\n" {
			t.Errorf("second stdout %q", got)
		}

		// An unknown environment is refused at submit, with the fix.
		if _, errOut, code = c.asUser("submit", "--container", "nosuchenv", "--", "true"); code == 0 ||
			!strings.Contains(errOut, `"nosuchenv" not found on the share`) || !strings.Contains(errOut, "eddy env import nosuchenv") {
			t.Fatalf("unknown env: exit %d: %s", code, errOut)
		}

		// Kill a running container task.
		// (Through the old spelling of --container, still taken with a warning.)
		out, errOut, code = c.asUser("submit", "--env", "busy", "--", "sh", "-c", "sleep 1000 & echo started; sleep 1001")
		kid := strings.TrimSpace(out)
		if code != 0 || kid == "" || !strings.Contains(errOut, "deprecated: use --container busy") {
			t.Fatalf("submit: %d %s", code, errOut)
		}
		c.waitTask(kid, 60*time.Second, "running with output", func(tk sched.Task) bool {
			b, _ := os.ReadFile(c.n.org("logs/" + kid + "/stdout.log"))
			return tk.State == sched.StateRunning && string(b) == "started\n"
		})
		if out, _, code := c.asUser("tasks", "kill", kid); code != 0 || !strings.Contains(out, kid) {
			t.Fatalf("tasks kill: %d %q", code, out)
		}
		tk = c.waitTask(kid, 30*time.Second, "killed", func(tk sched.Task) bool { return tk.State.Terminal() })
		if tk.State != sched.StateKilled {
			t.Fatalf("killed task %+v", tk)
		}
		waitFor(t, 20*time.Second, func() bool { return c.ctr("containers", "ls", "-q") == "" })

		// A task running across a daemon restart: re-adopted, its end and output reported.
		out, errOut, code = c.asUser("submit", "--env", "busy", "--", "sh", "-c", "echo before; sleep 6; echo after; exit 4")
		rid := strings.TrimSpace(out)
		if code != 0 || rid == "" {
			t.Fatalf("submit: %d %s", code, errOut)
		}
		c.waitTask(rid, 60*time.Second, "running with output", func(tk sched.Task) bool {
			b, _ := os.ReadFile(c.n.org("logs/" + rid + "/stdout.log"))
			return tk.State == sched.StateRunning && string(b) == "before\n"
		})
		pid := c.containerdPID()
		c.n.stop()
		if syscall.Kill(pid, 0) == nil {
			t.Fatalf("daemon stopped, its private containerd (pid %d) still runs", pid)
		}
		c.n.start(c.args()...)
		tk = c.waitTask(rid, 60*time.Second, "to end after the restart", func(tk sched.Task) bool { return tk.State.Terminal() })
		if tk.State != sched.StateFailed || tk.ExitCode == nil || *tk.ExitCode != 4 || tk.Attempts != 1 {
			t.Fatalf("task across the restart: %+v", tk)
		}
		if got := c.logOf(rid, "stdout"); got != "before\nafter\n" {
			t.Errorf("stdout across the restart %q", got)
		}
		if b, _ := os.ReadFile(c.n.LogFile); !bytes.Contains(b, []byte("container re-adopted")) {
			t.Error("daemon log does not mention the re-adoption")
		}
		waitFor(t, 20*time.Second, func() bool { return c.ctr("containers", "ls", "-q") == "" && c.ctr("tasks", "ls", "-q") == "" })
		pid = c.containerdPID()
		c.n.stop()
		if pid == 0 || syscall.Kill(pid, 0) == nil {
			t.Fatalf("private containerd %d: not running before, or still running after the daemon stopped", pid)
		}
	})
}

// Without containerd installed the daemon starts, process tasks run, and a container task
// fails with an error that names the fix.
func TestContainerdMissingThroughDaemon(t *testing.T) {
	c := newCtrCluster(t)
	c.addEnv("busy", time.Now().Add(-time.Hour))
	empty := t.TempDir()
	t.Setenv("PATH", empty) // the daemon finds no containerd (tasks get their own PATH)
	c.n.start(c.args()...)
	c.waitNodeUp()
	_, errOut, code := c.asUser("submit", "--container", "busy", "--wait", "--", "true")
	id := strings.TrimSpace(strings.SplitN(errOut, "\n", 2)[0])
	tk := c.task(id)
	if code == 0 || tk.State != sched.StateFailed || !strings.Contains(tk.Error, "containerd is not installed") ||
		!strings.Contains(tk.Error, "scripts/deps.sh containers") || !strings.Contains(tk.Error, "--containerd-socket") {
		t.Fatalf("container task without containerd: exit %d, %s: %q", code, tk.State, tk.Error)
	}
	if _, errOut, code = c.asUser("submit", "--wait", "--", "sh", "-c", "exit 0"); code != 0 {
		t.Fatalf("process task: exit %d %s\n%s", code, errOut, c.n.tail(30))
	}
	if _, err := os.Stat(c.ctdDir); err == nil {
		if ents, _ := os.ReadDir(c.ctdDir); len(ents) > 0 {
			t.Errorf("private containerd dir populated without containerd: %v", ents)
		}
	}
}
