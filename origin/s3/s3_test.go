package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

var bg = context.Background()

func TestParseURL(t *testing.T) {
	c, err := ParseURL("s3://my-bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-1&path_style=1&credentials_file=/etc/k&spool=/var/tmp&timeout=5s&uid=7&gid=8")
	if err != nil {
		t.Fatal(err)
	}
	if c.Bucket != "my-bucket" || c.Prefix != "a/b" || c.Endpoint.String() != "http://127.0.0.1:9000" || c.Region != "eu-1" ||
		!c.PathStyle || c.CredentialsFile != "/etc/k" || c.Spool != "/var/tmp" || c.Timeout != 5*time.Second || c.Uid != 7 || c.Gid != 8 {
		t.Fatalf("parsed %+v", c)
	}
	if s := c.String(); s != "s3://my-bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-1&path_style=1" {
		t.Errorf("String() = %q", s)
	}
	whole, err := ParseURL("s3://my-bucket?endpoint=https://s3.example.net")
	if err != nil || whole.Prefix != "" || whole.PathStyle || whole.Region != "us-east-1" {
		t.Fatalf("bucket root: %+v %v", whole, err)
	}
	for _, bad := range []string{
		"s3://my-bucket/p?endpoint=ftp://x",
		"s3://my-bucket/p?endpoint=http://x/path",
		"s3://My_Bucket/p?endpoint=http://x",
		"s3://my-bucket:9000/p?endpoint=http://x",
		"s3://my-bucket/p?endpoint=http://x&path_style=maybe",
		"s3://my-bucket/p?endpoint=http://x&spool=relative",
		"s3://my-bucket/../p?endpoint=http://x",
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	_, err = ParseURL("s3://my-bucket/p?endpoint=http://x&secret_key=hunter2")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("unknown option: %v (must be refused without echoing its value)", err)
	}
}

func TestMapping(t *testing.T) {
	f := newFake(t)
	f.put("top.txt", []byte("top"))
	f.put("pre/a.txt", []byte("hello"))
	f.put("pre/d/x", []byte("x"))
	f.put("pre/d/e/y", []byte("y"))
	f.put("pre/m/", nil) // an empty directory, by marker
	f.put("pre/both", []byte("file wins"))
	f.put("pre/both/under", []byte("hidden"))
	f.put("pre/odd//name", []byte("no place in a tree"))
	fs := f.open(t, "pre?")

	root, err := fs.Lstat(bg, ".")
	if err != nil || !root.IsDir() {
		t.Fatalf("root: %+v %v", root, err)
	}
	a, err := fs.Lstat(bg, "a.txt")
	if err != nil || !a.IsRegular() || a.Size != 5 || a.Mode&0o777 != 0o644 || a.Nlink != 1 || a.Change == 0 {
		t.Fatalf("a.txt: %+v %v", a, err)
	}
	for _, d := range []string{"d", "d/e", "m"} {
		da, err := fs.Lstat(bg, d)
		if err != nil || !da.IsDir() || da.Mode&0o777 != 0o755 {
			t.Errorf("%s: %+v %v, want a directory", d, da, err)
		}
	}
	if _, err := fs.Lstat(bg, "nope"); !origin.IsNotExist(err) || origin.IsTrouble(err) {
		t.Errorf("absent: %v, want ENOENT", err)
	}
	if b, _ := fs.Lstat(bg, "both"); !b.IsRegular() {
		t.Errorf("both: %+v, want the file", b)
	}
	ents, err := fs.ReadDir(bg, ".")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		kind := "f"
		if e.Mode == syscall.S_IFDIR {
			kind = "d"
		}
		got = append(got, e.Name+":"+kind)
		if e.Mode == syscall.S_IFREG {
			la, err := fs.Lstat(bg, e.Name)
			if err != nil || e.Attr == nil || e.Attr.Fingerprint() != la.Fingerprint() || e.Ino != la.Ino {
				t.Errorf("%s: listing attrs %+v differ from lstat %+v (%v)", e.Name, e.Attr, la, err)
			}
		}
	}
	if s := strings.Join(got, " "); s != "a.txt:f both:f d:d m:d odd:d" {
		t.Errorf("ReadDir(.) = %s", s)
	}
	if ents, err := fs.ReadDir(bg, "m"); err != nil || len(ents) != 0 {
		t.Errorf("empty dir: %v %v", ents, err)
	}
	if _, err := fs.ReadDir(bg, "a.txt"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("ReadDir(file): %v, want ENOTDIR", err)
	}
	if _, err := fs.ReadDir(bg, "nope"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("ReadDir(absent): %v, want ENOENT", err)
	}

	// A replacement of the same size in the same second is a new version
	// (the ETag), under the same inode number.
	f.put("pre/a.txt", []byte("HELLO"))
	b, err := fs.Lstat(bg, "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != a.Size || !b.Mtime.Equal(a.Mtime) || b.Ino != a.Ino {
		t.Fatalf("test set-up: want same size, time and ino: %+v %+v", a, b)
	}
	if a.Fingerprint() == b.Fingerprint() {
		t.Error("replacement kept the fingerprint")
	}
}

