package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eddy-cluster/eddy/api"
)

// shareTree builds, under a directory every user can reach, a share with files of several modes
// (owned by root, group 4242 where said) and returns its root.
//
//	pub/            0755   pub/a 0644   pub/sub/b 0644
//	mixed/          0755   mixed/ok 0644   mixed/no 0600   mixed/skip.tmp 0600
//	secret/         0700   secret/c 0644
//	grp/            0750 group 4242   grp/g 0640 group 4242
//	noread/         0711   noread/f 0644
//	link -> pub
func shareTree(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(base, "share")
	mk := func(rel string, mode os.FileMode, gid int, dir bool) {
		p := filepath.Join(root, rel)
		var err error
		if dir {
			err = os.MkdirAll(p, 0o755)
		} else {
			err = os.WriteFile(p, []byte("x"), 0o644)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err == nil && gid >= 0 {
			err = os.Chown(p, 0, gid)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mk(".", 0o755, -1, true)
	mk("pub", 0o755, -1, true)
	mk("pub/a", 0o644, -1, false)
	mk("pub/sub", 0o755, -1, true)
	mk("pub/sub/b", 0o644, -1, false)
	mk("mixed", 0o755, -1, true)
	mk("mixed/ok", 0o644, -1, false)
	mk("mixed/no", 0o600, -1, false)
	mk("mixed/skip.tmp", 0o600, -1, false)
	mk("secret", 0o755, -1, true)
	mk("secret/c", 0o644, -1, false)
	mk("secret", 0o700, -1, true)
	mk("grp", 0o750, 4242, true)
	mk("grp/g", 0o640, 4242, false)
	mk("noread", 0o711, -1, true)
	mk("noread/f", 0o644, -1, false)
	if err := os.Symlink("pub", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	return root
}

// The kernel, asked as the caller (fsuid, fsgid, supplementary groups switched on a thread of
// its own), decides what a user may warm and list.
func TestKernelAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("taking another user's filesystem identity needs root")
	}
	root := shareTree(t)
	ka := &kernelAccess{root: root, cacheable: func(name string) bool { return !strings.HasSuffix(name, ".tmp") }}
	ctx := context.Background()
	user := api.Identity{Uid: 1000, Gid: 1000, Groups: []uint32{1000}}
	member := api.Identity{Uid: 1000, Gid: 1000, Groups: []uint32{1000, 4242}}
	primary := api.Identity{Uid: 1000, Gid: 4242}
	for _, tc := range []struct {
		id   api.Identity
		name string
		want string // "" allowed; else a piece of the error
	}{
		{user, "pub/a", ""},
		{user, "pub", ""},           // a directory: every file under it readable
		{user, ".", "may not read"}, // the whole share: names the first path the user may not read
		{user, "mixed/ok", ""},
		{user, "mixed/no", "uid 1000 may not read"},
		{user, "mixed", "mixed/no"}, // skip.tmp is not cacheable: not checked
		{user, "secret/c", "may not read"},
		{user, "secret", "may not read"},
		{user, "grp/g", "may not read"},
		{member, "grp/g", ""}, // through a supplementary group
		{member, "grp", ""},
		{primary, "grp/g", ""}, // through the primary group
		{user, "noread/f", ""}, // search permission is enough to read a known name
		{user, "noread", "may not read"},
		{user, "link/a", "symbolic link"},
		{user, "link", "symbolic link"},
		{user, "pub/nope", "not exist"},
		{api.Identity{Uid: 0}, "secret/c", ""},
	} {
		err := ka.MayWarm(ctx, tc.id, tc.name)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("MayWarm(uid %d groups %v, %s) = %v; want %q", tc.id.Uid, tc.id.Groups, tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(tc.want, "may not read") && !errors.Is(err, os.ErrPermission) {
			t.Errorf("MayWarm(%s): %v does not wrap os.ErrPermission", tc.name, err)
		}
	}

	dirs := []string{".", "pub", "pub/sub", "secret", "grp", "noread", "link", "missing"}
	ok, err := ka.Listable(ctx, user, dirs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dirs {
		if ok[d] {
			got = append(got, d)
		}
	}
	if want := []string{".", "pub", "pub/sub"}; !slices.Equal(got, want) {
		t.Fatalf("Listable for uid 1000 = %v; want %v", got, want)
	}
	if ok, _ := ka.Listable(ctx, member, []string{"grp"}); !ok["grp"] {
		t.Fatal("a member of the directory's group cannot list it")
	}

	// The checks ran on threads of their own: this process still reads what only root may.
	if _, err := os.ReadFile(filepath.Join(root, "mixed", "no")); err != nil {
		t.Fatalf("root lost access after the checks: %v", err)
	}
}
