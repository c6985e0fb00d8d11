package envs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseFile(t *testing.T) {
	cases := []struct {
		env, file string
		ts        int64
		gz, ok    bool
	}{
		{"torch", "torch_1700000000.tar", 1700000000, false, true},
		{"torch", "torch_1700000000.tar.gz", 1700000000, true, true},
		{"torch", "torch_17.tgz", 17, true, true},
		{"my_env", "my_env_5.tar", 5, false, true},
		{"torch", "torch_.tar", 0, false, false},
		{"torch", "torch_12a.tar", 0, false, false},
		{"torch", "other_12.tar", 0, false, false},
		{"torch", "torch_12.zip", 0, false, false},
		{"torch", ".torch_12.tar.lease.n1", 0, false, false},
		{"torch", ".torch_123.tmp", 0, false, false},
	}
	for _, c := range cases {
		ts, gz, ok := parseFile(c.env, c.file)
		if ts != c.ts || gz != c.gz || ok != c.ok {
			t.Errorf("parseFile(%q,%q) = %d %v %v, want %d %v %v", c.env, c.file, ts, gz, ok, c.ts, c.gz, c.ok)
		}
	}
}

func tarball(t *testing.T, gz bool, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		body := []byte(`{"schemaVersion":2}`)
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	if !gz {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func TestImportAtomicAndOrdered(t *testing.T) {
	share := t.TempDir()
	ctx := context.Background()
	now := time.Unix(1700000000, 0)
	v1, err := ImportReader(ctx, share, "torch", bytes.NewReader(tarball(t, false, "oci-layout", "index.json")), now)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Rel != "containers/torch/torch_1700000000.tar" || v1.Gzip {
		t.Fatalf("first import: %+v", v1)
	}
	// Same second, gzipped: still a new, newer version.
	v2, err := ImportReader(ctx, share, "torch", bytes.NewReader(tarball(t, true, "manifest.json")), now)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Rel != "containers/torch/torch_1700000001.tar.gz" || !v2.Gzip {
		t.Fatalf("second import: %+v", v2)
	}
	newest, err := Newest(share, "torch")
	if err != nil || newest.Path != v2.Path {
		t.Fatalf("newest %+v %v", newest, err)
	}
	ents, _ := os.ReadDir(filepath.Join(share, Dir, "torch"))
	if len(ents) != 2 {
		t.Errorf("leftover files: %v", ents)
	}

	bad := []struct {
		name string
		data []byte
		want error
	}{
		{"torch", []byte("hello, not a tarball at all"), ErrNotTarball},
		{"torch", tarball(t, false, "etc/passwd"), ErrNotTarball},
		{"../evil", tarball(t, false, "index.json"), ErrInvalidName},
		{"a/b", tarball(t, false, "index.json"), ErrInvalidName},
	}
	for _, b := range bad {
		if _, err := ImportReader(ctx, share, b.name, bytes.NewReader(b.data), now); !errors.Is(err, b.want) {
			t.Errorf("import %q: err %v, want %v", b.name, err, b.want)
		}
	}
	ents, _ = os.ReadDir(filepath.Join(share, Dir, "torch"))
	if len(ents) != 2 {
		t.Errorf("a failed import left files: %v", ents)
	}
	if _, err := Newest(share, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing env: %v", err)
	}
}

func TestListIncludesKohakuRiver(t *testing.T) {
	share := t.TempDir()
	write := func(rel string, age time.Duration) {
		p := filepath.Join(share, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		os.Chtimes(p, mt, mt)
	}
	write("kohakuriver-containers/base/base_100.tar.gz", 0)
	write("kohakuriver-containers/base/base_300.tar", 0)
	write("containers/base/base_200.tar", 0)
	write("containers/base/notes.txt", 0)
	write("containers/.hidden/x_1.tar", 0)
	envs, err := List(share)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].Name != "base" || len(envs[0].Versions) != 3 {
		t.Fatalf("list: %+v", envs)
	}
	var got []string
	for _, v := range envs[0].Versions {
		got = append(got, v.Source+":"+filepath.Base(v.Path))
	}
	if want := "kohakuriver:base_300.tar eddy:base_200.tar kohakuriver:base_100.tar.gz"; strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", strings.Join(got, " "), want)
	}
}

func TestPrune(t *testing.T) {
	share := t.TempDir()
	now := time.Now()
	mk := func(env string, ts int64, age time.Duration) string {
		p := filepath.Join(share, Dir, env, env+"_"+strconv.FormatInt(ts, 10)+".tar")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("0123456789"), 0o644)
		mt := now.Add(-age)
		os.Chtimes(p, mt, mt)
		return p
	}
	day := 24 * time.Hour
	a1 := mk("a", 1, 5*day)
	a2 := mk("a", 2, 4*day) // in use
	a3 := mk("a", 3, 3*day) // leased
	a4 := mk("a", 4, 2*day) // plain old: removed
	a5 := mk("a", 5, 10*time.Minute)
	a6 := mk("a", 6, time.Minute) // newest: kept
	b1 := mk("b", 1, day)
	// a5 is superseded by a6 only a minute ago, so a5 stays within the grace; a5 itself is
	// older than a grace of 5 minutes.
	vs, _ := Versions(share, "a")
	release, err := Lease(vs[3], "node-1") // a3
	if err != nil {
		t.Fatal(err)
	}
	opt := PruneOptions{Keep: 1, Grace: 5 * time.Minute, InUse: func(p string) bool { return p == a2 }, Now: now}
	dry := opt
	dry.DryRun = true
	rep, err := Prune(context.Background(), share, dry)
	if err != nil || len(rep.Removed) != 2 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	for _, p := range []string{a1, a4} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dry run removed %s", p)
		}
	}
	rep, err = Prune(context.Background(), share, opt)
	if err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{a1: true, a4: true}
	for _, p := range []string{a1, a2, a3, a4, a5, a6, b1} {
		_, err := os.Stat(p)
		if exists := err == nil; exists == gone[p] {
			t.Errorf("%s exists=%v, want %v", filepath.Base(p), exists, !gone[p])
		}
	}
	reasons := map[string]string{}
	for _, k := range rep.Kept {
		reasons[filepath.Base(k.Path)] = k.Reason
	}
	want := map[string]string{"a_2.tar": "in use by a task", "a_3.tar": "being loaded by a node", "a_5.tar": "superseded within the grace period"}
	for f, r := range want {
		if reasons[f] != r {
			t.Errorf("%s kept for %q, want %q", f, reasons[f], r)
		}
	}
	if rep.Freed != 20 {
		t.Errorf("freed %d", rep.Freed)
	}
	release()
	rep, err = Prune(context.Background(), share, PruneOptions{Keep: 2, Now: now.Add(time.Hour)})
	if err != nil || len(rep.Removed) != 2 { // a2, a3 (a5, a6 kept)
		t.Fatalf("second prune: %+v %v", rep, err)
	}
}

