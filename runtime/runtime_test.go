package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestTaskEnv(t *testing.T) {
	spec := Spec{ID: "t1", Uid: 65534, Env: []string{"FOO=1", "PATH=/opt/bin", "EDDY_TASK_ID=spoof", "BAD", "=x"}, GPUs: []string{"0", "3"}}
	env := taskEnv(spec, "/mnt/share", true)
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
	if env := taskEnv(Spec{ID: "t2"}, "", false); len(env) != 2 || env[1] != "CUDA_VISIBLE_DEVICES=" {
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
