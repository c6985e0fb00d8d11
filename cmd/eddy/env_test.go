package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eddy-cluster/eddy/runtime/envs"
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
	// Everything was just written: the grace period protects it.
	if out, err = runEddy(t, "env", "prune", "--share", share); err != nil || !strings.Contains(out, "removed 0 versions") {
		t.Fatalf("prune within grace: %q %v", out, err)
	}
	if out, err = runEddy(t, "env", "prune", "--share", share, "--grace", "0s", "--json"); err != nil {
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
