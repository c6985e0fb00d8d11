package origin

import (
	"context"
	"net/url"
	"strings"
	"testing"
)

func TestOpenSpecs(t *testing.T) {
	dir := t.TempDir()
	RegisterScheme("enftest", func(ctx context.Context, u *url.URL, opts OpenOptions) (FS, error) {
		return NewPath(dir)
	})
	RegisterScheme("wholetest", func(ctx context.Context, u *url.URL, opts OpenOptions) (FS, error) {
		return NewPath(dir)
	}, WholeHostOK)
	cases := []struct {
		spec    string
		wantErr string // substring; "" = success
	}{
		{dir, ""},
		{"file://" + dir, ""},
		{"enftest://host/export", ""},
		{"ENFTEST://host/export", ""},
		{"", "empty"},
		{"gopher://host/x", "unknown scheme"},
		{"enftest://", "no server host"},
		{"enftest://host", "no export path"},
		{"enftest://host/", "no export path"},
		{"wholetest://bucket", ""},
		{"wholetest://bucket/", ""},
		{"wholetest://bucket/prefix", ""},
		{"wholetest://bucket/a/../b", "not clean"},
		{"enftest://user@host/x", "user info"},
		{"enftest://host/x#frag", "fragment"},
		{"enftest://host/a/../b", "not clean"},
		{"enftest://host:99999/x", "bad port"},
		{"enftest://host:0/x", "bad port"},
		{"file://otherhost/x", "file:///PATH"},
	}
	for _, c := range cases {
		fs, err := Open(context.Background(), c.spec, OpenOptions{})
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("Open(%q): %v", c.spec, err)
				continue
			}
			fs.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("Open(%q) = %v, want error containing %q", c.spec, err, c.wantErr)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"nfs://h/e", "nfs://h:2049/e/x?conns=4", "nfs://[::1]:1/e", "x://h/%2e%2e/y", "nfs://h/a/../b", "nfs://h/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		u, err := ParseURL(spec)
		if err != nil {
			return
		}
		if u.Hostname() == "" || u.User != nil || u.Fragment != "" {
			t.Fatalf("ParseURL(%q) accepted host %q user %v fragment %q", spec, u.Hostname(), u.User, u.Fragment)
		}
		for _, el := range strings.Split(u.Path, "/") {
			if el == ".." || el == "." {
				t.Fatalf("ParseURL(%q) accepted path %q", spec, u.Path)
			}
		}
		if strings.IndexByte(u.Path, 0) >= 0 {
			t.Fatalf("ParseURL(%q) accepted a NUL byte", spec)
		}
	})
}
