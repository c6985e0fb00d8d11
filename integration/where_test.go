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

// `eddy cache where`: a two-node cluster, a file read through one node's mount only. The
// scheduler's answer (from the nodes' heartbeat inventories) names that node with the file's
// full size cached and the other with nothing, for the file, its directory and an absolute
// path under the mount, in the table and in --json; asked on the joined node, the call goes
// through its daemon to the scheduler. `eddy cache where --top` lists the file, and `eddy
// nodes` shows the share's space as each node reports it.
func TestCacheWhere(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	origin := filepath.Join(base, "wh-origin")
	if err := os.MkdirAll(filepath.Join(origin, "data", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 3 << 20
	writeRandom(t, filepath.Join(origin, "data", "sub", "w.bin"), size, 11)
	writeRandom(t, filepath.Join(origin, "data", "other.bin"), 1<<20, 12)
	token := filepath.Join(base, "wh-token")
	os.WriteFile(token, []byte("wh-secret\n"), 0o600)

	addrs := []string{freeAddr(t, "127.0.0.51"), freeAddr(t, "127.0.0.52")}
	var nodes []*node
	for i := range 2 {
		a := []string{"--node-name", fmt.Sprintf("wh%d", i), "--listen", addrs[i], "--token-file", token}
		if i == 0 {
			a = append(a, "--scheduler")
		} else {
			a = append(a, "--join", addrs[0])
		}
		n := newNodeAt(t, filepath.Join(base, fmt.Sprintf("wh-n%d", i)), origin)
		n.start(a...)
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	cl := api.NewTCP(addrs[0], api.WithToken("wh-secret"), api.WithTimeout(10*time.Second))
	logs := func() string {
		return "--- scheduler log ---\n" + nodes[0].tail(60) + "\n--- wh1 log ---\n" + nodes[1].tail(30)
	}
	waitUntil(t, "two nodes up", 30*time.Second, func() bool {
		ns, err := cl.Nodes(ctx)
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
		}
		return err == nil && up == 2
	}, logs)

	// Read the file through wh1's mount only.
	if _, err := readAll(nodes[1].mnt("data/sub/w.bin")); err != nil {
		t.Fatal(err)
	}
	where := func(n *node, p string) (api.CacheWhere, string) {
		t.Helper()
		out, err := n.eddy("cache", "where", "--json", p)
		if err != nil {
			t.Fatalf("cache where --json %s: %v %s", p, err, out)
		}
		var w api.CacheWhere
		if err := json.Unmarshal([]byte(out), &w); err != nil {
			t.Fatalf("cache where --json %s: %v %q", p, err, out)
		}
		return w, out
	}
	holder := func(w api.CacheWhere, name string) (api.WhereNode, bool) {
		for _, n := range w.Nodes {
			if n.Node == name {
				return n, true
			}
		}
		return api.WhereNode{}, false
	}
	// The inventory reaches the scheduler with the next heartbeats.
	waitUntil(t, "the scheduler sees wh1 holding data/sub/w.bin", 30*time.Second, func() bool {
		w, _ := where(nodes[0], "data/sub/w.bin")
		n, ok := holder(w, "wh1")
		return ok && n.CachedBytes == size
	}, logs)

	// The file, asked on either node (share-relative, or absolute under that node's mount).
	for _, tc := range []struct {
		n *node
		p string
	}{{nodes[0], "data/sub/w.bin"}, {nodes[1], "data/sub/w.bin"}, {nodes[1], nodes[1].mnt("data/sub/w.bin")}} {
		w, raw := where(tc.n, tc.p)
		h1, ok1 := holder(w, "wh1")
		h0, ok0 := holder(w, "wh0")
		if w.Path != "data/sub/w.bin" || w.Dir || w.Files != 1 || w.SizeBytes != size || len(w.Nodes) != 2 || !ok1 || !ok0 ||
			w.Nodes[0].Node != "wh1" || !h1.Up || h1.Files != 1 || h1.WholeFiles != 1 || h1.CachedBytes != size || h1.SizeBytes != size ||
			h0.Files != 0 || h0.CachedBytes != 0 {
			t.Errorf("cache where %s: %s", tc.p, raw)
		}
		for _, k := range []string{`"path"`, `"files"`, `"size_bytes"`, `"dir"`, `"nodes"`, `"node"`, `"up"`, `"whole_files"`, `"cached_bytes"`} {
			if !strings.Contains(raw, k) {
				t.Errorf("cache where --json lacks %s: %s", k, raw)
			}
		}
	}
	// Its directory: the one cached file; the other file, never read, is not counted.
	w, raw := where(nodes[1], "data")
	if h1, _ := holder(w, "wh1"); w.Path != "data" || !w.Dir || w.Files != 1 || w.SizeBytes != size || h1.CachedBytes != size {
		t.Errorf("cache where data: %s", raw)
	}
	// A path nothing caches: every node with zeros.
	if w, raw = where(nodes[0], "data/other.bin"); w.Files != 0 || len(w.Nodes) != 2 || w.Nodes[0].CachedBytes != 0 || w.Nodes[1].CachedBytes != 0 {
		t.Errorf("cache where data/other.bin: %s", raw)
	}

	// The table.
	out, err := nodes[1].eddy("cache", "where", "data/sub/w.bin")
	if err != nil {
		t.Fatalf("cache where: %v %s", err, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "data/sub/w.bin (file, 3.0 MiB)") || !strings.HasPrefix(lines[1], "NODE") ||
		!strings.HasPrefix(lines[2], "wh1 ") || !strings.Contains(lines[2], "100.0%") || !strings.HasPrefix(lines[3], "wh0 ") || !strings.Contains(lines[3], "0.0%") ||
		!strings.Contains(out, "not which ranges") {
		t.Errorf("cache where table:\n%s", out)
	}

	// The largest cached files: root only (names of the share's files).
	out, err = nodes[0].eddy("cache", "where", "--top", "5", "--json")
	var top api.CacheTop
	if err != nil || json.Unmarshal([]byte(out), &top) != nil || len(top.Files) != 1 || top.Files[0].Path != "data/sub/w.bin" ||
		top.Files[0].SizeBytes != size || len(top.Files[0].Nodes) != 1 || top.Files[0].Nodes[0].Node != "wh1" || top.Files[0].Nodes[0].CachedBytes != size {
		t.Errorf("cache where --top: %v %s", err, out)
	}

	// `eddy nodes`: the share's space per node, from its heartbeats.
	waitUntil(t, "both nodes reporting the share's space", 20*time.Second, func() bool {
		ns, err := cl.Nodes(ctx)
		n := 0
		for _, st := range ns {
			if st.Share != nil && st.Share.TotalBytes > 0 {
				n++
			}
		}
		return err == nil && n == 2
	}, logs)
	out, err = nodes[1].eddy("nodes")
	if err != nil || !strings.Contains(out, "SHARE") || strings.Count(out, "% used") != 2 {
		t.Errorf("nodes: %v\n%s", err, out)
	}
}
