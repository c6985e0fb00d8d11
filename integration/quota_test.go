package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// A 1 MiB hard quota on users/alice: 600 KiB written with dd fits, a further 600 KiB fails
// with EDQUOT ("Disk quota exceeded"), the first file is intact on the origin; the soft limit
// shows in quota ls, and a file written to the origin directly is counted at the next walk.
func TestQuotaHardLimitRefusesWrites(t *testing.T) {
	n := newNode(t, "")
	n.start("--quota-walk-interval", "1s")
	if _, err := n.eddy("quota", "set", "users/alice", "1M", "--soft", "512K"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.mnt("users/alice"), 0o777); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(n.org(".eddy/quotas.json")); err != nil || !strings.Contains(string(b), `"users/alice"`) {
		t.Fatalf("quota table on the share: %q %v", b, err)
	}
	src := filepath.Join(t.TempDir(), "src")
	want := writeRandom(t, src, 600<<10, 7)
	dd := func(of string) (string, error) {
		var errb bytes.Buffer
		cmd := exec.Command("dd", "if="+src, "of="+of, "bs=600K", "count=1")
		cmd.Stderr = &errb
		err := cmd.Run()
		return errb.String(), err
	}
	if out, err := dd(n.mnt("users/alice/first")); err != nil {
		t.Fatalf("first 600 KiB: %v: %s", err, out)
	}
	out, err := dd(n.mnt("users/alice/second"))
	if err == nil || !strings.Contains(out, "Disk quota exceeded") {
		t.Fatalf("second 600 KiB: want EDQUOT, got %v: %s", err, out)
	}
	if got := sha256File(t, n.org("users/alice/first")); got != want {
		t.Fatalf("first file on the origin: sha %s, want %s", got, want)
	}
	quotas := func() []api.QuotaStatus {
		out, err := n.eddy("quota", "ls", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var qs []api.QuotaStatus
		if err := json.Unmarshal([]byte(out), &qs); err != nil || len(qs) != 1 {
			t.Fatalf("quota ls --json: %v %q", err, out)
		}
		return qs
	}
	if q := quotas()[0]; !q.OverSoft || q.Used < 600<<10 || q.Used > 1<<20 {
		t.Fatalf("quota ls: %+v", q)
	}
	if !strings.Contains(n.log(), "soft quota exceeded") {
		t.Fatalf("no soft-quota warning in the log:\n%s", n.log())
	}
	if out, _ := n.eddy("quota", "ls"); !strings.Contains(out, "users/alice") || !strings.Contains(out, "over soft limit") && !strings.Contains(out, "FULL") {
		t.Fatalf("quota ls table:\n%s", out)
	}

	// Remove what the failed dd left, write beside eddy on the origin: the next walk counts it.
	os.Remove(n.mnt("users/alice/second"))
	if err := os.WriteFile(n.org("users/alice/direct"), make([]byte, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the walk to count the origin's file", 20*time.Second, func() bool {
		q := quotas()[0]
		return q.Counted && q.Used == 900<<10 && q.Files == 2
	}, n.log)
	if _, err := n.eddy("quota", "rm", "users/alice"); err != nil {
		t.Fatal(err)
	}
	if out, err := dd(n.mnt("users/alice/second")); err != nil {
		t.Fatalf("after quota rm: %v: %s", err, out)
	}
}
