package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/eddy-cluster/eddy/api"
)

// eddy du: per scope, per user and per directory, counted by the daemon's walk of the origin.
func TestDuByScopeUserDir(t *testing.T) {
	n := newNode(t, "")
	put := func(rel string, size int) {
		p := n.org(rel)
		os.MkdirAll(p[:strings.LastIndex(p, "/")], 0o755)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 700 {
		put("shared_data/ds/f"+itoa3(i), 1000)
	}
	put("users/alice/a", 5000)
	put("users/bob/b", 7000)
	put("jobs/17/out", 300)
	put("logs/t1/stdout.log", 20)
	os.Chown(n.org("users/bob/b"), 65534, 65534)
	n.start()
	du := func(args ...string) api.DuReport {
		out, err := n.eddy(append([]string{"du", "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var rep api.DuReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		return rep
	}
	groups := func(rep api.DuReport) map[string]api.DuSum {
		m := map[string]api.DuSum{}
		for _, g := range rep.Groups {
			m[g.Key] = g
		}
		return m
	}
	g := groups(du())
	if g["shared_data"].Bytes != 700000 || g["shared_data"].Files != 700 || g["users/alice"].Bytes != 5000 ||
		g["users/bob"].Bytes != 7000 || g["jobs/17"].Bytes != 300 || g["logs"].Files != 1 {
		t.Fatalf("by scope: %+v", g)
	}
	g = groups(du("--by", "user"))
	if g["nobody"].Bytes != 7000 || g["root"].Files != 703 {
		t.Fatalf("by user: %+v", g)
	}
	g = groups(du("--by", "dir", n.mnt("users")))
	if len(g) != 2 || g["users/bob"].Bytes != 7000 {
		t.Fatalf("by dir: %+v", g)
	}
	out, err := n.eddy("du")
	if err != nil || !strings.Contains(out, "shared_data") || !strings.Contains(out, "walked") {
		t.Fatalf("du table: %v\n%s", err, out)
	}
	// Against du -s on the origin (apparent sizes).
	if b, err := exec.Command("du", "-s", "-b", n.Origin).Output(); err == nil {
		t.Logf("du -sb: %s", strings.TrimSpace(string(b)))
	}
	// The share-space line of cache stats.
	if out, err := n.eddy("cache", "stats"); err != nil || !strings.Contains(out, "share space") {
		t.Fatalf("cache stats: %v\n%s", err, out)
	}
	if s := n.stats(); s.Share == nil || s.Share.TotalBytes == 0 || s.Share.Threshold != 90 {
		t.Fatalf("cache stats --json share: %+v", s.Share)
	}
}

func itoa3(i int) string {
	const d = "0123456789"
	return string([]byte{d[i/100%10], d[i/10%10], d[i%10]})
}
