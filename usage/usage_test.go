package usage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/eddy-cluster/eddy/origin"
)

func TestScopeOf(t *testing.T) {
	for name, want := range map[string]string{
		"users/alice/x/y": "users/alice", "users/alice": "users/alice", "users": "users",
		"jobs/12/out": "jobs/12", "shared_data/ds/1": "shared_data", "logs": "logs", "f": "f", ".": ".",
	} {
		if got := ScopeOf(name); got != want {
			t.Errorf("ScopeOf(%q) = %q, want %q", name, got, want)
		}
	}
}

func mkTree(t *testing.T) (string, origin.FS) {
	t.Helper()
	dir := t.TempDir()
	write := func(rel string, n int) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1500 { // more than one batch in one directory
		write(filepath.Join("shared_data", "big", "f"+itoa(i)), 10)
	}
	write("users/alice/a", 100)
	write("users/alice/sub/b", 200)
	write("users/bob/c", 1000)
	write("top", 5)
	os.Link(filepath.Join(dir, "users/bob/c"), filepath.Join(dir, "users/bob/c2"))
	fsys, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return dir, fsys
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
}

func TestCountByScope(t *testing.T) {
	_, fsys := mkTree(t)
	rep, err := Count(context.Background(), fsys, ".", ByScope, WalkOptions{Workers: 4}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Sum{}
	for _, g := range rep.Groups {
		got[g.Key] = g
	}
	if g := got["shared_data"]; g.Files != 1500 || g.Bytes != 15000 {
		t.Errorf("shared_data: %+v", g)
	}
	if g := got["users/alice"]; g.Files != 2 || g.Bytes != 300 {
		t.Errorf("users/alice: %+v", g)
	}
	if g := got["users/bob"]; g.Files != 1 || g.Bytes != 1000 { // the hard link counts once
		t.Errorf("users/bob: %+v", g)
	}
	if rep.Total.Files != 1500+2+1+1 {
		t.Errorf("total: %+v", rep.Total)
	}
	rep, err = Count(context.Background(), fsys, "users", ByDir, WalkOptions{Workers: 3}, nil, nil)
	if err != nil || len(rep.Groups) != 2 || rep.Groups[0].Key != "users/bob" {
		t.Fatalf("by dir: %+v %v", rep, err)
	}
}

func TestTrackerQuota(t *testing.T) {
	_, fsys := mkTree(t)
	tab := Table{}
	tab.Put(Quota{Target: "users/alice", Hard: 1000, Soft: 500})
	if err := SaveTable(context.Background(), fsys, tab); err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(fsys, 0, 2, nil)
	if !tr.Reload(context.Background()) {
		t.Fatal("no table loaded")
	}
	tr.Recount(context.Background())
	st := tr.Status()
	if len(st) != 1 || st[0].Used != 300 || st[0].Files != 2 || !st[0].Counted {
		t.Fatalf("status: %+v", st)
	}
	if tr.Applies("users/bob/x") || !tr.Applies("users/alice/new") {
		t.Fatal("Applies")
	}
	if err := tr.Charge("users/alice/new", 0, 600); err != nil {
		t.Fatal(err)
	}
	if err := tr.Charge("users/alice/new", 0, 101); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("over hard: %v", err)
	}
	if err := tr.Charge("users/alice/new", 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := tr.Charge("users/alice/other", 0, 0); !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("full: %v", err)
	}
	if s := tr.Status()[0]; !s.OverSoft || !s.OverHard || s.Used != 1000 {
		t.Fatalf("status: %+v", s)
	}
	tr.Charge("users/alice/new", 0, -700)
	if s := tr.Status()[0]; s.OverSoft || s.Used != 300 {
		t.Fatalf("after shrink: %+v", s)
	}
	back, _, err := LoadTable(context.Background(), fsys)
	if err != nil || len(back.Quotas) != 1 || back.Quotas[0].Hard != 1000 {
		t.Fatalf("reload: %+v %v", back, err)
	}
}

func TestLocalDirMatchesOrigin(t *testing.T) {
	dir, fsys := mkTree(t)
	l, err := NewLocalDir(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err1 := Count(context.Background(), fsys, ".", ByScope, WalkOptions{Workers: 4}, nil, nil)
	b, err2 := Count(context.Background(), l, ".", ByScope, WalkOptions{Workers: 4}, nil, nil)
	if err1 != nil || err2 != nil || a.Total != b.Total || len(a.Groups) != len(b.Groups) {
		t.Fatalf("origin %+v %v, local dir %+v %v", a.Total, err1, b.Total, err2)
	}
	if _, err := l.ReadDir(context.Background(), "../x"); err == nil {
		t.Fatal("escaped the root")
	}
}
