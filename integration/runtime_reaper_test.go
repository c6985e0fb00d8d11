package integration

import (
	"context"
	"encoding/json"
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

// A process task's end is known to the next runtime (a restarted daemon) whether it ended
// before or after that one started; an ID it knows is never started again until forgotten.
func TestRuntimeProcessEndSurvivesRestart(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := func(id, script string) runtime.Spec {
		return runtime.Spec{ID: id, Command: []string{"sh", "-c", script}, Uid: nobody, Gid: nobody, WorkDir: base,
			LogDir: filepath.Join(base, id), GPUs: []string{"1"}}
	}
	// ert-short ends before the next runtime starts; ert-long after; ert-stuck is killed by it.
	short, err := rt.Start(ctx, spec("ert-short", "echo short; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := short.Wait(ctx); err != nil || res.ExitCode != 3 {
		t.Fatalf("short: %+v %v", res, err)
	}
	long, err := rt.Start(ctx, spec("ert-long", "sleep 1.5; exit 5"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, spec("ert-stuck", "sleep 1000")); err != nil {
		t.Fatal(err)
	}

	rt2, err := runtime.New(ctx, rt.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	got := map[string]runtime.Adoptee{}
	for _, a := range rt2.Adoptees() {
		got[a.ID] = a
	}
	if len(got) != 3 || !got["ert-short"].Ended || got["ert-long"].Ended || got["ert-stuck"].Ended {
		t.Fatalf("adoptees %+v", got)
	}
	if a := got["ert-long"]; a.Started.IsZero() || len(a.GPUs) != 1 || a.GPUs[0] != "1" {
		t.Errorf("adopted running task: started %v gpus %v", a.Started, a.GPUs)
	}
	for id := range got {
		if _, err := rt2.Start(ctx, spec(id, "echo again >> again")); !errors.Is(err, runtime.ErrAlreadyExists) {
			t.Errorf("start %s again: %v, want ErrAlreadyExists", id, err)
		}
	}
	if res, err := got["ert-short"].Run.Wait(ctx); err != nil || res.ExitCode != 3 || res.Unknown || res.Started.IsZero() {
		t.Fatalf("ended while away: %+v %v", res, err)
	}
	if res, err := got["ert-long"].Run.Wait(ctx); err != nil || res.ExitCode != 5 || res.Unknown {
		t.Fatalf("ended after the restart, seen by the new runtime: %+v %v", res, err)
	}
	if res, err := long.Wait(ctx); err != nil || res.ExitCode != 5 {
		t.Fatalf("ended after the restart, seen by the old runtime: %+v %v", res, err)
	}
	if err := rt2.Forget("ert-stuck"); !errors.Is(err, runtime.ErrStillRunning) {
		t.Fatalf("forget a running task: %v", err)
	}
	if err := got["ert-stuck"].Run.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := got["ert-stuck"].Run.Wait(ctx); err != nil || res.Signal != "SIGKILL" {
		t.Fatalf("killed by the new runtime: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(base, "again")); err == nil {
		t.Fatal("a known task was started again")
	}
	if n := len(procsOf(t, "ert-stuck")); n != 0 {
		t.Errorf("%d processes left in the killed task's cgroup", n)
	}
	// Forgotten: gone from the state dir and from Adopted, and the ID may run again.
	for _, id := range []string{"ert-short", "ert-long", "ert-stuck"} {
		if err := rt2.Forget(id); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(rt2.Config().StateDir, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state of %s after Forget: %v", id, err)
		}
	}
	if n := len(rt2.Adopted()); n != 0 {
		t.Errorf("%d tasks adopted after Forget", n)
	}
	res := runTask(t, rt2, spec("ert-short", "exit 4"), 30*time.Second)
	if res.ExitCode != 4 {
		t.Fatalf("forgotten ID run again: %+v", res)
	}
	if err := rt2.Forget("ert-short"); err != nil {
		t.Fatal(err)
	}
}

// A reaper killed before its task ends leaves the end unknown (never a made-up exit code),
// for the runtime that started it and for the next one.
func TestRuntimeProcessReaperKilled(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run, err := rt.Start(ctx, runtime.Spec{ID: "ert-reaperless", Command: []string{"sleep", "1"}, Uid: nobody, Gid: nobody,
		WorkDir: base, LogDir: filepath.Join(base, "logs")})
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Pid int }
	b, err := os.ReadFile(filepath.Join(rt.Config().StateDir, "ert-reaperless", "started.json"))
	if err != nil || json.Unmarshal(b, &st) != nil || st.Pid <= 0 {
		t.Fatalf("started.json: %s %v", b, err)
	}
	reaper := ppid(t, st.Pid)
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", reaper)); !strings.HasPrefix(string(comm), "eddy-task-reaper\x00") {
		t.Fatalf("parent of the task is %q", comm)
	}
	if err := syscall.Kill(reaper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res, err := run.Wait(ctx)
	if err != nil || !res.Unknown || res.ExitCode != -1 || res.Err == "" {
		t.Fatalf("result without a reaper: %+v %v", res, err)
	}
	rt2, err := runtime.New(ctx, rt.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	a := rt2.Adopted()["ert-reaperless"]
	if a == nil {
		t.Fatal("not adopted")
	}
	if res, err := a.Wait(ctx); err != nil || !res.Unknown || res.ExitCode != -1 {
		t.Fatalf("next runtime's result: %+v %v", res, err)
	}
	if err := rt2.Forget("ert-reaperless"); err != nil {
		t.Fatal(err)
	}
}

// A task gets stdin, stdout and stderr only: never a descriptor the daemon holds, even one
// opened without close-on-exec (go-fuse opens /dev/fuse that way; a task holding it keeps a
// dead daemon's mount connected and hangs on it).
func TestRuntimeProcessInheritsNoDescriptors(t *testing.T) {
	rt := ertRuntime(t, runtime.Config{})
	base := ertDir(t)
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	logs := filepath.Join(base, "logs")
	res := runTask(t, rt, runtime.Spec{ID: "ert-fds", Command: []string{"sh", "-c", "ls /proc/self/fd"},
		Uid: nobody, Gid: nobody, WorkDir: base, LogDir: logs}, 30*time.Second)
	out := strings.Fields(readLog(t, logs, "stdout.log"))
	// ls sees 0-2 and the descriptor of the directory it lists.
	if res.ExitCode != 0 || len(out) != 4 || out[0] != "0" || out[1] != "1" || out[2] != "2" {
		t.Fatalf("descriptors of the task: %q (%+v; the daemon's leaked one is %d)", out, res, fd)
	}
	if err := rt.Forget("ert-fds"); err != nil {
		t.Fatal(err)
	}
}

func ppid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, _ := strconv.Atoi(f[1])
	return n
}