func TestReadIfMatch(t *testing.T) {
	f := newFake(t)
	v1 := bytes.Repeat([]byte("1"), 1000)
	f.put("f", v1)
	fs := f.open(t, "?")
	fl, err := fs.Open(bg, "f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	p := make([]byte, 400)
	if n, err := fl.ReadAt(bg, p, 100); n != 400 || err != nil || !bytes.Equal(p, v1[100:500]) {
		t.Fatalf("read: %d %v", n, err)
	}
	if n, err := fl.ReadAt(bg, p, 800); n != 200 || err != io.EOF {
		t.Fatalf("read at the end: %d %v, want 200 and EOF", n, err)
	}
	if n, err := fl.ReadAt(bg, p, 1000); n != 0 || err != io.EOF {
		t.Fatalf("read past the end: %d %v", n, err)
	}
	var gets []*http.Request
	for _, r := range f.requests("GET") {
		if r.URL.Path == "/bkt/f" {
			gets = append(gets, r)
		}
	}
	if len(gets) != 2 {
		t.Fatalf("%d GETs for 2 reads (a read past the end needs none)", len(gets))
	}
	for _, r := range gets {
		if r.Header.Get("If-Match") == "" || !strings.HasPrefix(r.Header.Get("Range"), "bytes=") {
			t.Errorf("GET without If-Match or Range: %v", r.Header)
		}
	}
	// Replaced mid-read: the next read fails as the file having changed,
	// and never returns bytes of the new version.
	f.put("f", bytes.Repeat([]byte("2"), 1000))
	n, err := fl.ReadAt(bg, p, 500)
	if err == nil || !errors.Is(err, syscall.ESTALE) || origin.IsNotExist(err) {
		t.Fatalf("read after replacement: %d %v, want ESTALE", n, err)
	}
	if w, ok := fl.(origin.AttrWitness); !ok {
		t.Error("read-only files should witness their version")
	} else if a, ok := w.Witnessed(); !ok || a.Size != 1000 {
		t.Errorf("Witnessed = %+v %v", a, ok)
	}
	// Removed: ESTALE too, not ENOENT.
	fl2, err := fs.Open(bg, "f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fl2.Close()
	if err := fs.Unlink(bg, "f"); err != nil {
		t.Fatal(err)
	}
	if _, err := fl2.ReadAt(bg, p, 0); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("read after delete: %v, want ESTALE", err)
	}
}

func TestListPagination(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.pageSize = 100
	f.mu.Unlock()
	for i := 0; i < 1050; i++ {
		f.put(fmt.Sprintf("big/f%05d", i), []byte("x"))
	}
	for i := 0; i < 30; i++ {
		f.put(fmt.Sprintf("big/sub%02d/deep/file", i), []byte("y"))
	}
	fs := f.open(t, "?")
	f.mu.Lock()
	f.lists = 0
	f.mu.Unlock()
	ents, err := fs.ReadDir(bg, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1080 {
		t.Fatalf("%d entries, want 1080", len(ents))
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if seen[e.Name] {
			t.Fatalf("%s listed twice", e.Name)
		}
		seen[e.Name] = true
	}
	f.mu.Lock()
	lists := f.lists
	f.mu.Unlock()
	if lists != 11 {
		t.Errorf("%d list requests, want 11 pages of 100", lists)
	}
}

func TestCredentialPrecedence(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	urlFile := write("url", "[default]\naws_access_key_id = URLKEY\naws_secret_access_key = SECRETVALUE\n[other]\naws_access_key_id = URLOTHER\naws_secret_access_key = SECRETVALUE\n")
	shared := write("shared", "[default]\naws_access_key_id = SHAREDKEY\naws_secret_access_key = SECRETVALUE\n[prof]\naws_access_key_id = SHAREDPROF\naws_secret_access_key = SECRETVALUE\n")
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, ".aws"), 0o755)
	os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte("[default]\naws_access_key_id = HOMEKEY\naws_secret_access_key = SECRETVALUE\n"), 0o600)

	all := map[string]string{
		"AWS_ACCESS_KEY_ID": "ENVAWS", "AWS_SECRET_ACCESS_KEY": "SECRETVALUE",
		"MINIO_ROOT_USER": "ENVMINIO", "MINIO_ROOT_PASSWORD": "SECRETVALUE",
		"AWS_SHARED_CREDENTIALS_FILE": shared, "HOME": home,
	}
	without := func(keys ...string) map[string]string {
		m := map[string]string{}
		for k, v := range all {
			m[k] = v
		}
		for _, k := range keys {
			delete(m, k)
		}
		return m
	}
	cases := []struct {
		name    string
		cfg     Config
		env     map[string]string
		want    string
		wantErr string
	}{
		{"url file beats everything", Config{CredentialsFile: urlFile}, all, "URLKEY", ""},
		{"url file, profile=", Config{CredentialsFile: urlFile, Profile: "other"}, all, "URLOTHER", ""},
		{"url file missing is an error", Config{CredentialsFile: filepath.Join(dir, "none")}, all, "", "credentials_file"},
		{"AWS env next", Config{}, all, "ENVAWS", ""},
		{"MINIO env next", Config{}, without("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "ENVMINIO", ""},
		{"half a pair is an error", Config{}, without("AWS_SECRET_ACCESS_KEY"), "", "must be set together"},
		{"shared file next", Config{}, without("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"), "SHAREDKEY", ""},
		{"AWS_PROFILE", Config{}, func() map[string]string {
			m := without("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
			m["AWS_PROFILE"] = "prof"
			return m
		}(), "SHAREDPROF", ""},
		{"home file last", Config{}, without("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_SHARED_CREDENTIALS_FILE"), "HOMEKEY", ""},
		{"none", Config{}, map[string]string{"HOME": dir}, "", "no credentials"},
	}
	for _, c := range cases {
		cr, err := resolveCreds(c.cfg, func(k string) string { return c.env[k] })
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.wantErr)
		case c.wantErr == "" && (err != nil || cr.access != c.want):
			t.Errorf("%s: %q %v, want %q", c.name, cr.access, err, c.want)
		case err == nil && strings.Contains(cr.source, cr.secret):
			t.Errorf("%s: source %q shows the secret", c.name, cr.source)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	f := newFake(t)
	_, err := f.tryOpen("?", map[string]string{"AWS_ACCESS_KEY_ID": "WRONG", "AWS_SECRET_ACCESS_KEY": "topsecret"})
	want := "s3 origin: credentials refused by " + f.srv.URL + ": AccessDenied"
	if err == nil || err.Error() != want {
		t.Errorf("wrong key: %v, want %q", err, want)
	}
	if err != nil && strings.Contains(err.Error(), "topsecret") {
		t.Error("error shows the secret")
	}
	cfg, _ := ParseURL("s3://nobucket/p?endpoint=" + f.srv.URL + "&path_style=1")
	_, err = newFS(bg, cfg, origin.OpenOptions{Timeout: 5 * time.Second, Logger: quiet}, func(k string) string {
		return map[string]string{"AWS_ACCESS_KEY_ID": f.access, "AWS_SECRET_ACCESS_KEY": "s"}[k]
	})
	if err == nil || !strings.Contains(err.Error(), `no bucket "nobucket"`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing bucket: %v", err)
	}
	down := newFake(t)
	down.srv.Close()
	cfg, _ = ParseURL(down.url("?"))
	start := time.Now()
	_, err = newFS(bg, cfg, origin.OpenOptions{Timeout: 2 * time.Second, Logger: quiet}, func(k string) string {
		return map[string]string{"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}[k]
	})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || !errors.Is(err, origin.ErrUnavailable) {
		t.Errorf("server down: %v", err)
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("server down: took %v past a 2s timeout", took)
	}
}

func TestWrites(t *testing.T) {
	f := newFake(t)
	f.put("d/", nil)
	fs := f.open(t, "?spool="+t.TempDir()+"&")
	fl, err := fs.Create(bg, "d/new", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644, origin.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.get("d/new"); !ok {
		t.Error("Create did not make the name exist")
	}
	fl.WriteAt(bg, []byte("hello world"), 0)
	if b, _ := f.get("d/new"); len(b) != 0 {
		t.Error("uploaded before Sync/Close")
	}
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.get("d/new"); string(b) != "hello world" {
		t.Fatalf("stored %q after close", b)
	}
	if _, err := fs.Create(bg, "d/new", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644, origin.Owner{}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("O_EXCL on an existing object: %v", err)
	}
	// A partial overwrite keeps the rest; Sync uploads, Stat follows.
	fl, err = fs.Open(bg, "d/new", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	fl.WriteAt(bg, []byte("W"), 6)
	if err := fl.Sync(bg); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.get("d/new"); string(b) != "hello World" {
		t.Fatalf("partial overwrite stored %q", b)
	}
	sa, _ := fl.Stat(bg)
	la, _ := fs.Lstat(bg, "d/new")
	if sa.Fingerprint() != la.Fingerprint() {
		t.Errorf("Stat after Sync %v, Lstat %v", sa.Fingerprint(), la.Fingerprint())
	}
	puts := len(f.requests("PUT"))
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.requests("PUT")) != puts {
		t.Error("Close uploaded again with nothing new written")
	}
	// O_TRUNC skips the download and stores the empty object even without writes.
	gets := len(f.requests("GET"))
	fl, err = fs.Open(bg, "d/new", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}
	if b, ok := f.get("d/new"); !ok || len(b) != 0 {
		t.Errorf("after O_TRUNC: %q %v", b, ok)
	}
	if len(f.requests("GET")) != gets {
		t.Error("O_TRUNC open downloaded the object")
	}
	// Truncate through SetAttr.
	f.put("t", []byte("0123456789"))
	sz := int64(4)
	if err := fs.SetAttr(bg, "t", origin.SetAttr{Size: &sz}); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.get("t"); string(b) != "0123" {
		t.Errorf("truncated to %q", b)
	}
}

func TestNamespace(t *testing.T) {
	f := newFake(t)
	f.put("d/only", []byte("1"))
	f.put("e/x", []byte("2"))
	fs := f.open(t, "?")
	if err := fs.Mkdir(bg, "m", 0o755, origin.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.get("m/"); !ok {
		t.Error("Mkdir stored no marker")
	}
	if err := fs.Mkdir(bg, "m", 0o755, origin.Owner{}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("Mkdir twice: %v", err)
	}
	if err := fs.Rmdir(bg, "e"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("Rmdir non-empty: %v", err)
	}
	if err := fs.Rmdir(bg, "m"); err != nil {
		t.Errorf("Rmdir empty: %v", err)
	}
	if err := fs.Rmdir(bg, "m"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Rmdir absent: %v", err)
	}
	// Removing the last file of an implicit directory leaves the directory.
	if err := fs.Unlink(bg, "d/only"); err != nil {
		t.Fatal(err)
	}
	if a, err := fs.Lstat(bg, "d"); err != nil || !a.IsDir() {
		t.Errorf("directory after its last file went: %+v %v", a, err)
	}
	if err := fs.Unlink(bg, "d/only"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Unlink absent: %v", err)
	}
	if err := fs.Unlink(bg, "d"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("Unlink dir: %v", err)
	}
	// Rename of a file: copy of the version looked at, then delete.
	if err := fs.Rename(bg, "e/x", "d/y", 0); err != nil {
		t.Fatal(err)
	}
	if b, ok := f.get("d/y"); !ok || string(b) != "2" {
		t.Errorf("renamed object: %q %v", b, ok)
	}
	if _, ok := f.get("e/x"); ok {
		t.Error("old name still there")
	}
	f.put("z", []byte("z"))
	if err := fs.Rename(bg, "z", "d/y", 1 /* RENAME_NOREPLACE */); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE: %v", err)
	}
	if err := fs.Rename(bg, "d", "d2", 0); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("directory rename: %v, want EXDEV", err)
	}
	for name, err := range map[string]error{
		"link":    fs.Link(bg, "z", "z2"),
		"symlink": fs.Symlink(bg, "z", "s", origin.Owner{}),
		"mknod":   fs.Mknod(bg, "n", syscall.S_IFIFO|0o644, 0, origin.Owner{}),
		"chmod":   fs.SetAttr(bg, "z", origin.SetAttr{Mode: new(uint32(0o600))}),
		"chown":   fs.SetAttr(bg, "z", origin.SetAttr{Uid: new(uint32(5))}),
		"utimes":  fs.SetAttr(bg, "z", origin.SetAttr{Mtime: new(time.Now())}),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", name, err)
		}
	}
	if _, err := fs.Readlink(bg, "z"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("readlink: %v, want EINVAL", err)
	}
}

func TestFaults(t *testing.T) {
	f := newFake(t)
	f.put("a", []byte("abc"))
	fs := f.open(t, "?")
	// SlowDown and 503 are retried by the client with backoff.
	f.mu.Lock()
	f.fail = 3
	f.mu.Unlock()
	a, err := fs.Lstat(bg, "a")
	if err != nil || a.Size != 3 {
		t.Fatalf("lstat through 3 SlowDowns: %v", err)
	}
	// Failing for longer than the retries: trouble, never absence.
	f.mu.Lock()
	f.fail = 1000
	f.mu.Unlock()
	_, err = fs.Lstat(bg, "a")
	if !origin.IsTrouble(err) || !errors.Is(err, origin.ErrUnavailable) || origin.IsNotExist(err) {
		t.Errorf("persistent 503: %v, want unavailable", err)
	}
	f.mu.Lock()
	f.fail = 0
	f.mu.Unlock()
	fl, err := fs.Open(bg, "a", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	f.srv.Close()
	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	for name, err := range map[string]error{
		"lstat":   func() error { _, err := fs.Lstat(ctx, "a"); return err }(),
		"readdir": func() error { _, err := fs.ReadDir(ctx, "."); return err }(),
		"read":    func() error { _, err := fl.ReadAt(ctx, make([]byte, 3), 0); return err }(),
	} {
		if !origin.IsTrouble(err) || origin.IsNotExist(err) || origin.Errno(err) != syscall.EIO {
			t.Errorf("%s with the server down: %v, want EIO trouble", name, err)
		}
	}
}