func TestLookup(t *testing.T) {
	share := t.TempDir()
	ctx := context.Background()
	old, err := ImportReader(ctx, share, "torch", bytes.NewReader(tarball(t, false, "index.json")), time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ImportReader(ctx, share, "torch", bytes.NewReader(tarball(t, false, "index.json")), time.Unix(200, 0)); err != nil {
		t.Fatal(err)
	}
	v, err := Lookup(share, "torch", old.Rel)
	if err != nil || v.Timestamp != 100 || v.Path != old.Path || v.Size != old.Size || v.Source != "eddy" {
		t.Fatalf("Lookup(%s) = %+v, %v", old.Rel, v, err)
	}
	kdir := filepath.Join(share, KohakuDir, "torch")
	os.MkdirAll(kdir, 0o755)
	os.WriteFile(filepath.Join(kdir, "torch_50.tar.gz"), tarball(t, true, "index.json"), 0o644)
	if v, err := Lookup(share, "torch", "kohakuriver-containers/torch/torch_50.tar.gz"); err != nil || !v.Gzip || v.Source != "kohakuriver" {
		t.Fatalf("kohakuriver version: %+v %v", v, err)
	}
	for _, rel := range []string{"containers/torch/torch_300.tar"} {
		if _, err := Lookup(share, "torch", rel); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", rel, err)
		}
	}
	for _, rel := range []string{"containers/other/other_100.tar", "containers/torch/../torch/x.tar", "../containers/torch/torch_100.tar",
		"containers/torch/other_100.tar", "datasets/torch/torch_100.tar", "containers/torch"} {
		if _, err := Lookup(share, "torch", rel); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%s: %v, want ErrInvalidName", rel, err)
		}
	}
}
