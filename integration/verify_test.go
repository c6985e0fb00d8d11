package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// Three daemons in a cluster, one of them over another origin directory: eddy verify names it
// and exits non-zero; once it runs over the others' origin, verify passes.
func TestVerifyNamesNodeOnAnotherOrigin(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // nobody must reach the mounts for the permission check
	}
	shared, other := filepath.Join(base, "vf-origin"), filepath.Join(base, "vf-other")
	for _, d := range []string{shared, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	token := filepath.Join(base, "vf-token")
	os.WriteFile(token, []byte("vf-secret\n"), 0o600)
	addrs := []string{freeAddr(t, "127.0.0.31"), freeAddr(t, "127.0.0.32"), freeAddr(t, "127.0.0.33")}
	args := func(i int) []string {
		a := []string{"--node-name", fmt.Sprintf("vf%d", i), "--listen", addrs[i], "--token-file", token}
		if i == 0 {
			return append(a, "--scheduler")
		}
		return append(a, "--join", addrs[0])
	}
	var nodes []*node
	for i := range 3 {
		org := shared
		if i == 2 {
			org = other
		}
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("vf-n%d", i)), org)
		os.MkdirAll(n.Mount, 0o755)
		n.start(args(i)...)
		nodes = append(nodes, n)
	}
	cl := api.NewTCP(addrs[0], api.WithToken("vf-secret"), api.WithTimeout(10*time.Second))
	allUp := func() bool {
		ns, err := cl.Nodes(context.Background())
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
		}
		return err == nil && up == 3
	}
	waitUntil(t, "three nodes up", 30*time.Second, allUp, func() string { return nodes[0].tail(40) })

	out, err := nodes[0].eddy("verify", "--size", "4M")
	if err == nil {
		t.Fatalf("verify passed with a node on another origin:\n%s", out)
	}
	if !strings.Contains(out, "node vf2: its share is not the others' (markers of vf0, vf1 not found): check its --origin") {
		t.Fatalf("verify did not name vf2:\n%s\n%v", out, err)
	}
	t.Logf("failing verify:\n%s", out)

	// JSON: the matrix says who saw what.
	out, _ = nodes[1].eddy("verify", "--json", "--size", "1M")
	var rep api.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if rep.OK || rep.Matrix["vf0"]["vf1"] != "ok" || rep.Matrix["vf0"]["vf2"] != "missing" || rep.Matrix["vf2"]["vf0"] != "missing" {
		t.Fatalf("verify --json: %+v", rep)
	}
	// The markers are gone from both origins.
	for _, o := range []string{shared, other} {
		if ents, _ := os.ReadDir(filepath.Join(o, api.VerifyDir)); len(ents) != 0 {
			t.Fatalf("%s: verify left %d entries", o, len(ents))
		}
	}

	// vf2 over the shared origin: verify passes.
	nodes[2].stop()
	nodes[2].Origin = shared
	nodes[2].start(args(2)...)
	waitUntil(t, "vf2 back", 30*time.Second, allUp, func() string { return nodes[0].tail(40) })
	out, err = nodes[0].eddy("verify", "--size", "4M")
	if err != nil || !strings.Contains(out, "ok: every node sees the same share") {
		t.Fatalf("verify over one origin: %v\n%s", err, out)
	}
	t.Logf("passing verify:\n%s", out)
	if !strings.Contains(out, "ok (0600 refused to nobody)") {
		t.Fatalf("permission check:\n%s", out)
	}
}
