package runtime

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func scopesRuntime(t *testing.T, lay Layout) (*Runtime, string) {
	t.Helper()
	share := t.TempDir()
	r := &Runtime{cfg: Config{ShareRoot: share, ScratchDir: filepath.Join(t.TempDir(), "scratch"), Layout: lay.WithDefaults()},
		log: slog.Default(), running: map[string]Running{}, orphans: map[string]Running{}}
	return r, share
}

func ownerMode(t *testing.T, p string) (uint32, fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid, fi.Mode()
}

func TestPrepareScopes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to the task's user)")
	}
	r, share := scopesRuntime(t, Layout{Users: "homes", UserDirMode: 0o750})
	sc, err := r.prepareScopes(Spec{ID: "t-1", Uid: 4242, Gid: 4242})
	if err != nil {
		t.Fatal(err)
	}
	want := Scopes{Shared: filepath.Join(share, "shared_data"), User: filepath.Join(share, "homes", "4242"),
		Job: filepath.Join(share, "jobs", "t-1"), Scratch: filepath.Join(r.cfg.ScratchDir, "t-1")}
	if sc != want {
		t.Fatalf("scopes %+v, want %+v", sc, want)
	}
	for _, c := range []struct {
		path string
		uid  uint32
		mode fs.FileMode
	}{
		{sc.Shared, 0, fs.ModeDir | fs.ModeSticky | 0o777},
		{filepath.Dir(sc.User), 0, fs.ModeDir | 0o755},
		{sc.User, 4242, fs.ModeDir | 0o750},
		{filepath.Dir(sc.Job), 0, fs.ModeDir | 0o755},
		{sc.Job, 4242, fs.ModeDir | 0o700},
		{sc.Scratch, 4242, fs.ModeDir | 0o700},
	} {
		if uid, mode := ownerMode(t, c.path); uid != c.uid || mode != c.mode {
			t.Errorf("%s: uid %d mode %v, want uid %d mode %v", c.path, uid, mode, c.uid, c.mode)
		}
	}
	// Another task of the same user: the same user dir, its own job dir.
	os.WriteFile(filepath.Join(sc.User, "keep"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(sc.Scratch, "junk"), []byte("x"), 0o644)
	sc2, err := r.prepareScopes(Spec{ID: "t-2", Uid: 4242, Gid: 4242})
	if err != nil || sc2.User != sc.User || sc2.Job == sc.Job {
		t.Fatalf("second task: %+v %v", sc2, err)
	}
	if _, err := os.Stat(filepath.Join(sc.User, "keep")); err != nil {
		t.Error("the user dir lost a file across tasks")
	}
	// Neither task runs: the sweep removes both scratch dirs, never the job dirs.
	r.sweepScratch()
	for _, p := range []string{sc.Scratch, sc2.Scratch} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("scratch %s not swept: %v", p, err)
		}
	}
	if _, err := os.Stat(sc.Job); err != nil {
		t.Errorf("job dir gone: %v", err)
	}
	// A running (or starting) task's scratch stays.
	r.running["t-3"] = nil
	sc3, _ := r.prepareScopes(Spec{ID: "t-3", Uid: 4242, Gid: 4242})
	r.sweepScratch()
	if _, err := os.Stat(sc3.Scratch); err != nil {
		t.Errorf("a starting task's scratch was swept: %v", err)
	}
	// Another user's directory under users/ is refused, not taken over.
	if _, err := r.prepareScopes(Spec{ID: "t-4", Uid: 4343, Gid: 4343}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(share, "homes", "4343"), 4444, 4444); err != nil {
		t.Fatal(err)
	}
	if _, err := r.prepareScopes(Spec{ID: "t-5", Uid: 4343, Gid: 4343}); err == nil || !strings.Contains(err.Error(), "belongs to uid 4444") {
		t.Fatalf("another user's dir: %v", err)
	}
}

func TestPrepareScopesNoShare(t *testing.T) {
	r, _ := scopesRuntime(t, Layout{})
	r.cfg.ShareRoot = ""
	sc, err := r.prepareScopes(Spec{ID: "t-1", Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Shared != "" || sc.User != "" || sc.Job != "" || sc.Scratch == "" {
		t.Fatalf("scopes without a share: %+v", sc)
	}
	env := taskEnv(Spec{ID: "t-1"}, Scopes{Shared: "/s", User: "/u", Job: "/j", Scratch: "/x"}, false)
	if got := strings.Join(env, " "); !strings.Contains(got, "EDDY_USER_DIR=/u") || !strings.Contains(got, "EDDY_JOB_DIR=/j") ||
		!strings.Contains(got, "EDDY_SCRATCH=/x") || !strings.Contains(got, "EDDY_SHARED_DIR=/s") {
		t.Fatalf("env %q", got)
	}
}

func TestLayoutDefaults(t *testing.T) {
	l := Layout{}.WithDefaults()
	if l.SharedData != "shared_data" || l.Users != "users" || l.Jobs != "jobs" || l.UserDirMode != 0o700 ||
		l.SharedMount != "/shared" || l.UserMount != "/user" || l.JobMount != "/job" || l.ScratchMount != "/scratch" {
		t.Fatalf("defaults %+v", l)
	}
	if p := (Layout{Jobs: "j"}).JobPath("/s", "t1"); p != "/s/j/t1" {
		t.Fatal(p)
	}
}
