package housekeeping

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

var now = time.Date(2030, 1, 10, 12, 0, 0, 0, time.UTC)

func write(t *testing.T, p string, n int, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), n), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Dir(p), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// tempShare lays out job and log dirs of tasks in every situation gc distinguishes.
func tempShare(t *testing.T) (string, []api.Task) {
	share := t.TempDir()
	old, recent := now.Add(-10*24*time.Hour), now.Add(-time.Hour)
	for _, id := range []string{"t-done-old", "t-done-new", "t-running", "t-keep", "t-unknown-old", "t-unknown-new", "t-input-of-queued"} {
		mt := old
		if strings.HasSuffix(id, "-new") {
			mt = recent
		}
		write(t, filepath.Join(share, "jobs", id, "out", "data.bin"), 1000, mt)
		write(t, filepath.Join(share, "logs", id, "stdout.log"), 10, mt)
	}
	// A symlink out of the share is never followed, a stray file is no task's.
	outside := t.TempDir()
	write(t, filepath.Join(outside, "precious"), 5, old)
	os.Symlink(outside, filepath.Join(share, "jobs", "t-done-old", "link"))
	write(t, filepath.Join(share, "jobs", "README"), 3, old)
	ended := func(id string, at time.Time) api.Task {
		return api.Task{ID: id, State: api.StateCompleted, Finished: at}
	}
	tasks := []api.Task{
		ended("t-done-old", old),
		ended("t-done-new", recent),
		{ID: "t-running", State: api.StateRunning},
		{ID: "t-keep", State: api.StateFailed, Finished: old, TaskSpec: api.TaskSpec{KeepJobDir: true}},
		ended("t-input-of-queued", old),
		{ID: "t-queued", State: api.StateQueued, TaskSpec: api.TaskSpec{Inputs: []string{"jobs/t-input-of-queued/out"}}},
	}
	return share, tasks
}

func TestRunDryAndReal(t *testing.T) {
	share, tasks := tempShare(t)
	opt := DefaultOptions(share)
	opt.Tasks, opt.Now = tasks, now
	var phases []string
	opt.Progress = func(p Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	rep, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	removed := map[string]bool{}
	for _, it := range rep.Removed {
		removed[it.Rel] = true
	}
	want := []string{"jobs/t-done-old", "jobs/t-unknown-old"} // logs: 30 days
	if len(rep.Removed) != len(want) {
		t.Fatalf("dry run would remove %+v, want %v", rep.Removed, want)
	}
	for _, w := range want {
		if !removed[w] {
			t.Errorf("dry run would not remove %s: %+v", w, rep.Removed)
		}
	}
	if rep.Freed != 2000 || !rep.DryRun {
		t.Errorf("freed %d (want 2000: the symlink's target is not counted), dry %v", rep.Freed, rep.DryRun)
	}
	if !exists(filepath.Join(share, "jobs", "t-done-old", "out", "data.bin")) {
		t.Fatal("a dry run removed something")
	}
	if strings.Join(phases, ",") != "jobs,logs,envs" {
		t.Errorf("progress phases %v", phases)
	}
	reasons := map[string]string{}
	for _, k := range rep.Kept {
		reasons[k.Rel] = k.Reason
	}
	for rel, want := range map[string]string{
		"jobs/t-running":         "is running",
		"jobs/t-keep":            "keep_job_dir",
		"jobs/t-input-of-queued": "used by task t-queued",
		"jobs/t-done-new":        "within retention",
		"jobs/t-unknown-new":     "within retention",
		"logs/t-running":         "is running",
	} {
		if !strings.Contains(reasons[rel], want) {
			t.Errorf("%s kept for %q, want %q", rel, reasons[rel], want)
		}
	}

	// For real, with a log retention of a day: the old logs of ended tasks go too.
	opt.DryRun, opt.LogRetention, opt.Progress = false, 24*time.Hour, nil
	rep, err = Run(context.Background(), opt)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatal(err, rep.Errors)
	}
	for _, rel := range []string{"jobs/t-done-old", "jobs/t-unknown-old", "logs/t-done-old", "logs/t-unknown-old", "logs/t-keep", "logs/t-input-of-queued"} {
		if exists(filepath.Join(share, rel)) {
			t.Errorf("%s not removed", rel)
		}
	}
	for _, rel := range []string{"jobs/t-running", "jobs/t-keep", "jobs/t-input-of-queued", "jobs/t-done-new", "jobs/README", "logs/t-running", "logs/t-done-new"} {
		if !exists(filepath.Join(share, rel)) {
			t.Errorf("%s removed", rel)
		}
	}
}

func TestRunNeverRetention(t *testing.T) {
	share, tasks := tempShare(t)
	opt := DefaultOptions(share)
	opt.Tasks, opt.Now, opt.DryRun, opt.JobRetention, opt.LogRetention = tasks, now, false, -1, -1
	rep, err := Run(context.Background(), opt)
	if err != nil || len(rep.Removed) != 0 {
		t.Fatalf("negative retention removed %+v (%v)", rep.Removed, err)
	}
}

func TestRunEnvs(t *testing.T) {
	share := t.TempDir()
	tarball := func(ts time.Time) envs.Version {
		t.Helper()
		p := filepath.Join(share, "env-"+ts.Format("150405")+".tar")
		writeTar(t, p)
		v, err := envs.Import(context.Background(), share, "torch", p, ts)
		if err != nil {
			t.Fatal(err)
		}
		os.Chtimes(v.Path, ts, ts)
		return v
	}
	v1 := tarball(now.Add(-72 * time.Hour))
	v2 := tarball(now.Add(-48 * time.Hour))
	v3 := tarball(now.Add(-24 * time.Hour))
	opt := DefaultOptions(share)
	opt.Now, opt.DryRun = now, false
	opt.Tasks = []api.Task{{ID: "t-uses-v1", State: api.StateRunning, EnvFile: v1.Rel}}
	rep, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Rel != v2.Rel || rep.Removed[0].Kind != KindEnv {
		t.Fatalf("removed %+v, want only %s", rep.Removed, v2.Rel)
	}
	if !exists(v1.Path) || exists(v2.Path) || !exists(v3.Path) {
		t.Fatalf("after gc: v1 %v v2 %v v3 %v", exists(v1.Path), exists(v2.Path), exists(v3.Path))
	}
	if len(rep.Kept) != 1 || !strings.Contains(rep.Kept[0].Reason, "in use by task t-uses-v1") {
		t.Fatalf("kept %+v", rep.Kept)
	}
}

// writeTar writes a minimal docker-archive tarball (a manifest.json entry).
func writeTar(t *testing.T, p string) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	body := []byte("[]")
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	tw.Close()
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
