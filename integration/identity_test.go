package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/sched"
)

// openPath lets every user reach dir (the test's temp dirs are 0700).
func openPath(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// eddyAs runs the CLI as uid/gid (no supplementary groups) against socket.
func eddyAs(t *testing.T, uid, gid uint32, socket string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(eddyBin, append([]string{"--socket", socket}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("eddy %s as uid %d: %v: %s", strings.Join(args, " "), uid, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// A scheduler and a joined node; the CLI runs as uid 1000 against the joined node's socket, whose
// task commands are forwarded to the scheduler with the caller's identity from the kernel.
func TestTaskIdentityFromTheSocket(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	openPath(t, base)
	openPath(t, filepath.Dir(eddyBin))
	origin := filepath.Join(base, "idn-origin")
	for _, d := range []string{"data", "out"} {
		if err := os.MkdirAll(filepath.Join(origin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(origin, 0o777)
	os.Chmod(filepath.Join(origin, "out"), 0o777)
	writeRandom(t, filepath.Join(origin, "data", "pub.bin"), 1<<20, 1)
	writeRandom(t, filepath.Join(origin, "data", "secret.bin"), 1<<20, 2)
	os.Chmod(filepath.Join(origin, "data", "pub.bin"), 0o644)
	os.Chmod(filepath.Join(origin, "data", "secret.bin"), 0o600)
	token := filepath.Join(base, "idn-token")
	os.WriteFile(token, []byte("idn-secret\n"), 0o600)

	addrs := []string{freeAddr(t, "127.0.0.21"), freeAddr(t, "127.0.0.22")}
	var nodes []*node
	for i := range 2 {
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("idn-n%d", i)), origin)
		a := []string{"--node-name", fmt.Sprintf("idn%d", i), "--listen", addrs[i], "--token-file", token}
		if i == 0 {
			a = append(a, "--scheduler")
		} else {
			a = append(a, "--join", addrs[0])
		}
		n.start(a...)
		nodes = append(nodes, n)
	}
	sock := nodes[1].Socket
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket %s: %v %v; want mode 0666", sock, fi.Mode(), err)
	}
	ctx := context.Background()
	cl := api.NewTCP(addrs[0], api.WithToken("idn-secret"), api.WithTimeout(10*time.Second))
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		waitUntil(t, what, d, cond, func() string { return "--- scheduler log ---\n" + nodes[0].tail(60) })
	}
	wait("two nodes up", 30*time.Second, func() bool {
		var ns []sched.NodeStatus
		if cl.Do(ctx, "GET", "/v1/nodes", nil, &ns) != nil || len(ns) != 2 {
			return false
		}
		return ns[0].Up && ns[1].Up
	})
	get := func(id string) *sched.Task {
		t.Helper()
		var tk sched.Task
		if err := cl.Do(ctx, "GET", "/v1/tasks/"+id, nil, &tk); err != nil {
			t.Fatal(err)
		}
		return &tk
	}
	submitID := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var tk sched.Task
		if err := json.Unmarshal([]byte(out), &tk); err != nil || tk.ID == "" {
			t.Fatalf("submit --json: %v %q", err, out)
		}
		return tk.ID
	}
	const user = 1000

	// The task of uid 1000 runs as uid 1000: what it writes in the share is 1000's.
	out, err := eddyAs(t, user, user, sock, "submit", "--json", "--wait", "--mem", "64M", "--",
		"/bin/sh", "-c", `id -u > "$EDDY_SHARED_DIR/out/$EDDY_TASK_ID"`)
	if err != nil {
		t.Fatalf("%v\n--- joined node ---\n%s", err, nodes[1].tail(40))
	}
	var done sched.Task
	if err := json.Unmarshal([]byte(out), &done); err != nil || done.State != sched.StateCompleted || done.Uid != user || done.Gid != user {
		t.Fatalf("task of uid 1000: %v %s", err, out)
	}
	written := filepath.Join(origin, "out", done.ID)
	b, err := os.ReadFile(written)
	var st syscall.Stat_t
	if err != nil || strings.TrimSpace(string(b)) != "1000" || syscall.Stat(written, &st) != nil || st.Uid != user {
		t.Fatalf("the task's output %s: %q %v, owner %d; want \"1000\" owned by 1000", written, b, err, st.Uid)
	}
	// Its logs are 1000's alone (the API's logs call is the owner's; so is the directory).
	logDir := filepath.Join(origin, "logs", done.ID)
	if err := syscall.Stat(logDir, &st); err != nil || st.Uid != user || st.Mode&0o777 != 0o700 {
		t.Fatalf("log dir %s: %v, owner %d mode %o; want 1000 and 0700", logDir, err, st.Uid, st.Mode&0o777)
	}
	if out, err := eddyAs(t, user, user, sock, "tasks", "logs", "--stderr", done.ID); err != nil || out != "" {
		t.Fatalf("uid 1000 reads its own (empty) stderr: %v %q", err, out)
	}

	// Naming another user is refused, with the reason.
	for _, as := range [][]string{{"--uid", "1001", "--gid", "1001"}, {"--uid", "0", "--gid", "0"}} {
		args := append(append([]string{"submit"}, as...), "--", "true")
		if _, err := eddyAs(t, user, user, sock, args...); err == nil || !strings.Contains(err.Error(), "you are uid 1000 and cannot submit a task to run as uid "+as[1]) {
			t.Fatalf("submit %v as uid 1000: %v", as, err)
		}
	}

	// Kill and logs: only the owner's (and root's).
	rootTask := submitID(nodes[1].eddy("submit", "--json", "--uid", "1001", "--gid", "1001", "--mem", "64M", "--", "sleep", "60"))
	if _, err := eddyAs(t, user, user, sock, "tasks", "kill", rootTask); err == nil || !strings.Contains(err.Error(), "only its owner or root") {
		t.Fatalf("uid 1000 kills uid 1001's task: %v", err)
	}
	if _, err := eddyAs(t, user, user, sock, "tasks", "logs", rootTask); err == nil || !strings.Contains(err.Error(), "only its owner or root") {
		t.Fatalf("uid 1000 reads uid 1001's logs: %v", err)
	}
	if tk := get(rootTask); tk.KillAsked || tk.State.Terminal() {
		t.Fatalf("a refused kill touched the task: %+v", tk)
	}
	mine := submitID(eddyAs(t, user, user, sock, "submit", "--json", "--mem", "64M", "--", "sleep", "60"))
	if _, err := eddyAs(t, user, user, sock, "tasks", "kill", mine); err != nil {
		t.Fatalf("uid 1000 kills its own task: %v", err)
	}
	if _, err := eddyAs(t, user, user, sock, "tasks", "logs", mine); err != nil {
		t.Fatalf("uid 1000 reads its own logs: %v", err)
	}
	if out, err := eddyAs(t, user, user, sock, "tasks", "ls"); err != nil || !strings.Contains(out, rootTask) {
		t.Fatalf("uid 1000 lists tasks: %v %s", err, out)
	}
	if _, err := eddyAs(t, user, user, sock, "nodes"); err != nil {
		t.Fatalf("uid 1000 lists nodes: %v", err)
	}
	if _, err := nodes[1].eddy("tasks", "kill", rootTask); err != nil {
		t.Fatalf("root kills a task: %v", err)
	}
	wait("both sleeping tasks killed", 30*time.Second, func() bool {
		return get(mine).State == sched.StateKilled && get(rootTask).State == sched.StateKilled
	})
	// Root's own task runs as root nowhere: refused at submit, saying what to do instead.
	if out, err := nodes[1].eddy("submit", "--json", "--mem", "64M", "--", "true"); err == nil ||
		!strings.Contains(err.Error(), "submit with --uid USER") || !strings.Contains(err.Error(), "--allow-root-tasks") {
		t.Fatalf("root's own task: %v %s; want refused at submit", err, out)
	}

	// The cache: evict, pin are root's; warm what uid 1000 may read.
	for _, op := range []string{"evict", "pin", "unpin"} {
		if _, err := eddyAs(t, user, user, sock, "cache", op, "data/pub.bin"); err == nil || !strings.Contains(err.Error(), "only root may pin, unpin or evict") {
			t.Fatalf("cache %s as uid 1000: %v", op, err)
		}
	}
	if _, err := eddyAs(t, user, user, sock, "cache", "warm", "data/pub.bin"); err != nil {
		t.Fatalf("uid 1000 warms a readable file: %v", err)
	}
	if _, err := eddyAs(t, user, user, sock, "cache", "warm", "data/secret.bin"); err == nil || !strings.Contains(err.Error(), "uid 1000 may not read") {
		t.Fatalf("uid 1000 warms a file it may not read: %v", err)
	}
	if out, err := eddyAs(t, user, user, sock, "cache", "ls", "--json"); err != nil || !strings.Contains(out, "data/pub.bin") {
		t.Fatalf("uid 1000 cache ls: %v %s", err, out)
	}
	if _, err := nodes[1].eddy("cache", "evict", "data/pub.bin"); err != nil {
		t.Fatalf("root evicts: %v", err)
	}
}
