package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime"
)

// ertRuntime builds a Runtime whose cgroups live under eddy/ert-<pid>-<n>, removed at cleanup.
func ertRuntime(t testing.TB, cfg runtime.Config) *runtime.Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("process runtime tests need root (cgroups, setuid)")
	}
	parent := fmt.Sprintf("eddy/ert-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	cfg.CgroupParent = parent
	rt, err := runtime.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("runtime.New: %v", err)
	}
	if rt.CgroupMode() == "none" {
		t.Skip("no usable cgroups on this machine")
	}
	t.Cleanup(func() {
		rt.Close()
		os.RemoveAll(rt.Config().StateDir)
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
		if d := "/sys/fs/cgroup/" + parent; dirExists(d) {
			dirs = append(dirs, d)
		}
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil {
				t.Errorf("cgroup parent %s not empty after the test: %v", d, err)
			}
		}
	})
	return rt
}

func dirExists(p string) bool { fi, err := os.Stat(p); return err == nil && fi.IsDir() }

// ertDir makes a world-traversable temp dir (t.TempDir is 0700, which a task running as
// nobody cannot enter).
func ertDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ert-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func readLog(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func runTask(t *testing.T, rt *runtime.Runtime, spec runtime.Spec, timeout time.Duration) runtime.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	run, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatalf("start %s: %v", spec.ID, err)
	}
	res, err := run.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %s: %v", spec.ID, err)
	}
	return res
}

const nobody = 65534

func TestRuntimeProcessExitAndLogs(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	cases := []struct {
		name     string
		script   string
		exit     int
		stdout   string
		stderr   string
		signaled string
	}{
		{"ok", "echo hello; echo oops >&2", 0, "hello\n", "oops\n", ""},
		{"exit7", "echo a; echo b; exit 7", 7, "a\nb\n", "", ""},
		{"many-lines", "i=0; while [ $i -lt 2000 ]; do echo line$i; echo err$i >&2; i=$((i+1)); done; exit 3", 3, "", "", ""},
		{"selfkill", "kill -TERM $$", 128 + 15, "", "", "SIGTERM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := filepath.Join(base, tc.name, "logs")
			res := runTask(t, rt, runtime.Spec{ID: "ert-exit-" + tc.name, Command: []string{"sh", "-c", tc.script},
				Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs}, 30*time.Second)
			if res.ExitCode != tc.exit || res.Signal != tc.signaled || res.OOMKilled {
				t.Fatalf("result %+v, want exit %d signal %q", res, tc.exit, tc.signaled)
			}
			if res.Started.IsZero() || res.Finished.Before(res.Started) {
				t.Errorf("bad times %v %v", res.Started, res.Finished)
			}
			out, errOut := readLog(t, logs, "stdout.log"), readLog(t, logs, "stderr.log")
			if tc.name == "many-lines" {
				if n := strings.Count(out, "\n"); n != 2000 || !strings.HasSuffix(out, "line1999\n") {
					t.Errorf("stdout has %d lines", n)
				}
				if n := strings.Count(errOut, "\n"); n != 2000 || !strings.HasSuffix(errOut, "err1999\n") {
					t.Errorf("stderr has %d lines", n)
				}
				return
			}
			if out != tc.stdout || errOut != tc.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", out, errOut, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestRuntimeProcessEnvUserAndLimits(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	logs := filepath.Join(base, "logs")
	t.Setenv("ERT_DAEMON_SECRET", "must-not-leak")
	script := `echo "id=$EDDY_TASK_ID shared=$EDDY_SHARED_DIR gpus=$CUDA_VISIBLE_DEVICES foo=$FOO secret=$ERT_DAEMON_SECRET"
id -u; id -g; id -G; pwd
cat /proc/self/cgroup`
	res := runTask(t, rt, runtime.Spec{ID: "ert-env", Command: []string{"sh", "-c", script},
		Env: []string{"FOO=bar baz", "EDDY_TASK_ID=spoofed"}, GPUs: []string{"0", "2"}, Cores: 0.5, MemBytes: 64 << 20,
		Uid: nobody, Gid: nobody, SharedDir: base, LogDir: logs}, 30*time.Second)
	if res.ExitCode != 0 {
		t.Fatalf("result %+v; stderr %s", res, readLog(t, logs, "stderr.log"))
	}
	lines := strings.Split(readLog(t, logs, "stdout.log"), "\n")
	want := []string{
		"id=ert-env shared=" + base + " gpus=0,2 foo=bar baz secret=",
		"65534", "65534", "65534", base,
	}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Fatalf("line %d = %q, want %q (all: %q)", i, lines[i], w, lines)
		}
	}
	cg := strings.Join(lines[len(want):], "\n")
	if !strings.Contains(cg, "/ert-env") {
		t.Errorf("task not in its own cgroup:\n%s", cg)
	}
	// Log dir and files belong to the task's user.
	for _, p := range []string{logs, filepath.Join(logs, "stdout.log")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody || st.Gid != nobody {
			t.Errorf("%s owned by %d:%d", p, st.Uid, st.Gid)
		}
	}
}

