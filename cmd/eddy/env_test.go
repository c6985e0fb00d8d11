package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime/envs"
	"github.com/eddy-cluster/eddy/sched"
)

func runEddy(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(append([]string{"eddy"}, args...))
	return out.String(), err
}

func TestEnvCommands(t *testing.T) {
	share := t.TempDir()
	src := filepath.Join(t.TempDir(), "img.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: 2})
	tw.Write([]byte("{}"))
	tw.Close()
	os.WriteFile(src, buf.Bytes(), 0o644)

	for i := 0; i < 3; i++ {
		if out, err := runEddy(t, "env", "import", "--share", share, "torch", src); err != nil || !strings.Contains(out, "containers/torch/torch_") {
			t.Fatalf("import: %q %v", out, err)
		}
	}
	out, err := runEddy(t, "env", "ls", "--share", share, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []envs.Env
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || len(list[0].Versions) != 3 {
		t.Fatalf("ls: %q %v", out, err)
	}
	newest := list[0].Versions[0].Path
	// Without a daemon prune cannot know what tasks use: it refuses unless told.
	if _, err = runEddy(t, "env", "prune", "--share", share, "--socket", filepath.Join(share, "none.sock")); err == nil || !strings.Contains(err.Error(), "--ignore-tasks") {
		t.Fatalf("prune without a daemon: %v", err)
	}
	// Everything was just written: the grace period protects it.
	if out, err = runEddy(t, "env", "prune", "--share", share, "--ignore-tasks"); err != nil || !strings.Contains(out, "removed 0 versions") {
		t.Fatalf("prune within grace: %q %v", out, err)
	}
	if out, err = runEddy(t, "env", "prune", "--share", share, "--ignore-tasks", "--grace", "0s", "--json"); err != nil {
		t.Fatal(err)
	}
	var rep envs.PruneReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Removed) != 2 {
		t.Fatalf("prune: %q %v", out, err)
	}
	if _, err := os.Stat(newest); err != nil {
		t.Fatalf("newest version removed: %v", err)
	}
	if _, err := runEddy(t, "env", "import", "--share", share, "bad", "/etc/hostname"); err == nil {
		t.Fatal("importing a non-tarball succeeded")
	}
	if _, err := runEddy(t, "env", "ls", "--share", filepath.Join(share, "missing")); err == nil {
		t.Fatal("ls of a missing share succeeded")
	}
}

// prune asks the daemon for the versions queued and running tasks use, and keeps them.
func TestEnvPruneKeepsVersionsOfTasks(t *testing.T) {
	share := t.TempDir()
	var vs []envs.Version
	for i := 0; i < 3; i++ {
		v, err := envs.ImportReader(context.Background(), share, "torch", bytes.NewReader(indexTarball()), time.Unix(int64(100+i), 0))
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	tasks := []sched.Task{
		{ID: "t1", TaskSpec: sched.TaskSpec{ContainerEnv: "torch"}, State: sched.StateQueued, EnvFile: vs[0].Rel},
		{ID: "t2", TaskSpec: sched.TaskSpec{ContainerEnv: "torch"}, State: sched.StateCompleted, EnvFile: vs[1].Rel},
	}
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/tasks" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(tasks)
	})}
	go srv.Serve(l)
	defer srv.Close()
	out, err := runEddy(t, "env", "prune", "--share", share, "--socket", sock, "--grace", "0s", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep envs.PruneReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Rel != vs[1].Rel || len(rep.Kept) != 1 || rep.Kept[0].Rel != vs[0].Rel || rep.Kept[0].Reason != "in use by a task" {
		t.Fatalf("prune: removed %+v kept %+v", rep.Removed, rep.Kept)
	}
}

func indexTarball() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: 2})
	tw.Write([]byte("{}"))
	tw.Close()
	return buf.Bytes()
}
