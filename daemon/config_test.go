package daemon

import (
	"testing"
)

func TestParseLabels(t *testing.T) {
	m, err := ParseLabels([]string{"gpu=a100", "zone = b"})
	if err != nil || m["gpu"] != "a100" || m["zone"] != "b" {
		t.Fatalf("ParseLabels = %v, %v", m, err)
	}
	if _, err := ParseLabels([]string{"novalue"}); err == nil {
		t.Fatal("ParseLabels(novalue): no error")
	}
}

func TestValidate(t *testing.T) {
	base := Config{Origin: "/o", Mount: "/m", CacheDir: "/c"}
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"ok", func(*Config) {}, true},
		{"no origin", func(c *Config) { c.Origin = "" }, false},
		{"no mount", func(c *Config) { c.Mount = "" }, false},
		{"no cache dir", func(c *Config) { c.CacheDir = "" }, false},
		{"no cache dir but no-cache", func(c *Config) { c.CacheDir = ""; c.NoCache = true }, true},
		{"bad glob", func(c *Config) { c.Include = []string{"[x"} }, false},
		{"bad metrics", func(c *Config) { c.Metrics = "otlp-ish" }, false},
		{"containerd socket", func(c *Config) { c.ContainerdSocket = "/run/containerd/containerd.sock" }, true},
		{"containerd dir", func(c *Config) { c.ContainerdDir = "/var/lib/eddy-ctd" }, true},
		{"containerd socket and dir", func(c *Config) { c.ContainerdSocket = "/s"; c.ContainerdDir = "/d" }, false},
		{"tiny chunk", func(c *Config) { c.ChunkSize = 1000 }, false},
		{"odd chunk", func(c *Config) { c.ChunkSize = 1<<20 + 1 }, false},
		{"min free 100", func(c *Config) { c.MinFreePercent = 100 }, false},
	}
	for _, c := range cases {
		cfg := base
		c.mod(&cfg)
		cfg.setDefaults()
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%s: validate = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestCheckLayout(t *testing.T) {
	cases := []struct {
		name                 string
		origin, mount, cache string
		ok                   bool
	}{
		{"ok", "/srv/share", "/mnt/share", "/var/cache/eddy", true},
		{"url origin", "", "/mnt/share", "/var/cache/eddy", true},
		{"cache in mount", "/srv/share", "/mnt/share", "/mnt/share/.cache", false},
		{"cache is mount", "/srv/share", "/mnt/share", "/mnt/share", false},
		{"cache in origin", "/srv/share", "/mnt/share", "/srv/share/c", false},
		{"mount in origin", "/srv/share", "/srv/share/m", "/c", false},
		{"origin in mount", "/mnt/share/o", "/mnt/share", "/c", false},
		{"mount is origin", "/srv", "/srv", "/c", false},
		{"mount in cache", "/srv", "/c/m", "/c", false},
		{"sibling prefix is fine", "/srv/share", "/srv/share2", "/srv/share3", true},
		{"root mount", "/srv", "/", "/c", false},
	}
	for _, c := range cases {
		if err := checkLayout(c.origin, c.mount, c.cache); (err == nil) != c.ok {
			t.Errorf("%s: checkLayout = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	cases := map[string]string{
		`/mnt/a\040b`: "/mnt/a b",
		`/plain`:      "/plain",
		`/tab\011x`:   "/tab\tx",
		`/bad\09`:     `/bad\09`,
		`/back\134s`:  `/back\s`,
	}
	for in, want := range cases {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerdDirFor(t *testing.T) {
	if got := ContainerdDirFor("/var/cache/eddy/", "/run/eddy/eddy.sock", "n1"); got != "/var/cache/eddy-containerd" {
		t.Errorf("with a cache dir: %s", got)
	}
	if got := ContainerdDirFor("", "/run/eddy/eddy.sock", "n1"); got != "/run/eddy/eddy-containerd-n1" {
		t.Errorf("without a cache dir: %s", got)
	}
}