func TestRuntimeProcessCPUQuota(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	var file, want string
	switch rt.CgroupMode() {
	case "v1":
		file, want = "cpu.cfs_quota_us", "50000"
	case "v2":
		file, want = "cpu.max", "50000 100000"
	}
	// The task reads its own limit from its cgroup.
	script := `p=$(grep -E '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3)
[ -n "$p" ] && cat /sys/fs/cgroup/cpu$p/` + file + ` || cat /sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3)/` + file
	logs := filepath.Join(base, "logs")
	res := runTask(t, rt, runtime.Spec{ID: "ert-cpu", Command: []string{"sh", "-c", script}, Cores: 0.5,
		Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs}, 30*time.Second)
	if got := strings.TrimSpace(readLog(t, logs, "stdout.log")); res.ExitCode != 0 || got != want {
		t.Fatalf("quota %q (exit %d, stderr %q), want %q", got, res.ExitCode, readLog(t, logs, "stderr.log"), want)
	}
}

func TestRuntimeProcessOOM(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	logs := filepath.Join(base, "logs")
	// tail keeps the whole "last line" of /dev/zero (which has no newline) in memory.
	res := runTask(t, rt, runtime.Spec{ID: "ert-oom", Command: []string{"tail", "/dev/zero"}, MemBytes: 32 << 20,
		Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs}, 60*time.Second)
	if !res.OOMKilled || res.ExitCode != 137 {
		t.Fatalf("result %+v, want OOM-killed with exit 137", res)
	}
	// Without a limit the same kind of task is not flagged.
	res = runTask(t, rt, runtime.Spec{ID: "ert-nooom", Command: []string{"sh", "-c", "head -c 50000000 /dev/zero | tail -c 1 >/dev/null"},
		MemBytes: 256 << 20, Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs}, 60*time.Second)
	if res.OOMKilled || res.ExitCode != 0 {
		t.Fatalf("result %+v, want a clean exit", res)
	}
}

