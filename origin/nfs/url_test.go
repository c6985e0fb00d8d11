package nfs

import (
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		spec    string
		want    Config
		wantErr string
	}{
		{spec: "nfs://srv/export", want: Config{Host: "srv", Export: "/export", Version: 3, Conns: 2}},
		{spec: "nfs://10.0.0.1:2049/a/b?version=3&conns=4&uid=1000&gid=100&timeout=5s&mountport=20048",
			want: Config{Host: "10.0.0.1", Port: 2049, MountPort: 20048, Export: "/a/b", Version: 3, Conns: 4, Uid: 1000, Gid: 100, Timeout: 5 * time.Second}},
		{spec: "nfs://[fd00::1]:2049/x", want: Config{Host: "fd00::1", Port: 2049, Export: "/x", Version: 3, Conns: 2}},
		{spec: "nfs://srv/e?version=4", wantErr: "only NFS version 3"},
		{spec: "nfs://srv/e?conns=0", wantErr: "conns"},
		{spec: "nfs://srv/e?conns=65", wantErr: "conns"},
		{spec: "nfs://srv/e?conns=2&conns=3", wantErr: "given 2 times"},
		{spec: "nfs://srv/e?uid=-1", wantErr: "numeric"},
		{spec: "nfs://srv/e?timeout=soon", wantErr: "duration"},
		{spec: "nfs://srv/e?bogus=1", wantErr: "unknown option"},
		{spec: "nfs://srv", wantErr: "no export"},
		{spec: "nfs:///e", wantErr: "no server host"},
		{spec: "/local/path", wantErr: "not a URL"},
		{spec: "http://srv/e", wantErr: "not nfs"},
	}
	for _, c := range cases {
		got, err := ParseURL(c.spec)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseURL(%q) = %+v, %v; want error with %q", c.spec, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"nfs://h/e", "nfs://h:2049/e?conns=4&uid=1", "nfs://[::1]:1/e", "nfs://h/e?timeout=1s", "nfs://h/%2e%2e", "nfs://h/e?conns=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		c, err := ParseURL(spec)
		if err != nil {
			return
		}
		if c.Host == "" || c.Export == "" || c.Export[0] != '/' || strings.Contains(c.Export, "/../") || strings.HasSuffix(c.Export, "/..") {
			t.Fatalf("ParseURL(%q) = %+v", spec, c)
		}
		if c.Conns < 1 || c.Conns > MaxConns || c.Version != 3 || c.Port < 0 || c.Port > 65535 || c.Timeout < 0 {
			t.Fatalf("ParseURL(%q) = %+v out of range", spec, c)
		}
		// The canonical form parses back to the same place.
		c2, err := ParseURL(c.String())
		if err != nil || c2.Host != c.Host || c2.Port != c.Port || c2.Export != c.Export {
			t.Fatalf("round trip of %q via %q: %+v, %v", spec, c.String(), c2, err)
		}
	})
}
