package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestTaskEnv(t *testing.T) {
	spec := Spec{ID: "t1", Uid: 65534, Env: []string{"FOO=1", "PATH=/opt/bin", "EDDY_TASK_ID=spoof", "BAD", "=x"}, GPUs: []string{"0", "3"}}
	env := taskEnv(spec, Scopes{Shared: "/mnt/share"}, true)
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := got[k]; dup {
			t.Errorf("duplicate %s", k)
		}
		got[k] = v
	}
	want := map[string]string{"FOO": "1", "PATH": "/opt/bin", "EDDY_TASK_ID": "t1", "EDDY_SHARED_DIR": "/mnt/share", "CUDA_VISIBLE_DEVICES": "0,3"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["BAD"]; ok {
		t.Error("malformed entry kept")
	}
	if env := taskEnv(Spec{ID: "t2"}, Scopes{}, false); len(env) != 2 || env[1] != "CUDA_VISIBLE_DEVICES=" {
		t.Errorf("container env %q", env)
	}
}

func TestValidate(t *testing.T) {
	r := &Runtime{}
	ok := Spec{ID: "a-1.b_c", Command: []string{"true"}, Uid: 1000, LogDir: "/tmp/x"}
	cases := []struct {
		name string
		mod  func(*Spec)
		want error
	}{
		{"ok", func(*Spec) {}, nil},
		{"empty id", func(s *Spec) { s.ID = "" }, ErrInvalidSpec},
		{"slash id", func(s *Spec) { s.ID = "../x" }, ErrInvalidSpec},
		{"no command", func(s *Spec) { s.Command = nil }, ErrInvalidSpec},
		{"negative mem", func(s *Spec) { s.MemBytes = -1 }, ErrInvalidSpec},
		{"no logs", func(s *Spec) { s.LogDir = "" }, ErrInvalidSpec},
		{"root", func(s *Spec) { s.Uid = 0 }, ErrRootRefused},
		{"both env and image", func(s *Spec) { s.Container = &Container{Env: "a", Image: "b"} }, ErrInvalidSpec},
		{"container default command", func(s *Spec) { s.Command = nil; s.Container = &Container{Env: "a"} }, nil},
	}
	for _, c := range cases {
		s := ok
		c.mod(&s)
		if err := r.validate(s); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	p, err := lookPath("sh", []string{"PATH=/nonexistent:/bin:/usr/bin"})
	if err != nil || !strings.HasSuffix(p, "/sh") {
		t.Fatalf("sh: %q %v", p, err)
	}
	if _, err := lookPath("sh", []string{"PATH=/nonexistent"}); err == nil {
		t.Fatal("found sh outside the task's PATH")
	}
	if p, _ := lookPath("./x", nil); p != "./x" {
		t.Fatalf("relative path rewritten: %q", p)
	}
}

func TestContainerWithoutContainerd(t *testing.T) {
	r, err := New(context.Background(), Config{AllowRoot: true, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Start(context.Background(), Spec{ID: "x", Uid: 1, LogDir: t.TempDir(), Container: &Container{Env: "e"}})
	if !errors.Is(err, ErrNoContainerd) {
		t.Fatalf("%v", err)
	}
}

func TestLazyContainerdNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no containerd, runc or shim to be found
	dir := t.TempDir()
	r, err := New(context.Background(), Config{AllowRoot: true, ContainerdDir: dir, ContainerdLazy: true})
	if err != nil {
		t.Fatalf("a lazy runtime without containerd must still start: %v", err)
	}
	defer r.Close()
	_, err = r.Start(context.Background(), Spec{ID: "x", Uid: 1, LogDir: t.TempDir(), Container: &Container{Env: "e"}})
	if !errors.Is(err, ErrNoContainerd) || !strings.Contains(err.Error(), "containerd is not installed") {
		t.Fatalf("container task without containerd: %v", err)
	}
	if got, err := r.ImportedEnvs(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("imported envs without containerd: %v %v", got, err)
	}
	// Eager (explicit) configuration: New itself fails, clearly.
	if _, err := New(context.Background(), Config{ContainerdDir: dir}); !errors.Is(err, ErrNoContainerd) {
		t.Fatalf("eager runtime without containerd: %v", err)
	}
}

func TestContainerWorkDir(t *testing.T) {
	cases := []struct {
		wd, want string
		bad      bool
	}{
		{"", "", false},
		{"/mnt/share", "", false},
		{"/mnt/share/", "", false},
		{"/mnt/share/shared_data", "/shared", false},
		{"/mnt/share/shared_data/runs/a", "/shared/runs/a", false},
		{"/mnt/share/datasets", "", true},
		{"/work", "/work", false},
		{"/mnt/sharex", "/mnt/sharex", false},
	}
	for _, c := range cases {
		got, err := containerWorkDir(c.wd, "/mnt/share", "/mnt/share/shared_data", "/shared")
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("containerWorkDir(%q) = %q, %v; want %q (error %v)", c.wd, got, err, c.want, c.bad)
		}
	}
}