func TestRuntimeProcessKill(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	logs := filepath.Join(base, "logs")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Children in the group, one that leaves the group (setsid), one that ignores SIGTERM.
	script := `sleep 1000 & setsid sleep 1001 & trap '' TERM; (trap '' TERM; sleep 1002) & echo ready; wait`
	run, err := rt.Start(ctx, runtime.Spec{ID: "ert-kill", Command: []string{"sh", "-c", script},
		Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	deadline := time.Now().Add(10 * time.Second)
	for len(pids) < 4 && time.Now().Before(deadline) {
		pids = procsOf(t, "ert-kill")
		time.Sleep(20 * time.Millisecond)
	}
	if len(pids) < 4 {
		t.Fatalf("expected at least 4 processes in the task's cgroup, found %v", pids)
	}
	if err := run.Kill(ctx); err != nil {
		t.Fatalf("kill: %v", err)
	}
	res, err := run.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signal != "SIGKILL" || res.ExitCode != 137 || res.OOMKilled {
		t.Errorf("result %+v, want SIGKILL/137", res)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("process %d survived the kill", p)
		}
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/eddy/ert-*/ert-kill"); len(left) > 0 {
		t.Errorf("cgroup left behind: %v", left)
	}
	if _, ok := rt.Running("ert-kill"); ok {
		// The runtime forgets finished tasks right after Wait returns; give it a moment.
		time.Sleep(100 * time.Millisecond)
		if _, ok := rt.Running("ert-kill"); ok {
			t.Error("runtime still lists the killed task")
		}
	}
}

// procsOf lists the PIDs in the task's cgroup (any hierarchy).
func procsOf(t *testing.T, id string) []int {
	t.Helper()
	files, _ := filepath.Glob("/sys/fs/cgroup/memory/eddy/ert-*/" + id + "/cgroup.procs")
	more, _ := filepath.Glob("/sys/fs/cgroup/eddy/ert-*/" + id + "/cgroup.procs")
	var pids []int
	for _, f := range append(files, more...) {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(s)
			pids = append(pids, n)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestRuntimeProcessRefusesRoot(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	_, err := rt.Start(context.Background(), runtime.Spec{ID: "ert-root", Command: []string{"true"}, LogDir: filepath.Join(base, "l")})
	if !errors.Is(err, runtime.ErrRootRefused) {
		t.Fatalf("uid 0 without AllowRoot: err %v, want ErrRootRefused", err)
	}
	rootRT := ertRuntime(t, runtime.Config{AllowRoot: true})
	res := runTask(t, rootRT, runtime.Spec{ID: "ert-root", Command: []string{"id", "-u"}, WorkDir: base, LogDir: filepath.Join(base, "l")}, 30*time.Second)
	if out := readLog(t, filepath.Join(base, "l"), "stdout.log"); res.ExitCode != 0 || out != "0\n" {
		t.Fatalf("AllowRoot: %+v %q", res, out)
	}
	_, err = rt.Start(context.Background(), runtime.Spec{ID: "ert-missing", Command: []string{"ert-no-such-command"}, Uid: nobody, Gid: nobody, LogDir: filepath.Join(base, "m")})
	if err == nil || !strings.Contains(err.Error(), "ert-no-such-command") {
		t.Fatalf("missing command: err %v", err)
	}
}

func TestRuntimeProcessOrphansAdopted(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := rt.Start(ctx, runtime.Spec{ID: "ert-orphan", Command: []string{"sh", "-c", "sleep 1000 & sleep 1001"},
		Uid: nobody, Gid: nobody, WorkDir: base, LogDir: filepath.Join(base, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return len(procsOf(t, "ert-orphan")) >= 3 })
	// A stale, empty cgroup as a crashed daemon would leave it.
	var stale []string
	if rt.CgroupMode() == "v1" {
		for _, c := range []string{"memory", "cpu", "pids"} {
			stale = append(stale, filepath.Join("/sys/fs/cgroup", c, rt.Config().CgroupParent, "ert-stale"))
		}
	} else {
		stale = append(stale, filepath.Join("/sys/fs/cgroup", rt.Config().CgroupParent, "ert-stale"))
	}
	for _, d := range stale {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A new daemon with the same cgroup parent finds the running task and removes the stale one.
	rt2, err := runtime.New(ctx, rt.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	for _, d := range stale {
		if dirExists(d) {
			t.Errorf("stale cgroup %s not removed", d)
		}
	}
	adopted := rt2.Adopted()
	orphan := adopted["ert-orphan"]
	if len(adopted) != 1 || orphan == nil {
		t.Fatalf("adopted %v", adopted)
	}
	if _, ok := rt2.Running("ert-orphan"); !ok {
		t.Error("adopted task not listed as running")
	}
	if err := orphan.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// Its reaper outlived the first runtime: the exit status is known.
	res, err := orphan.Wait(ctx)
	if err != nil || res.Unknown || res.Signal != "SIGKILL" || res.ExitCode != 137 {
		t.Fatalf("orphan result %+v %v", res, err)
	}
	if res, err := run.Wait(ctx); err != nil || res.Signal != "SIGKILL" {
		t.Fatalf("original handle: %+v %v", res, err)
	}
}
